"""The feature store: a folder (or fsspec URL) holding a segment table and feature streams."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from typing import Any

import polars as pl

import egofeat
from egofeat.store import layout
from egofeat.store.errors import (
    IncompatibleStreamError,
    QueryError,
    SegmentConflictError,
    StoreNotFoundError,
    StoreVersionError,
    StreamNotFoundError,
)
from egofeat.store.fs import StoreFS, is_temporary
from egofeat.store.provenance import provenance_diff
from egofeat.store.stream import Stream
from egofeat.store.stream_info import CODECS, StreamInfo
from egofeat.store.vocabularies import add_vocabulary, read_vocabularies

#: Columns the store needs in a segment table (the full canonical schema lives in egofeat.sources).
REQUIRED_SEGMENT_COLUMNS = ("dataset", "split", "segment_id", "video_id")


class FeatureStore:
    """A store of feature streams over a table of segments.

    >>> store = FeatureStore.create("features.egofeat")          # doctest: +SKIP
    >>> store.add_segments(segments)                              # doctest: +SKIP
    >>> store.stream("clip-vit-b16/full").load().features.shape   # doctest: +SKIP
    (9668, 16, 512)
    """

    def __init__(self, fs: StoreFS, meta: dict[str, Any]) -> None:
        self.fs = fs
        self.meta = meta

    def __repr__(self) -> str:
        return f"FeatureStore({self.fs.url!r})"

    @property
    def path(self) -> str:
        return self.fs.url

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, exist_ok: bool = True) -> FeatureStore:
        """Create a store at ``path`` (a folder or fsspec URL); open it if it exists and ``exist_ok``."""
        fs = StoreFS(path)
        marker = fs.path(layout.STORE_FILE)
        if fs.exists(marker):
            if not exist_ok:
                raise FileExistsError(f"a store already exists at {fs.url}")
            return cls.open(path)
        # Another process may be creating the same store right now: its files are not foreign.
        ours = {layout.STORE_FILE, layout.SEGMENTS_DIR, layout.STREAMS_DIR, layout.RUNS_DIR}
        foreign = [n for n in fs.listdir(fs.root) if n not in ours and not is_temporary(n)]
        if foreign:
            raise FileExistsError(
                f"{fs.url} exists and is not an egofeat store (it holds {foreign[:3]}); choose an "
                "empty or new folder"
            )
        meta = {
            "format": layout.FORMAT_NAME,
            "format_version": layout.FORMAT_VERSION,
            "created_at": time.time(),
            "egofeat_version": egofeat.__version__,
        }
        fs.makedirs(fs.root)
        if not fs.create_exclusive(marker, json.dumps(meta, indent=1).encode()):
            if not exist_ok:  # the other process won
                raise FileExistsError(f"a store already exists at {fs.url}")
            return cls.open(path)
        return cls(fs, meta)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False) -> FeatureStore:
        """Open the store at ``path``; with ``create=True`` make it if missing."""
        fs = StoreFS(path)
        marker = fs.path(layout.STORE_FILE)
        if not fs.exists(marker):
            if create:
                return cls.create(path)
            raise StoreNotFoundError(
                f"no egofeat store at {fs.url} (missing {layout.STORE_FILE}); create one with "
                "`egofeat extract --store ...` or FeatureStore.create()"
            )
        meta = json.loads(fs.read_bytes(marker))
        _check_version(meta.get("format_version", 0), f"store {fs.url}")
        return cls(fs, meta)

    # ---- segments ----------------------------------------------------------------------
    def segments(self) -> pl.LazyFrame:
        """The segment table of all datasets and splits added so far."""
        folder = self.fs.path(layout.SEGMENTS_DIR)
        files = [n for n in self.fs.listdir(folder) if n.endswith(".parquet") and not is_temporary(n)]
        if not files:
            return pl.LazyFrame(schema={c: pl.Utf8 for c in REQUIRED_SEGMENT_COLUMNS})
        frames = [self._read_parquet(f"{folder}/{name}") for name in files]
        return pl.concat(frames, how="diagonal_relaxed").lazy()

    def _read_parquet(self, path: str) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.fs.read_bytes(path)))

    def add_segments(self, segments: pl.DataFrame) -> int:
        """Add segments to the store's table; returns how many were new.

        Segments already present with identical content are skipped, so adding the same file
        twice is harmless. A segment id present with *different* content is refused.
        """
        missing = [c for c in REQUIRED_SEGMENT_COLUMNS if c not in segments.columns]
        if missing:
            raise ValueError(f"segment table lacks required columns {missing}; build it with egofeat.sources")
        duplicated = segments.filter(pl.col("segment_id").is_duplicated())["segment_id"].unique().to_list()
        if duplicated:
            raise SegmentConflictError(f"segment ids repeated in the table being added: {duplicated[:5]}")
        existing = self.segments().collect()
        if existing.height:
            new = segments.join(existing.select("segment_id"), on="segment_id", how="anti")
            _check_same(segments.join(existing.select("segment_id"), on="segment_id", how="semi"), existing)
        else:
            new = segments
        if new.height == 0:
            return 0
        buffer = io.BytesIO()
        new.write_parquet(buffer, statistics=True)
        data = buffer.getvalue()
        name = f"{hashlib.sha256(data).hexdigest()[:16]}.parquet"
        self.fs.write_bytes(self.fs.path(layout.SEGMENTS_DIR, name), data)
        return new.height

    # ---- vocabularies ------------------------------------------------------------------
    def vocabularies(self) -> pl.DataFrame:
        """Every class vocabulary of the store: ``dataset, task, class_id, name, ...`` rows
        (:mod:`egofeat.store.vocabularies`)."""
        return read_vocabularies(self.fs)

    def vocabulary(self, dataset: str, task: str) -> pl.DataFrame | None:
        """The vocabulary of ``dataset``'s ``task`` by class id, or None when the store has none."""
        table = self.vocabularies().filter((pl.col("dataset") == dataset) & (pl.col("task") == task))
        return table.sort("class_id") if table.height else None

    def add_vocabulary(self, vocabulary: pl.DataFrame) -> bool:
        """Keep one dataset's vocabulary of one task; another one for them is refused
        (:class:`~egofeat.store.vocabularies.VocabularyConflictError`)."""
        return add_vocabulary(self.fs, vocabulary)

    # ---- streams -----------------------------------------------------------------------
    def stream_names(self) -> list[str]:
        """Names of all streams, sorted."""
        names: list[str] = []
        self._collect_streams(self.fs.path(layout.STREAMS_DIR), "", names)
        return sorted(names)

    def _collect_streams(self, folder: str, prefix: str, out: list[str]) -> None:
        # A folder is a stream once its stream.json exists (it is written atomically, so a
        # stream being created is invisible until then); only subfolders can hold streams.
        if prefix and self.fs.exists(f"{folder}/{layout.STREAM_FILE}"):
            out.append(prefix)
            return
        for entry in self.fs.listdir(folder, dirs_only=True):
            if not entry.startswith("."):
                self._collect_streams(f"{folder}/{entry}", f"{prefix}/{entry}" if prefix else entry, out)

    def has_stream(self, name: str) -> bool:
        return self.fs.exists(self._stream_file(name))

    def _stream_file(self, name: str) -> str:
        return self.fs.path(layout.STREAMS_DIR, *layout.check_stream_name(name).split("/"), layout.STREAM_FILE)

    def stream(self, name: str) -> Stream:
        """The stream called ``name``; KeyError (StreamNotFoundError) naming the known streams."""
        path = self._stream_file(name)
        try:
            data = json.loads(self.fs.read_bytes(path))
        except FileNotFoundError:
            known = ", ".join(self.stream_names()) or "none yet"
            raise StreamNotFoundError(f"store {self.fs.url} has no stream {name!r} (streams: {known})") from None
        _check_version(int(data.get("format_version", layout.FORMAT_VERSION)), f"stream {name!r} of store {self.fs.url}")
        return Stream(self.fs, StreamInfo.from_dict(data))

    def create_stream(
        self,
        name: str,
        *,
        dim: int,
        provenance: dict[str, Any],
        kind: str = "image",
        dtype: str = "float16",
        frames_per_row: int | None = None,
        codec: str = "none",
    ) -> Stream:
        """Create a stream, or return the existing one if its provenance and shape match.

        A stream that exists with a different provenance or shape is refused with
        IncompatibleStreamError listing the differences: write to a new stream name instead.
        """
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {CODECS}")
        provenance = {**provenance, "egofeat_version": egofeat.__version__}
        info = StreamInfo(name=layout.check_stream_name(name), dim=int(dim), dtype=str(dtype),
                          frames_per_row=frames_per_row, kind=kind, provenance=provenance, codec=codec)
        if self.has_stream(name):
            existing = self.stream(name)
            _check_compatible(existing.info, info)
            return existing
        self.fs.write_bytes(self._stream_file(name), json.dumps(info.to_dict(), indent=1).encode())
        return Stream(self.fs, info)

    # ---- queries -----------------------------------------------------------------------
    def manifest(self) -> pl.LazyFrame:
        """Manifests of all streams, with a ``stream`` column."""
        frames = [
            self.stream(name).manifest().with_columns(pl.lit(name).alias("stream"))
            for name in self.stream_names()
        ]
        if not frames:
            return pl.LazyFrame(schema={"stream": pl.Utf8, "segment_id": pl.Utf8, "status": pl.Utf8})
        return pl.concat(frames, how="diagonal_relaxed")

    def sql(self, query: str) -> pl.DataFrame:
        """Run polars SQL over the tables ``segments`` and ``manifest`` (all streams).

        A query polars refuses raises QueryError: one line with polars' reason and the tables
        and columns there are.
        """
        tables = {"segments": self.segments(), "manifest": self.manifest()}
        context = pl.SQLContext(tables, eager=False)
        try:
            return context.execute(query).collect()
        except pl.exceptions.PolarsError as error:
            # polars appends the plan it failed on after a blank line: the reason is before it
            paragraphs = [p.strip() for p in str(error).split("\n\n") if p.strip()]
            reason = " ".join(p for p in paragraphs[:2] if not p.startswith(("Resolved plan", "This error")))
            columns = "; ".join(f"{name} ({', '.join(frame.collect_schema().names())})"
                                for name, frame in tables.items())
            raise QueryError(f"bad SQL: {reason or type(error).__name__}. Tables: {columns}") from None

    def info(self) -> dict[str, Any]:
        """A summary of the store: segments per dataset/split and every stream's counts."""
        segments = self.segments().collect()
        by_split = (
            segments.group_by("dataset", "split").len().sort("dataset", "split").to_dicts()
            if segments.height else []
        )
        return {
            "path": self.fs.url,
            "format_version": self.meta.get("format_version"),
            "segments": segments.height,
            "splits": by_split,
            "streams": [self.stream(n).summary() for n in self.stream_names()],
        }


