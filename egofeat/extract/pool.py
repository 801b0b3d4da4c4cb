"""A pool of killable worker processes that decode ahead of the encoder.

:class:`DecodePool` runs :func:`~egofeat.extract.decode.decode_job` in worker processes
(``spawn`` context: torch in the parent is never forked) with bounded prefetch and a
wall-clock timeout per job: a hung or crashed decoder becomes an error result and a fresh
worker takes its place. Native decoders can spin forever in C code holding the GIL, so only
killing the process stops them.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Literal

from egofeat.extract.decode import DecodeJob, DecodeResult, Opener, decode_job
from egofeat.extract.video import open_video

__all__ = ["DecodePool"]


def _worker_main(conn: Connection, opener: Opener, threads: int) -> None:
    try:
        while (job := conn.recv()) is not None:
            conn.send(decode_job(job, opener=opener, threads=threads))
    except (EOFError, KeyboardInterrupt):  # the parent went away or the run was interrupted
        pass
    # A worker owns nothing to flush or clean up (results went through the pipe), and tearing
    # down an interpreter that imported torch and the decoders takes about a second: end now.
    conn.close()
    os._exit(0)


@contextlib.contextmanager
def _main_module_not_reimported() -> Iterator[None]:
    """Start a ``spawn`` child without re-running the parent's ``__main__`` in it.

    A worker runs :func:`_worker_main` of this module and needs nothing of ``__main__``, but
    ``spawn`` re-imports the parent's main script in every child: for the ``egofeat`` command or
    a benchmark script that imports torch, seconds per worker (the first parts of a run wait on
    them, and so does every worker replaced after a crash or a timeout). ``spawn`` skips a main
    module named like a package's ``__main__``, so the main module goes by such a name while
    the child starts.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if main is None or (spec is not None and spec.name.endswith(".__main__")):
        yield
        return
    main.__spec__ = importlib.machinery.ModuleSpec("egofeat.__main__", None)
    try:
        yield
    finally:
        main.__spec__ = spec


