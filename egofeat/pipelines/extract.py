"""Extraction: segments -> frame plan -> decode (worker processes) -> crop -> encode -> store.

The unit of work is a *part*: a group of videos whose segments are written, for each target
stream, as one committed store part. :class:`PartRunner` is the part function every executor
runs (it owns the encoders, loaded once); the executors (serial, dask, torchrun) and the driver
that runs them are :mod:`egofeat.pipelines.executors`. :func:`write_extract_texts` writes the
class-name and narration text streams of a run (:mod:`.text_streams`).

Resume is by construction: a part's id is a hash of its segment ids, a part committed in a
stream is never redone, and segments already in a stream are not planned again. A stream whose
provenance differs from the run's configuration is refused (use ``tag`` to write a new stream).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from egofeat.config import ExtractConfig
from egofeat.extract import (
    DecodeJob,
    DecodePool,
    DecodeResult,
    ExtractionPlan,
    FrameSampler,
    HandObjectBoxes,
    UnionRule,
    VideoPlan,
    decode_job,
    plan_videos,
)
from egofeat.pipelines.preflight import (
    VideoCheck,
    check_devices,
    check_store_location,
    check_videos,
    reads_frame_folders,
    video_layout,
)
from egofeat.store import (
    STATUS_ERROR,
    FeatureStore,
    IncompatibleStreamError,
    PartAlreadyCommittedError,
    Stream,
)
from egofeat.store.layout import safe_part_id
from egofeat.store.names import image_stream

Crop = Literal["full", "hand"]
#: how far past a video's end a frame time may be (decoders' durations are approximate)
END_SLACK_SEC = 0.05


def build_sampler(options: ExtractConfig) -> FrameSampler:
    """The frame sampler the options ask for."""
    if options.sampling == "uniform":
        return FrameSampler.uniform(options.frames)
    if options.sampling == "random":
        return FrameSampler.random(options.frames, seed=options.seed)
    if options.sampling == "oversampled":
        return FrameSampler.oversampled(options.frames, per_bin=options.per_bin)
    if options.sampling == "clip":
        return FrameSampler.clip(options.frames, options.clip_len)
    if options.sampling == "native":
        return FrameSampler.native(options.fps)
    return FrameSampler.dense(options.fps)


def native_frame_rate(options: ExtractConfig) -> Any:
    """The frame grid ``--sampling native`` reads: ``--fps``, else EPIC's JPEG rule (60 fps for
    EPIC-55 videos, 50 for the extension), else none (a plan without it is refused)."""
    if options.fps is not None:
        return options.fps
    if options.dataset == "epic100":
        from egofeat.sources import epic_jpeg_fps

        return epic_jpeg_fps
    return None


def load_annotations(options: ExtractConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The segment table of all annotation files (first ``limit`` rows when set), and the
    vocabularies its classes refer to (``egofeat.pipelines.segments.segment_vocabularies``)."""
    from egofeat.pipelines.segments import load_segment_file, segment_vocabularies

    tables = [
        load_segment_file(path, options.dataset, split=options.split,
                          allow_pickle=options.allow_pickle, mapping=options.mapping,
                          window=options.window, classes=options.classes)
        for path in options.annotations
    ]
    table = pl.concat(tables, how="diagonal_relaxed") if len(tables) > 1 else tables[0]
    table, vocabularies = segment_vocabularies(options.annotations, options.dataset, table, options.classes)
    return (table.head(options.limit) if options.limit else table), vocabularies


# ---- parts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartSpec:
    """A group of videos and, per target stream, the segments still to write there."""

    part_id: str
    videos: tuple[VideoPlan, ...]
    todo: dict[str, frozenset[str]]
    #: stream -> the committed attempt this part replaces there (``--retry-errors``: the
    #: ``todo`` segments are its error rows, done again; its other rows are kept)
    replaces: dict[str, str] = field(default_factory=dict)

    @property
    def n_segments(self) -> int:
        return sum(len(v.segment_ids) for v in self.videos)

    def pending_in(self, stream: Stream) -> bool:
        """Whether ``stream`` still needs this part: not committed, or (retrying) still at the
        attempt it replaces."""
        record = stream.commit_record(self.part_id)
        replacing = self.replaces.get(stream.name)
        if replacing is None:
            return record is None
        return record is not None and record["attempt"] == replacing


