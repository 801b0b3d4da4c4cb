"""The driver of an extraction run: plan, hold, run parts, progress, finalize, summarize."""


from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from egofeat._util.progress import ProgressReporter
from egofeat.config import ExtractConfig
from egofeat.pipelines.console import err_console
from egofeat.pipelines.executors.dask import DaskExecutor, has_bokeh
from egofeat.pipelines.executors.parts import (
    PartResult,
    SerialExecutor,
    held_elsewhere,
    part_cost,
    plan_key,
    target_streams,
    uncommitted,
)
from egofeat.pipelines.extract import (
    ExtractSummary,
    PartOutcome,
    PartSpec,
    PreparedRun,
    StageTimes,
    write_extract_texts,
)
from egofeat.pipelines.runlog import RunLog
from egofeat.store import STATUS_ERROR, Stream
from egofeat.store.crashpoints import crash_point
from egofeat.store.stream import error_reasons

#: How often a run waiting for parts that another live process is writing looks again.
POLL_SEC = 0.5


# ---- the driver -----------------------------------------------------------------------------


def absolute_paths(options: ExtractConfig) -> ExtractConfig:
    """Options with absolute local paths: dask workers may run in another folder."""
    def absolute(path: Any) -> Any:
        return path if path is None or "://" in str(path) else Path(path).resolve()

    return options.model_copy(update={
        "annotations": [absolute(p) for p in options.annotations], "videos": absolute(options.videos),
        "store": str(absolute(options.store)), "boxes": absolute(options.boxes),
    })


def announce(pool: DaskExecutor) -> None:
    info = pool.describe()
    hint = "" if has_bokeh() else " (its pages need bokeh: pip install bokeh)"
    err_console.print(f"dask: {info['dask_workers']} workers, scheduler {info['scheduler']}, "
                      f"dashboard {pool.dashboard}{hint}")


def announce_videos(run: PreparedRun) -> None:
    """One line (stderr) on the videos the preflight found, before any part runs."""
    check, options = run.videos, run.options
    if check is None or not options.progress:
        return
    if options.progress_json:
        print(json.dumps({"what": "videos", **check.to_dict()}), file=sys.stderr, flush=True)
        return
    line = f"videos: {len(check.found):,} of {check.total:,} found under {check.root} ({check.layout})"
    if check.missing:
        video_id, path = next(iter(check.missing.items()))
        line += (f"; {len(check.missing):,} missing (e.g. {video_id}: {path}): their segments become "
                 "error rows; --retry-errors redoes them once the videos are there")
    if check.unusable:
        line += f"; {len(check.unusable):,} unusable (e.g. {next(iter(check.unusable.values()))})"
    err_console.print(line, highlight=False, soft_wrap=True)


def hold_plan(run: PreparedRun, key: str, stack: ExitStack) -> None:
    for stream in target_streams(run.runner).values():
        stack.enter_context(stream.hold_plan(key))


def record_plan(run: PreparedRun, key: str, run_id: str) -> None:
    for name, stream in target_streams(run.runner).items():
        stream.record_plan([p.part_id for p in run.parts if name in p.todo], plan_key=key, run_id=run_id)


def plan_fields(run: PreparedRun, parts: Sequence[PartSpec]) -> dict[str, Any]:
    return {
        "streams": {name: s.info.key for name, s in target_streams(run.runner).items()},
        "plan_key": plan_key(parts), "parts_planned": len(parts), "parts_todo": len(run.parts),
        "segments_todo": sum(p.n_segments for p in run.parts), "options": run.options.model_dump(mode="json"),
    }


class ExtractProgress(ProgressReporter):
    """The progress of an extraction: parts done of the total, segments ok / with errors,
    decoded frames per second, ETA (see :class:`~egofeat._util.progress.ProgressReporter`): a
    bar on a terminal, else a line every ``--log-interval`` seconds, JSON lines with ``--json``."""

    def __init__(self, parts: Sequence[PartSpec], options: ExtractConfig, *, enabled: bool = True) -> None:
        mode = "off" if not (enabled and options.progress) else ("json" if options.progress_json else "auto")
        super().__init__("extract", len(parts), unit="parts", mode=mode, interval=options.log_interval,
                         rate_of=lambda done, elapsed: (self.frames / elapsed, "frames/s"))
        self.frames = 0
        self.fields.update(segments_ok=0, segments_errors=0)

    def part_done(self, outcome: PartOutcome | None, part: PartSpec) -> None:
        """Count ``part`` done; its ``outcome`` when this process wrote it (else its frames)."""
        if outcome is None:
            self.frames += part_cost(part)
            self.advance(1)
            return
        self.frames += outcome.times.frames_decoded
        rows = max(outcome.ok.values(), default=0), max(outcome.errors.values(), default=0)
        self.advance(1, segments_ok=self.fields["segments_ok"] + rows[0],
                     segments_errors=self.fields["segments_errors"] + rows[1])


