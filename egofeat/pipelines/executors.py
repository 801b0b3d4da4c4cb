"""Executors of `egofeat extract`: serial, dask.distributed and torchrun, over one part function.

Every executor runs :func:`part_outcomes` (decode a part's videos, then
:meth:`PartRunner.write_part` encodes them and commits one store part per target stream) over
the parts :func:`prepare_extract` planned, so resume is the same for all three:

- a part's id hashes its video group's segment ids, and it lives in a stream whose key covers the
  encoder, its weights hash, sampling and crop: a changed configuration is refused (or goes to a
  new stream with ``--tag``), never mixed;
- a committed part is never redone; after a crash exactly the uncommitted parts are planned
  again, and the attempts crashed writers left are removed;
- a part is written only under its lease (a ``flock`` the kernel drops when its holder dies) and
  committed by creating its record exclusively, so concurrent runs write each part once; a run
  waits for parts another live process is writing, and redoes them if that process dies. Runs
  of *different* plans are kept off one stream (:meth:`Stream.hold_plan`).

``serial``
    this process, decoding in ``--workers`` processes ahead of the encoder.
``dask``
    one task per part, with a deterministic key, on a dask.distributed cluster: a
    ``LocalCluster`` (one worker per GPU with a ``GPU`` resource, through dask-cuda when it is
    installed) or the cluster at ``--scheduler``. Encoders load once per worker
    (:class:`ExtractWorkerPlugin`); tasks commit their own parts and return small outcomes,
    which the driver gathers as they complete; tasks that raise are retried.
``torchrun``
    ``torchrun --nproc_per_node=N -m egofeat extract ... --executor torchrun``: every rank runs
    the serial executor on its own shard of the plan (:func:`shard_parts`); rank 0 waits for
    the others at a gloo barrier, then finalizes.

The driver (torchrun: rank 0) shows one progress bar, finalizes (consolidated manifests, text
streams, cleanup) and logs the run to ``<store>/runs/<run-id>.jsonl`` (:mod:`.runlog`).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from egofeat.extract import DecodePool
from egofeat.pipelines.console import err_console
from egofeat.pipelines.extract import (
    DecodedVideo,
    ExtractOptions,
    ExtractSummary,
    PartOutcome,
    PartRunner,
    PartSpec,
    PreparedRun,
    StageTimes,
    _progress,
    build_sampler,
    decode_parts,
    plan_parts,
    prepare_extract,
    write_text_streams,
)
from egofeat.pipelines.runlog import RunLog, new_run_id
from egofeat.store import FeatureStore, Stream
from egofeat.store.crashpoints import crash_point

EXECUTORS = ("serial", "dask", "torchrun")
Sharding = Literal["balanced", "strided"]
#: How long torchrun ranks wait for each other at the end (static shards finish unevenly).
BARRIER_TIMEOUT = timedelta(hours=24)
#: How often a run waiting for parts that another live process is writing looks again.
POLL_SEC = 0.5
#: Worker plugins are named after their driver's dask client: ``egofeat-extract-<client id>``.
PLUGIN_PREFIX = "egofeat-extract-"


# ---- the part function ----------------------------------------------------------------------


def part_outcomes(runner: PartRunner, parts: Sequence[PartSpec], pool: DecodePool) -> Iterator[PartOutcome]:
    """Decode each part's videos (ahead, in ``pool``), then encode and commit them; one outcome
    per part, in order. Every executor runs this."""
    for part, decoded in decode_parts(runner, parts, pool):
        outcome = runner.write_part(part, decoded)
        outcome.times.add(_decode_times(decoded))
        yield outcome


def _decode_times(decoded: Sequence[DecodedVideo]) -> StageTimes:
    times = StageTimes()
    for video in decoded:
        if video.result is not None:
            times.decode += video.result.decode_sec
            times.frames_decoded += 0 if video.result.times is None else len(video.result.times)
    return times


@dataclass
class PartResult:
    """A part as an executor reports it: its outcome, or the error its task ended with."""

    part: PartSpec
    outcome: PartOutcome | None = None
    error: str | None = None
    where: str = ""

    @property
    def wrote(self) -> bool:
        """Whether this run committed the part in some stream."""
        return self.outcome is not None and bool(self.outcome.ok or self.outcome.errors)

    @property
    def skipped(self) -> bool:
        """Whether some stream was left to another writer (it holds or committed the part)."""
        return self.outcome is not None and bool(self.outcome.skipped)


# ---- plans ----------------------------------------------------------------------------------


def all_parts(run: PreparedRun) -> list[PartSpec]:
    """Every part of the run's plan, done or not, each with all its segments to do."""
    return plan_parts(run.plan, {name: set() for name in run.runner.stream_names},
                      run.options.videos_per_part)


