"""A stream: the features of one (encoder, crop, sampling) over many segments, and its readers.

Readers see committed parts only (those with a commit record), so they may poll a stream
that other processes are writing: nothing they read is ever rewritten or half-written. A part
retried later (:meth:`Stream.part_writer` with ``replacing``) gets a new attempt and its record
is replaced atomically; the attempt it replaced stays on disk for :data:`REPLACED_GRACE_S`, so
a reader that listed the old record can still read it.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import zarr

from egofeat.store import layout
from egofeat.store.errors import PartAlreadyCommittedError, StoreError, StreamBusyError
from egofeat.store.fs import StoreFS, is_temporary
from egofeat.store.lease import PartLease
from egofeat.store.manifest import MANIFEST_SCHEMA, STATUS_ERROR, STATUS_OK, with_error_columns
from egofeat.store.paths import StreamPaths
from egofeat.store.provenance import provenance_key
from egofeat.store.stream_info import StreamInfo
from egofeat.store.writer import BasePart, PartWriter

#: How long the attempt a retried part replaced is kept (for readers that listed its old record).
REPLACED_GRACE_S = 600.0


@dataclass
class LoadedStream:
    """Features of a stream in RAM, aligned with their segment ids.

    ``features`` is (N, T, D) for streams with a fixed number of frames per row. For streams
    with a variable number (dense sampling) it is the flat (total_frames, D) array and
    ``offsets`` (N + 1) delimits each row's frames.
    """

    segment_ids: np.ndarray
    features: np.ndarray
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.segment_ids)

    def row(self, i: int) -> np.ndarray:
        """Frames of row ``i`` as (n_frames, D)."""
        if self.offsets is None:
            return self.features[i]
        return self.features[self.offsets[i] : self.offsets[i + 1]]


class Stream:
    """One stream of a store. Get it from ``FeatureStore.stream(name)``."""

    def __init__(self, fs: StoreFS, info: StreamInfo) -> None:
        self.fs = fs
        self.info = info
        self.name = info.name
        self.paths = StreamPaths(fs.root, info.name)

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, dim={self.info.dim}, frames_per_row={self.info.frames_per_row})"

    # ---- parts and commits -------------------------------------------------------------
    def part_writer(self, part_id: str, *, replacing: str | None = None) -> PartWriter:
        """A writer for one part; see :class:`PartWriter`.

        ``replacing``: the attempt of the committed part that the writer replaces (retrying
        some of its rows); rows not added again are kept byte for byte. Hold the part's lease
        (:meth:`claim`) while replacing; PartAlreadyCommittedError if the record names
        another attempt by now.
        """
        base = None
        if replacing is not None:
            record = self.commit_record(part_id)
            if record is None or record["attempt"] != replacing:
                raise PartAlreadyCommittedError(
                    f"part {part_id!r} of stream {self.name!r} is no longer at attempt {replacing!r}"
                )
            manifest = self._read_parquet(self.paths.manifest(part_id, replacing))
            frames = int(manifest.filter(pl.col("status") == STATUS_OK)["n_frames"].sum() or 0)
            features = np.empty((frames, self.info.dim), dtype=self.info.dtype)
            self._read_part_into(part_id, replacing, features)
            base = BasePart(record, manifest, features)
        return PartWriter(self.fs, self.paths, self.info, part_id, base=base)

    def commit_record(self, part_id: str) -> dict[str, Any] | None:
        """The commit record of ``part_id``, or None if it is not committed."""
        try:
            return json.loads(self.fs.read_bytes(self.paths.commit(part_id)))
        except FileNotFoundError:
            return None

    def committed_parts(self) -> dict[str, dict[str, Any]]:
        """Commit records by part id (only committed parts are visible to readers)."""
        names = [n for n in self.fs.listdir(self.paths.commits)
                 if n.endswith(".json") and not n.startswith(".") and not is_temporary(n)]
        records = {}
        for name in names:
            record = json.loads(self.fs.read_bytes(f"{self.paths.commits}/{name}"))
            records[record["part_id"]] = record
        return records

    def is_committed(self, part_id: str) -> bool:
        return self.fs.exists(self.paths.commit(part_id))

    def uncommitted_attempts(self) -> list[tuple[str, str]]:
        """(part_id, attempt) folders that no commit record points to or names as replaced:
        crashed or in-flight writes."""
        return [(pid, att) for pid, att, replaced in self._attempts_off_record() if not replaced]

    def replaced_attempts(self) -> list[tuple[str, str]]:
        """(part_id, attempt) folders of attempts a retry replaced (kept for a while for
        readers that listed the old record, see :data:`REPLACED_GRACE_S`)."""
        return [(pid, att) for pid, att, replaced in self._attempts_off_record() if replaced]

    def _attempts_off_record(self) -> list[tuple[str, str, bool]]:
        records = self.committed_parts()
        found = []
        for part_id in self.fs.listdir(self.paths.parts, dirs_only=True):
            record = records.get(part_id, {})
            for attempt in self.fs.listdir(self.paths.part(part_id), dirs_only=True):
                if record.get("attempt") != attempt:
                    found.append((part_id, attempt, attempt in record.get("replaced", ())))
        return found

    def claim(self, part_id: str) -> PartLease | None:
        """Lease ``part_id`` for writing; None if another live process holds it.

        Local stores only (see :mod:`egofeat.store.lease`); on other filesystems this returns a
        lease that guards nothing, and executors must hand out disjoint parts.
        """
        if not self.fs.is_local:
            return _NoLease()  # type: ignore[return-value]
        path = self.paths.lease(layout.check_part_id(part_id))
        with self.fs.guard(path):
            return PartLease.try_acquire(path)

    def cleanup(self) -> int:
        """Remove what killed writers left; returns how many attempts and files were removed.

        Uncommitted attempts of parts no live writer holds go (attempts of a part whose lease
        is held belong to a writer at work and are kept, which is why writers write a part only
        while they hold its lease), and so do the temporary files anywhere in the store's
        metadata (this stream's commit records, other streams' files, the segment table) that
        no live writer holds (see :func:`remove_stale_temporaries`). Attempts a retry replaced
        go once the retry is :data:`REPLACED_GRACE_S` old.
        """
        removed = remove_stale_temporaries(self.fs)
        for part_id, attempt, _ in self._attempts_off_record():
            lease = self.claim(part_id)
            if lease is None:
                continue
            with lease:
                record = self.commit_record(part_id) or {}
                if record.get("attempt") == attempt:
                    continue
                if attempt in record.get("replaced", ()) and (
                        time.time() - float(record.get("committed_at", 0)) < REPLACED_GRACE_S):
                    continue
                self.fs.remove(self.paths.attempt(part_id, attempt))
                removed += 1
        return removed

    # ---- plans ------------------------------------------------------------------------
    def hold_plan(self, plan_key: str) -> PartLease | _NoLease:
        """Mark the stream as written by a run of plan ``plan_key`` until the lease is released.

        Runs of one plan (the same part boundaries) may write the stream together: part leases
        and exclusive commits keep each part written once. A live run of another plan (other
        annotations, ``--limit`` or ``--videos-per-part``) could put a segment into a second
        part, so it is refused with StreamBusyError. Local stores only, like part leases.
        """
        if not self.fs.is_local:
            return _NoLease()
        folder = self.paths.plan_leases
        own = f"{layout.check_part_id(plan_key)}.lock"
        with self.fs.guard(folder):
            lease = None
            for _ in range(100):  # another plan's run may be probing our file for an instant
                lease = PartLease.try_acquire(f"{folder}/{own}", shared=True)
                if lease is not None:
                    break
                time.sleep(0.01)
            else:
                raise self._busy(own)
            # Our own lease first, then probe the others: of two runs of different plans that
            # start together, at least one sees the other.
            for name in self.fs.listdir(folder):
                if name == own or not name.endswith(".lock"):
                    continue
                probe = PartLease.try_acquire(f"{folder}/{name}")
                if probe is None:
                    lease.release()
                    raise self._busy(name)
                probe.release()
        return lease

    def _busy(self, lock_name: str) -> StreamBusyError:
        return StreamBusyError(
            f"stream {self.name!r} is being written by a live run of another plan "
            f"({lock_name.removesuffix('.lock')}): wait for it to finish, or run with the same "
            "annotations, --limit and --videos-per-part"
        )

    def record_plan(self, part_ids: Sequence[str], *, plan_key: str, run_id: str) -> None:
        """Record the parts a run plans to write here (``egofeat info`` shows committed/planned)."""
        plan = {"plan_key": plan_key, "run_id": run_id, "planned_at": time.time(),
                "parts": sorted(part_ids)}
        self.fs.write_bytes(self.paths.plan_file, json.dumps(plan).encode())

    def plan(self) -> dict[str, Any] | None:
        """The last recorded plan (see :meth:`record_plan`), or None."""
        try:
            return json.loads(self.fs.read_bytes(self.paths.plan_file))
        except FileNotFoundError:
            return None

    # ---- manifest ----------------------------------------------------------------------
    def _manifest_urls(self, records: dict[str, dict[str, Any]]) -> list[str]:
        return [self.paths.manifest(pid, records[pid]["attempt"]) for pid in sorted(records)]

    def manifest(self) -> pl.LazyFrame:
        """All rows of committed parts (ok and error), in store order, as a polars LazyFrame."""
        return self._manifest_of(self.committed_parts())

    def _manifest_of(self, records: dict[str, dict[str, Any]]) -> pl.LazyFrame:
        """The rows of the parts of ``records`` (one snapshot of the commit records)."""
        consolidated = self._consolidated(records)
        if consolidated is not None:
            return with_error_columns(consolidated)
        if not records:
            return pl.LazyFrame(schema=MANIFEST_SCHEMA)
        frames = [self._read_parquet(url) for url in self._manifest_urls(records)]
        return with_error_columns(pl.concat(frames, how="diagonal_relaxed").lazy())

    def _read_parquet(self, path: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.fs.read_bytes(path)))

    def consolidate(self) -> int:
        """Write one manifest file covering all committed parts (fast reads); returns its row count.

        Readers use it only while the set of committed parts is unchanged, so a stale file is
        never read as current.
        """
        records = self.committed_parts()
        frame = self._manifest_of(records).collect() if records else pl.DataFrame(schema=MANIFEST_SCHEMA)
        buffer = io.BytesIO()
        frame.write_parquet(buffer, statistics=True)
        key = _consolidation_key(records)
        self.fs.write_bytes(self.paths.path(f"manifest-{key}.parquet"), buffer.getvalue())
        self.fs.write_bytes(
            self.paths.consolidated_file,
            json.dumps({"parts": sorted(records), "manifest": f"manifest-{key}.parquet"}).encode(),
        )
        for name in self.fs.listdir(self.paths.folder):
            # finished files of other part sets only (a temporary is another process's write)
            if name.startswith("manifest-") and name.endswith(".parquet") and name != f"manifest-{key}.parquet":
                self.fs.remove(self.paths.path(name))
        return frame.height

    def _consolidated(self, records: dict[str, dict[str, Any]]) -> pl.LazyFrame | None:
        if not records:
            return None
        try:  # a concurrent consolidation may replace it at any moment: then read the parts
            meta = json.loads(self.fs.read_bytes(self.paths.consolidated_file))
            # the same parts at the same attempts (a retried part has a new attempt)
            if meta["manifest"] != f"manifest-{_consolidation_key(records)}.parquet":
                return None
            return self._read_parquet(self.paths.path(meta["manifest"])).lazy()
        except FileNotFoundError:
            return None

    # ---- features ----------------------------------------------------------------------
    def load(self, segment_ids: Sequence[str] | None = None, *, threads: int = 4) -> LoadedStream:
        """Load ``ok`` rows into RAM: all of them in store order, or the given ids in that order.

        Whole-stream loads read each part straight into one preallocated array, at disk speed.
        Raises KeyError naming requested ids that have no ok row in this stream.
        """
        ok = self.manifest().filter(pl.col("status") == STATUS_OK).select(
            "segment_id", "part_id", "attempt", "offset", "n_frames"
        ).collect()
        if segment_ids is not None:
            wanted = pl.DataFrame({"segment_id": list(segment_ids)}, schema={"segment_id": pl.Utf8})
            missing = wanted.join(ok, on="segment_id", how="anti")["segment_id"].to_list()
            if missing:
                raise KeyError(
                    f"stream {self.name!r} has no ok features for {len(missing)} of the requested "
                    f"segments, e.g. {missing[:5]} (check `egofeat info` for error rows)"
                )
            if len(wanted) < 0.25 * max(1, ok.height):
                return self._load_rows(wanted.join(ok, on="segment_id", how="left", maintain_order="left"))
        full = self._load_all(ok, threads=threads)
        if segment_ids is None:
            return full
        index = pl.DataFrame({"segment_id": full.segment_ids}).with_row_index("i")
        order = wanted.join(index, on="segment_id", how="left", maintain_order="left")["i"].to_numpy()
        return _take(full, order)

    def _load_all(self, ok: pl.DataFrame, *, threads: int) -> LoadedStream:
        info = self.info
        parts = ok.group_by("part_id", "attempt", maintain_order=True).agg(pl.col("n_frames").sum())
        total = int(parts["n_frames"].sum()) if parts.height else 0
        flat = np.empty((total, info.dim), dtype=info.dtype)
        starts = np.concatenate([[0], np.cumsum(parts["n_frames"].to_numpy())]).astype(np.int64)
        jobs = [
            (pid, att, flat[starts[i] : starts[i + 1]])
            for i, (pid, att) in enumerate(zip(parts["part_id"], parts["attempt"], strict=True))
        ]
        with ThreadPoolExecutor(max(1, threads)) as pool:
            list(pool.map(lambda job: self._read_part_into(*job), jobs))
        ids = ok["segment_id"].to_numpy()
        if info.frames_per_row is not None:
            return LoadedStream(ids, flat.reshape(len(ids), info.frames_per_row, info.dim))
        offsets = np.concatenate([[0], np.cumsum(ok["n_frames"].to_numpy())]).astype(np.int64)
        return LoadedStream(ids, flat, offsets)

    def _load_rows(self, rows: pl.DataFrame) -> LoadedStream:
        info = self.info
        chunks = []
        arrays: dict[tuple[str, str], Any] = {}
        for pid, att, offset, n in rows.select("part_id", "attempt", "offset", "n_frames").iter_rows():
            if (pid, att) not in arrays:
                arrays[(pid, att)] = zarr.open_array(self._features_url(pid, att), mode="r")
            chunks.append(arrays[(pid, att)][offset : offset + n])
        ids = rows["segment_id"].to_numpy()
        flat = np.concatenate(chunks) if chunks else np.zeros((0, info.dim), info.dtype)
        if info.frames_per_row is not None:
            return LoadedStream(ids, flat.reshape(len(ids), info.frames_per_row, info.dim))
        offsets = np.concatenate([[0], np.cumsum(rows["n_frames"].to_numpy())]).astype(np.int64)
        return LoadedStream(ids, flat, offsets)

    def _features_url(self, part_id: str, attempt: str) -> str:
        return self.fs.url_for(self.paths.features(part_id, attempt))

    def _read_part_into(self, part_id: str, attempt: str, out: np.ndarray) -> None:
        """Fill ``out`` with a part's features.

        Uncompressed parts are read chunk file by chunk file straight into ``out`` (one copy,
        like np.load); compressed ones go through zarr.
        """
        if not len(out):
            return
        if _read_raw_chunks(self.fs, self.paths.features(part_id, attempt), out):
            return
        out[...] = zarr.open_array(self._features_url(part_id, attempt), mode="r")[...]

    def read(self, segment_ids: Sequence[str]) -> np.ndarray:
        """Features of the given segments, in that order (fixed-frame streams: (N, T, D))."""
        return self.load(segment_ids).features

    def to_torch(self, segment_ids: Sequence[str] | None = None) -> Any:
        """Like :meth:`load`, as a torch tensor (shares memory with the numpy array)."""
        import torch

        return torch.from_numpy(self.load(segment_ids).features)

    def to_dask(self) -> Any:
        """A lazy dask array over the ok rows in store order: (N, T, D), or (frames, D) if ragged."""
        import dask.array as da

        ok = self.manifest().filter(pl.col("status") == STATUS_OK).collect()
        parts = ok.select("part_id", "attempt").unique(maintain_order=True)
        arrays = [
            da.from_zarr(zarr.open_array(self._features_url(pid, att), mode="r"))
            for pid, att in parts.iter_rows()
        ]
        if not arrays:
            shape = (0, self.info.frames_per_row or 1, self.info.dim) if self.info.frames_per_row else (0, self.info.dim)
            return da.zeros(shape, dtype=self.info.dtype)
        flat = da.concatenate(arrays, axis=0)
        if self.info.frames_per_row is None:
            return flat
        return flat.reshape(ok.height, self.info.frames_per_row, self.info.dim)

    def summary(self) -> dict[str, Any]:
        """Counts and shape for `egofeat info` (of one snapshot of the committed parts)."""
        committed = self.committed_parts()
        manifest = self._manifest_of(committed).select("status", "n_frames", "error_reason", "retryable").collect()
        ok = manifest.filter(pl.col("status") == STATUS_OK)
        summary = {
            "name": self.name, "kind": self.info.kind, "dim": self.info.dim, "dtype": self.info.dtype,
            "frames_per_row": self.info.frames_per_row, "rows": manifest.height, "ok": ok.height,
            "errors": manifest.height - ok.height, "frames": int(ok["n_frames"].sum() or 0),
            "error_reasons": error_reasons(manifest),
            "committed_parts": len(committed), "provenance": self.info.provenance,
            "key": self.info.key,
        }
        plan = self.plan()
        if plan is not None:  # planned = committed + those the last plan had still to do
            summary["planned_parts"] = len(set(committed) | set(plan["parts"]))
        return summary


def error_reasons(manifest: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Error rows of a manifest by reason: ``{reason: {"rows": n, "retryable": k}}``, most
    first (rows from before reasons were recorded: ``unknown``)."""
    errors = manifest.filter(pl.col("status") == STATUS_ERROR)
    if not errors.height:
        return {}
    counts = (errors.group_by(pl.col("error_reason").fill_null("unknown"))
              .agg(pl.len().alias("rows"), pl.col("retryable").fill_null(True).sum().alias("retryable"))
              .sort(["rows", "error_reason"], descending=[True, False]))
    return {row["error_reason"]: {"rows": int(row["rows"]), "retryable": int(row["retryable"])}
            for row in counts.iter_rows(named=True)}