def run_parts(run: PreparedRun, pool: SerialExecutor | DaskExecutor, parts: Sequence[PartSpec],
               log: RunLog, *, progress: bool) -> list[PartResult]:
    """Run ``parts``, then those other live writers held once they are done with them."""
    streams = target_streams(run.runner)
    results: list[PartResult] = []
    with ExtractProgress(parts, run.options, enabled=progress) as bar:
        while parts:
            held = []
            for result in pool.map(parts):
                results.append(result)
                _log_result(log, result)
                if result.skipped:
                    held.append(result.part)
                else:
                    bar.part_done(result.outcome, result.part)
                crash_point("after_part")
            parts = _after_other_writers(streams, held, log)
            settled = {p.part_id for p in held} - {p.part_id for p in parts}
            for part in held:
                if part.part_id in settled:  # the other writer committed it
                    bar.part_done(None, part)
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
    for path, output in outcome.decoder_output.items():  # native decoders' noise: here, not the console
        log.event("decoder_output", part_id=outcome.part_id, path=path, output=output)


def finish(run: PreparedRun, results: Sequence[PartResult], started: float,
            log: RunLog) -> ExtractSummary:
    """Consolidate, write text streams, clean up, summarize and end the run log."""
    streams = target_streams(run.runner)
    text_streams = write_extract_texts(run) if run.options.text else []
    for name in [*streams, *text_streams]:
        run.store.stream(name).cleanup()  # attempts crashed writers left (no live holder)
    for stream in streams.values():
        stream.consolidate()
    summary = _summarize(run, results, started, text_streams, log.url)
    _count_stream_errors(run, streams, summary)
    log.event("end", summary=summary.to_dict())
    return summary


def _summarize(run: PreparedRun, results: Sequence[PartResult], started: float,
               text_streams: list[str], run_log: str) -> ExtractSummary:
    names = run.runner.stream_names
    ok, errors = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    times = StageTimes()
    fallbacks: dict[str, int] = {}
    for result in results:
        if result.outcome is not None:
            for name, n in result.outcome.ok.items():
                ok[name] += n
            for name, n in result.outcome.errors.items():
                errors[name] += n
            times.add(result.outcome.times)
            for reason, n in result.outcome.decode_fallbacks.items():
                fallbacks[reason] = fallbacks.get(reason, 0) + n
    last = {r.part.part_id: r for r in results}  # a part run again after waiting: its last result
    wrote = {r.part.part_id for r in results if r.wrote}
    failed = sorted(pid for pid, r in last.items() if r.error is not None and pid not in wrote)
    # this run's own work: the frames of the parts it wrote (a retry: of the segments it redid)
    videos = [video for pid in wrote for video in last[pid].part.videos]
    requested = sum(video.n_requested_frames for video in videos)
    unique = sum(video.n_unique_frames for video in videos)
    return ExtractSummary(
        store=str(run.store.path), streams=names, segments=run.segments.height,
        planned_parts=len(run.parts), done_parts=len(wrote),
        skipped_parts=len(last) - len(wrote) - len(failed), ok=ok, errors=errors,
        dedup_ratio=round(requested / unique, 3) if unique else 1.0, requested_frames=requested,
        unique_frames=unique,
        seconds={"decode_worker": round(times.decode, 2), "encode": round(times.encode, 2),
                 "write": round(times.write, 2), "wall": round(time.perf_counter() - started, 2)},
        text_streams=text_streams, nothing_to_do=not run.parts, failed_parts=failed, run_log=run_log,
        decode_fallbacks=fallbacks, retried_parts=sum(1 for pid in wrote if last[pid].part.replaces),
        videos=run.videos.to_dict() if run.videos is not None else {},
    )


def _count_stream_errors(run: PreparedRun, streams: dict[str, Stream], summary: ExtractSummary) -> None:
    """The error rows the run's segments have in its streams now, whoever wrote them (earlier
    runs, a concurrent one): the exit status and the summary tell the truth about the stream."""
    wanted = run.segments.select("segment_id")
    if run.requested is not None:
        wanted = wanted.filter(pl.col("segment_id").is_in(list(run.requested)))
    frames = []
    for name, stream in streams.items():
        rows = (stream.manifest().filter(pl.col("status") == STATUS_ERROR)
                .select("segment_id", "status", "error_reason", "retryable").collect()
                .join(wanted, on="segment_id", how="semi"))
        summary.error_rows[name] = rows.height
        frames.append(rows)
    summary.errors_from_other_runs = sum(max(0, n - summary.errors.get(name, 0))
                                         for name, n in summary.error_rows.items())
    summary.error_reasons = error_reasons(pl.concat(frames)) if frames else {}