def plan_key(parts: Sequence[PartSpec]) -> str:
    """A hash of a plan's part boundaries: runs with equal keys may write a stream together."""
    return hashlib.sha256("\n".join(sorted(p.part_id for p in parts)).encode()).hexdigest()[:16]


def part_cost(part: PartSpec) -> int:
    """Frames to decode for a part: what a part's run time grows with."""
    return sum(video.n_unique_frames for video in part.videos)


def shard_parts(parts: Sequence[PartSpec], rank: int, world_size: int,
                how: Sharding = "balanced") -> list[PartSpec]:
    """The parts rank ``rank`` of ``world_size`` writes: disjoint shards covering ``parts``.

    ``strided``: every ``world_size``-th part by part id, from the ``rank``-th. ``balanced``:
    longest first, each part (by decreasing frames to decode, ties by id) goes to the rank with
    the fewest frames so far (ties: the lowest rank), so ranks finish together when videos differ
    in length. Both depend on the parts alone: every rank computes the same split. Shards keep
    the plan's order.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if how == "strided":
        chosen = {p.part_id for p in sorted(parts, key=lambda p: p.part_id)[rank::world_size]}
    elif how == "balanced":
        loads = [0] * world_size
        chosen = set()
        for part in sorted(parts, key=lambda p: (-part_cost(p), p.part_id)):
            target = min(range(world_size), key=lambda r: (loads[r], r))
            loads[target] += part_cost(part)
            if target == rank:
                chosen.add(part.part_id)
    else:
        raise ValueError(f"sharding must be 'balanced' or 'strided', not {how!r}")
    return [p for p in parts if p.part_id in chosen]


def uncommitted(streams: dict[str, Stream], part: PartSpec) -> PartSpec | None:
    """``part`` narrowed to the streams that have not committed it; None if all have."""
    todo = {name: ids for name, ids in part.todo.items() if not streams[name].is_committed(part.part_id)}
    return replace(part, todo=todo) if todo else None


def held_elsewhere(streams: dict[str, Stream], part: PartSpec) -> bool:
    """Whether another live process holds the lease of ``part`` in one of its streams."""
    for name in part.todo:
        lease = streams[name].claim(part.part_id)
        if lease is None:
            return True
        lease.release()
    return False


def _streams(runner: PartRunner) -> dict[str, Stream]:
    return {t.stream.name: t.stream for t in runner.targets}


# ---- executors ------------------------------------------------------------------------------


class SerialExecutor:
    """Runs parts in this process with the run's part runner, decoding in worker processes."""

    def __init__(self, run: PreparedRun, *, where: str = "driver") -> None:
        self.runner = run.runner
        self.where = where
        options = run.options
        self._pool = DecodePool(options.workers, options.prefetch, options.decode_timeout)

    def describe(self) -> dict[str, Any]:
        return {"decode_workers": self._pool.workers}

    def map(self, parts: Sequence[PartSpec]) -> Iterator[PartResult]:
        """Run ``parts``; one result per part, in order."""
        by_id = {p.part_id: p for p in parts}
        for outcome in part_outcomes(self.runner, parts, self._pool):
            yield PartResult(by_id[outcome.part_id], outcome, where=self.where)

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.close()