def part_id_of(videos: Sequence[VideoPlan]) -> str:
    """Deterministic part id: first video id + a hash of the videos' segment ids."""
    digest = hashlib.sha256()
    for video in videos:
        digest.update(video.video_id.encode() + b"\0")
        for sid in video.segment_ids:
            digest.update(sid.encode() + b"\1")
    return safe_part_id(videos[0].video_id, digest.hexdigest())


def plan_parts(plan: ExtractionPlan, done: dict[str, set[str]], videos_per_part: int) -> list[PartSpec]:
    """Group the plan's videos into parts; keep only parts with work left in some stream.

    ``done`` maps each target stream to the segment ids it already holds (ok or error rows).
    """
    videos = list(plan.videos)
    parts = []
    for start in range(0, len(videos), videos_per_part):
        group = tuple(videos[start : start + videos_per_part])
        ids = {sid for v in group for sid in v.segment_ids}
        todo = {name: frozenset(ids - seen) for name, seen in done.items() if ids - seen}
        if todo:
            parts.append(PartSpec(part_id_of(group), group, todo))
    return parts


def retry_parts(streams: Sequence[Stream], segments: pl.DataFrame, sampler: FrameSampler,
                parts: Sequence[PartSpec], *, fps: Any = None) -> list[PartSpec]:
    """``parts`` with the committed parts that hold retryable error rows of ``segments`` added
    (or merged in, when a part is also still to do in another stream): each to be rewritten
    with those rows done again. Its videos are planned for those segments alone, so a retry
    decodes only what it redoes (``fps``: the frame grid of native sampling)."""
    wanted = segments.select("segment_id")
    todo: dict[str, dict[str, frozenset[str]]] = {}
    replaces: dict[str, dict[str, str]] = {}
    for stream in streams:
        rows = (stream.manifest().filter((pl.col("status") == STATUS_ERROR) & pl.col("retryable").fill_null(True))
                .select("segment_id", "part_id", "attempt").collect().join(wanted, on="segment_id", how="semi"))
        for (part_id, attempt), group in rows.group_by("part_id", "attempt"):
            todo.setdefault(part_id, {})[stream.name] = frozenset(group["segment_id"].to_list())
            replaces.setdefault(part_id, {})[stream.name] = attempt
    if not todo:
        return list(parts)
    planned = {p.part_id: p for p in parts}
    out = list(parts)
    for part_id in sorted(todo):
        if part_id in planned:  # still to do in another stream: one part does both
            part = planned[part_id]
            out[out.index(part)] = replace(part, todo={**part.todo, **todo[part_id]},
                                           replaces={**part.replaces, **replaces[part_id]})
            continue
        ids = set().union(*todo[part_id].values())
        plan = plan_videos(segments.filter(pl.col("segment_id").is_in(list(ids))), sampler, fps=fps)
        out.append(PartSpec(part_id, plan.videos, todo[part_id], replaces[part_id]))
    return out


# ---- the part function -------------------------------------------------------------------


@dataclass
class StageTimes:
    """Seconds spent per stage (decode is worker time, summed over workers)."""

    decode: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    frames_decoded: int = 0
    frames_encoded: int = 0

    def add(self, other: StageTimes) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class PartOutcome:
    """What one part produced, per stream."""

    part_id: str
    ok: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    segments: int = 0
    #: why videos were decoded by another backend or device than asked -> how many videos
    decode_fallbacks: dict[str, int] = field(default_factory=dict)
    #: what native decoder libraries printed while decoding, per video path (the run log keeps it)
    decoder_output: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RowError:
    """Why a segment has no features, and the reason the manifest records."""

    message: str
    reason: str = "other"


@dataclass(frozen=True)
class _Target:
    stream: Stream
    encoder_index: int
    crop: Crop


