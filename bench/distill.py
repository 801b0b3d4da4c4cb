"""Benchmark: a distillation epoch on cached teacher logits vs training the student alone.

Run on demand (not part of the tests):

    python bench/distill.py                        # EPIC-100-train scale: 67,217 rows
    python bench/distill.py --rows 8000 --json     # quicker (epoch times extrapolated)
    python bench/distill.py --heads trn --teachers 3

Synthetic data in RAM, as ``egofeat distill`` loads it: the student's stream (fp16
``rows x frames x dim``, as stored), labels a fixed random projection of its time-mean, and the
cached teacher logits (float32 ``rows x 1 x N·(97 + 300)``, one row per segment). Seconds per
training epoch through ``Trainer.fit`` (no validation pass) for:

(a) ``student alone``: the same head trained with cross-entropy on a HeadData holding only the
    student's stream;
(b) ``distill (cached)``: the teacher-logit stream beside it and ``DistillationLoss`` (mean
    ensemble, T=1), as ``egofeat distill`` trains;
(c) ``distill per-sample``: the same with per-sample softmin weights;
(d) ``distill (teachers re-run)``: for scale, what caching avoids: the teachers (MLP heads on
    ``--teachers`` streams of their own) run forward under ``no_grad`` on every batch.

The ratio of each to (a) is the cost of distillation. Target: (b) about the same as (a).

Each fit is timed in wall seconds and in CPU seconds of this process; variants run interleaved,
``--repeats`` times, keeping the fastest of each. The ratio is taken on CPU seconds: on a shared
machine other processes stretch wall time but not (with one thread, the default) the CPU time
the work itself needs. With several threads, CPU time counts OpenMP threads spin-waiting for a
descheduled sibling, so compare several-thread timings only on a quiet machine. With ``--rows``
below 67,217 epoch times are also extrapolated linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping

import torch
from rich.console import Console
from rich.table import Table

from egofeat.heads import HeadData, TrainConfig, Trainer, create_head, list_heads
from egofeat.heads.distill import (
    DistillationLoss,
    distillation_loss,
    ensemble_logits,
    pack_teacher_logits,
)

EPIC_TRAIN_ROWS = 67_217
CLASSES = {"verb": 97, "noun": 300}
STUDENT = "student/full"
CACHED = "teachers/cached"


def synthetic(rows: int, frames: int, dim: int, teachers: int, seed: int) -> HeadData:
    """The student's fp16 stream, cached teacher logits, and ``teachers`` streams of their own."""
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(dim, sum(CLASSES.values()), generator=generator)

    def stream() -> torch.Tensor:
        array = torch.empty(rows, frames, dim, dtype=torch.float16)
        for start in range(0, rows, 4096):  # chunked, so fp32 temporaries stay small
            stop = min(rows, start + 4096)
            array[start:stop] = torch.randn(stop - start, frames, dim, generator=generator)
        return array

    student = stream()
    scores = (student.float().mean(1) @ projection).split(list(CLASSES.values()), dim=1)
    labels = {task: part.argmax(1) for task, part in zip(CLASSES, scores, strict=True)}
    logits = [
        {
            task: part + torch.randn(part.shape, generator=generator)
            for task, part in zip(CLASSES, scores, strict=True)
        }
        for _ in range(teachers)
    ]
    features = {
        STUDENT: student,
        CACHED: torch.from_numpy(pack_teacher_logits(logits, CLASSES))[:, None],
    }
    features.update({f"teacher{i}/stream": stream() for i in range(teachers)})
    return HeadData(features=features, labels=labels, num_classes=dict(CLASSES))


def only(data: HeadData, streams: list[str]) -> HeadData:
    """A HeadData view holding ``streams`` only (shares the tensors)."""
    return HeadData(
        features={name: data.features[name] for name in streams},
        labels=data.labels,
        num_classes=data.num_classes,
    )


class RerunTeachers:
    """Distillation without the cache: the teachers predict every batch (under no_grad)."""

    def __init__(self, teachers: list[torch.nn.Module]) -> None:
        self.teachers = [teacher.eval() for teacher in teachers]

    def __call__(self, outputs: Mapping[str, torch.Tensor], batch: dict) -> torch.Tensor:
        with torch.no_grad():
            logits = [teacher(batch) for teacher in self.teachers]
        student = {task: outputs[task].float() for task in CLASSES}
        return distillation_loss(student, ensemble_logits(logits))


