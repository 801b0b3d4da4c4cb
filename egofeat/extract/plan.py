"""Frame plans: which frame times each segment needs, grouped and deduplicated per video.

A :class:`FrameSampler` turns one segment ``[start_sec, end_sec]`` into frame times;
:func:`plan_videos` applies it to a whole segment table and groups the times by video, so that
a frame shared by overlapping segments is decoded once and encoded once per stream.

All times are seconds on the video's own clock (presentation time relative to the first
frame). The EPIC-KITCHENS rule that maps a time to a 1-based RGB-JPEG frame number (60 fps for
``PXX_YY``, 50 fps for ``PXX_1YY``) is :mod:`egofeat.sources.epic_frames`, shared by the
JPEG-folder reader and the hand-object boxes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import polars as pl

__all__ = [
    "ExtractionPlan",
    "FrameSampler",
    "SamplerKind",
    "VideoPlan",
    "plan_videos",
]

SamplerKind = Literal["uniform", "random", "dense", "native", "oversampled", "clip"]
FrameRate = float | Mapping[str, float] | Callable[[str], float]

@dataclass(frozen=True)
class FrameSampler:
    """How one segment becomes frame times. Build it with the named constructors.

    Kinds (``T = num_frames``, bins are ``T`` equal parts of ``[start, end]``):

    - ``uniform``: the centre of each bin (TSN evaluation sampling). Shape ``(T,)``.
    - ``random``: one uniform random time inside each bin, reproducible per
      ``(seed, segment_id)`` in any process (TSN training sampling). Shape ``(T,)``.
    - ``dense``: every ``1 / fps`` seconds on the video-wide grid ``(k + 0.5) / fps`` inside
      ``[start, end)``, so overlapping segments share frames; a segment shorter than one step
      gets the grid time of the cell holding its midpoint. Shape ``(n,)``, ``n`` varies.
    - ``native``: every frame of the video's own frame grid (rate ``fps``, or the rate the plan
      gives each video) that shows a time in ``[start, end)``: frames ``floor(start * rate)`` to
      ``floor(end * rate) - 1``, at their centres ``(k + 0.5) / rate`` (EPIC: exactly the JPEGs
      ``start_frame .. stop_frame - 1``, as X-MIC extracts them, but for a segment starting in
      a video's first frame, whose frame 0 EPIC's numbering also calls JPEG 1); at least the
      frame showing ``start``. Shape ``(n,)``, ``n`` varies: what native-frame temporal jitter reads.
    - ``oversampled``: each bin split into ``per_bin`` sub-bins, their centres. Shape
      ``(T, per_bin)``. A trainer picks one column per bin at random each epoch (X-MIC style
      temporal jitter) and :attr:`center_index` at evaluation: with an odd ``per_bin`` that
      column is exactly the bin centre, i.e. the ``uniform`` sampling.
    - ``clip``: ``T`` clips of ``clip_len`` frames, centred on the bin centres, frames
      ``clip_stride`` seconds apart (or ``clip_stride`` native frames at ``fps``). Without a
      stride a clip spans its bin: frames at the centres of ``clip_len`` sub-bins, which for
      ``T = 1`` is LaViLa's evaluation sampling. Times are clamped into ``[start, end]``.
      Shape ``(T, clip_len)``.
    """

    kind: SamplerKind = "uniform"
    num_frames: int = 8
    fps: float | None = None
    per_bin: int = 1
    clip_len: int = 1
    clip_stride: float | None = None
    stride_unit: Literal["sec", "frame"] = "sec"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "random", "dense", "native", "oversampled", "clip"):
            raise ValueError(
                f"unknown sampler kind {self.kind!r}; expected uniform, random, dense, native, "
                "oversampled or clip"
            )
        if self.kind == "native" and self.fps is not None and not self.fps > 0:
            raise ValueError(f"native sampler needs a positive frame rate, got {self.fps}")
        if self.kind not in ("dense", "native") and self.num_frames < 1:
            raise ValueError(f"{self.kind} sampler needs num_frames >= 1, got {self.num_frames}")
        if self.kind == "dense" and not (self.fps and self.fps > 0):
            raise ValueError(f"dense sampler needs a positive fps, got {self.fps}")
        if self.per_bin < 1 or self.clip_len < 1:
            raise ValueError(
                f"per_bin and clip_len must be >= 1, got {self.per_bin} and {self.clip_len}"
            )
        if self.clip_stride is not None and self.clip_stride <= 0:
            raise ValueError(f"clip_stride must be positive, got {self.clip_stride}")
        if self.stride_unit == "frame" and self.clip_stride is not None and not self.fps:
            raise ValueError("a clip stride in frames needs the native frame rate (fps=...)")

    @classmethod
    def uniform(cls, num_frames: int = 8) -> FrameSampler:
        """Bin centres of ``num_frames`` equal bins (TSN evaluation)."""
        return cls("uniform", num_frames=num_frames)

    @classmethod
    def random(cls, num_frames: int = 8, seed: int = 0) -> FrameSampler:
        """One seeded random time per bin (TSN training)."""
        return cls("random", num_frames=num_frames, seed=seed)

    @classmethod
    def dense(cls, fps: float) -> FrameSampler:
        """Every ``1 / fps`` seconds on the video's global time grid."""
        return cls("dense", num_frames=0, fps=fps)

    @classmethod
    def native(cls, fps: float | None = None) -> FrameSampler:
        """Every frame of ``[start, end)`` at the videos' own rate (``fps``, or per video from
        :func:`plan_videos`'s ``fps``)."""
        return cls("native", num_frames=0, fps=fps)

    @classmethod
    def oversampled(cls, num_frames: int = 8, per_bin: int = 5) -> FrameSampler:
        """``per_bin`` sub-bin centres in each of ``num_frames`` bins (temporal jitter)."""
        return cls("oversampled", num_frames=num_frames, per_bin=per_bin)

    @classmethod
    def clip(
        cls,
        num_clips: int = 1,
        clip_len: int = 16,
        clip_stride: float | None = None,
        *,
        stride_unit: Literal["sec", "frame"] = "sec",
        fps: float | None = None,
    ) -> FrameSampler:
        """``num_clips`` windows of ``clip_len`` frames for a video encoder."""
        return cls(
            "clip",
            num_frames=num_clips,
            clip_len=clip_len,
            clip_stride=clip_stride,
            stride_unit=stride_unit,
            fps=fps,
        )

    @property
    def center_index(self) -> int:
        """Column of an ``oversampled`` time array nearest each bin centre (exact for odd K)."""
        return self.per_bin // 2

    def to_dict(self) -> dict[str, object]:
        """The fields that define this sampler, for provenance records."""
        relevant = {
            "uniform": ("num_frames",),
            "random": ("num_frames", "seed"),
            "dense": ("fps",),
            "native": ("fps",),
            "oversampled": ("num_frames", "per_bin"),
            "clip": ("num_frames", "clip_len", "clip_stride", "stride_unit", "fps"),
        }[self.kind]
        values = asdict(self)
        return {"kind": self.kind} | {name: values[name] for name in relevant}

    def times(self, start_sec: float, end_sec: float, segment_id: str = "",
              rate: float | None = None) -> np.ndarray:
        """Frame times (seconds, float64) for the segment ``[start_sec, end_sec]``.

        ``segment_id`` seeds the ``random`` kind and is ignored by the others; ``rate`` is the
        video's frame rate, which the ``native`` kind needs (its own ``fps`` when set wins).
        """
        if not (math.isfinite(start_sec) and math.isfinite(end_sec)) or end_sec < start_sec:
            raise ValueError(
                f"segment {segment_id!r}: need finite start_sec <= end_sec, got "
                f"[{start_sec}, {end_sec}]"
            )
        if self.kind == "dense":
            return self._dense(start_sec, end_sec)
        if self.kind == "native":
            return self._native(start_sec, end_sec, self.fps or rate, segment_id)
        width = (end_sec - start_sec) / self.num_frames
        bin_starts = start_sec + width * np.arange(self.num_frames)
        if self.kind == "uniform":
            return bin_starts + width / 2
        if self.kind == "random":
            rng = np.random.default_rng([self.seed, _stable_hash(segment_id)])
            return bin_starts + width * rng.random(self.num_frames)
        if self.kind == "oversampled":
            offsets = (np.arange(self.per_bin) + 0.5) / self.per_bin
            return bin_starts[:, None] + width * offsets[None, :]
        return self._clips(start_sec, end_sec, bin_starts + width / 2, width)

    def _dense(self, start_sec: float, end_sec: float) -> np.ndarray:
        # Grid times (k + 0.5) / fps inside [start, end): centres of the video-wide cells
        # [k / fps, (k + 1) / fps), so neighbouring segments share them and none sits on a
        # frame boundary.
        first = math.ceil(start_sec * self.fps - 0.5)
        last = math.ceil(end_sec * self.fps - 0.5) - 1
        if last < first:
            first = last = math.floor((start_sec + end_sec) / 2 * self.fps)
        return (np.arange(first, last + 1, dtype=np.float64) + 0.5) / self.fps

    @staticmethod
    def _native(start_sec: float, end_sec: float, rate: float | None, segment_id: str) -> np.ndarray:
        if not rate:
            raise ValueError(f"segment {segment_id!r}: native sampling needs the video's frame "
                             "rate (--fps, or a per-video rate)")
        # float64 floors, as EPIC's start_frame / stop_frame are computed from the timestamps
        first = math.floor(start_sec * rate)
        stop = max(math.floor(end_sec * rate), first + 1)
        return (np.arange(first, stop, dtype=np.float64) + 0.5) / rate

    def _clips(
        self, start_sec: float, end_sec: float, centres: np.ndarray, bin_width: float
    ) -> np.ndarray:
        if self.clip_stride is None:
            stride = bin_width / self.clip_len
        elif self.stride_unit == "frame":
            stride = self.clip_stride / self.fps
        else:
            stride = self.clip_stride
        offsets = (np.arange(self.clip_len) - (self.clip_len - 1) / 2) * stride
        return np.clip(centres[:, None] + offsets[None, :], start_sec, end_sec)


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; workers must draw the same times.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class VideoPlan:
    """The frames one video must provide, and which of them each of its segments uses.

    ``times`` are the unique sorted frame times; ``segment_indices[i]`` indexes ``times`` with
    the shape of the sampler's output for segment ``segment_ids[i]``.
    """

    video_id: str
    participant_id: str | None
    times: np.ndarray
    segment_ids: tuple[str, ...]
    segment_indices: tuple[np.ndarray, ...]
    frame_rate: float | None = None

    @property
    def n_requested_frames(self) -> int:
        return sum(index.size for index in self.segment_indices)

    @property
    def n_unique_frames(self) -> int:
        return int(self.times.size)

    def segment_times(self, position: int) -> np.ndarray:
        """Frame times of the segment at ``position`` (after deduplication/snapping)."""
        return self.times[self.segment_indices[position]]