class PartRunner:
    """Decodes, crops, encodes and writes parts. Holds the encoders: build it once per process."""

    def __init__(self, options: ExtractConfig, store: FeatureStore, sampler: FrameSampler,
                 encoders: Sequence[Any] | None = None) -> None:
        self.options = options
        self.store = store
        self.sampler = sampler
        self.encoders = list(encoders) if encoders is not None else create_encoders(options, sampler)
        self.layout = video_layout(options)
        #: frame folders only where the layout may hold them: elsewhere a folder at a video's
        #: path is an error saying so, not a frame folder of an unknown frame rate
        self.frame_folders = reads_frame_folders(options)
        self.rule = UnionRule(hand_threshold=options.hand_threshold, object_threshold=options.object_threshold)
        sizes = [enc.preprocessing.resize_size for enc in self.encoders]
        self.short_side = max(sizes)
        self.crop_size = max(sizes)
        self.targets = [
            _Target(self._create_stream(enc, crop), i, crop)
            for i, enc in enumerate(self.encoders)
            for crop in options.crops
        ]

    # -- streams --
    def _frames_per_row(self) -> int | None:
        if self.sampler.kind in ("dense", "native"):
            return None
        if self.sampler.kind == "oversampled":
            return self.sampler.num_frames * self.sampler.per_bin
        return self.sampler.num_frames

    def crop_provenance(self, crop: Crop) -> dict[str, Any]:
        if crop == "full":
            return {"rule": "full frame"}
        return {
            "rule": "union of hands and their matched objects (EPIC-100 hand-object detections)",
            "boxes": str(self.options.boxes),
            **self.rule_params(),
            "margin": self.options.box_margin,
            "square": self.options.box_square,
            "fallback": self.options.box_fallback,
            "crop_size": self.crop_size,
        }

    def rule_params(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.rule).items()}

    def _create_stream(self, encoder: Any, crop: Crop) -> Stream:
        provenance = {
            **encoder.provenance(),
            "crop": self.crop_provenance(crop),
            "sampling": self.sampler.to_dict(),
            "decode": {"short_side": self.short_side, "layout": self.layout.template},
        }
        name = image_stream(encoder.name, crop, self.options.tag)
        try:
            return self.store.create_stream(
                name, dim=encoder.dim, provenance=provenance,
                kind="clip" if encoder.kind == "clip" else "image",
                frames_per_row=self._frames_per_row(),
            )
        except IncompatibleStreamError as error:
            # The store's message says what differs; say how to keep both with this command.
            raise IncompatibleStreamError(
                f"{error}\nTo extract this configuration beside the existing one, rerun with "
                f"--tag <name> (writes {name}-<name>)."
            ) from None

    @property
    def stream_names(self) -> list[str]:
        return [t.stream.name for t in self.targets]

    # -- decode jobs --
    def video_path(self, video: VideoPlan) -> Path:
        """The video's file or frame folder (a missing one is reported when decoding)."""
        return self.layout.resolve(video.video_id, video.participant_id)

    def boxes_for(self, video: VideoPlan) -> np.ndarray | RowError | None:
        """Per-time crop boxes (N, 4), why there are none, or None when no stream needs crops."""
        if not any(t.crop == "hand" for t in self.targets):
            return None
        options = self.options
        common = {"fallback": options.box_fallback, "margin": options.box_margin, "square": options.box_square}
        try:
            if options.boxes is not None and Path(options.boxes).suffix == ".parquet":
                boxes = HandObjectBoxes.from_parquet(options.boxes, video.video_id, **common)
            else:
                boxes = HandObjectBoxes.from_folder(options.boxes, video.video_id, video.participant_id,
                                                    rule=self.rule, **common)
            return np.asarray(boxes.boxes_at(video.times), dtype=np.float64)
        except (OSError, ValueError) as error:
            return RowError(f"hand-object boxes of video {video.video_id}: {error}", "missing-boxes")

    def job(self, video: VideoPlan, path: Path, boxes: np.ndarray | None, times: np.ndarray | None = None) -> DecodeJob:
        return DecodeJob(
            key=video.video_id, path=path, times=video.times if times is None else times,
            backend="frames" if self.frame_folders else "auto", frame_folders=self.frame_folders is not False,
            boxes=boxes, crop_size=self.crop_size, crop_margin=0.0, crop_square=False,
            short_side=self.short_side,
            full_frames=any(t.crop == "full" for t in self.targets),
            device=self.options.decode_device,
        )

    # -- encode and write --
    def write_part(self, part: PartSpec, decoded: Sequence[DecodedVideo]) -> PartOutcome:
        """Encode the decoded videos of ``part`` and commit one store part per target stream."""
        outcome = PartOutcome(part.part_id, segments=sum(len(ids) for ids in part.todo.values()))
        for target in self.targets:
            todo = part.todo.get(target.stream.name)
            if not todo:
                continue
            lease = target.stream.claim(part.part_id)
            if lease is None:  # another process is writing this part of this stream
                outcome.skipped.append(target.stream.name)
                continue
            with lease:
                if not part.pending_in(target.stream):  # another process did it while we decoded
                    outcome.skipped.append(target.stream.name)
                    continue
                self._write_target(part, target, todo, decoded, outcome)
        return outcome

    def _write_target(self, part: PartSpec, target: _Target, todo: frozenset[str],
                      decoded: Sequence[DecodedVideo], outcome: PartOutcome) -> None:
        encoder = self.encoders[target.encoder_index]
        try:
            writer = target.stream.part_writer(part.part_id, replacing=part.replaces.get(target.stream.name))
        except PartAlreadyCommittedError:
            outcome.skipped.append(target.stream.name)
            return
        times = StageTimes()
        ok = errors = 0
        for video in decoded:
            for sid, row in self._rows(video, target, encoder, times):
                if sid not in todo:
                    continue
                if isinstance(row, RowError):
                    writer.add_error(sid, video.plan.video_id, row.message, reason=row.reason)
                    errors += 1
                else:
                    feats, frame_times, row_boxes = row
                    writer.add(sid, video.plan.video_id, feats, frame_times=frame_times, boxes=row_boxes)
                    ok += 1
        start = time.perf_counter()
        try:
            writer.commit(timing=asdict(times))
        except PartAlreadyCommittedError:
            outcome.skipped.append(target.stream.name)
            return
        times.write += time.perf_counter() - start
        outcome.ok[target.stream.name] = ok
        outcome.errors[target.stream.name] = errors
        outcome.times.add(times)

    def _rows(self, video: DecodedVideo, target: _Target, encoder: Any,
              times: StageTimes) -> Iterator[tuple[str, Any]]:
        """(segment id, (features, frame times, boxes) or a RowError) per segment."""
        plan, result = video.plan, video.result
        error = video.error
        if result is not None and result.error is not None:
            error = RowError(result.error, result.error_reason or "unreadable-video")
        if target.crop == "hand" and isinstance(video.boxes, RowError):
            error = error or video.boxes
        if error is not None or result is None:
            yield from ((sid, error or RowError("not decoded")) for sid in plan.segment_ids)
            return
        images = result.crops if target.crop == "hand" else result.frames
        wanted = [i for i, sid in enumerate(plan.segment_ids) if sid not in video.segment_errors]
        start = time.perf_counter()
        if encoder.kind == "clip":  # rows are T clips of clip_len frames
            index = np.stack([plan.segment_indices[i] for i in wanted]) if wanted else np.zeros((0, 1, 1), int)
            clips = encoder.encode(images[index.reshape(-1, index.shape[-1])]) if wanted else None
            rows = {i: clips.reshape(len(wanted), index.shape[1], -1)[k] for k, i in enumerate(wanted)}
            times.frames_encoded += int(index.size)
        else:
            needed = np.unique(np.concatenate([plan.segment_indices[i].ravel() for i in wanted])) if wanted else np.zeros(0, int)
            unique = np.zeros((len(images), encoder.dim), np.float32)
            if len(needed):
                unique[needed] = encoder.encode(images[needed])
            rows = {i: unique[plan.segment_indices[i].ravel()] for i in wanted}
            times.frames_encoded += len(needed)
        times.encode += time.perf_counter() - start
        for i, sid in enumerate(plan.segment_ids):
            if i not in rows:
                yield sid, video.segment_errors[sid]
                continue
            index = plan.segment_indices[i].ravel()
            boxes = video.boxes[index] if target.crop == "hand" else None
            yield sid, (rows[i], result.times[index], boxes)


