"""Filesystem access for the store: local paths, or any fsspec URL.

Local paths get real atomicity: files are written to a temporary name and renamed, and commit
records are created with ``os.link``, which fails if the target exists, so exactly one writer
wins a commit. Other filesystems (object stores) use fsspec; there a commit is "write the record
if absent", which is atomic only where the backend supports conditional writes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from egofeat.store.crashpoints import crash_point


class StoreFS:
    """A store root on a filesystem, with the few operations the store needs."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        fs, path = fsspec.core.url_to_fs(str(root))
        self.fs = fs
        self.is_local = isinstance(fs, LocalFileSystem)
        self.root = str(Path(path).resolve()) if self.is_local else path.rstrip("/")
        self.url = self.root if self.is_local else f"{_protocol(fs)}://{self.root}"

    def path(self, *parts: str) -> str:
        """Absolute path (or bucket path) of ``parts`` under the root."""
        return "/".join([self.root, *parts])

    def url_of(self, *parts: str) -> str:
        """A URL zarr and polars can open for ``parts`` under the root."""
        return "/".join([self.url, *parts])

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.is_local else self.fs.exists(path)

    def makedirs(self, path: str) -> None:
        if self.is_local:
            os.makedirs(path, exist_ok=True)
        else:
            self.fs.makedirs(path, exist_ok=True)

    def read_bytes(self, path: str) -> bytes:
        if self.is_local:
            with open(path, "rb") as f:
                return f.read()
        return self.fs.cat_file(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` so that readers see the old file or the whole new one, never a part."""
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; True if this call created it."""
        if not self.is_local:
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        crash_point("create_exclusive")
        try:
            os.link(tmp, path)  # fails if `path` exists: the first committer wins
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of a directory; empty if it does not exist."""
        if self.is_local:
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []
        if not self.fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))

    def remove(self, path: str) -> None:
        """Remove a file or a directory tree; a missing path is not an error."""
        if self.is_local:
            import shutil

            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
        elif self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    protocol = fs.protocol
    return protocol[0] if isinstance(protocol, (tuple, list)) else protocol
