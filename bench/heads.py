"""Benchmark: head training speed on CPU, and the efficiency of egofeat's batch path.

Run on demand (not part of the tests):

    python bench/heads.py                          # EPIC-100-train scale: 67,217 x 16 x 512, 2 streams
    python bench/heads.py --rows 8000 --json       # quicker (epoch times extrapolated), machine-readable
    python bench/heads.py --heads trn --precision bf16

Synthetic fp16 features (two streams, as stored) with learnable labels: the verb is the argmax of
a random projection of stream 1's time-mean, the noun of stream 2's.

(1) Seconds per training epoch for each head through ``Trainer.fit`` (HeadData batches, fp16 in
RAM, cast per batch), and seconds for one validation pass over the val rows. With ``--rows``
below 67,217 the epoch time is also extrapolated linearly to 67,217 rows. Target: a TRN epoch
<= 30 s on 2 CPU cores.
(2) Loader efficiency: training throughput through ``Trainer.fit`` (every batch gathered from
the fp16 HeadData by index and cast to fp32) / throughput of the same model, optimizer and
steps fed pre-built in-RAM fp32 batches, over ``--loader-epochs`` epochs of
``--loader-steps`` batches; runs alternate, side by side. Target >= 0.9. Heads that only read
time-means (linear, MLP) get them computed once per fit by the trainer, while the reference
pools every batch. Also shown: the share of the Trainer's time spent preparing and gathering
batches, timed inside the same run (robust to other load).
(3) Milliseconds to produce one shuffled batch: HeadData gathers from fp16 storage (cast per
batch) and from fp32 storage, and a torch DataLoader over the per-sample ``HeadDataset``,
interleaved batch by batch (median).

Timings repeat ``--repeats`` times and keep the fastest run (least disturbed by other load).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

from egofeat.heads import HeadData, TrainConfig, Trainer, create_head, evaluate, list_heads
from egofeat.heads.trainer import MultiTaskCrossEntropy, autocast

EPIC_TRAIN_ROWS = 67_217
EPIC_VAL_ROWS = 9_668
CLASSES = {"verb": 97, "noun": 300}
HEADS = ("linear", "mlp", "tsn", "trn", "tsm")


def synthetic(rows: int, frames: int, dim: int, streams: int, seed: int) -> HeadData:
    """fp16 random features; labels an argmax of a fixed random projection of the time-mean."""
    generator = torch.Generator().manual_seed(seed)
    projections = torch.Generator().manual_seed(12345)
    features, labels = {}, {}
    for s in range(streams):
        array = torch.empty(rows, frames, dim, dtype=torch.float16)
        for start in range(0, rows, 4096):  # chunked, so fp32 temporaries stay small
            stop = min(rows, start + 4096)
            array[start:stop] = torch.randn(stop - start, frames, dim, generator=generator)
        features[f"stream{s}/full"] = array
        if s < len(CLASSES):
            task, count = list(CLASSES.items())[s]
            weights = torch.randn(dim, count, generator=projections)
            labels[task] = (array.float().mean(1) @ weights).argmax(1)
    for task in CLASSES:  # with a single stream, both tasks read it
        labels.setdefault(task, labels["verb"] % CLASSES[task])
    return HeadData(features=features, labels=labels, num_classes=dict(CLASSES))


def build(name: str, data: HeadData) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_head(
        name, in_dims=data.in_dims, num_frames=data.num_frames, num_classes=data.num_classes
    )


def epoch_seconds(
    name: str, train: HeadData, val: HeadData, settings: TrainConfig, repeats: int
) -> dict:
    """Fastest of ``repeats`` one-epoch ``Trainer.fit`` runs, and of the validation passes."""
    model = build(name, train)
    warm = train.subset(torch.arange(min(len(train), 2 * settings.batch_size)))
    Trainer(settings).fit(model, warm)  # one-time kernel setup (oneDNN primitives) off the clock
    train_s, val_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        Trainer(settings).fit(model, train)
        train_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluate(
            model,
            val,
            tasks=settings.tasks,
            batch_size=settings.eval_batch_size,
            precision=settings.precision,
        )
        val_s.append(time.perf_counter() - start)
    return {"train_s": min(train_s), "val_s": min(val_s)}


@dataclasses.dataclass(repr=False)
class TimedData(HeadData):
    """HeadData that adds up the seconds spent preparing and gathering batches (in a dict
    shared by the copies ``Trainer.fit`` makes, e.g. of time-means for pooled heads)."""

    timer: dict = dataclasses.field(default_factory=lambda: {"seconds": 0.0})

    def batch(self, index: torch.Tensor, device=None) -> dict:
        start = time.perf_counter()
        out = super().batch(index, device)
        self.timer["seconds"] += time.perf_counter() - start
        return out

    def time_mean(self, chunk_rows: int = 128) -> HeadData:
        start = time.perf_counter()
        out = super().time_mean(chunk_rows)
        self.timer["seconds"] += time.perf_counter() - start
        return out


def train_steps(model: torch.nn.Module, batches: list[dict], settings: TrainConfig) -> float:
    """Seconds for a minimal hand-written loop (the Trainer's optimizer, loss, clipping and
    precision) over ready-made batches, ``settings.epochs`` times."""
    loss_fn = MultiTaskCrossEntropy(settings.tasks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, fused=True)
    device = torch.device("cpu")
    start = time.perf_counter()
    for batch in batches * settings.epochs:
        with autocast(device, settings.precision):
            loss = loss_fn(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
    return time.perf_counter() - start


def loader_efficiency(
    name: str, data: HeadData, settings: TrainConfig, repeats: int
) -> dict[str, float]:
    """``Trainer.fit`` over ``data`` against the same model trained on pre-built fp32 batches.

    ``loader_efficiency``: throughput ratio (reference time / Trainer time), runs alternating,
    fastest of ``repeats`` each. ``data_share``: the share of the Trainer's time spent
    preparing and gathering batches, timed inside the same run (robust to other load).
    """
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(HeadData)}
    prebuilt = list(data.batches(settings.batch_size))  # gathered + cast to fp32 up front
    model = build(name, data)

    def through_trainer() -> tuple[float, float]:
        timed = TimedData(**fields)
        start = time.perf_counter()
        Trainer(settings).fit(model, timed)
        return time.perf_counter() - start, timed.timer["seconds"]

    through_trainer(), train_steps(model, prebuilt, settings)  # warm-up
    ours, reference, shares = [], [], []
    for _ in range(repeats):
        seconds, data_seconds = through_trainer()
        ours.append(seconds)
        shares.append(data_seconds / seconds)
        reference.append(train_steps(model, prebuilt, settings))
    return {"loader_efficiency": min(reference) / min(ours), "data_share": min(shares)}


def batch_milliseconds(data: HeadData, batch_size: int, batches: int) -> dict[str, float]:
    """Milliseconds to produce one shuffled training batch: HeadData gathers from fp16 and from
    fp32 storage, and a torch DataLoader over the per-sample HeadDataset; interleaved."""
    data32 = data.to(dtype=torch.float32)
    dataset = data.as_dataset()
    sampler = torch.utils.data.RandomSampler(
        dataset, replacement=True, num_samples=batches * batch_size
    )
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler))
    producers = {
        "headdata_fp16": lambda index: data.batch(index),
        "headdata_fp32": lambda index: data32.batch(index),
        "dataset_loader": lambda index: next(loader),
    }
    times: dict[str, list[float]] = {key: [] for key in producers}
    generator = torch.Generator().manual_seed(0)
    for _ in range(batches):
        index = torch.randperm(len(data), generator=generator)[:batch_size]
        for key, produce in producers.items():
            start = time.perf_counter()
            produce(index)
            times[key].append(time.perf_counter() - start)
    return {key: 1000 * statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list_heads())
    parser.add_argument("--rows", type=int, default=EPIC_TRAIN_ROWS, help="training rows")
    parser.add_argument("--val-rows", type=int, default=None, help="default: EPIC ratio of --rows")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--loader-steps", type=int, default=8, help="batches per loader epoch")
    parser.add_argument("--loader-epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    val_rows = args.val_rows or max(1, round(args.rows * EPIC_VAL_ROWS / EPIC_TRAIN_ROWS))
    train = synthetic(args.rows, args.frames, args.dim, args.streams, seed=0)
    val = synthetic(val_rows, args.frames, args.dim, args.streams, seed=1)
    loader_rows = train.subset(torch.arange(min(len(train), args.loader_steps * args.batch_size)))
    scale = EPIC_TRAIN_ROWS / args.rows

    results = []
    for precision in args.precision:
        settings = TrainConfig(
            epochs=1, batch_size=args.batch_size, precision=precision, progress=False
        )
        for name in args.heads:
            print(f"[bench] {name} {precision}", file=sys.stderr, flush=True)
            timing = epoch_seconds(name, train, val, settings, args.repeats)
            result = {
                "head": name,
                "precision": precision,
                "train_epoch_s": round(timing["train_s"], 2),
                "val_pass_s": round(timing["val_s"], 2),
                "train_epoch_s_at_epic": round(timing["train_s"] * scale, 1),
            }
            loader_settings = dataclasses.replace(settings, epochs=args.loader_epochs)
            loader = loader_efficiency(name, loader_rows, loader_settings, args.repeats)
            result.update({key: round(value, 3) for key, value in loader.items()})
            results.append(result)
    print("[bench] batch production", file=sys.stderr, flush=True)
    batch_ms = batch_milliseconds(loader_rows, args.batch_size, batches=10)
    report = {
        "shape": {
            "rows": args.rows,
            "val_rows": val_rows,
            "frames": args.frames,
            "dim": args.dim,
            "streams": args.streams,
            "dtype": "float16",
        },
        "threads": args.threads,
        "batch_size": args.batch_size,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "extrapolated": args.rows != EPIC_TRAIN_ROWS,
        "batch_ms": {key: round(value, 2) for key, value in batch_ms.items()},
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"heads on {args.rows:,} x {args.frames} x {args.dim} x {args.streams} streams "
        f"(fp16), {args.threads} threads, batch {args.batch_size}"
    )
    columns = {
        "epoch s": "train_epoch_s",
        f"epoch s @ {EPIC_TRAIN_ROWS:,}": "train_epoch_s_at_epic",
        f"val pass s ({val_rows:,} rows)": "val_pass_s",
        "loader efficiency": "loader_efficiency",
        "data share of fit time": "data_share",
    }
    table.add_column("head")
    table.add_column("precision")
    for title in columns:
        table.add_column(title, justify="right")
    for r in results:
        cells = [f"{r[key]:.2f}" for key in columns.values()]
        if report["extrapolated"]:
            cells[1] += "*"
        table.add_row(r["head"], r["precision"], *cells)
    console = Console()
    console.print(table)
    if report["extrapolated"]:
        console.print(f"* extrapolated linearly from {args.rows:,} rows")
    console.print(
        f"one batch of {args.batch_size}, ms: "
        + ", ".join(f"{key} {value:.2f}" for key, value in batch_ms.items())
    )
    console.print(f"load average at the end (other processes): {report['load_average']}")
    console.print("targets: TRN epoch <= 30 s on 2 cores; loader efficiency >= 0.9")


if __name__ == "__main__":
    main()
