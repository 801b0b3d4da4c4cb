"""Part leases: at most one live writer works on a part at a time.

A lease is an exclusive ``flock`` on ``leases/<part_id>.lock``. The kernel drops it when the
holder exits, however it exits (``kill -9`` included), so a lease left by a killed process is
recovered without any cleanup. On filesystems without POSIX locks (object stores) leases are
not available; commits stay exclusive there, and executors give writers disjoint parts.
"""

from __future__ import annotations

import fcntl
import os
from types import TracebackType


class PartLease:
    """A held lease on one part; release it with :meth:`release` or by leaving a ``with`` block."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, path: str, *, shared: bool = False) -> PartLease | None:
        """Take the lease at ``path`` if no live process holds it; None if one does.

        A ``shared`` lease may be held by many processes at once, and excludes exclusive ones.
        """
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not shared:  # the holder's pid, for people looking at a lock file
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PartLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