class _Worker:
    """One decode process, the parent's end of its pipe, and the job it is working on."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process, self.conn = process, conn
        self.job: tuple[int, DecodeJob] | None = None
        self.started = 0.0
        self.stopping = False

    @classmethod
    def start(
        cls, context: multiprocessing.context.BaseContext, opener: Opener, threads: int
    ) -> _Worker:
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(child, opener, threads), name="egofeat-decode", daemon=True
        )
        with _main_module_not_reimported():
            process.start()
        child.close()
        return cls(process, parent)

    def assign(self, sequence: int, job: DecodeJob) -> None:
        self.job, self.started = (sequence, job), time.monotonic()
        self.conn.send(job)

    def ask_to_stop(self) -> None:
        """Tell the worker to exit once it is idle (without waiting for it)."""
        if not self.stopping:
            self.stopping = True
            with contextlib.suppress(OSError):  # the worker is already gone
                self.conn.send(None)

    def stop(self, *, graceful: bool = False) -> None:
        if graceful:
            self.ask_to_stop()
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def exit_description(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is None or code >= 0:
            return f"exit code {code}"
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"


class DecodePool:
    """Decode jobs ahead of the consumer in worker processes.

    Args:
        workers: worker processes; ``0`` decodes in the calling process, lazily, one job per
            ``next()`` (no timeout protection: for tests and debugging).
        prefetch: decoded results allowed to wait for the consumer beyond one per worker; at
            most ``workers + prefetch`` jobs are in flight or waiting at any time.
        timeout_sec: wall-clock limit for one job. A worker still busy after it (a hang) is
            killed, the job becomes an error result naming the file, and a fresh worker
            starts. A worker that dies (e.g. a decoder segfault) is handled the same way.
        threads: decoder threads per worker.
        opener: the function opening a video (:func:`open_video`); workers import it, so it
            must be a module-level function.
        context: the multiprocessing start method, ``spawn`` or ``forkserver``.

    Results come back **in job order**, so a writer can consume them as it submitted them.
    Workers start on first use and are reused across :meth:`imap` calls; :meth:`close` (or
    leaving the ``with`` block) stops them.
    """

    def __init__(
        self,
        workers: int = 2,
        prefetch: int = 2,
        timeout_sec: float = 300.0,
        *,
        threads: int = 1,
        opener: Opener = open_video,
        context: Literal["spawn", "forkserver"] = "spawn",
    ) -> None:
        if workers < 0 or prefetch < 0 or not timeout_sec > 0:
            raise ValueError(
                f"need workers >= 0, prefetch >= 0 and timeout_sec > 0, got {workers}, "
                f"{prefetch} and {timeout_sec}"
            )
        if workers:
            try:
                pickle.dumps(opener)
            except (pickle.PicklingError, AttributeError, TypeError):
                raise ValueError(
                    f"opener {opener!r} cannot be sent to worker processes; pass a "
                    "module-level function"
                ) from None
        self.workers, self.prefetch, self.timeout_sec = workers, prefetch, timeout_sec
        self.threads, self.opener = threads, opener
        self._context = multiprocessing.get_context(context)
        self._slots: list[_Worker | None] = [None] * workers

    def imap(self, jobs: Iterable[DecodeJob]) -> Iterator[DecodeResult]:
        """Decode ``jobs`` (consumed lazily) and yield one result per job, in job order."""
        if self.workers == 0:
            for job in jobs:
                yield decode_job(job, opener=self.opener, threads=self.threads)
            return
        pending = iter(jobs)
        done: dict[int, DecodeResult] = {}
        submitted = yielded = 0
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - yielded < self.workers + self.prefetch:
                    worker = self._idle_worker()
                    if worker is None:
                        break
                    job = next(pending, None)
                    if job is None:
                        exhausted = True
                        break
                    worker.assign(submitted, job)
                    submitted += 1
                if yielded in done:
                    yield done.pop(yielded)
                    yielded += 1
                elif exhausted and yielded == submitted:
                    return
                else:
                    done.update(self._collect())
        finally:
            self._abandon_busy()

    def close(self) -> None:
        """Stop all workers (asked together, then awaited: they wind down in parallel)."""
        running = [worker for worker in self._slots if worker is not None]
        for worker in running:
            worker.ask_to_stop()
        for worker in running:
            worker.stop(graceful=True)
        self._slots = [None] * self.workers

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _idle_worker(self) -> _Worker | None:
        for slot, worker in enumerate(self._slots):
            if worker is not None and worker.job is None and not worker.process.is_alive():
                worker.stop()  # died while idle (e.g. killed from outside): replace it
                worker = None
            if worker is None:
                worker = self._slots[slot] = _Worker.start(self._context, self.opener, self.threads)
            if worker.job is None:
                return worker
        return None

    def _collect(self) -> dict[int, DecodeResult]:
        """Wait until at least one busy worker finishes, dies or times out; their results."""
        busy = [worker for worker in self._slots if worker is not None and worker.job is not None]
        deadline = min(worker.started for worker in busy) + self.timeout_sec
        wait([worker.conn for worker in busy], timeout=max(deadline - time.monotonic(), 0.0))
        results = {}
        for worker in busy:
            sequence, job = worker.job
            # Readiness first, then the clock: a result that sat in the pipe while the consumer
            # was busy finished in time.
            if worker.conn.poll():
                try:
                    results[sequence] = worker.conn.recv()
                    worker.job = None
                    continue
                except (EOFError, OSError):
                    problem = f"the decode worker died ({worker.exit_description()})"
                    reason = "decoder-crashed"
            elif time.monotonic() - worker.started > self.timeout_sec:
                problem = f"decoding timed out after {self.timeout_sec:g} s; the worker was killed"
                reason = "decode-timeout"
            else:
                continue
            results[sequence] = DecodeResult(
                key=job.key,
                path=str(job.path),
                decode_sec=time.monotonic() - worker.started,
                error=f"{job.path}: {problem}",
                error_reason=reason,
            )
            self._discard(worker)
        return results

    def _discard(self, worker: _Worker) -> None:
        worker.stop()
        self._slots[self._slots.index(worker)] = None  # a fresh one starts when needed

    def _abandon_busy(self) -> None:
        # The consumer stopped early (or failed): results still being decoded are unwanted.
        for worker in self._slots:
            if worker is not None and worker.job is not None:
                self._discard(worker)
