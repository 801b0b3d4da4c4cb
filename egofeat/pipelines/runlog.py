"""The run log: what one `egofeat extract` run did, as JSON lines under ``<store>/runs/``.

One file per writing process: ``runs/<run-id>.jsonl`` for the driver of a serial or dask run,
``runs/<run-id>.rank<r>.jsonl`` for each torchrun rank. Each line is an event,
``{"event": ..., "time": <unix seconds>, ...}``; docs/FORMAT.md lists the events and their fields.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from types import TracebackType
from typing import Any

from egofeat.store import FeatureStore
from egofeat.store.layout import RUNS_DIR

#: Object stores cannot append: their log is rewritten at most this often (and when closed).
REMOTE_FLUSH_SEC = 30.0


def new_run_id() -> str:
    """A unique run id that sorts by start time (UTC, milliseconds): ``20260131T142501.123Z-1a2b3c``."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z-{uuid.uuid4().hex[:6]}"


class RunLog:
    """Appends events of one run to its JSON-lines file; use as a context manager."""

    def __init__(self, store: FeatureStore, run_id: str, *, rank: int | None = None) -> None:
        self.run_id = run_id
        self._fs = store.fs
        name = f"{run_id}.jsonl" if rank is None else f"{run_id}.rank{rank}.jsonl"
        self.path = self._fs.path(RUNS_DIR, name)
        self._lines: list[str] = []
        self._flushed_at = time.monotonic()
        self._file = None
        if self._fs.is_local:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    @property
    def url(self) -> str:
        return self._fs.url_of(RUNS_DIR, os.path.basename(self.path))

    def event(self, event: str, **fields: Any) -> None:
        """Write one event line (flushed, so a crash loses nothing already logged)."""
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
            return
        self._lines.append(line)
        if time.monotonic() - self._flushed_at > REMOTE_FLUSH_SEC:
            self._flush_remote()

    def start(self, **fields: Any) -> None:
        """The first event: who runs, where, and with what."""
        self.event("start", run_id=self.run_id, host=socket.gethostname(), pid=os.getpid(), **fields)

    def _flush_remote(self) -> None:
        self._fs.write_bytes(self.path, ("\n".join(self._lines) + "\n").encode())
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._lines:
            self._flush_remote()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.event("aborted", error=f"{type(exc).__name__}: {exc}")
        self.close()
