"""The torchrun executor: every rank runs its shard of the plan serially; rank 0 finalizes."""


from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import timedelta

from egofeat.config import ExtractConfig
from egofeat.pipelines.executors.driver import (
    ExtractProgress,
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
    Sharding,
    all_parts,
    own_shard,
    plan_key,
    target_streams,
)
from egofeat.pipelines.extract import (
    ExtractSummary,
    PreparedRun,
    prepare_extract,
)
from egofeat.pipelines.runlog import RunLog, new_run_id

#: How long torchrun ranks wait for each other at the end (static shards finish unevenly).
BARRIER_TIMEOUT = timedelta(hours=24)


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


def run_torchrun(options: ExtractConfig, *, sharding: Sharding = "balanced") -> ExtractSummary | None:
    """One rank of a torchrun launch: its shard of the plan, then (rank 0) the finalization.

    ``--device cuda`` means ``cuda:<LOCAL_RANK>``. Ranks other than 0 return None.
    """
    import torch.distributed as dist

    started = time.perf_counter()
    me = RankInfo.from_environ()
    if options.device == "cuda":
        options = options.model_copy(update={"device": f"cuda:{me.local_rank}"})
    grouped = me.world_size > 1
    if grouped:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        run = prepare_extract(options)
        if grouped:  # preparing removes attempts that crashed writers left: done before any rank writes
            dist.barrier()
        if me.rank == 0:
            announce_videos(run)
        run_id = _broadcast(new_run_id() if me.rank == 0 else "", grouped)
        parts = all_parts(run)
        todo = own_shard(run, me.rank, me.world_size, sharding).parts
        with ExitStack() as stack:
            hold_plan(run, plan_key(parts), stack)
            log = stack.enter_context(RunLog(run.store, run_id, rank=me.rank))
            if me.rank == 0:
                record_plan(run, plan_key(parts), run_id)
            log.start(executor="torchrun", **asdict(me), sharding=sharding, shard_parts=len(todo),
                      **plan_fields(run, parts))
            watch = _CommitProgress(run, enabled=run.options.progress and me.rank == 0)
            with watch, SerialExecutor(run, where=f"rank {me.rank}") as pool:
                results = run_parts(run, pool, todo, log, progress=False)
                if grouped:
                    dist.barrier()
            everyone = _gather(results, me.rank, me.world_size, grouped)
            if me.rank != 0:
                log.event("end", parts=len(results))
                return None
            return finish(run, everyone, started, log)
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
    """Rank 0's progress over every rank's parts, from the commit records that appear."""

    def __init__(self, run: PreparedRun, *, enabled: bool) -> None:
        self.streams = target_streams(run.runner)
        self.pending = {p.part_id: p for p in run.parts}
        self.enabled = enabled and bool(self.pending)
        self.bar = ExtractProgress(run.parts, run.options, enabled=self.enabled)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="egofeat-progress", daemon=True)

    def _watch(self) -> None:
        while self.pending and not self.stop.wait(1.0):
            self._poll()

    def _poll(self) -> None:
        for part_id, part in list(self.pending.items()):
            if not any(part.pending_in(self.streams[name]) for name in part.todo):
                del self.pending[part_id]
                self.bar.part_done(None, part)

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
