"""Names of the files and folders of a store (documented in docs/FORMAT.md)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

FORMAT_NAME = "egofeat-store"
FORMAT_VERSION = 1

STORE_FILE = "egofeat-store.json"
SEGMENTS_DIR = "segments"
VOCABULARIES_DIR = "vocabularies"
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

#: Largest zarr chunk: large enough that whole-stream scans run at disk speed. A part's array
#: is split into equal chunks of at most this size, so a small part is one small chunk.
CHUNK_BYTES = 4 << 20
#: Chunk files sit directly in the array folder (``c.0.0``, ``c.1.0``, ...): no folder per chunk row.
CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}

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
    if not PART_ID.match(part_id) or ".." in part_id or len(part_id) > MAX_PART_ID:
        raise ValueError(
            f"invalid part id {part_id!r}: one path component of at most {MAX_PART_ID} letters, "
            "digits, . _ + = @ - (make one from any text with egofeat.store.layout.safe_part_id)"
        )
    return part_id


#: Longest part id: file names under a store stay far below the usual 255-byte limit.
MAX_PART_ID = 128
#: Longest readable head of a :func:`safe_part_id`.
MAX_SLUG = 96
#: Hex digits of the hash in a :func:`safe_part_id`.
PART_HASH_DIGITS = 12


def safe_part_id(label: str, digest: str | None = None) -> str:
    """A valid part id for any text (video ids with spaces, unicode, punctuation): ``<slug>-<hash>``.

    The slug is ``label`` made readable ASCII: letters, digits and ``. _ -`` stay, accented
    letters lose their accents (``Küche`` -> ``Kuche``), anything else becomes ``-``; runs of
    dots and leading punctuation are dropped, and it is cut at MAX_SLUG characters (``part``
    if nothing is left). The hash is the first PART_HASH_DIGITS hex digits of ``digest`` (a
    hex digest of whatever identifies the part), by default of the SHA-256 of ``label``'s
    UTF-8 bytes, so distinct labels whose slugs agree (``a/b``, ``a:b``) still get distinct
    ids. Deterministic; an ASCII label of letters, digits and ``. _ -`` keeps its text.
    """
    if digest is None:
        digest = hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()
    if len(digest) < PART_HASH_DIGITS or not all(c in "0123456789abcdef" for c in digest.lower()):
        raise ValueError(f"digest {digest!r} is not a hex digest of at least {PART_HASH_DIGITS} digits")
    chars = []
    for c in unicodedata.normalize("NFKD", label):
        if unicodedata.combining(c):
            continue
        chars.append(c if c.isascii() and (c.isalnum() or c in "._-") else "-")
    slug = re.sub(r"\.{2,}", lambda m: "-" * len(m.group()), "".join(chars)).lstrip("._-")
    slug = slug[:MAX_SLUG] or "part"
    return f"{slug}-{digest[:PART_HASH_DIGITS].lower()}"