def create_encoders(options: ExtractConfig, sampler: FrameSampler) -> list[Any]:
    """The run's encoders, checked against its sampling (clip encoders need clips)."""
    from egofeat.extract.encoders import create_encoder

    encoders = [create_encoder(name, device=options.device, batch_size=options.batch_size,
                               cache_dir=options.cache_dir)
                for name in options.encoders]
    kinds = {enc.kind for enc in encoders}
    if "clip" in kinds and sampler.kind != "clip":
        raise ValueError("clip encoders (LaViLa) need --sampling clip, and a run of their own")
    if sampler.kind == "clip" and kinds != {"clip"}:
        raise ValueError("--sampling clip is for clip encoders only; extract image encoders in another run")
    for enc in encoders:
        if enc.kind == "clip" and enc.frames_per_clip != sampler.clip_len:
            raise ValueError(f"{enc.name} takes {enc.frames_per_clip} frames per clip: pass --clip-len {enc.frames_per_clip}")
    return encoders


@dataclass
class DecodedVideo:
    """A video of a part after decoding: its frames, or why it has none, per segment."""

    plan: VideoPlan
    result: DecodeResult | None
    boxes: np.ndarray | RowError | None
    error: RowError | None = None
    segment_errors: dict[str, RowError] = field(default_factory=dict)


