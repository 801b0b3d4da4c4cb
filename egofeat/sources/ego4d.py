"""Ego4D Forecasting Hands & Objects -> the canonical segment table.

Two annotation formats:

- **LTA** (``fho_lta_{train,val}.json``, and the ``*_w_narrations`` variant X-MIC reads, with a
  ``narration_text`` per action): :func:`load_ego4d_lta`, one segment per entry of ``clips``
  (every one, as X-MIC trains and evaluates on them all). Video = the 5-minute clip
  (``clip_uid``, as X-MIC decodes ``clips/<clip_uid>.mp4``), times = ``action_clip_*_sec``;
  ``segment_id`` is ``"{clip_uid}_{action_idx}"`` (X-MIC's feature key without its split).
- **fho_main.json**: :func:`load_ego4d_fho`, one segment per narrated action that passes the
  action filter: not rejected, a valid action and, by default, narrated as the camera wearer's
  own action (text matching ``^#C\\s+C``, case-insensitive), as EILEV filters. Its noun is the
  ``structured_noun`` of the first ``object_of_change`` box (with a noun) on the action's
  ``pnr_frame`` (the file has no noun field on the action itself); ``segment_id`` is
  ``"{video_uid}_{action uid}"``, times are on the canonical full video.

:func:`load_ego4d` reads either (by the file's top-level key). Labels: verb and noun are the
taxonomy labels (null, ``"None"`` and ``"[other]"`` mean none); class ids are positions in the
Ego4D vocabularies given (e.g. :func:`egofeat.sources.ego4d_vocabulary`), null when no
vocabulary is given or the label is not in it. The time window of a segment is a choice
(:data:`WINDOWS`): the action itself, X-MIC's window, or EILEV's 8 s.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from egofeat.sources.epic_frames import frame_start_times
from egofeat.sources.errors import SegmentTableError
from egofeat.sources.schema import validate_segments
from egofeat.sources.vocab import Vocabulary

DATASET = "ego4d"
_CAMERA_WEARER = re.compile(r"^#C\s+C", re.IGNORECASE)
_NO_LABEL = (None, "", "None", "[other]")


@dataclass(frozen=True)
class Window:
    """A fixed-length window of ``length`` seconds centred on an anchor of each action.

    ``anchor`` is ``"narration"`` (``narration_timestamp_sec``; the action's centre when the
    action has none) or ``"action_centre"`` (the centre of ``[start_sec, end_sec + end_pad]``).
    A window that would leave ``[0, video duration]`` is shifted back inside it, keeping its
    length; a video shorter than ``length`` gives the whole video.
    """

    length: float
    anchor: Literal["narration", "action_centre"]
    end_pad: float = 0.0

    def __post_init__(self) -> None:
        if not self.length > 0:
            raise ValueError(f"window length must be positive, got {self.length}")
        if self.anchor not in ("narration", "action_centre"):
            raise ValueError(f"anchor must be 'narration' or 'action_centre', not {self.anchor!r}")

    def place(
        self, start: float, end: float, narration: float | None, duration: float | None
    ) -> tuple[float, float]:
        """(start, end) of the window for one action."""
        if self.anchor == "narration" and narration is not None:
            centre = narration
        else:
            centre = (start + end + self.end_pad) / 2
        low = max(0.0, centre - self.length / 2)
        high = low + self.length
        if duration is not None and high > duration:
            high = duration
            low = max(0.0, duration - self.length)
        return low, high


@dataclass(frozen=True)
class CentralFrames:
    """X-MIC's Ego4D window, in frames as its loader counts them.

    X-MIC decodes each action over ``[start, end + end_pad)`` at the clips' ``fps`` (``n``
    frames, about 267 for the usual 8 s action) and keeps the central
    ``seconds * (n // assumed_sec)`` of them, taking ``n // assumed_sec`` as the frames per second
    (``datasets/ego4d_helper.py``, ``start_end_clip``, ``EGO4D_CLIPS_LENGTH=4``): frames
    ``[n//2 - 2 * (n//8), n//2 + 2 * (n//8))``, about 4.4 s. The decode stops at the clip's end
    (``duration``). The window's times are the boundaries of those frames on the clip's frame
    grid (frame ``k`` starts at ``k / fps``); decoders that select frames by presentation time
    may differ by a frame at either end.
    """

    seconds: int = 4
    assumed_sec: int = 8
    end_pad: float = 0.9
    fps: float = 30.0

    def frames(self, start: float, end: float, duration: float | None) -> tuple[int, int]:
        """First and one-past-last frame (on the clip's grid) of the window of one action."""
        stop = end + self.end_pad if duration is None else min(end + self.end_pad, duration)
        # pts >= start and pts < stop, robust to times a hair off the grid
        first = math.ceil(start * self.fps - 1e-6)
        count = max(0, math.ceil(stop * self.fps - 1e-6) - first)
        per_second = count // self.assumed_sec
        middle = count // 2
        half = self.seconds // 2
        low = max(0, middle - per_second * half)
        high = min(middle + per_second * half, count)
        if high <= low:  # a decode shorter than `assumed_sec` frames: its middle frame
            low, high = middle, min(middle + 1, max(count, 1))
        return first + low, first + high

    def place(
        self, start: float, end: float, narration: float | None, duration: float | None
    ) -> tuple[float, float]:
        """(start, end) of the window for one action: the start times of its first frame and
        of the frame after its last."""
        del narration  # X-MIC's window ignores it
        low, high = self.frames(start, end, duration)
        first, after = frame_start_times([low, high], self.fps)
        return float(first), float(after)


# egofeat's reading of X-MIC's window: the central 4.0 s of [start, end + 0.9 s], exactly (the
# original's frame arithmetic, CentralFrames, makes it ~4.4 s).
XMIC_WINDOW = Window(length=4.0, anchor="action_centre", end_pad=0.9)
# X-MIC's window exactly as its loader cuts it (about 4.4 s of a 30 fps clip).
XMIC_ORIGINAL_WINDOW = CentralFrames()
# EILEV: 8 s centred on the narration time, start clamped at 0, shifted to [dur - 8, dur]
# at the video end.
EILEV_WINDOW = Window(length=8.0, anchor="narration")
WINDOWS: dict[str, Window | CentralFrames | None] = {
    "action": None, "xmic": XMIC_WINDOW, "xmic-original": XMIC_ORIGINAL_WINDOW, "eilev": EILEV_WINDOW,
}
WindowChoice = Literal["action", "xmic", "xmic-original", "eilev"]


def load_ego4d(
    path: str | Path,
    *,
    split: str | None = None,
    window: WindowChoice | Window | CentralFrames = "action",
    verb_vocab: Vocabulary | None = None,
    noun_vocab: Vocabulary | None = None,
) -> pl.DataFrame:
    """An Ego4D FHO annotation file as a segment table: an LTA file (top-level ``clips``,
    :func:`load_ego4d_lta`) or ``fho_main.json`` (top-level ``videos``, :func:`load_ego4d_fho`,
    which needs ``split``)."""
    path = Path(path)
    document = _read_json(path)
    if "clips" in document:
        return _lta_table(document, path, split, window, verb_vocab, noun_vocab, "clip")
    if split is None:
        raise SegmentTableError("fho_main.json holds every split's actions", file=path,
                                fix="pass --split (the split its videos belong to)")
    return load_ego4d_fho(path, split=split, window=window, verb_vocab=verb_vocab,
                          noun_vocab=noun_vocab, document=document)


def load_ego4d_lta(
    path: str | Path,
    *,
    split: str | None = None,
    window: WindowChoice | Window | CentralFrames = "action",
    verb_vocab: Vocabulary | None = None,
    noun_vocab: Vocabulary | None = None,
    timeline: Literal["clip", "video"] = "clip",
) -> pl.DataFrame:
    """Load an Ego4D LTA file (``fho_lta_{train,val,test_unannotated}.json``, or a
    ``*_w_narrations`` variant) as a canonical segment table.

    Args:
        path: the LTA file (``{"clips": [{clip_uid, video_uid, action_idx,
            action_clip_start_sec, action_clip_end_sec, clip_parent_start_sec,
            clip_parent_end_sec, verb, noun, verb_label, noun_label, ...}, ...]}``).
        split: the split to record (default: the file's ``split`` field, else its name:
            ``fho_lta_val...json`` is ``val``).
        window: ``"action"`` (the action's own times), ``"xmic-original"`` (X-MIC's central
            frames, :data:`XMIC_ORIGINAL_WINDOW`), ``"xmic"`` (egofeat's exact 4 s,
            :data:`XMIC_WINDOW`), ``"eilev"`` (8 s around the action, the file having no
            narration time) or any :class:`Window` / :class:`CentralFrames`; windows stay
            inside the clip.
        verb_vocab, noun_vocab: Ego4D class vocabularies for ``verb_class``/``noun_class``.
        timeline: ``"clip"`` (video = ``clip_uid``, times in the clip, as X-MIC decodes) or
            ``"video"`` (video = ``video_uid``, times on the full video).

    Extra columns: ``clip_uid``, ``video_uid``, ``action_idx``, ``action_start_sec``,
    ``action_end_sec`` (the action's own times on the chosen timeline, whatever the window).
    """
    path = Path(path)
    return _lta_table(_read_json(path), path, split, window, verb_vocab, noun_vocab, timeline)


def load_ego4d_fho(
    path: str | Path,
    *,
    split: str,
    window: WindowChoice | Window | CentralFrames = "action",
    verb_vocab: Vocabulary | None = None,
    noun_vocab: Vocabulary | None = None,
    video_uids: Collection[str] | None = None,
    camera_wearer_only: bool = True,
    labelled_only: bool = False,
    document: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Load the narrated actions of ``fho_main.json`` as a canonical segment table.

    Args:
        path: the FHO master file.
        split: the split to record (the file itself has none; Ego4D splits are by video).
        window: the segment times: ``"action"`` (the action's own ``start_sec``/``end_sec``),
            ``"xmic"`` (:data:`XMIC_WINDOW`, the central 4 s X-MIC trains on), ``"xmic-original"``
            (:data:`XMIC_ORIGINAL_WINDOW`, X-MIC's own frame arithmetic, ~4.4 s), ``"eilev"``
            (:data:`EILEV_WINDOW`, 8 s around the narration) or any :class:`Window` /
            :class:`CentralFrames`.
        verb_vocab, noun_vocab: Ego4D class vocabularies for ``verb_class``/``noun_class``.
        video_uids: keep only these videos (e.g. the videos of one split).
        camera_wearer_only: keep only ``#C C ...`` narrations (the camera wearer acting).
        labelled_only: keep only actions with both a verb and a noun (and, when vocabularies
            are given, both in them), as training a classifier needs.
        document: the file's parsed JSON, when the caller has read it already.

    Extra columns: ``action_uid``, ``clip_uid``, ``narration_sec``, ``action_start_sec``,
    ``action_end_sec`` (the action's own times, whatever the window).
    """
    path = Path(path)
    placement = _placement(window)
    document = _read_json(path) if document is None else document
    if not isinstance(document.get("videos"), list):
        raise SegmentTableError(
            "no top-level 'videos' list", file=path, column="videos", fix="use fho_main.json"
        )
    wanted = None if video_uids is None else set(video_uids)
    rows = []
    for video_uid, duration, interval, action, where in _actions(document, path):
        if wanted is not None and video_uid not in wanted:
            continue
        if not _keep(action, camera_wearer_only):
            continue
        row = _segment_row(video_uid, interval, action, path, where)
        row["verb_class"] = verb_vocab.get(row["verb"]) if verb_vocab is not None else None
        row["noun_class"] = noun_vocab.get(row["noun"]) if noun_vocab is not None else None
        if labelled_only and not _is_labelled(row, verb_vocab, noun_vocab):
            continue
        if placement is not None:
            row["start_sec"], row["end_sec"] = placement.place(
                row["action_start_sec"], row["action_end_sec"], row["narration_sec"], duration
            )
        rows.append(row)
    return validate_segments(
        _table(rows, split), source=path, verb_vocab=verb_vocab, noun_vocab=noun_vocab
    )


def _placement(window: str | Window | CentralFrames) -> Window | CentralFrames | None:
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)} or a Window, not {window!r}")
        return WINDOWS[window]
    return window


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open() as file:
            document = json.load(file)
    except json.JSONDecodeError as error:
        raise SegmentTableError(
            f"not valid JSON ({error})", file=path,
            fix="use the Ego4D annotation file as released (fho_lta_*.json or fho_main.json)"
        ) from error
    if not isinstance(document, dict) or not (
        isinstance(document.get("videos"), list) or isinstance(document.get("clips"), list)
    ):
        raise SegmentTableError(
            "no top-level 'clips' (LTA) or 'videos' (fho_main) list", file=path, column="clips",
            fix="use fho_lta_{train,val}.json or fho_main.json",
        )
    return document


def _lta_table(
    document: dict[str, Any],
    path: Path,
    split: str | None,
    window: str | Window | CentralFrames,
    verb_vocab: Vocabulary | None,
    noun_vocab: Vocabulary | None,
    timeline: str,
) -> pl.DataFrame:
    if timeline not in ("clip", "video"):
        raise ValueError(f"timeline must be 'clip' or 'video', not {timeline!r}")
    placement = _placement(window)
    split = split or document.get("split") or _split_from_name(path)
    if not split:
        raise SegmentTableError("the LTA file names no split", file=path,
                                fix="pass --split (train, val, ...)")
    rows = []
    for i, clip in enumerate(document["clips"]):
        where = f"clips[{i}]"
        clip_uid = _field(clip, "clip_uid", path, where)
        action_idx = _field(clip, "action_idx", path, where)
        start = _seconds(clip, "action_clip_start_sec", path, where)
        end = _seconds(clip, "action_clip_end_sec", path, where)
        parent_start = clip.get("clip_parent_start_sec")
        parent_end = clip.get("clip_parent_end_sec")
        duration = (parent_end - parent_start
                    if isinstance(parent_start, (int, float)) and isinstance(parent_end, (int, float))
                    else None)
        window_start, window_end = start, end
        if placement is not None:
            window_start, window_end = placement.place(start, end, None, duration)
        offset = 0.0
        if timeline == "video":
            if parent_start is None:
                raise SegmentTableError(f"{where} has no 'clip_parent_start_sec'", file=path,
                                        column="clip_parent_start_sec",
                                        fix="use timeline='clip', or the LTA file as released")
            offset = float(parent_start)
        verb, noun = clip.get("verb"), clip.get("noun")
        verb = None if verb in _NO_LABEL else verb
        noun = None if noun in _NO_LABEL else noun
        rows.append({
            "segment_id": f"{clip_uid}_{action_idx}",
            "video_id": clip_uid if timeline == "clip" else _field(clip, "video_uid", path, where),
            "start_sec": window_start + offset,
            "end_sec": window_end + offset,
            "narration": clip.get("narration_text") or None,
            "verb": verb,
            "verb_class": verb_vocab.get(verb) if verb_vocab is not None else None,
            "noun": noun,
            "noun_class": noun_vocab.get(noun) if noun_vocab is not None else None,
            "clip_uid": clip_uid,
            "video_uid": clip.get("video_uid"),
            "action_idx": int(action_idx),
            "action_start_sec": start + offset,
            "action_end_sec": end + offset,
        })
    schema = {
        "segment_id": pl.Utf8, "video_id": pl.Utf8, "start_sec": pl.Float64, "end_sec": pl.Float64,
        "narration": pl.Utf8, "verb": pl.Utf8, "verb_class": pl.Int64, "noun": pl.Utf8,
        "noun_class": pl.Int64, "clip_uid": pl.Utf8, "video_uid": pl.Utf8, "action_idx": pl.Int64,
        "action_start_sec": pl.Float64, "action_end_sec": pl.Float64,
    }
    return validate_segments(
        _with_canonical(pl.DataFrame(rows, schema=schema), split), source=path,
        verb_vocab=verb_vocab, noun_vocab=noun_vocab,
    )


def _split_from_name(path: Path) -> str | None:
    match = re.match(r"fho_lta_([a-z_]+?)(_w_narrations)?\.json$", path.name)
    return match.group(1) if match else None


def _actions(
    document: dict[str, Any], path: Path
) -> Iterator[tuple[str, float | None, dict, dict, str]]:
    """(video_uid, duration, interval, action, JSON location) of every narrated action."""
    for v, video in enumerate(document["videos"]):
        video_uid = _field(video, "video_uid", path, f"videos[{v}]")
        duration = (video.get("video_metadata") or {}).get("duration_sec")
        for i, interval in enumerate(video.get("annotated_intervals") or ()):
            for a, action in enumerate(interval.get("narrated_actions") or ()):
                where = f"videos[{v}].annotated_intervals[{i}].narrated_actions[{a}]"
                yield video_uid, duration, interval, action, where


def _field(record: dict, key: str, path: Path, where: str) -> Any:
    value = record.get(key)
    if value is None:
        raise SegmentTableError(
            f"{where} has no {key!r}",
            file=path,
            column=key,
            fix="every video needs a video_uid and every action a uid and start/end times",
        )
    return value


def _seconds(record: dict, key: str, path: Path, where: str) -> float:
    value = _field(record, key, path, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SegmentTableError(
            f"{where}.{key} is {value!r}, not a number of seconds",
            file=path,
            column=key,
            fix="times in fho_main.json are numbers of seconds",
        )
    return float(value)


def _keep(action: dict, camera_wearer_only: bool) -> bool:
    if action.get("is_rejected") or not action.get("is_valid_action"):
        return False
    if not camera_wearer_only:
        return True
    return _CAMERA_WEARER.match(action.get("narration_text") or "") is not None


def _segment_row(video_uid: str, interval: dict, action: dict, path: Path, where: str) -> dict:
    uid = _field(action, "uid", path, where)
    noun = _structured_noun(action)
    verb = action.get("structured_verb")
    start = _seconds(action, "start_sec", path, where)
    end = _seconds(action, "end_sec", path, where)
    narration = None
    if action.get("narration_timestamp_sec") is not None:
        narration = _seconds(action, "narration_timestamp_sec", path, where)
    return {
        "segment_id": f"{video_uid}_{uid}",
        "video_id": video_uid,
        "start_sec": start,
        "end_sec": end,
        "narration": action.get("narration_text"),
        "verb": None if verb in _NO_LABEL else verb,
        "noun": noun,
        "action_uid": uid,
        "clip_uid": interval.get("clip_uid"),
        "narration_sec": narration,
        "action_start_sec": start,
        "action_end_sec": end,
    }


def _structured_noun(action: dict) -> str | None:
    for frame in action.get("frames") or ():
        if frame.get("frame_type") != "pnr_frame":
            continue
        for box in frame.get("boxes") or ():
            noun = box.get("structured_noun")
            if box.get("object_type") == "object_of_change" and noun not in _NO_LABEL:
                return noun
    return None


def _is_labelled(row: dict, verb_vocab: Vocabulary | None, noun_vocab: Vocabulary | None) -> bool:
    if row["verb"] is None or row["noun"] is None:
        return False
    if verb_vocab is not None and row["verb_class"] is None:
        return False
    return noun_vocab is None or row["noun_class"] is not None


def _table(rows: list[dict], split: str) -> pl.DataFrame:
    schema = {
        "segment_id": pl.Utf8,
        "video_id": pl.Utf8,
        "start_sec": pl.Float64,
        "end_sec": pl.Float64,
        "narration": pl.Utf8,
        "verb": pl.Utf8,
        "verb_class": pl.Int64,
        "noun": pl.Utf8,
        "noun_class": pl.Int64,
        "action_uid": pl.Utf8,
        "clip_uid": pl.Utf8,
        "narration_sec": pl.Float64,
        "action_start_sec": pl.Float64,
        "action_end_sec": pl.Float64,
    }
    return _with_canonical(pl.DataFrame(rows, schema=schema), split)


def _with_canonical(table: pl.DataFrame, split: str) -> pl.DataFrame:
    """The dataset, split and participant columns, and ``all_noun_classes`` from the noun."""
    return table.with_columns(
        pl.lit(DATASET).alias("dataset"),
        pl.lit(split).alias("split"),
        pl.lit(None, dtype=pl.Utf8).alias("participant_id"),
        pl.when(pl.col("noun_class").is_not_null())
        .then(pl.concat_list("noun_class"))
        .alias("all_noun_classes"),
    )
