"""``egofeat extract --dry-run``: the plan of a run, written nowhere.

The same checks as a run (the videos, the encoders' weights; a device this machine lacks is
reported, not refused, since plans are often made on a login node), then what the run would
do: videos found and missing, segments, frames to decode, parts, and the store's size.
"""

from __future__ import annotations

from typing import Any

from egofeat.config import ExtractConfig
from egofeat.heads.predict import DeviceError
from egofeat.pipelines.extract import (
    PartSpec,
    build_sampler,
    create_encoders,
    done_segments,
    load_annotations,
    plan_parts,
    plan_run,
)
from egofeat.pipelines.preflight import check_devices, check_videos
from egofeat.store import FeatureStore, Stream
from egofeat.store.fs import StoreFS
from egofeat.store.layout import STORE_FILE
from egofeat.store.names import image_stream

__all__ = ["dry_run"]

#: Bytes a row costs beside its features: its manifest row (ids, times, status), compressed.
MANIFEST_ROW_BYTES = 120
#: Bytes a part costs beside its rows: a commit record, zarr.json, a parquet footer, folders.
PART_BYTES = 4096


def dry_run(options: ExtractConfig) -> dict[str, Any]:
    """What ``egofeat extract`` with ``options`` would do; nothing is written anywhere."""
    segments, _ = load_annotations(options)
    problems = []
    try:
        check_devices(options)
    except DeviceError as error:
        problems.append(str(error))
    videos = check_videos(options, segments)
    sampler = build_sampler(options)
    cpu = options.model_copy(update={"device": "cpu"})
    encoders = create_encoders(cpu, sampler)  # their dims; and a missing weights file shows now
    existing = _existing_streams(options)
    names = [image_stream(enc.name, crop, options.tag) for enc in encoders for crop in options.crops]
    plan, parts = plan_run(options, segments, sampler, {name: existing.get(name) for name in names})
    done = {name: done_segments(existing[name]) if name in existing else set() for name in names}
    rows_frames = _frames_per_segment(plan, sampler)
    streams = {}
    for i, name in enumerate(names):
        encoder = encoders[i // len(options.crops)]
        todo = {sid for part in parts for sid in part.todo.get(name, ())}
        frames = sum(rows_frames.get(sid, 0) for sid in todo)
        itemsize = 2  # float16, the dtype of image and clip streams
        n_parts = sum(1 for part in parts if name in part.todo)
        size = frames * encoder.dim * itemsize + len(todo) * MANIFEST_ROW_BYTES + n_parts * PART_BYTES
        streams[name] = {"exists": name in existing, "dim": encoder.dim, "segments_done": len(done[name]),
                         "segments_todo": len(todo), "feature_vectors": frames, "estimated_bytes": size}
    return {
        "store": options.store, "store_exists": bool(existing) or _store_exists(options.store),
        "videos": videos.to_dict(), "segments": segments.height, "streams": streams,
        "parts_planned": len(plan_parts(plan, {n: set() for n in names}, options.videos_per_part)),
        "parts_todo": len(parts), "retried_parts": sum(1 for p in parts if p.replaces),
        "unique_frames": _frames(parts, unique=True), "requested_frames": _frames(parts, unique=False),
        "estimated_bytes": sum(s["estimated_bytes"] for s in streams.values()),
        "problems": problems,
    }


def _store_exists(location: str) -> bool:
    fs = StoreFS(location)
    return fs.exists(fs.path(STORE_FILE))


def _existing_streams(options: ExtractConfig) -> dict[str, Stream]:
    """The store's streams, read without writing (none if there is no store yet)."""
    if not _store_exists(options.store):
        return {}
    store = FeatureStore.open(options.store)
    return {name: store.stream(name) for name in store.stream_names()}


def _frames_per_segment(plan: Any, sampler: Any) -> dict[str, int]:
    """Feature vectors one segment's row holds (clip encoders: one per clip)."""
    out = {}
    for video in plan.videos:
        for sid, index in zip(video.segment_ids, video.segment_indices, strict=True):
            out[sid] = sampler.num_frames if sampler.kind == "clip" else int(index.size)
    return out


def _frames(parts: list[PartSpec], *, unique: bool) -> int:
    return sum(v.n_unique_frames if unique else v.n_requested_frames for p in parts for v in p.videos)

