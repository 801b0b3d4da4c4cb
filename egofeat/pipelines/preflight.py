"""What `egofeat extract` checks before it writes anything: devices, the videos, the plan.

:func:`check_devices` refuses a device this machine lacks; :func:`check_videos` resolves every
annotated video under the layout and stops the run (one line, exit status 2) when the videos
root is wrong or too few videos are found, naming a path it expected and the layout (or root)
under which the videos are (``egofeat extract --dry-run`` shows the same and the plan:
:mod:`.dryrun`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from egofeat.config import ExtractConfig
from egofeat.extract import VideoLayout
from egofeat.extract.readers import missing_path_error
from egofeat.heads.predict import resolve_device
from egofeat.store.fs import StoreFS

__all__ = ["PreflightError", "VideoCheck", "check_devices", "check_store_location", "check_videos",
           "video_layout"]

#: Missing videos tried under other layouts and roots for a suggestion.
SUGGESTION_SAMPLE = 20
#: Subfolders of the videos root tried as roots for a suggestion.
SUGGESTION_SUBFOLDERS = 50
#: Other path templates tried for a suggestion, besides the presets.
OTHER_TEMPLATES = ("{participant_id}/{video_id}{ext}", "videos/{video_id}{ext}")
#: Missing videos named one by one in the run log and ``--dry-run``.
MISSING_SHOWN = 10


class PreflightError(ValueError):
    """The run cannot go ahead as asked (a user error: one line, exit status 2)."""


def video_layout(options: ExtractConfig) -> VideoLayout:
    """The layout ``--videos`` and ``--layout`` describe."""
    if "{" in options.layout:
        return VideoLayout(options.videos, options.layout)
    return VideoLayout.preset(options.layout, options.videos)


def reads_frame_folders(options: ExtractConfig) -> bool | None:
    """True for a layout of JPEG frame folders, False for one of video files, None for a
    template that could be either (no extension)."""
    return _template_reads_frames(video_layout(options).template)


def _template_reads_frames(template: str) -> bool | None:
    if template == VideoLayout.PRESETS["epic-frames"]:
        return True
    if "{ext}" in template or Path(template).suffix:
        return False
    return None


def check_devices(options: ExtractConfig) -> None:
    """Refuse a ``--device`` this machine lacks (DeviceError naming the flag). A
    ``--decode-device`` it lacks is not refused: each video falls back to the CPU, and the
    summary counts them."""
    resolve_device(options.device)


def check_store_location(options: ExtractConfig) -> None:
    """Refuse ``--shard`` on object storage: independent jobs there would remove each other's
    attempts in flight (no locks), so only a single driver's executors may share a stream."""
    if options.shard is not None and not StoreFS(options.store).is_local:
        raise PreflightError(
            f"--shard needs a store on a filesystem with locks (local, NFSv4, Lustre -o flock, "
            f"CephFS), not {options.store}: on object storage shard with --executor torchrun or dask")


@dataclass
class VideoCheck:
    """Where the run's videos are: found, missing (with the path expected), or not usable."""

    layout: str
    root: str
    found: list[str] = field(default_factory=list)
    #: video id -> the path expected (its first candidate)
    missing: dict[str, str] = field(default_factory=dict)
    #: video id -> why the path there cannot be read (a folder where a file belongs, ...)
    unusable: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.found) + len(self.missing) + len(self.unusable)

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, "root": self.root, "videos": self.total, "found": len(self.found),
                "missing": len(self.missing), "unusable": len(self.unusable),
                "missing_examples": dict(list(self.missing.items())[:MISSING_SHOWN]),
                "unusable_examples": dict(list(self.unusable.items())[:MISSING_SHOWN])}


def check_videos(options: ExtractConfig, segments: pl.DataFrame) -> VideoCheck:
    """Resolve every video of ``segments``; PreflightError when the root is wrong or fewer
    than ``options.min_found`` of the videos (and always when none) are there."""
    root = Path(options.videos)
    _check_root(root)
    layout = video_layout(options)
    frames = reads_frame_folders(options)
    check = VideoCheck(layout=layout.template, root=str(root))
    for video_id, participant in _videos(segments):
        candidates = layout.candidates(video_id, participant)
        path = next((p for p in candidates if p.exists() or os.path.islink(p)), None)
        if path is None:
            check.missing[video_id] = str(candidates[0])
        elif problem := _unusable(path, frames):
            check.unusable[video_id] = problem
        else:
            check.found.append(video_id)
    if check.total and (not check.found or len(check.found) < options.min_found * check.total):
        raise PreflightError(_too_few_message(check, options, segments))
    return check