# ---- decoding around part boundaries ------------------------------------------------------


def _decode_fitting_segments(runner: PartRunner, video: VideoPlan, path: Path,
                             result: DecodeResult, boxes: np.ndarray | None) -> DecodedVideo:
    """A video whose decode failed past its end: decode the segments that fit, flag the others."""
    duration = float(result.duration_sec or 0.0)
    if not np.isfinite(duration):  # a container without a duration: no segment can be blamed
        return DecodedVideo(video, result, boxes)
    limit = duration + END_SLACK_SEC
    fits = [i for i in range(len(video.segment_ids)) if video.segment_times(i).max() <= limit]
    errors = {
        video.segment_ids[i]: RowError(
            f"segment {video.segment_ids[i]} needs a frame at {video.segment_times(i).max():.3f} s, "
            f"past the end of video {video.video_id} ({duration:.3f} s): check its end time",
            "past-end",
        )
        for i in range(len(video.segment_ids)) if i not in fits
    }
    if not fits or len(fits) == len(video.segment_ids):
        # nothing fits, or everything does and the failure was something else: report it as is
        return DecodedVideo(video, result, boxes, segment_errors=errors if not fits else {})
    keep = np.zeros(video.n_unique_frames, dtype=bool)
    for i in fits:
        keep[video.segment_indices[i].ravel()] = True
    # Frames only the failing segments need are read at t=0 instead: indices stay aligned.
    retry = decode_job(runner.job(video, path, boxes, times=np.where(keep, video.times, 0.0)))
    return DecodedVideo(video, retry, boxes, segment_errors=errors)


def decode_parts(runner: PartRunner, parts: Sequence[PartSpec], pool: DecodePool
                 ) -> Iterator[tuple[PartSpec, list[DecodedVideo]]]:
    """Yield each part with its decoded videos; the pool decodes ahead across parts."""
    entries = [(part, video, runner.video_path(video), runner.boxes_for(video))
               for part in parts for video in part.videos]

    def jobs() -> Iterator[DecodeJob]:
        for _, video, path, boxes in entries:
            yield runner.job(video, path, boxes if isinstance(boxes, np.ndarray) else None)

    results = pool.imap(jobs())
    current: PartSpec | None = None
    decoded: list[DecodedVideo] = []
    for part, video, path, boxes in entries:
        if current is not None and part is not current:
            yield current, decoded
            decoded = []
        current = part
        result = next(results)
        if result.error is not None and result.duration_sec is not None:
            decoded.append(_decode_fitting_segments(
                runner, video, path, result, boxes if isinstance(boxes, np.ndarray) else None))
        else:
            decoded.append(DecodedVideo(video, result, boxes))
    if current is not None:
        yield current, decoded


# ---- the serial executor ----------------------------------------------------------------