@dataclass(frozen=True)
class ExtractionPlan:
    """Per-video frame plans for a segment table, videos sorted by id."""

    sampler: FrameSampler
    videos: tuple[VideoPlan, ...]
    tolerance_sec: float = field(default=1e-3)

    def __iter__(self) -> Iterator[VideoPlan]:
        return iter(self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def n_segments(self) -> int:
        return sum(len(video.segment_ids) for video in self.videos)

    @property
    def n_requested_frames(self) -> int:
        """Frame times asked for by all segments, counting shared frames once per segment."""
        return sum(video.n_requested_frames for video in self.videos)

    @property
    def n_unique_frames(self) -> int:
        """Frames to decode and encode after deduplication."""
        return sum(video.n_unique_frames for video in self.videos)

    @property
    def dedup_ratio(self) -> float:
        """``n_requested_frames / n_unique_frames`` (1.0 when nothing is shared)."""
        unique = self.n_unique_frames
        return self.n_requested_frames / unique if unique else 1.0


_PLAN_COLUMNS = ("segment_id", "video_id", "start_sec", "end_sec")


def plan_videos(
    segments: pl.DataFrame,
    sampler: FrameSampler,
    *,
    fps: FrameRate | None = None,
    tolerance_sec: float = 1e-3,
) -> ExtractionPlan:
    """Group the frame times of ``segments`` by video and deduplicate them.

    Args:
        segments: a table with at least ``segment_id, video_id, start_sec, end_sec``
            (``participant_id`` is carried along when present).
        sampler: turns each segment into frame times.
        fps: the frame rate of the frames that will be read, as one number, a mapping
            ``video_id -> fps`` or a function of the video id (e.g. :func:`egofeat.sources.epic_jpeg_fps`
            for EPIC JPEG folders). When given, each time is snapped to the centre of the
            frame that shows it (``(floor(t * fps) + 0.5) / fps``), so times falling in the
            same frame are one frame (and ``native`` samplers take each video's frames on
            that grid). Without it, times are merged when they round to the same multiple of
            ``tolerance_sec``.
        tolerance_sec: the merge quantum without ``fps``.

    Returns:
        Videos sorted by id; segments keep their input order within a video.
    """
    missing = [name for name in _PLAN_COLUMNS if name not in segments.columns]
    if missing:
        raise ValueError(
            f"segment table lacks column(s) {', '.join(missing)} needed for a frame plan "
            f"(columns present: {', '.join(segments.columns)})"
        )
    if tolerance_sec <= 0:
        raise ValueError(f"tolerance_sec must be positive, got {tolerance_sec}")
    _check_segment_rows(segments)
    has_participant = "participant_id" in segments.columns
    columns = [*_PLAN_COLUMNS, *(["participant_id"] if has_participant else [])]
    rows = segments.select(columns).with_row_index("_row")
    videos = []
    for (video_id,), group in sorted(rows.group_by("video_id"), key=lambda item: item[0][0]):
        group = group.sort("_row")
        rate = _frame_rate_of(fps, video_id)
        participant = group["participant_id"][0] if has_participant else None
        videos.append(_plan_video(video_id, participant, group, sampler, rate, tolerance_sec))
    return ExtractionPlan(sampler=sampler, videos=tuple(videos), tolerance_sec=tolerance_sec)


def _check_segment_rows(segments: pl.DataFrame) -> None:
    problems = segments.with_row_index("_row", offset=1).filter(
        pl.col("segment_id").is_null()
        | pl.col("video_id").is_null()
        | pl.col("start_sec").is_null()
        | pl.col("end_sec").is_null()
        | ~pl.col("start_sec").is_finite()
        | ~pl.col("end_sec").is_finite()
        | (pl.col("start_sec") < 0)
        | (pl.col("end_sec") < pl.col("start_sec"))
    )
    if problems.height:
        row = problems.row(0, named=True)
        raise ValueError(
            f"segment table row {row['_row']} (segment_id={row['segment_id']!r}, "
            f"video_id={row['video_id']!r}) has invalid times start_sec={row['start_sec']}, "
            f"end_sec={row['end_sec']}: need non-null, finite 0 <= start_sec <= end_sec"
        )
    duplicated = segments.filter(pl.col("segment_id").is_duplicated())
    if duplicated.height:
        raise ValueError(
            f"segment_id {duplicated['segment_id'][0]!r} occurs {duplicated.height} times in the "
            "segment table; segment ids must be unique"
        )


def _frame_rate_of(fps: FrameRate | None, video_id: str) -> float | None:
    if fps is None:
        return None
    if callable(fps):
        rate = fps(video_id)
    elif isinstance(fps, Mapping):
        if video_id not in fps:
            raise KeyError(f"no frame rate given for video {video_id!r} in the fps mapping")
        rate = fps[video_id]
    else:
        rate = fps
    rate = float(rate)
    if not rate > 0:
        raise ValueError(f"frame rate of video {video_id!r} must be positive, got {rate}")
    return rate


def _plan_video(
    video_id: str,
    participant_id: str | None,
    group: pl.DataFrame,
    sampler: FrameSampler,
    rate: float | None,
    tolerance_sec: float,
) -> VideoPlan:
    per_segment = [
        sampler.times(start, end, segment_id, rate=rate)
        for segment_id, start, end in group.select("segment_id", "start_sec", "end_sec").iter_rows()
    ]
    flat = np.concatenate([times.ravel() for times in per_segment])
    if rate is not None:
        keys = np.floor(flat * rate).astype(np.int64)
    else:
        keys = np.round(flat / tolerance_sec).astype(np.int64)
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    # A frame's representative time is its centre, safely inside it whatever the rounding.
    representative = (unique_keys + 0.5) / rate if rate is not None else unique_keys * tolerance_sec
    indices, offset = [], 0
    for times in per_segment:
        indices.append(inverse[offset : offset + times.size].reshape(times.shape))
        offset += times.size
    return VideoPlan(
        video_id=video_id,
        participant_id=participant_id,
        times=representative,
        segment_ids=tuple(group["segment_id"].to_list()),
        segment_indices=tuple(indices),
        frame_rate=rate,
    )
