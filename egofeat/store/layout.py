"""Names of the files and folders of a store (documented in docs/FORMAT.md)."""

from __future__ import annotations

import re

FORMAT_NAME = "egofeat-store"
FORMAT_VERSION = 1

STORE_FILE = "egofeat-store.json"
SEGMENTS_DIR = "segments"
STREAMS_DIR = "streams"
STREAM_FILE = "stream.json"
PARTS_DIR = "parts"
COMMITS_DIR = "commits"
LEASES_DIR = "leases"
CONSOLIDATED_FILE = "consolidated.json"
PLAN_FILE = "plan.json"
RUNS_DIR = "runs"
FEATURES = "features.zarr"
MANIFEST = "manifest.parquet"

#: Target size of one zarr chunk: large enough that whole-stream scans run at disk speed.
CHUNK_BYTES = 4 << 20

_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._+=@-]*"
STREAM_NAME = re.compile(rf"^{_NAME_PART}(/{_NAME_PART})*$")
PART_ID = re.compile(rf"^{_NAME_PART}$")


def check_stream_name(name: str) -> str:
    """Return ``name`` if it is a valid stream name, else raise ValueError saying what is allowed."""
    if not STREAM_NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid stream name {name!r}: use letters, digits and . _ + = @ -, with '/' between "
            "parts (e.g. 'clip-vit-b16/full')"
        )
    return name


def check_part_id(part_id: str) -> str:
    """Return ``part_id`` if it is a valid part id (one path component), else raise ValueError."""
    if not PART_ID.match(part_id) or ".." in part_id:
        raise ValueError(f"invalid part id {part_id!r}: one path component of letters, digits, . _ + = @ -")
    return part_id