@dataclass
class ExtractSummary:
    """What `egofeat extract` did; ``failed`` says whether any segment ended as an error row
    or any part failed (``failed_parts``: an executor's task raised; rerun to retry them)."""

    store: str
    streams: list[str]
    segments: int
    planned_parts: int
    done_parts: int
    skipped_parts: int
    ok: dict[str, int]
    errors: dict[str, int]
    dedup_ratio: float
    requested_frames: int
    unique_frames: int
    seconds: dict[str, float]
    text_streams: list[str] = field(default_factory=list)
    nothing_to_do: bool = False
    failed_parts: list[str] = field(default_factory=list)
    run_log: str | None = None
    #: why videos were decoded by another backend or device than asked -> how many videos
    decode_fallbacks: dict[str, int] = field(default_factory=dict)
    #: parts this run rewrote with their error rows done again (``--retry-errors``)
    retried_parts: int = 0
    #: per stream, the error rows the requested segments have there now, whoever wrote them
    error_rows: dict[str, int] = field(default_factory=dict)
    #: of those, rows this run did not write (earlier runs, or a concurrent one)
    errors_from_other_runs: int = 0
    #: the error rows of the requested segments by reason: {reason: {"rows", "retryable"}}
    error_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the videos found and missing before the run (see egofeat.pipelines.preflight)
    videos: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Whether a requested segment has an error row in a target stream (whoever wrote it),
        or a part failed."""
        return any(self.error_rows.values()) or any(self.errors.values()) or bool(self.failed_parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


@dataclass
class PreparedRun:
    """The plan of a run: its store, sampler, frame plan and the parts left to do."""

    options: ExtractConfig
    store: FeatureStore
    sampler: FrameSampler
    segments: pl.DataFrame
    runner: PartRunner
    plan: ExtractionPlan
    parts: list[PartSpec]
    videos: VideoCheck | None = None
    #: the segments this process answers for (a shard's), None: all of ``segments``
    requested: frozenset[str] | None = None


def prepare_extract(options: ExtractConfig) -> PreparedRun:
    """Check the devices and videos, then load segments into the store, create streams, plan
    frames and the parts still to do (with ``retry_errors``, also the parts holding retryable
    error rows). Nothing is written before the checks pass and the encoders load."""
    from egofeat.pipelines.segments import store_vocabularies

    segments, vocabularies = load_annotations(options)
    check_devices(options)
    check_store_location(options)
    videos = check_videos(options, segments)
    sampler = build_sampler(options)
    encoders = create_encoders(options, sampler)
    store = FeatureStore.open(options.store, create=True)
    for dataset in segments["dataset"].unique().sort().to_list():  # before the segments: a
        store_vocabularies(store, dataset, vocabularies)            # refused vocabulary adds nothing
    store.add_segments(segments)
    runner = PartRunner(options, store, sampler, encoders)
    for t in runner.targets:
        t.stream.cleanup()  # crashed attempts of parts nobody holds
    plan, parts = plan_run(options, segments, sampler, {t.stream.name: t.stream for t in runner.targets})
    return PreparedRun(options, store, sampler, segments, runner, plan, parts, videos)


def plan_run(options: ExtractConfig, segments: pl.DataFrame, sampler: FrameSampler,
             streams: Mapping[str, Stream | None]) -> tuple[ExtractionPlan, list[PartSpec]]:
    """The run's frames, and its parts still to do in ``streams`` (name -> the stream, None for
    one not created yet); with ``retry_errors``, also the parts holding retryable error rows."""
    fps = native_frame_rate(options) if sampler.kind == "native" else None
    plan = plan_videos(segments, sampler, fps=fps)
    done = {name: done_segments(stream) if stream is not None else set() for name, stream in streams.items()}
    parts = plan_parts(plan, done, options.videos_per_part)
    if options.retry_errors:
        existing = [stream for stream in streams.values() if stream is not None]
        parts = retry_parts(existing, segments, sampler, parts, fps=fps)
    return plan, parts


def done_segments(stream: Stream) -> set[str]:
    """Segments a stream holds a row of (ok or error)."""
    return set(stream.manifest().select("segment_id").collect()["segment_id"].to_list())


# ---- text streams -------------------------------------------------------------------------


def write_extract_texts(run: PreparedRun) -> list[str]:
    """Class-name texts of the run's vocabularies (as the store keeps them, in the run's
    templates) and narrations, for every encoder of the run with a text side."""
    from egofeat.extract.encoders import TextEncoder
    from egofeat.pipelines.text_streams import write_class_texts, write_narrations

    options = run.options
    datasets = run.segments["dataset"].unique().to_list()
    vocabularies = (run.store.vocabularies().filter(pl.col("dataset").is_in(datasets))
                    .sort("dataset", "task", "class_id"))
    written = []
    for encoder in run.runner.encoders:
        if not isinstance(encoder, TextEncoder):
            continue
        for (dataset, task), rows in vocabularies.group_by(["dataset", "task"], maintain_order=True):
            written.append(write_class_texts(run.store, encoder, dataset, task, rows["name"].to_list(),
                                             templates=options.templates, tag=options.tag))
        written.append(write_narrations(run.store, encoder, run.segments, tag=options.tag))
    return written