def student(head: str, dim: int, frames: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_head(head, in_dims={STUDENT: dim}, num_frames=frames, num_classes=CLASSES)


def variants(
    data: HeadData, head: str, teachers: int
) -> dict[str, tuple[HeadData, Callable | None]]:
    dim, frames = data.in_dims[STUDENT], data.num_frames
    teacher_heads = [
        create_head(
            "mlp", in_dims={f"teacher{i}/stream": dim}, num_frames=frames, num_classes=CLASSES
        )
        for i in range(teachers)
    ]
    rerun_streams = [STUDENT, *(f"teacher{i}/stream" for i in range(teachers))]
    return {
        "student alone": (only(data, [STUDENT]), None),
        "distill (cached)": (only(data, [STUDENT, CACHED]), DistillationLoss(CACHED, CLASSES)),
        "distill per-sample": (
            only(data, [STUDENT, CACHED]),
            DistillationLoss(CACHED, CLASSES, weighting="per-sample"),
        ),
        "distill (teachers re-run)": (only(data, rerun_streams), RerunTeachers(teacher_heads)),
    }


def epoch_seconds(
    head: str, data: HeadData, teachers: int, settings: TrainConfig, repeats: int
) -> dict[str, dict[str, float]]:
    """Fastest of ``repeats`` one-epoch fits per variant (wall and CPU seconds), interleaved."""
    runs = variants(data, head, teachers)
    dim, frames = data.in_dims[STUDENT], data.num_frames
    best: dict[str, dict[str, float]] = {}
    for rows, loss in runs.values():  # one-time kernel setup off the clock
        warm = rows.subset(torch.arange(min(len(rows), 2 * settings.batch_size)))
        Trainer(settings, loss_fn=loss).fit(student(head, dim, frames), warm)
    for _ in range(repeats):
        for name, (rows, loss) in runs.items():
            model = student(head, dim, frames)
            wall, cpu = time.perf_counter(), time.process_time()
            Trainer(settings, loss_fn=loss).fit(model, rows)
            timing = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
            kept = best.setdefault(name, timing)
            best[name] = {key: min(kept[key], timing[key]) for key in timing}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="+", default=["linear", "mlp"], choices=list_heads())
    parser.add_argument("--rows", type=int, default=EPIC_TRAIN_ROWS, help="training rows")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--teachers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--threads", type=int, default=1, help="see the CPU-time note above")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = synthetic(args.rows, args.frames, args.dim, args.teachers, seed=0)
    settings = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        precision=args.precision,
        progress=False,
        device=args.device,
    )
    scale = EPIC_TRAIN_ROWS / args.rows
    results = []
    for head in args.heads:
        print(f"[bench] {head}", file=sys.stderr, flush=True)
        seconds = epoch_seconds(head, data, args.teachers, settings, args.repeats)
        alone = seconds["student alone"]
        for name, timing in seconds.items():
            results.append(
                {
                    "head": head,
                    "variant": name,
                    "epoch_s": round(timing["wall"], 3),
                    "epoch_cpu_s": round(timing["cpu"], 3),
                    "epoch_cpu_s_at_epic": round(timing["cpu"] * scale, 2),
                    "ratio_to_student_alone": round(timing["cpu"] / alone["cpu"], 3),
                    "wall_ratio_to_student_alone": round(timing["wall"] / alone["wall"], 3),
                }
            )
    report = {
        "shape": {
            "rows": args.rows,
            "frames": args.frames,
            "dim": args.dim,
            "dtype": "float16",
            "teachers": args.teachers,
            "teacher_logits_dim": args.teachers * 397,
        },
        "threads": args.threads,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device": args.device,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "extrapolated": args.rows != EPIC_TRAIN_ROWS,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"distillation epoch vs student alone: {args.rows:,} x {args.frames} x {args.dim} "
        f"(fp16), {args.teachers} teachers, {args.threads} threads, batch {args.batch_size}"
    )
    columns = (
        "head",
        "variant",
        "wall s",
        "CPU s",
        f"CPU s @ {EPIC_TRAIN_ROWS:,}",
        "ratio (CPU)",
        "ratio (wall)",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("head", "variant") else "right")
    for r in results:
        at_epic = f"{r['epoch_cpu_s_at_epic']:.2f}" + ("*" if report["extrapolated"] else "")
        table.add_row(
            r["head"],
            r["variant"],
            f"{r['epoch_s']:.2f}",
            f"{r['epoch_cpu_s']:.2f}",
            at_epic,
            f"{r['ratio_to_student_alone']:.2f}",
            f"{r['wall_ratio_to_student_alone']:.2f}",
        )
    console = Console()
    console.print(table)
    if report["extrapolated"]:
        console.print(f"* extrapolated linearly from {args.rows:,} rows")
    console.print(f"load average at the end (other processes): {report['load_average']}")
    console.print("target: distill (cached) / student alone about 1")


if __name__ == "__main__":
    main()