def _check_root(root: Path) -> None:
    if root.is_dir():
        return
    if root.exists():
        raise PreflightError(f"--videos {root} is a file: give the folder that holds the videos")
    error = missing_path_error(root, "--videos")
    raise PreflightError(f"{error}: give the folder that holds the videos (or their frame folders)")


def _videos(segments: pl.DataFrame) -> list[tuple[str, str | None]]:
    columns = ["video_id"] + (["participant_id"] if "participant_id" in segments.columns else [])
    rows = segments.select(columns).unique(maintain_order=True).sort("video_id").iter_rows()
    return [(row[0], row[1] if len(row) > 1 else None) for row in rows]


def _unusable(path: Path, frames: bool | None) -> str | None:
    """Why ``path`` (which exists, or is a link) cannot be the video, or None."""
    if not path.exists():
        return str(missing_path_error(path, "video"))
    if frames is False and path.is_dir():
        return (f"{path} is a folder, not a video file (folders of JPEG frames are read only "
                "with --layout epic-frames)")
    if frames is True and not path.is_dir():
        return f"{path} is a file, not a folder of frame_%010d.jpg files (--layout epic-frames)"
    return None


def _too_few_message(check: VideoCheck, options: ExtractConfig, segments: pl.DataFrame) -> str:
    flags = f"--videos {check.root} --layout {_layout_flag(options.layout)}"
    unusable = f"; {len(check.unusable)} unusable, e.g. {next(iter(check.unusable.values()))}" if check.unusable else ""
    example = next(iter(check.missing.items()), None)
    expected = f" (expected e.g. {example[1]})" if example else ""
    if check.found:
        head = (f"only {len(check.found)} of {check.total} annotated videos found with {flags}{expected}"
                f"{unusable}; fewer than --min-found {options.min_found:g} of them")
        tail = "check --videos and --layout, or give --min-found 0 to extract the videos found"
    else:
        head = f"none of the {check.total} annotated videos found with {flags}{expected}{unusable}"
        tail = "check --videos and --layout"
    suggestion = _suggest(check, options, segments)
    return f"{head}: {suggestion or tail}"


def _layout_flag(layout: str) -> str:
    return layout if layout in VideoLayout.PRESETS else f"'{layout}'"


def _suggest(check: VideoCheck, options: ExtractConfig, segments: pl.DataFrame) -> str | None:
    """Rerun advice naming the layout and root under which most missing videos are."""
    sample = [(v, p) for v, p in _videos(segments) if v in check.missing or v in check.unusable]
    sample = sample[:SUGGESTION_SAMPLE]
    root = Path(check.root)
    roots = [root] + _subfolders(root) + ([root.parent] if root.parent != root else [])
    layouts = [(name, template) for name, template in VideoLayout.PRESETS.items()]
    layouts += [(f"'{t}'", t) for t in OTHER_TEMPLATES]
    best: tuple[int, str, Path, Path] | None = None
    for flag, template in layouts:  # presets first: of equal counts, the first found is shown
        for candidate_root in roots:
            if candidate_root == root and template == check.layout:
                continue
            layout = VideoLayout(candidate_root, template)
            frames = _template_reads_frames(template)
            found = [p for v, part in sample for p in [_first_existing(layout.candidates(v, part))]
                     if p is not None and _unusable(p, frames) is None]
            if found and (best is None or len(found) > best[0]):
                best = (len(found), flag, candidate_root, found[0])
    if best is None:
        return None
    count, flag, found_root, example = best
    return (f"rerun with --videos {found_root} --layout {flag}, which finds {count} of the "
            f"{len(sample)} tried (e.g. {example})")


def _subfolders(root: Path) -> list[Path]:
    try:
        entries = sorted(e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
    return [Path(p) for p in entries[:SUGGESTION_SUBFOLDERS]]


def _first_existing(paths: Sequence[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)
