"""Benchmark: X-MIC adapter training throughput on CPU, and the 15-epoch wall time it implies.

Run on demand (not part of the tests):

    python bench/xmic.py                           # EPIC-100-train scale: 67,217 x 16 x 512
    python bench/xmic.py --rows 4000 --json        # a scaled run (times extrapolated), JSON
    python bench/xmic.py --per-bin 3 --rows 4000   # oversampled streams: temporal jitter on

What runs is what `egofeat train --head xmic` and `egofeat run xmic` run: the registered
``xmic`` head (3,594,657 trainable parameters at 512-d: 3 CLIP blocks, temporal embedding,
adapter, logit scale) through ``Trainer.fit`` with X-MIC's recipe (AdamW, betas 0.9/0.98,
weight decay 0.01), on synthetic fp16 features of two streams (hand crop = classified and
context, full frame = context) stored as ``16 x per_bin`` frames, with 300 noun classes whose
labels are weakly visible in the features (as with CLIP: cosine ~0.2 to the right class text).

Reported per batch size (X-MIC's 32, and its 1-GPU scripts' 128): training segments per second
over one epoch of ``--rows`` segments (fastest of ``--repeats``), evaluation (bin-centre)
segments per second over the EPIC val size, and the implied wall time of the 15 training epochs
on EPIC-100 train (67,217 segments) plus one evaluation pass per epoch over EPIC val (9,668).
With ``--rows`` below 67,217 the epoch is measured on fewer rows and extrapolated linearly
(per-step cost does not depend on the row count: the features are gathered from RAM).
Only the CPU is measured unless ``--device cuda`` is given and a GPU is present.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console
from rich.table import Table

from egofeat.heads import HeadData, TrainConfig, Trainer, create_head, predict
from egofeat.heads.xmic import XMIC_TRAINER

EPIC_TRAIN_ROWS = 67_217
EPIC_VAL_ROWS = 9_668
EPOCHS = 15
CLASSES = 300
BINS = 16
STREAMS = ("clip/hand", "clip/full")


def synthetic(rows: int, per_bin: int, dim: int, text: torch.Tensor, seed: int) -> HeadData:
    """fp16 features of two streams, CLIP-like: every frame is unit-norm noise plus a weak pull
    towards its noun's text (cosine ~0.2 after the frame mean), so the loss stays in a realistic
    range (a saturated softmax gives denormal gradients, which are very slow on CPUs)."""
    generator = torch.Generator().manual_seed(seed)
    frames = BINS * per_bin
    unit = torch.nn.functional.normalize(text, dim=-1)
    features = {name: torch.empty(rows, frames, dim, dtype=torch.float16) for name in STREAMS}
    labels = torch.randint(CLASSES, (rows,), generator=generator)
    for start in range(0, rows, 4096):  # chunked, so fp32 temporaries stay small
        stop = min(rows, start + 4096)
        pull = 0.05 * unit[labels[start:stop]][:, None]
        for name in STREAMS:
            noise = torch.randn(stop - start, frames, dim, generator=generator) / dim**0.5
            features[name][start:stop] = pull + noise
    return HeadData(features=features, labels={"noun": labels}, num_classes={"noun": CLASSES})


def build(data: HeadData, text: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_head("xmic", in_dims=data.in_dims, num_frames=data.num_frames,
                        num_classes={"noun": CLASSES}, bins=BINS)
    model.set_class_embeddings("noun", text)
    return model


def measure(train: HeadData, val: HeadData, text: torch.Tensor, batch_size: int,
            args: argparse.Namespace) -> dict:
    """Fastest of ``repeats`` one-epoch trainings and of the evaluation passes."""
    settings = TrainConfig(**XMIC_TRAINER
                           | {"epochs": 1, "batch_size": batch_size, "tasks": ("noun",),
                              "device": args.device, "precision": args.precision,
                              "num_threads": args.threads, "progress": False})
    train_seconds, eval_seconds = [], []
    for _ in range(args.repeats):
        model = build(train, text)
        started = time.perf_counter()
        Trainer(settings).fit(model, train)
        train_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        predict(model, val, batch_size=1024, device=args.device, precision=args.precision)
        eval_seconds.append(time.perf_counter() - started)
    train_rate = len(train) / min(train_seconds)
    eval_rate = len(val) / min(eval_seconds)
    epoch = EPIC_TRAIN_ROWS / train_rate + EPIC_VAL_ROWS / eval_rate
    return {
        "batch_size": batch_size,
        "train_segments_per_s": round(train_rate, 1),
        "eval_segments_per_s": round(eval_rate, 1),
        "epic_epoch_s": round(epoch, 1),
        "epic_15_epochs_min": round(EPOCHS * epoch / 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=EPIC_TRAIN_ROWS, help="training rows")
    parser.add_argument("--val-rows", type=int, default=None, help="default: EPIC ratio of --rows")
    parser.add_argument("--per-bin", type=int, default=1, help="stored frames per bin (jitter if > 1)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    val_rows = args.val_rows or max(1, round(args.rows * EPIC_VAL_ROWS / EPIC_TRAIN_ROWS))
    # CLIP's text embeddings are not normalized (norm ~8 for ViT-B/16)
    text = 8 * torch.nn.functional.normalize(
        torch.randn(CLASSES, args.dim, generator=torch.Generator().manual_seed(7)), dim=-1)
    train = synthetic(args.rows, args.per_bin, args.dim, text, seed=0)
    val = synthetic(val_rows, args.per_bin, args.dim, text, seed=1)
    results = [measure(train, val, text, size, args) for size in args.batch_sizes]
    parameters = sum(p.numel() for p in build(train, text).parameters() if p.requires_grad)
    summary = {
        "device": args.device, "gpu_available": torch.cuda.is_available(), "threads": args.threads,
        "precision": args.precision, "rows": args.rows, "val_rows": val_rows,
        "frames": BINS * args.per_bin, "dim": args.dim, "trainable_parameters": parameters,
        "extrapolated": args.rows != EPIC_TRAIN_ROWS, "results": results,
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    table = Table(title=(f"X-MIC training on {args.device} ({args.threads} threads, {args.precision}): "
                         f"{args.rows:,} x {BINS * args.per_bin} x {args.dim}, 2 streams, "
                         f"{parameters:,} trainable parameters"))
    for column in ("batch", "train seg/s", "eval seg/s", "EPIC epoch (s)", "EPIC 15 epochs (min)"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(str(r["batch_size"]), f"{r['train_segments_per_s']:,.0f}",
                      f"{r['eval_segments_per_s']:,.0f}", f"{r['epic_epoch_s']:,.0f}",
                      f"{r['epic_15_epochs_min']:,.1f}")
    console = Console()
    console.print(table)
    if summary["extrapolated"]:
        console.print(f"measured on {args.rows:,} of {EPIC_TRAIN_ROWS:,} rows; EPIC times extrapolated")
    if not summary["gpu_available"]:
        console.print("no GPU in this environment: CPU only")


if __name__ == "__main__":
    main()