def _check_version(version: int, what: str) -> None:
    if version > layout.FORMAT_VERSION:
        raise StoreVersionError(
            f"{what} has format version {version}, newer than this egofeat reads "
            f"({layout.FORMAT_VERSION}): upgrade egofeat (pip install -U egofeat) to use it"
        )


def _check_compatible(existing: StreamInfo, incoming: StreamInfo) -> None:
    problems = []
    for field in ("dim", "dtype", "frames_per_row", "kind", "codec"):
        a, b = getattr(existing, field), getattr(incoming, field)
        if a != b:
            problems.append(f"{field}: {a!r} in the stream, {b!r} in this write")
    problems.extend(provenance_diff(existing.provenance, incoming.provenance, prefix="provenance."))
    if problems:
        raise IncompatibleStreamError(
            f"stream {existing.name!r} exists with a different configuration; refusing to mix "
            "features. Differences:\n  " + "\n  ".join(problems)
            + "\nWrite to a new stream name (e.g. add a suffix) or remove the old stream."
        )


def _check_same(incoming: pl.DataFrame, existing: pl.DataFrame) -> None:
    columns = [c for c in incoming.columns if c in existing.columns]
    joined = incoming.select(columns).join(existing.select(columns), on="segment_id", suffix="__old")
    for column in columns:
        if column == "segment_id":
            continue
        old = f"{column}__old"
        differs = joined.filter(pl.col(column).ne_missing(pl.col(old).cast(joined.schema[column], strict=False)))
        if differs.height:
            ids = differs["segment_id"].head(5).to_list()
            raise SegmentConflictError(
                f"segments {ids} are already in the store with a different {column!r}; "
                "segment ids must be unique across datasets and splits"
            )
