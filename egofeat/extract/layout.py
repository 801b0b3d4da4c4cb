"""Where videos live: a video id -> its file or JPEG frame folder under a root."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VIDEO_EXTENSIONS", "VideoLayout"]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".MP4", ".mkv", ".webm", ".mov", ".avi")


@dataclass(frozen=True)
class VideoLayout:
    """Maps a video id to its file or frame folder under ``root``.

    ``template`` is a path relative to ``root`` with the fields ``{video_id}``,
    ``{participant_id}`` and optionally ``{ext}``, which is tried with each of
    ``extensions`` in turn. Presets (:meth:`preset`):

    - ``epic-mp4``: ``{participant_id}/videos/{video_id}.MP4``
    - ``epic-frames``: ``{participant_id}/rgb_frames/{video_id}`` (a folder of JPEGs)
    - ``flat``: ``{video_id}{ext}``, trying ``.mp4 .MP4 .mkv .webm .mov .avi``

    ``participant_id`` defaults to the part of the video id before its first ``_`` (EPIC).
    """

    root: Path
    template: str
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS

    PRESETS = {
        "epic-mp4": "{participant_id}/videos/{video_id}.MP4",
        "epic-frames": "{participant_id}/rgb_frames/{video_id}",
        "flat": "{video_id}{ext}",
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        unknown = set(re.findall(r"{(\w*)}", self.template)) - {"video_id", "participant_id", "ext"}
        if unknown:
            raise ValueError(
                f"video path template {self.template!r} uses unknown field(s) "
                f"{', '.join(sorted(unknown))}; use {{video_id}}, {{participant_id}}, {{ext}}"
            )

    @classmethod
    def preset(cls, name: str, root: str | Path) -> VideoLayout:
        """A named layout (``epic-mp4``, ``epic-frames``, ``flat``) under ``root``."""
        if name not in cls.PRESETS:
            raise ValueError(
                f"unknown video layout {name!r}; presets are {', '.join(cls.PRESETS)}, or give "
                "a template such as '{participant_id}/videos/{video_id}.MP4'"
            )
        return cls(Path(root), cls.PRESETS[name])

    def candidates(self, video_id: str, participant_id: str | None = None) -> list[Path]:
        """The paths tried for a video, in order."""
        fields = {"video_id": video_id, "participant_id": participant_id or video_id.split("_")[0]}
        extensions = self.extensions if "{ext}" in self.template else ("",)
        return [self.root / self.template.format(**fields, ext=ext) for ext in extensions]

    def resolve(self, video_id: str, participant_id: str | None = None) -> Path:
        """The first candidate path that exists, else the first candidate.

        A missing video is reported when it is opened, as an error naming this path.
        """
        candidates = self.candidates(video_id, participant_id)
        return next((path for path in candidates if path.exists()), candidates[0])