class ExtractWorkerPlugin(WorkerPlugin):
    """Builds a dask worker's part runner (its encoders) and decode pool once, at worker start.

    Only the options travel to the workers: encoders are never shipped through the scheduler.
    With ``gpu_per_worker`` (a plain LocalCluster on a GPU machine), worker ``i`` uses GPU ``i``.
    A worker runs one part at a time (its decode pool and encoders serve one part), whatever
    its number of threads.
    """

    def __init__(self, options: ExtractOptions, name: str, *, gpu_per_worker: bool = False) -> None:
        self.options = options
        self.name = name
        self.gpu_per_worker = gpu_per_worker
        self.runner: PartRunner | None = None
        self.pool: DecodePool | None = None

    def setup(self, worker: Any) -> None:
        options = self.options
        if self.gpu_per_worker:
            import torch

            options = replace(options, device=f"cuda:{int(worker.name) % torch.cuda.device_count()}")
        if options.workers and multiprocessing.current_process().daemon:
            raise RuntimeError(
                f"dask worker {worker.address} is a daemonic process and cannot start decode "
                "processes: start workers with DASK_DISTRIBUTED__WORKER__DAEMON=False, or pass --workers 0"
            )
        store = FeatureStore.open(options.store)
        self.runner = PartRunner(options, store, build_sampler(options))
        self.pool = DecodePool(options.workers, options.prefetch, options.decode_timeout)
        self._one_part_at_a_time = threading.Lock()

    def teardown(self, worker: Any) -> None:
        if self.pool is not None:
            self.pool.close()

    def run(self, part: PartSpec) -> PartOutcome:
        """One part on this worker; parts other writers hold or committed are not decoded."""
        if self.runner is None:
            raise RuntimeError(f"{self.name} did not set up on this worker: see the worker's log")
        streams = _streams(self.runner)
        todo = uncommitted(streams, part)
        if todo is None or held_elsewhere(streams, todo):
            return PartOutcome(part.part_id, skipped=sorted(part.todo), segments=part.n_segments)
        with self._one_part_at_a_time:
            crash_point("decode")
            (outcome,) = part_outcomes(self.runner, [todo], self.pool)
        return outcome


def run_part_task(part: PartSpec, plugin_name: str) -> tuple[PartOutcome, str]:
    """The dask task of one part: (its outcome, the worker's address)."""
    worker = get_worker()
    return worker.plugins[plugin_name].run(part), worker.address


