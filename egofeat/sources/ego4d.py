"""Ego4D Forecasting Hands & Objects (``fho_main.json``) -> the canonical segment table.

One segment per narrated action that passes the action filter: not rejected, a valid action
and, by default, narrated as the camera wearer's own action (text matching ``^#C\\s+C``,
case-insensitive), as EILEV filters. Labels follow the FHO schema:

- verb: the action's ``structured_verb``; null, ``"None"`` and ``"[other]"`` mean no verb.
- noun: the ``structured_noun`` of the first ``object_of_change`` box (with a noun) on the
  action's ``pnr_frame`` (the FHO file has no noun field on the action itself).
- class ids: positions in the Ego4D vocabularies given (e.g. from
  :func:`egofeat.sources.ego4d_vocabulary`); null when no vocabulary is given or the label
  is not in it.

``segment_id`` is ``"{video_uid}_{action uid}"``: stable across files and splits, since the
FHO action ``uid`` is unique. Times are on the canonical full video, in seconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

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


# X-MIC decodes each FHO action over [start, end + 0.9 s] and keeps its central 4 s
# (EGO4D_CLIPS_LENGTH=4). Its frame arithmetic (fps taken as n_frames // 8 of the ~8.9 s
# decode) makes that ~4.4 s in practice; this keeps the intended 4 s.
XMIC_WINDOW = Window(length=4.0, anchor="action_centre", end_pad=0.9)
# EILEV: 8 s centred on the narration time, start clamped at 0, shifted to [dur - 8, dur]
# at the video end.
EILEV_WINDOW = Window(length=8.0, anchor="narration")
WINDOWS: dict[str, Window | None] = {"action": None, "xmic": XMIC_WINDOW, "eilev": EILEV_WINDOW}


def load_ego4d_fho(
    path: str | Path,
    *,
    split: str,
    window: Literal["action", "xmic", "eilev"] | Window = "action",
    verb_vocab: Vocabulary | None = None,
    noun_vocab: Vocabulary | None = None,
    video_uids: Collection[str] | None = None,
    camera_wearer_only: bool = True,
    labelled_only: bool = False,
) -> pl.DataFrame:
    """Load the narrated actions of ``fho_main.json`` as a canonical segment table.

    Args:
        path: the FHO master file.
        split: the split to record (the file itself has none; Ego4D splits are by video).
        window: the segment times: ``"action"`` (the action's own ``start_sec``/``end_sec``),
            ``"xmic"`` (:data:`XMIC_WINDOW`, the central 4 s X-MIC trains on), ``"eilev"``
            (:data:`EILEV_WINDOW`, 8 s around the narration) or any :class:`Window`.
        verb_vocab, noun_vocab: Ego4D class vocabularies for ``verb_class``/``noun_class``.
        video_uids: keep only these videos (e.g. the videos of one split).
        camera_wearer_only: keep only ``#C C ...`` narrations (the camera wearer acting).
        labelled_only: keep only actions with both a verb and a noun (and, when vocabularies
            are given, both in them), as training a classifier needs.

    Extra columns: ``action_uid``, ``clip_uid``, ``narration_sec``, ``action_start_sec``,
    ``action_end_sec`` (the action's own times, whatever the window).
    """
    path = Path(path)
    if isinstance(window, str) and window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)} or a Window, not {window!r}")
    placement = WINDOWS[window] if isinstance(window, str) else window
    document = _read_json(path)
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open() as file:
            document = json.load(file)
    except json.JSONDecodeError as error:
        raise SegmentTableError(
            f"not valid JSON ({error})", file=path, fix="use the fho_main.json as released"
        ) from error
    if not isinstance(document, dict) or not isinstance(document.get("videos"), list):
        raise SegmentTableError(
            "no top-level 'videos' list", file=path, column="videos", fix="use fho_main.json"
        )
    return document


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
    table = pl.DataFrame(rows, schema=schema)
    return table.with_columns(
        pl.lit(DATASET).alias("dataset"),
        pl.lit(split).alias("split"),
        pl.lit(None, dtype=pl.Utf8).alias("participant_id"),
        pl.when(pl.col("noun_class").is_not_null())
        .then(pl.concat_list("noun_class"))
        .alias("all_noun_classes"),
    )
