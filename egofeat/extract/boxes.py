"""Hand-object boxes: union boxes of EPIC-KITCHENS-100 detections (:mod:`.detections`), and crops.

:class:`HandObjectBoxes` turns detections (or a parquet table of boxes) into one box per frame:
the union of the confident hands and the objects they interact with, under a
:class:`UnionRule` whose parameters are recorded in provenance (:meth:`HandObjectBoxes.params`).
Boxes are ``(left, top, right, bottom)`` normalized to ``[0, 1]`` of the frame's width/height.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from PIL import Image

from egofeat.extract.detections import (
    FULL_FRAME,
    BBox,
    FrameDetections,
    HandState,
    ProtoDecodeError,
    decode_detections,
    load_detection_payloads,
)
from egofeat.sources.epic_frames import epic_jpeg_fps, jpeg_frame_number

__all__ = ["HandObjectBoxes", "UnionRule", "crop"]

Fallback = Literal["full", "nearest"]


# ---------------------------------------------------------------------------------------------
# union boxes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnionRule:
    """Which hands and objects of a frame make up its union box (formats.md §2.2–2.3).

    - Hands count when ``score >= hand_threshold`` (``strict=True``: ``>``, the literal rule
      of the EPIC library's interaction matching; the default ``>=`` is the renderer's).
      ``require_contact`` also drops hands in ``NO_CONTACT``.
    - Each counted hand not in ``NO_CONTACT`` is matched to one object: among objects with
      ``score >= object_threshold``, the one whose box centre is nearest (squared distance)
      to the hand's box centre plus its ``object_offset``. Several hands may share an object;
      no candidate object means no match.
    - Matching runs in **pixel space** of a ``frame_size = (width, height)`` frame, as the
      EPIC renderer does; the default is the 456x256 frames the detector ran on. Normalized
      space would weigh x and y differently and can pick another object.
    """

    hand_threshold: float = 0.8
    object_threshold: float = 0.01
    strict: bool = False
    require_contact: bool = False
    frame_size: tuple[int, int] = (456, 256)

    def hands(self, detections: FrameDetections) -> list[int]:
        """Indices of the hands that count."""
        return [
            i
            for i, hand in enumerate(detections.hands)
            if self._confident(hand.score)
            and not (self.require_contact and hand.state == HandState.NO_CONTACT)
        ]

    def interactions(self, detections: FrameDetections) -> dict[int, int]:
        """``hand index -> object index`` (indices into the frame's full lists)."""
        candidates = [
            i for i, obj in enumerate(detections.objects) if obj.score >= self.object_threshold
        ]
        if not candidates:
            return {}
        scale = np.asarray(self.frame_size, dtype=np.float64)
        centres = np.array([detections.objects[i].bbox.center for i in candidates]) * scale
        matches = {}
        for i in self.hands(detections):
            hand = detections.hands[i]
            if hand.state == HandState.NO_CONTACT:
                continue
            target = (np.array(hand.bbox.center) + hand.object_offset) * scale
            distances = ((centres - target) ** 2).sum(axis=1)
            matches[i] = candidates[int(np.argmin(distances))]
        return matches

    def _confident(self, score: float) -> bool:
        return score > self.hand_threshold if self.strict else score >= self.hand_threshold

    def union(self, detections: FrameDetections) -> BBox | None:
        """The union box of the counted hands and their matched objects; None when empty."""
        boxes = [detections.hands[i].bbox for i in self.hands(detections)]
        boxes += [
            detections.objects[j].bbox for j in sorted(set(self.interactions(detections).values()))
        ]
        if not boxes:
            return None
        union = boxes[0]
        for box in boxes[1:]:
            union = union.union(box)
        return union.clamped()


class HandObjectBoxes:
    """One crop box per frame of one video, with a documented fallback.

    Frames are 1-based numbers at ``fps`` (EPIC: 60 fps for ``PXX_YY``, 50 for ``PXX_1YY``);
    time ``t`` maps to frame ``max(1, floor(t * fps))``. A frame's own box is its union box
    (detections) or its table row(s); with ``margin``/``square`` it is then grown by
    ``margin`` of its size per side and/or squared in ``rule.frame_size`` pixel space,
    clamped to the frame. A frame without a box gets, by ``fallback``:

    - ``"full"``: the full frame ``(0, 0, 1, 1)``;
    - ``"nearest"``: the box of the nearest frame that has one (the earlier frame on a tie),
      or the full frame when no frame of the video has one.

    The full-frame fallback is never grown or squared. Build instances with
    :meth:`from_detections`, :meth:`from_pickle`, :meth:`from_folder` or :meth:`from_parquet`.
    Detections are decoded lazily, frame by frame, and cached.
    """

    def __init__(
        self,
        video_id: str,
        n_frames: int,
        *,
        fps: float,
        payloads: Sequence[bytes] | None = None,
        table_boxes: np.ndarray | None = None,
        source: str,
        rule: UnionRule | None = None,
        fallback: Fallback = "full",
        margin: float = 0.0,
        square: bool = False,
    ) -> None:
        if fallback not in ("full", "nearest"):
            raise ValueError(f"fallback must be 'full' or 'nearest', got {fallback!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.video_id = video_id
        self.n_frames = n_frames
        self.fps = float(fps)
        self.rule = rule or UnionRule()
        self.fallback = fallback
        self.margin = margin
        self.square = square
        self._source = source
        self._payloads = payloads
        # _raw[i] is frame i+1's own box (NaN: none); _known marks frames decoded so far.
        if table_boxes is not None:
            self._raw = np.asarray(table_boxes, dtype=np.float64)
            self._known = np.ones(n_frames, dtype=bool)
        else:
            self._raw = np.full((n_frames, 4), np.nan)
            self._known = np.zeros(n_frames, dtype=bool)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_detections(
        cls,
        payloads: Sequence[bytes],
        video_id: str,
        *,
        fps: float | None = None,
        source: str = "detections",
        rule: UnionRule | None = None,
        fallback: Fallback = "full",
        margin: float = 0.0,
        square: bool = False,
    ) -> HandObjectBoxes:
        """Boxes from serialized ``Detections`` messages, element ``i`` being frame ``i + 1``."""
        return cls(
            video_id,
            len(payloads),
            fps=fps or epic_jpeg_fps(video_id),
            payloads=payloads,
            source=source,
            rule=rule,
            fallback=fallback,
            margin=margin,
            square=square,
        )

    @classmethod
    def from_pickle(
        cls, path: str | Path, video_id: str | None = None, **options: object
    ) -> HandObjectBoxes:
        """Boxes from one EPIC hand-object pickle; ``video_id`` defaults to the file stem.

        ``options`` are those of :meth:`from_detections` (``fps``, ``rule``, ``fallback``,
        ``margin``, ``square``).
        """
        path = Path(path)
        return cls.from_detections(
            load_detection_payloads(path), video_id or path.stem, source=str(path), **options
        )

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        video_id: str,
        participant_id: str | None = None,
        **options: object,
    ) -> HandObjectBoxes:
        """Boxes from ``{root}/{participant_id}/hand-objects/{video_id}.pkl`` (EPIC layout).

        ``participant_id`` defaults to the part of ``video_id`` before its first ``_``.
        """
        participant_id = participant_id or video_id.split("_")[0]
        path = Path(root) / participant_id / "hand-objects" / f"{video_id}.pkl"
        return cls.from_pickle(path, video_id, **options)

    @classmethod
    def from_parquet(
        cls,
        path: str | Path,
        video_id: str,
        *,
        fps: float | None = None,
        fallback: Fallback = "full",
        margin: float = 0.0,
        square: bool = False,
        frame_size: tuple[int, int] = (456, 256),
    ) -> HandObjectBoxes:
        """Boxes of ``video_id`` from a parquet table of final (already thresholded) boxes.

        Columns: ``video_id``, ``frame`` (1-based, at ``fps``) or ``time_sec``, and ``left,
        top, right, bottom`` normalized to ``[0, 1]``. Several rows of one frame are united;
        rows with null coordinates mark frames with no box. ``fps`` defaults to the EPIC rule.
        ``frame_size`` is the pixel aspect used by ``square``.
        """
        path = Path(path)
        fps = fps or epic_jpeg_fps(video_id)
        scan = pl.scan_parquet(path)
        if "video_id" not in scan.collect_schema().names():
            raise ValueError(f"box table {path} lacks column 'video_id'")
        table = scan.filter(pl.col("video_id") == video_id).collect()
        if table.height == 0:
            raise ValueError(f"box table {path} has no rows for video {video_id!r}")
        table = table.with_columns(_frames_of_table(table, path, fps).alias("_frame"))
        coords = table.select("left", "top", "right", "bottom").to_numpy().astype(np.float64)
        _check_table_coords(coords, table["_frame"].to_numpy(), path)
        boxes = _unite_rows(table["_frame"].to_numpy(), coords)
        return cls(
            video_id,
            boxes.shape[0],
            fps=fps,
            table_boxes=boxes,
            source=str(path),
            rule=UnionRule(frame_size=frame_size),
            fallback=fallback,
            margin=margin,
            square=square,
        )

    # -- lookup -----------------------------------------------------------------------------

    def params(self) -> dict[str, object]:
        """The parameters that determine the boxes, for provenance records."""
        params: dict[str, object] = {
            "source": "parquet" if self._payloads is None else "detections"
        }
        if self._payloads is not None:
            params |= {k: v for k, v in asdict(self.rule).items() if k != "frame_size"}
        params |= {
            "match_space": f"pixels of {self.rule.frame_size[0]}x{self.rule.frame_size[1]}",
            "fps": self.fps,
            "fallback": self.fallback,
            "margin": self.margin,
            "square": self.square,
        }
        return params

    def frame_at(self, time_sec: float) -> int:
        """The 1-based frame number shown at ``time_sec`` (the EPIC rule at ``fps``)."""
        return jpeg_frame_number(time_sec, self.fps)

    def box_at(self, frame: int | None = None, *, time_sec: float | None = None) -> BBox:
        """The crop box of a frame, given its 1-based number or a time in seconds."""
        if (frame is None) == (time_sec is None):
            raise ValueError("give exactly one of frame or time_sec")
        number = frame if frame is not None else self.frame_at(time_sec)
        return BBox(*self._box_of(number)[0])

    def boxes_at(self, times_sec: np.ndarray) -> np.ndarray:
        """Crop boxes for an array of times, shape ``(N, 4)`` float32."""
        return self._lookup(times_sec)[0]

    def detected_at(self, times_sec: np.ndarray) -> np.ndarray:
        """True where the frame at each time has its own box (no fallback used)."""
        return self._lookup(times_sec)[1]

    def _lookup(self, times_sec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        numbers = np.atleast_1d(jpeg_frame_number(np.asarray(times_sec, dtype=np.float64), self.fps))
        boxes, own = np.empty((numbers.size, 4), np.float32), np.empty(numbers.size, bool)
        for i, number in enumerate(numbers):
            boxes[i], own[i] = self._box_of(int(number))
        return boxes, own

    def _box_of(self, number: int) -> tuple[tuple[float, ...], bool]:
        if number < 1:
            raise ValueError(f"frame numbers are 1-based, got {number}")
        raw = self._raw_box(number)
        own = raw is not None
        if not own and self.fallback == "nearest":
            raw = self._nearest_box(number)
        if raw is None:
            return FULL_FRAME, False
        box = BBox(*raw)
        if self.margin:
            box = box.expanded(self.margin).clamped()
        if self.square:
            width, height = self.rule.frame_size
            box = box.scaled(width, height).squared(width, height).scaled(1 / width, 1 / height)
        return box.as_tuple(), own

    def _raw_box(self, number: int) -> np.ndarray | None:
        """Frame ``number``'s own box, or None (also for frames past the last one)."""
        if number > self.n_frames:
            return None
        index = number - 1
        if not self._known[index]:
            self._raw[index] = self._decode_union(index)
            self._known[index] = True
        box = self._raw[index]
        return None if np.isnan(box[0]) else box

    def _decode_union(self, index: int) -> tuple[float, ...]:
        try:
            detections = decode_detections(self._payloads[index])
        except ProtoDecodeError as error:
            raise ProtoDecodeError(
                f"{self._source}: frame {index + 1} of {self.video_id}: {error}"
            ) from None
        if detections.frame_number not in (0, index + 1):
            raise ValueError(
                f"{self._source}: element {index} should be frame {index + 1} but holds frame "
                f"{detections.frame_number}; is the list out of order?"
            )
        union = self.rule.union(detections)
        return (math.nan,) * 4 if union is None else union.as_tuple()

    def _nearest_box(self, number: int) -> np.ndarray | None:
        last = self.n_frames
        # Past the last frame, nothing is nearer than the last frame itself.
        for distance in range(max(1, number - last), max(number - 1, last - number) + 1):
            for candidate in (number - distance, number + distance):
                if 1 <= candidate <= last and (box := self._raw_box(candidate)) is not None:
                    return box
        return None


def _frames_of_table(table: pl.DataFrame, path: Path, fps: float) -> pl.Series:
    missing = [c for c in ("left", "top", "right", "bottom") if c not in table.columns]
    if missing:
        raise ValueError(f"box table {path} lacks column(s) {', '.join(missing)}")
    if "frame" in table.columns:
        frames = table["frame"].cast(pl.Int64)
        if frames.null_count() or (frames < 1).any():
            raise ValueError(f"box table {path}: column 'frame' must hold 1-based frame numbers")
        return frames
    if "time_sec" in table.columns:
        times = table["time_sec"].cast(pl.Float64).to_numpy()
        if not np.isfinite(times).all() or (times < 0).any():
            raise ValueError(f"box table {path}: column 'time_sec' must be finite and >= 0")
        return pl.Series(np.atleast_1d(jpeg_frame_number(times, fps)))
    raise ValueError(f"box table {path} needs a 'frame' or a 'time_sec' column")


def _check_table_coords(coords: np.ndarray, frames: np.ndarray, path: Path) -> None:
    present = ~np.isnan(coords).any(axis=1)
    bad = present & (
        (coords < 0).any(axis=1)
        | (coords > 1).any(axis=1)
        | (coords[:, 0] > coords[:, 2])
        | (coords[:, 1] > coords[:, 3])
    )
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"box table {path}: the box of frame {frames[row]} ({coords[row].tolist()}) is not "
            "normalized (left, top, right, bottom) with 0 <= left <= right <= 1 and "
            "0 <= top <= bottom <= 1"
        )


def _unite_rows(frames: np.ndarray, coords: np.ndarray) -> np.ndarray:
    boxes = np.full((int(frames.max()), 4), np.nan)
    for frame, box in zip(frames, coords, strict=True):
        if np.isnan(box).any():
            continue
        current = boxes[frame - 1]
        if np.isnan(current[0]):
            boxes[frame - 1] = box
        else:
            boxes[frame - 1] = [
                *np.minimum(current[:2], box[:2]),
                *np.maximum(current[2:], box[2:]),
            ]
    return boxes


# ---------------------------------------------------------------------------------------------
# cropping
# ---------------------------------------------------------------------------------------------


def crop(
    frame: np.ndarray,
    box: BBox | Sequence[float],
    *,
    margin: float = 0.0,
    square: bool = True,
    size: int | None = 224,
) -> np.ndarray:
    """Crop ``frame`` (``(H, W, 3)`` uint8) to a normalized box and resize to ``size``.

    The box is grown by ``margin`` of its size per side, then (``square=True``) made the
    smallest on-screen square around it, shifted to lie inside the image and capped at the
    image's short side; the result is clamped to the image (at least one pixel) and resized
    to ``size x size`` (a non-square crop is stretched). ``size=None`` returns it unresized.
    """
    if frame.ndim != 3:
        raise ValueError(f"expected an (H, W, C) frame, got shape {frame.shape}")
    height, width = frame.shape[:2]
    box = box if isinstance(box, BBox) else BBox(*(float(v) for v in box))
    pixels = box.expanded(margin).scaled(width, height) if margin else box.scaled(width, height)
    pixels = pixels.squared(width, height) if square else pixels.clamped(width, height)
    left = min(max(int(math.floor(pixels.left)), 0), width - 1)
    top = min(max(int(math.floor(pixels.top)), 0), height - 1)
    right = max(min(int(math.ceil(pixels.right)), width), left + 1)
    bottom = max(min(int(math.ceil(pixels.bottom)), height), top + 1)
    patch = frame[top:bottom, left:right]
    if size is None:
        return np.ascontiguousarray(patch)
    resized = Image.fromarray(np.ascontiguousarray(patch)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized)
