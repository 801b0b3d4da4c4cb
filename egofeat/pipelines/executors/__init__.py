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

import time
from contextlib import ExitStack

from egofeat.config import ExtractConfig
from egofeat.pipelines.executors.dask import DaskExecutor, ExtractWorkerPlugin
from egofeat.pipelines.executors.driver import (
    absolute_paths,
    announce,
    announce_videos,
    finish,
    hold_plan,
    plan_fields,
    record_plan,
    run_parts,
)
from egofeat.pipelines.executors.parts import (
    PartResult,
    SerialExecutor,
    all_parts,
    own_shard,
    part_cost,
    plan_key,
    shard_parts,
)
from egofeat.pipelines.executors.torchrun import RankInfo, run_torchrun
from egofeat.pipelines.extract import ExtractSummary, PreparedRun, prepare_extract
from egofeat.pipelines.runlog import RunLog, new_run_id

__all__ = [
    "DaskExecutor",
    "ExtractWorkerPlugin",
    "PartResult",
    "RankInfo",
    "SerialExecutor",
    "execute",
    "part_cost",
    "plan_key",
    "run_torchrun",
    "shard_parts",
]


def execute(options: ExtractConfig, *, prepared: PreparedRun | None = None) -> ExtractSummary | None:
    """Run `egofeat extract` with its executor (``options.executor``, see the module docstring).

    ``prepared`` is the run :func:`~egofeat.pipelines.extract.prepare_extract` planned from
    ``options`` (to look at the plan, or time it, before running it); planned here otherwise.
    Returns the run's summary; None on torchrun ranks other than 0 (rank 0 reports for all).
    """
    executor = options.executor
    if executor == "torchrun":
        return run_torchrun(options, sharding=options.sharding)
    started = time.perf_counter()
    run = prepared or prepare_extract(absolute_paths(options) if executor == "dask" else options)
    announce_videos(run)
    run_id = new_run_id()
    parts = all_parts(run)
    with ExitStack() as stack:
        hold_plan(run, plan_key(parts), stack)
        log = stack.enter_context(RunLog(run.store, run_id))
        record_plan(run, plan_key(parts), run_id)  # the whole plan: `egofeat info` counts it
        run = own_shard(run, *options.shard_index, options.sharding)  # --shard I/N: a part of it
        results: list[PartResult] = []
        if not run.parts:
            log.start(executor=executor, **plan_fields(run, parts))
        else:
            if executor == "dask":
                pool: SerialExecutor | DaskExecutor = stack.enter_context(DaskExecutor(
                    run, scheduler=options.scheduler, workers=options.dask_workers,
                    retries=options.retries))
                announce(pool)
            else:
                pool = stack.enter_context(SerialExecutor(run))
            log.start(executor=executor, **pool.describe(), **plan_fields(run, parts))
            results = run_parts(run, pool, run.parts, log, progress=run.options.progress)
        return finish(run, results, started, log)