def _consolidation_key(records: dict[str, dict[str, Any]]) -> str:
    """The key of a consolidated manifest: its parts and their attempts."""
    return provenance_key({"parts": {p: r["attempt"] for p, r in records.items()}})


class _NoLease:
    """Stands in for a lease where the filesystem has no locks."""

    held = True

    def release(self) -> None:
        return None

    def __enter__(self) -> _NoLease:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _take(loaded: LoadedStream, order: np.ndarray) -> LoadedStream:
    if loaded.offsets is None:
        return LoadedStream(loaded.segment_ids[order], loaded.features[order])
    rows = [loaded.row(int(i)) for i in order]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    flat = np.concatenate(rows) if rows else loaded.features[:0]
    return LoadedStream(loaded.segment_ids[order], flat, np.concatenate([[0], np.cumsum(lengths)]))


def _read_raw_chunks(fs: StoreFS, folder: str, out: np.ndarray) -> bool:
    """Read an uncompressed zarr v3 array's chunk files into ``out``; False if not applicable.

    Any chunk size and both chunk key separators are read (stores written before chunks were
    sized to the data hold one 4 MiB chunk per part, under ``c/0/0``).
    """
    try:
        meta = json.loads(fs.read_bytes(f"{folder}/zarr.json"))
    except (FileNotFoundError, ValueError):
        return False
    codecs = meta.get("codecs", [])
    encoding = meta.get("chunk_key_encoding", {})
    separator = encoding.get("configuration", {}).get("separator", "/")
    if (
        len(codecs) != 1
        or codecs[0].get("name") != "bytes"
        or codecs[0].get("configuration", {}).get("endian", "little") != "little"
        or encoding.get("name") != "default"
        or separator not in ("/", ".")
        or meta.get("chunk_grid", {}).get("name") != "regular"
        or np.dtype(meta.get("data_type")) != out.dtype
        or tuple(meta["shape"]) != out.shape
        or tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])[1:] != out.shape[1:]
        or not out.flags.c_contiguous
    ):
        return False
    chunk_rows = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
    fill = meta.get("fill_value", 0)
    for i in range(math.ceil(out.shape[0] / chunk_rows)):
        view = out[i * chunk_rows : (i + 1) * chunk_rows]
        path = f"{folder}/c{separator}{i}{separator}0"
        try:
            got = fs.read_into(path, memoryview(view).cast("B"))
        except FileNotFoundError:  # zarr may skip chunks equal to the fill value
            view[...] = fill
            continue
        if got != view.nbytes:
            raise StoreError(f"chunk file {fs.url_for(path)} is truncated ({got} of {view.nbytes} bytes)")
    return True


def remove_stale_temporaries(fs: StoreFS) -> int:
    """Remove the temporary files that killed writers left in a store's metadata; returns how many.

    Looks in the store root, the segment table and every folder of ``streams/`` (stream
    folders and their commit records; not into attempts, which cleanup removes whole). Only
    temporaries no live writer holds are removed (see :class:`~egofeat.store.fs.StoreFS`).
    """
    if not fs.is_local:
        return 0  # object stores write objects whole: nothing is ever left half-written
    removed = fs.remove_stale_temporaries(fs.root) + fs.remove_stale_temporaries(fs.path(layout.SEGMENTS_DIR))
    folders = [fs.path(layout.STREAMS_DIR)]
    while folders:
        folder = folders.pop()
        removed += fs.remove_stale_temporaries(folder)
        if fs.exists(f"{folder}/{layout.STREAM_FILE}"):
            removed += fs.remove_stale_temporaries(f"{folder}/{layout.COMMITS_DIR}")
            continue
        folders.extend(f"{folder}/{name}" for name in fs.listdir(folder, dirs_only=True) if not name.startswith("."))
    return removed
