"""Filesystem access for the store: local paths, or any fsspec URL (``s3://``, ``gs://``, ``file://``).

Every byte the store reads or writes goes through :class:`StoreFS`, which gives it three things:

- **Atomic files.** Local files are written to a temporary name and renamed, so a reader sees
  the old file or the whole new one. Commit records are created with ``os.link``, which fails
  if the target exists, so exactly one writer wins a commit. Object stores write an object
  whole; a commit there is a conditional "create if absent" where the backend has one (S3's
  ``If-None-Match``), else "write if absent".
- **Temporaries that cleanup can tell apart.** A temporary file is named
  ``.<name>.tmp-<random>`` (hidden, so ``*.json`` and ``*.parquet`` globs never match it) and
  its writer holds an exclusive ``flock`` on it until it is renamed into place. A temporary
  that can be locked was left by a dead writer: :meth:`StoreFS.remove_stale_temporaries`
  removes exactly those, whoever left them.
- **One clear error for fatal conditions.** A full disk, a read-only filesystem or missing
  permissions become a :class:`~egofeat.store.errors.StoreAccessError` whose one-line message
  names the store, the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from egofeat.store.crashpoints import crash_point
from egofeat.store.errors import (
    StoreAccessError,
    StoreError,
    StoreFullError,
    StorePermissionError,
    StoreReadOnlyError,
)

#: What marks a temporary file: ``.<name>.tmp-<32 hex digits>`` (stores written before
#: temporaries were hidden have ``<name>.tmp-<32 hex digits>``). No finished file of a store
#: ends like that: commit records end in ``.json``, leases in ``.lock``.
TEMP_MARK = ".tmp-"
_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}$")
#: An empty, unlocked temporary this young may belong to a writer that created it an instant
#: ago and is about to lock it; it is left for the next cleanup.
EMPTY_TEMP_GRACE_S = 10.0


def is_temporary(name: str) -> bool:
    """Whether a file name is a store temporary (an unfinished write)."""
    return _TEMPORARY.search(name) is not None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd``: the one place local store files get their bytes."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


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

    def url_for(self, path: str) -> str:
        """The URL of a path under the root (see :meth:`path`)."""
        return self.url + path[len(self.root) :] if path.startswith(self.root) else path

    def relative(self, path: str) -> str:
        """``path`` relative to the root, for messages."""
        return path[len(self.root) :].lstrip("/") if path.startswith(self.root) else path

    # ---- errors ---------------------------------------------------------------------------
    def access_error(self, exc: OSError, path: str, *, writing: bool) -> StoreAccessError | None:
        """The store error for a fatal ``OSError`` (disk full, read-only, no permission), else None."""
        what = f"{'writing' if writing else 'reading'} {self.relative(path) or '.'}"
        code = exc.errno
        if code in (errno.ENOSPC, errno.EDQUOT):
            return StoreFullError(
                f"no space left for store {self.url} ({what}): free space or move the store to a "
                "larger disk, then run again; parts committed so far are intact"
            )
        if code == errno.EROFS:
            return StoreReadOnlyError(
                f"store {self.url} is on a read-only filesystem ({what}): reading works, but to "
                "write remount it read-write or copy the store to a writable disk"
            )
        if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM):
            need = "writable" if writing else "readable"
            return StorePermissionError(
                f"permission denied {what} in store {self.url}: make the store {need} for this "
                f"user (e.g. chmod -R u+{'w' if writing else 'r'}) or use a store you own"
            )
        return None

    @contextmanager
    def guard(self, path: str, *, writing: bool = True) -> Iterator[None]:
        """Turn fatal ``OSError``s raised in the block into store errors naming ``path``."""
        try:
            yield
        except StoreError:
            raise
        except OSError as exc:
            error = self.access_error(exc, path, writing=writing)
            if error is None:
                raise
            raise error from exc

    # ---- reading --------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        with self.guard(path, writing=False):
            if self.is_local:
                return os.path.exists(path)
            self.fs.invalidate_cache(path)  # another process may have written it since we listed
            return self.fs.exists(path)

    def read_bytes(self, path: str) -> bytes:
        with self.guard(path, writing=False):
            if self.is_local:
                with open(path, "rb") as f:
                    return f.read()
            return self.fs.cat_file(path)

    def read_into(self, path: str, buffer: memoryview) -> int:
        """Read the first ``len(buffer)`` bytes of a file into ``buffer``; returns how many were read."""
        with self.guard(path, writing=False):
            if self.is_local:
                with open(path, "rb", buffering=0) as f:
                    return f.readinto(buffer) or 0
            data = self.fs.cat_file(path, start=0, end=len(buffer))
            buffer[: len(data)] = data
            return len(data)

    def listdir(self, path: str, *, dirs_only: bool = False) -> list[str]:
        """Sorted names (not paths) of a directory's entries (only its subdirectories with
        ``dirs_only``); empty if it does not exist or is not a directory."""
        with self.guard(path, writing=False):
            if self.is_local:
                try:
                    with os.scandir(path) as entries:
                        return sorted(e.name for e in entries if not dirs_only or e.is_dir())
                except (FileNotFoundError, NotADirectoryError):
                    return []
            self.fs.invalidate_cache(path)  # listings of a store being written go stale at once
            try:
                entries = self.fs.ls(path, detail=True)
            except (FileNotFoundError, NotADirectoryError):
                return []
            own = path.rstrip("/")
            return sorted(
                e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
                if e["name"].rstrip("/") != own and (not dirs_only or e["type"] == "directory")
            )

    # ---- writing --------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        with self.guard(path):
            if self.is_local:
                os.makedirs(path, exist_ok=True)
            else:
                self.fs.makedirs(path, exist_ok=True)

    def write_bytes(self, path: str, data: bytes, *, atomic: bool = True) -> None:
        """Write ``data`` to ``path`` durably.

        ``atomic``: readers see the old file or the whole new one, never a part (a temporary
        renamed into place). Without it the file is written in place: for files of an
        uncommitted attempt, which no reader looks at.
        """
        with self.guard(path):
            if not self.is_local:
                self.fs.pipe_file(path, data)
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not atomic:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                return
            fd, tmp = self._locked_temporary(path, data)
            try:
                crash_point("replace")
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            finally:
                os.close(fd)  # releases the lock: the temporary is gone by now

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; True if this call created it."""
        with self.guard(path):
            if not self.is_local:
                return self._create_remote(path, data)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = self._locked_temporary(path, data)
            try:
                crash_point("create_exclusive")
                os.link(tmp, path)  # fails if `path` exists: the first committer wins
                return True
            except FileExistsError:
                return False
            finally:
                _unlink_quietly(tmp)
                os.close(fd)

    def _create_remote(self, path: str, data: bytes) -> bool:
        try:  # a conditional write where the backend has one: atomic
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except (TypeError, ValueError, NotImplementedError):
            pass  # this backend has no "create" mode
        self.fs.invalidate_cache(path)
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        return True

    def _locked_temporary(self, path: str, data: bytes) -> tuple[int, str]:
        """Write ``data`` to a new temporary beside ``path``; returns its fd (holding an
        exclusive flock, so cleanup knows a live writer owns it) and its path."""
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}{TEMP_MARK}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        return fd, tmp

    def remove(self, path: str) -> None:
        """Remove a file or a directory tree; a missing path is not an error."""
        with self.guard(path):
            if self.is_local:
                if os.path.isdir(path):
                    _rmtree(path)
                elif os.path.lexists(path):
                    os.unlink(path)
                return
            self.fs.invalidate_cache(path)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)

    def remove_stale_temporaries(self, folder: str) -> int:
        """Remove the temporaries in ``folder`` that no live writer holds; returns how many.

        Object stores have none (objects are written whole), so this is a no-op there.
        """
        if not self.is_local:
            return 0
        removed = 0
        for name in self.listdir(folder):
            if is_temporary(name) and self._remove_if_stale(os.path.join(folder, name)):
                removed += 1
        return removed

    def _remove_if_stale(self, path: str) -> bool:
        with self.guard(path):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP):
                    return False  # renamed into place meanwhile, or a link: not ours
                raise
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # its writer is alive
                held = os.fstat(fd)
                if not stat.S_ISREG(held.st_mode):
                    return False
                try:
                    now = os.stat(path)
                except FileNotFoundError:
                    return False
                if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
                    return False  # the name now belongs to another file
                if held.st_size == 0 and time.time() - held.st_mtime < EMPTY_TEMP_GRACE_S:
                    return False  # created an instant ago, perhaps not locked yet
                os.unlink(path)
                return True
            finally:
                os.close(fd)


def _rmtree(path: str) -> None:
    """``shutil.rmtree`` that tolerates files another cleanup removes at the same time."""

    def ignore_missing(function: object, name: str, exc: object) -> None:
        error = exc[1] if isinstance(exc, tuple) else exc
        if not isinstance(error, FileNotFoundError):
            raise error  # type: ignore[misc]

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=ignore_missing)
    else:
        shutil.rmtree(path, onerror=ignore_missing)


def _unlink_quietly(path: str) -> None:
    # gone already, or the store became unwritable: a later cleanup removes it
    with contextlib.suppress(OSError):
        os.unlink(path)


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    protocol = fs.protocol
    return protocol[0] if isinstance(protocol, (tuple, list)) else protocol
