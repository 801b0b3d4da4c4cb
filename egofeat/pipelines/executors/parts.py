"""Parts as every executor runs them: the part function, plan keys, shards, the serial executor."""


from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from egofeat.extract import DecodePool
from egofeat.pipelines.extract import (
    DecodedVideo,
    PartOutcome,
    PartRunner,
    PartSpec,
    PreparedRun,
    StageTimes,
    decode_parts,
    plan_parts,
)
from egofeat.store import Stream

Sharding = Literal["balanced", "strided"]


# ---- the part function ----------------------------------------------------------------------


def part_outcomes(runner: PartRunner, parts: Sequence[PartSpec], pool: DecodePool) -> Iterator[PartOutcome]:
    """Decode each part's videos (ahead, in ``pool``), then encode and commit them; one outcome
    per part, in order. Every executor runs this."""
    for part, decoded in decode_parts(runner, parts, pool):
        outcome = runner.write_part(part, decoded)
        outcome.times.add(_decode_times(decoded))
        outcome.decode_fallbacks = decode_fallbacks(decoded)
        outcome.decoder_output = {video.result.path: video.result.diagnostics for video in decoded
                                  if video.result is not None and video.result.diagnostics}
        yield outcome


def decode_fallbacks(decoded: Sequence[DecodedVideo]) -> dict[str, int]:
    """Why videos of a part were decoded otherwise than asked (e.g. NVDEC -> CPU) -> count."""
    reasons: dict[str, int] = {}
    for video in decoded:
        if video.result is not None and video.result.fallback_reason:
            reason = video.result.fallback_reason.replace(str(video.result.path), "<video>")
            reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


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


def own_shard(run: PreparedRun, rank: int, world_size: int, how: Sharding = "balanced") -> PreparedRun:
    """``run`` narrowed to the parts of shard ``rank`` of ``world_size`` (torchrun ranks,
    ``--shard I/N``): shards of the whole plan, so every process computes the same split
    whatever is already done; retried parts outside the plan's boundaries are sharded on
    their own. ``requested`` becomes the shard's segments."""
    if world_size == 1:
        return run
    parts = all_parts(run)
    mine = {p.part_id for p in shard_parts(parts, rank, world_size, how)}
    planned = {p.part_id for p in parts}
    others = [p for p in run.parts if p.part_id not in planned]
    mine |= {p.part_id for p in shard_parts(others, rank, world_size, how)}
    requested = {sid for p in [*parts, *others] if p.part_id in mine for v in p.videos for sid in v.segment_ids}
    return replace(run, parts=[p for p in run.parts if p.part_id in mine], requested=frozenset(requested))


def uncommitted(streams: dict[str, Stream], part: PartSpec) -> PartSpec | None:
    """``part`` narrowed to the streams that still need it (not committed; retrying: not yet
    replaced); None if none does."""
    todo = {name: ids for name, ids in part.todo.items() if part.pending_in(streams[name])}
    return replace(part, todo=todo) if todo else None


def held_elsewhere(streams: dict[str, Stream], part: PartSpec) -> bool:
    """Whether another live process holds the lease of ``part`` in one of its streams."""
    for name in part.todo:
        lease = streams[name].claim(part.part_id)
        if lease is None:
            return True
        lease.release()
    return False


def target_streams(runner: PartRunner) -> dict[str, Stream]:
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