class DaskExecutor:
    """Runs each part as a dask task, on a LocalCluster or the cluster at ``scheduler``."""

    def __init__(self, run: PreparedRun, *, scheduler: str | None = None,
                 workers: int | None = None, retries: int = 2) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--dask-workers must be >= 1, not {workers}")
        if retries < 0:
            raise ValueError(f"--retries must be >= 0, not {retries}")
        self.options = run.options
        self.scheduler, self.workers, self.retries = scheduler, workers, retries
        # Task keys name the work (streams and part), not the run: the same part submitted by
        # two drivers to one scheduler is one task.
        stream_keys = sorted(t.stream.info.key for t in run.runner.targets)
        self._key_prefix = hashlib.sha256(",".join(stream_keys).encode()).hexdigest()[:12]
        self._stack = ExitStack()
        self._gpu_per_worker = False
        self._resources: dict[str, int] | None = None
        self._round = 0

    def __enter__(self) -> DaskExecutor:
        try:
            self.client = self._stack.enter_context(self._connect())
            self._unregister_dead_drivers_plugins()
            plugin = ExtractWorkerPlugin(self.options, PLUGIN_PREFIX + self.client.id,
                                         gpu_per_worker=self._gpu_per_worker)
            self.client.register_plugin(plugin, name=plugin.name)
            self._stack.callback(self.client.unregister_worker_plugin, plugin.name)
            self.plugin_name = plugin.name
            if any("GPU" in w.get("resources", {}) for w in self.client.scheduler_info()["workers"].values()):
                self._resources = {"GPU": 1}  # one part at a time per GPU
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _unregister_dead_drivers_plugins(self) -> None:
        """A killed driver never unregisters its plugin: free the encoders it left in the workers."""
        live = set(self.client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))
        loaded = self.client.run(lambda dask_worker: [n for n in dask_worker.plugins if n.startswith(PLUGIN_PREFIX)])
        for name in {name for names in loaded.values() for name in names}:
            if name.removeprefix(PLUGIN_PREFIX) not in live:
                self.client.unregister_worker_plugin(name)

    def _connect(self) -> Client:
        if self.scheduler:
            return Client(self.scheduler)
        gpus = _gpu_count(self.options.device)
        n_workers = self.workers or gpus or max(1, (os.cpu_count() or 2) // 2)
        if self.options.workers:  # decode processes are children of the worker processes
            self._stack.enter_context(dask.config.set({"distributed.worker.daemon": False}))
        kwargs: dict[str, Any] = {
            "n_workers": n_workers, "threads_per_worker": 1, "host": "127.0.0.1",
            "silence_logs": logging.ERROR,
        }
        if gpus:
            kwargs["resources"] = {"GPU": 1}
        try:
            from dask_cuda import LocalCUDACluster  # each worker sees its own GPU as cuda:0
        except ImportError:
            LocalCUDACluster = None  # noqa: N806
        if gpus and LocalCUDACluster is not None:
            cluster = LocalCUDACluster(**kwargs)
        else:
            self._gpu_per_worker = bool(gpus)
            cluster = LocalCluster(processes=True, **kwargs)
        self._stack.enter_context(cluster)
        return Client(cluster)

    def describe(self) -> dict[str, Any]:
        info = self.client.scheduler_info()
        return {"scheduler": info.get("address"), "dask_workers": len(info["workers"]),
                "dashboard": self.dashboard, "retries": self.retries, "resources": self._resources}

    @property
    def dashboard(self) -> str:
        return self.client.dashboard_link

    def map(self, parts: Sequence[PartSpec]) -> Iterator[PartResult]:
        """Submit one task per part; results as tasks complete."""
        self._round += 1
        futures = {
            self.client.submit(
                run_part_task, part, self.plugin_name, retries=self.retries, pure=False,
                resources=self._resources, key=f"egofeat-{self._key_prefix}-{part.part_id}-{self._round}",
            ): part
            for part in parts
        }
        for future in as_completed(futures):
            part = futures.pop(future)
            try:
                outcome, where = future.result()
            except Exception as error:  # after its retries; the part stays uncommitted
                yield PartResult(part, error=f"{type(error).__name__}: {error}")
            else:
                yield PartResult(part, outcome, where=where)
            future.release()


def _gpu_count(device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401  (the dashboard's dependency)
    except ImportError:
        return False
    return True


# ---- the driver -----------------------------------------------------------------------------


def execute(options: ExtractOptions, executor: str = "serial", *, scheduler: str | None = None,
            dask_workers: int | None = None, retries: int = 2,
            sharding: Sharding = "balanced") -> ExtractSummary | None:
    """Run `egofeat extract` with one of :data:`EXECUTORS` (see the module docstring).

    Returns the run's summary; None on torchrun ranks other than 0 (rank 0 reports for all).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor == "torchrun":
        return run_torchrun(options, sharding=sharding)
    started = time.perf_counter()
    run = prepare_extract(_absolute(options) if executor == "dask" else options)
    run_id = new_run_id()
    parts = all_parts(run)
    with ExitStack() as stack:
        _hold_plan(run, plan_key(parts), stack)
        log = stack.enter_context(RunLog(run.store, run_id))
        _record_plan(run, plan_key(parts), run_id)
        results: list[PartResult] = []
        if not run.parts:
            log.start(executor=executor, **_plan_fields(run, parts))
        else:
            if executor == "dask":
                pool: SerialExecutor | DaskExecutor = stack.enter_context(DaskExecutor(
                    run, scheduler=scheduler, workers=dask_workers, retries=retries))
                _announce(pool)
            else:
                pool = stack.enter_context(SerialExecutor(run))
            log.start(executor=executor, **pool.describe(), **_plan_fields(run, parts))
            results = _run_parts(run, pool, run.parts, log, progress=run.options.progress)
        return _finish(run, results, started, log)


def _absolute(options: ExtractOptions) -> ExtractOptions:
    """Options with absolute local paths: dask workers may run in another folder."""
    def absolute(path: Path | None) -> Path | None:
        return path if path is None or "://" in str(path) else Path(path).resolve()

    return replace(options, annotations=[absolute(p) for p in options.annotations],
                   videos=absolute(options.videos), store=absolute(options.store),
                   boxes=absolute(options.boxes))


def _announce(pool: DaskExecutor) -> None:
    info = pool.describe()
    hint = "" if _has_bokeh() else " (its pages need bokeh: pip install bokeh)"
    err_console.print(f"dask: {info['dask_workers']} workers, scheduler {info['scheduler']}, "
                      f"dashboard {pool.dashboard}{hint}")


def _hold_plan(run: PreparedRun, key: str, stack: ExitStack) -> None:
    for stream in _streams(run.runner).values():
        stack.enter_context(stream.hold_plan(key))


def _record_plan(run: PreparedRun, key: str, run_id: str) -> None:
    for name, stream in _streams(run.runner).items():
        stream.record_plan([p.part_id for p in run.parts if name in p.todo], plan_key=key, run_id=run_id)


def _plan_fields(run: PreparedRun, parts: Sequence[PartSpec]) -> dict[str, Any]:
    return {
        "streams": {name: s.info.key for name, s in _streams(run.runner).items()},
        "plan_key": plan_key(parts), "parts_planned": len(parts), "parts_todo": len(run.parts),
        "segments_todo": sum(p.n_segments for p in run.parts), "options": asdict(run.options),
    }


def _run_parts(run: PreparedRun, pool: SerialExecutor | DaskExecutor, parts: Sequence[PartSpec],
               log: RunLog, *, progress: bool) -> list[PartResult]:
    """Run ``parts``, then those other live writers held once they are done with them."""
    streams = _streams(run.runner)
    results: list[PartResult] = []
    times = StageTimes()
    with _progress(progress, sum(p.n_segments for p in parts)) as bar:
        while parts:
            held = []
            for result in pool.map(parts):
                results.append(result)
                _log_result(log, result)
                if result.outcome is not None:
                    times.add(result.outcome.times)
                if result.skipped:
                    held.append(result.part)
                else:
                    bar.advance(result.part.n_segments, times)
                crash_point("after_part")
            parts = _after_other_writers(streams, held, log)
            settled = {p.part_id for p in held} - {p.part_id for p in parts}
            for part in held:
                if part.part_id in settled:  # the other writer committed it
                    bar.advance(part.n_segments, times)
    return results


def _after_other_writers(streams: dict[str, Stream], held: Sequence[PartSpec],
                         log: RunLog) -> list[PartSpec]:
    """Wait until no other live process holds any of ``held``; those still uncommitted then."""
    waiting = [p for p in (uncommitted(streams, part) for part in held) if p is not None]
    if waiting:
        log.event("waiting", parts=[p.part_id for p in waiting],
                  reason="another live process holds their leases")
    while any(held_elsewhere(streams, part) for part in waiting):
        time.sleep(POLL_SEC)
    return [p for p in (uncommitted(streams, part) for part in waiting) if p is not None]


def _log_result(log: RunLog, result: PartResult) -> None:
    if result.outcome is None:
        log.event("part_failed", part_id=result.part.part_id, where=result.where, error=result.error)
        return
    outcome = result.outcome
    log.event(
        "part", part_id=outcome.part_id, where=result.where, segments=outcome.segments,
        streams={n: {"ok": outcome.ok[n], "errors": outcome.errors.get(n, 0)} for n in outcome.ok},
        skipped=outcome.skipped,
        seconds={k: round(v, 4) for k, v in asdict(outcome.times).items() if not k.startswith("frames")},
        frames={"decoded": outcome.times.frames_decoded, "encoded": outcome.times.frames_encoded},
    )


def _finish(run: PreparedRun, results: Sequence[PartResult], started: float,
            log: RunLog) -> ExtractSummary:
    """Consolidate, write text streams, clean up, summarize and end the run log."""
    streams = _streams(run.runner)
    text_streams = write_text_streams(run) if run.options.text else []
    for name in [*streams, *text_streams]:
        run.store.stream(name).cleanup()  # attempts crashed writers left (no live holder)
    for stream in streams.values():
        stream.consolidate()
    summary = _summarize(run, results, started, text_streams, log.url)
    log.event("end", summary=summary.to_dict())
    return summary


def _summarize(run: PreparedRun, results: Sequence[PartResult], started: float,
               text_streams: list[str], run_log: str) -> ExtractSummary:
    names = run.runner.stream_names
    ok, errors = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    times = StageTimes()
    for result in results:
        if result.outcome is not None:
            for name, n in result.outcome.ok.items():
                ok[name] += n
            for name, n in result.outcome.errors.items():
                errors[name] += n
            times.add(result.outcome.times)
    last = {r.part.part_id: r for r in results}  # a part run again after waiting: its last result
    wrote = {r.part.part_id for r in results if r.wrote}
    failed = sorted(pid for pid, r in last.items() if r.error is not None and pid not in wrote)
    return ExtractSummary(
        store=str(run.store.path), streams=names, segments=run.segments.height,
        planned_parts=len(run.parts), done_parts=len(wrote),
        skipped_parts=len(last) - len(wrote) - len(failed), ok=ok, errors=errors,
        dedup_ratio=round(run.plan.dedup_ratio, 3), requested_frames=run.plan.n_requested_frames,
        unique_frames=run.plan.n_unique_frames,
        seconds={"decode_worker": round(times.decode, 2), "encode": round(times.encode, 2),
                 "write": round(times.write, 2), "wall": round(time.perf_counter() - started, 2)},
        text_streams=text_streams, nothing_to_do=not run.parts, failed_parts=failed, run_log=run_log,
    )


# ---- torchrun -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_environ(cls) -> RankInfo:
        """Read RANK, WORLD_SIZE and LOCAL_RANK, which torchrun sets."""
        try:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        except (KeyError, ValueError):
            raise ValueError(
                "--executor torchrun needs RANK and WORLD_SIZE, which torchrun sets: launch with "
                "`torchrun --nproc_per_node=N -m egofeat extract ... --executor torchrun`"
            ) from None
        return cls(rank, world_size, int(os.environ.get("LOCAL_RANK", rank)))


def run_torchrun(options: ExtractOptions, *, sharding: Sharding = "balanced") -> ExtractSummary | None:
    """One rank of a torchrun launch: its shard of the plan, then (rank 0) the finalization.

    ``--device cuda`` means ``cuda:<LOCAL_RANK>``. Ranks other than 0 return None.
    """
    import torch.distributed as dist

    started = time.perf_counter()
    me = RankInfo.from_environ()
    if options.device == "cuda":
        options = replace(options, device=f"cuda:{me.local_rank}")
    grouped = me.world_size > 1
    if grouped:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        run = prepare_extract(options)
        if grouped:  # preparing removes attempts that crashed writers left: done before any rank writes
            dist.barrier()
        run_id = _broadcast(new_run_id() if me.rank == 0 else "", grouped)
        parts = all_parts(run)
        mine = {p.part_id for p in shard_parts(parts, me.rank, me.world_size, sharding)}
        todo = [p for p in run.parts if p.part_id in mine]
        with ExitStack() as stack:
            _hold_plan(run, plan_key(parts), stack)
            log = stack.enter_context(RunLog(run.store, run_id, rank=me.rank))
            if me.rank == 0:
                _record_plan(run, plan_key(parts), run_id)
            log.start(executor="torchrun", **asdict(me), sharding=sharding, shard_parts=len(todo),
                      **_plan_fields(run, parts))
            watch = _CommitProgress(run, enabled=run.options.progress and me.rank == 0)
            with watch, SerialExecutor(run, where=f"rank {me.rank}") as pool:
                results = _run_parts(run, pool, todo, log, progress=False)
                if grouped:
                    dist.barrier()
            everyone = _gather(results, me.rank, me.world_size, grouped)
            if me.rank != 0:
                log.event("end", parts=len(results))
                return None
            return _finish(run, everyone, started, log)
    finally:
        if grouped:
            dist.destroy_process_group()


def _broadcast(value: str, grouped: bool) -> str:
    if not grouped:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(results: list[PartResult], rank: int, world_size: int, grouped: bool) -> list[PartResult]:
    if not grouped:
        return results
    import torch.distributed as dist

    out: list[list[PartResult]] | None = [[] for _ in range(world_size)] if rank == 0 else None
    dist.gather_object(results, out, dst=0)
    return [r for rank_results in out or [] for r in rank_results]


class _CommitProgress:
    """Rank 0's progress bar over every rank's parts, from the commit records that appear."""

    def __init__(self, run: PreparedRun, *, enabled: bool) -> None:
        self.streams = _streams(run.runner)
        self.pending = {p.part_id: p for p in run.parts}
        self.enabled = enabled and bool(self.pending)
        self.bar = _progress(self.enabled, sum(p.n_segments for p in run.parts))
        self.times = StageTimes()  # frames/s of committed parts
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="egofeat-progress", daemon=True)

    def _watch(self) -> None:
        while self.pending and not self.stop.wait(1.0):
            self._poll()

    def _poll(self) -> None:
        for part_id, part in list(self.pending.items()):
            if all(self.streams[name].is_committed(part_id) for name in part.todo):
                del self.pending[part_id]
                self.times.frames_decoded += part_cost(part)
                self.bar.advance(part.n_segments, self.times)

    def __enter__(self) -> _CommitProgress:
        if self.enabled:
            self.bar.__enter__()
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.stop.set()
            self.thread.join()
            self._poll()
            self.bar.__exit__(*exc)
