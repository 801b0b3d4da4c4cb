"""Benchmark: retrieval evaluation, projector training and neighbour search on CPU.

Run on demand (not part of the tests):

    python bench/retrieval.py                 # EK-100 scale (real MIR files when ../shared is there)
    python bench/retrieval.py --rows 8000     # quicker training part, epoch times extrapolated
    python bench/retrieval.py --json          # machine-readable

(1) EK-100 MIR evaluation of a 9,668 × 3,842 similarity matrix: building the relevancy, the
metrics alone (``mir_metrics``, target < 5 s; ``bench/eval_mir.py`` compares it with a direct
transcription of the definitions), and the whole ``egofeat eval --protocol ek100-mir
--similarity`` path (reading the CSVs, relevancy, metrics) when the real files are present.
(2) One training epoch of the retrieval head per loss through ``Trainer.fit`` at EK-100-train
scale (67,217 rows of synthetic fp16 features: ``--frames`` × 512 video, 512 text, Zipf
verb / noun labels, 15,989 distinct narrations), with the MI-MM positive sampler's share, and
one MIR validation pass over 9,668 val rows.
(3) Neighbour search over 100,000 vectors of 512 dims: single-query exact search, batched
search, and full EILEV-style selection (``select_in_context_examples``), in queries per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from eval_mir import EPIC_DIR, TARGET_SECONDS, real_labels, synthetic_labels
from rich.console import Console
from rich.table import Table

from egofeat.eval import mir_metrics, mir_relevancy
from egofeat.heads import HeadData, TrainConfig, Trainer, create_head
from egofeat.heads.contrastive import ClipLabels, PositiveCaptionSampler, distinct_captions
from egofeat.heads.neighbors import NeighborIndex, faiss_available, select_in_context_examples
from egofeat.heads.retrieval import LOSSES, MirValidation, RetrievalLoss
from egofeat.pipelines.protocols import score_mir_similarity_file

EPIC_TRAIN_ROWS, EPIC_VAL_ROWS, TRAIN_SENTENCES = 67_217, 9_668, 15_989
NEIGHBOUR_VECTORS = 100_000


def timed(fn, *args, repeats: int = 1, **kwargs) -> tuple[object, float]:
    """Result of ``fn(*args, **kwargs)`` and the fastest of ``repeats`` runs, in seconds."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
    return result, min(seconds)


# ---- (1) MIR evaluation --------------------------------------------------------------------------


def mir_evaluation(repeats: int, synthetic: bool, scratch: Path) -> dict:
    real = EPIC_DIR.is_dir() and not synthetic
    labels = real_labels(EPIC_DIR) if real else synthetic_labels()
    relevancy, build_s = timed(mir_relevancy, *labels)
    similarity = relevancy + np.random.default_rng(0).standard_normal(relevancy.shape, dtype=np.float32)
    _, metrics_s = timed(mir_metrics, similarity, relevancy, repeats=repeats)
    report = {"relevancy": "real" if real else "synthetic", "shape": list(relevancy.shape),
              "relevancy_s": build_s, "mir_metrics_s": metrics_s}
    if real:
        path = scratch / "similarity.npy"
        np.save(path, similarity)
        folder = EPIC_DIR / "retrieval_annotations"
        _, report["similarity_file_s"] = timed(score_mir_similarity_file, path,
                                               folder / "EPIC_100_retrieval_test.csv",
                                               folder / "EPIC_100_retrieval_test_sentence.csv")
    return report


# ---- (2) training --------------------------------------------------------------------------------


def zipf(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1) ** -exponent
    return rng.choice(n, size=size, p=weights / weights.sum())


def synthetic_split(rows: int, frames: int, dim: int, seed: int) -> tuple[HeadData, ClipLabels]:
    """fp16 video and text features of ``rows`` clips narrated by Zipf-drawn sentences; the
    sentences carry (verb, noun set) labels, and equal sentences have equal text features."""
    rng = np.random.default_rng(seed)
    sentence_verbs = zipf(rng, 97, TRAIN_SENTENCES, 1.0)
    sentence_nouns = [tuple(sorted(set(zipf(rng, 300, rng.integers(1, 3), 0.7).tolist())))
                      for _ in range(TRAIN_SENTENCES)]
    sentence = zipf(rng, TRAIN_SENTENCES, rows, 0.6)
    generator = torch.Generator().manual_seed(seed)
    sentence_text = torch.randn(TRAIN_SENTENCES, 1, dim, generator=generator).half()
    video = torch.empty(rows, frames, dim, dtype=torch.float16)
    for start in range(0, rows, 4096):  # chunked, so fp32 temporaries stay small
        stop = min(rows, start + 4096)
        video[start:stop] = torch.randn(stop - start, frames, dim, generator=generator)
    verbs = torch.from_numpy(sentence_verbs[sentence])
    data = HeadData(
        features={"clip/full": video, "clip/text/narration": sentence_text[torch.from_numpy(sentence)]},
        labels={"verb": verbs, "noun": torch.tensor([sentence_nouns[s][0] for s in sentence])},
        num_classes={"verb": 97, "noun": 300},
    )
    labels = ClipLabels(verbs.numpy(), tuple(sentence_nouns[s] for s in sentence),
                        video_ids=(np.arange(rows) // 200).astype(str), times_sec=np.arange(rows) * 7.0 % 1400)
    return data, labels


def training(rows: int, frames: int, dim: int, batch_size: int, repeats: int) -> dict:
    train, labels = synthetic_split(rows, frames, dim, seed=0)
    train = train.time_mean()  # as the pipeline trains: the head reads frame means only
    captions, distinct_s = timed(distinct_captions, train.features["clip/text/narration"].numpy())
    settings = TrainConfig(epochs=1, batch_size=batch_size, progress=False, warmup_epochs=0)
    scale = EPIC_TRAIN_ROWS / rows
    report: dict = {"rows": rows, "captions": len(captions), "distinct_captions_s": distinct_s, "losses": {}}
    for loss in LOSSES:
        print(f"[bench] training epoch, {loss}", file=sys.stderr, flush=True)
        torch.manual_seed(0)
        head = create_head("retrieval", in_dims=train.in_dims, num_frames=frames,
                           num_classes=train.num_classes, loss=loss)
        trainer = Trainer(settings, loss_fn=RetrievalLoss(head, train, labels, caption_rows=captions))
        # One-time kernel setup off the clock, on the first rows (the same rows as in ``train``).
        trainer.fit(head, train.subset(np.arange(2 * batch_size)))
        _, seconds = timed(trainer.fit, head, train, repeats=repeats)
        report["losses"][loss] = {"epoch_s": seconds, "epoch_s_at_epic": seconds * scale}
    sampler, report["mimm_sampler_setup_s"] = timed(PositiveCaptionSampler, labels, captions)
    count = min(20, rows // batch_size)
    batches = np.random.default_rng(0).permutation(rows)[: count * batch_size].reshape(count, batch_size)
    uniform = np.random.default_rng(1).random((batch_size, 2))
    _, sample_s = timed(lambda: [sampler.sample(batch, uniform) for batch in batches])
    batches_per_epoch = -(-rows // batch_size)
    report["mimm_sampler_ms_per_batch"] = 1000 * sample_s / len(batches)
    report["mimm_sampler_share"] = (sample_s / len(batches) * batches_per_epoch) / report["losses"]["mimm"]["epoch_s"]

    val, val_labels = synthetic_split(round(rows * EPIC_VAL_ROWS / EPIC_TRAIN_ROWS), frames, dim, seed=1)
    validation, setup_s = timed(lambda: MirValidation.of(val, "clip/text/narration", labels=val_labels,
                                                         device="cpu"))
    _, pass_s = timed(lambda: validation(head, val), repeats=repeats)
    report["validation"] = {"rows": len(val), "captions": len(validation.caption_rows),
                            "setup_s": setup_s, "pass_s": pass_s}
    return report


# ---- (3) neighbours ------------------------------------------------------------------------------


def search_each(index: NeighborIndex, queries: np.ndarray) -> None:
    for query in queries:
        index.search(query, 16)


def select_each(index: NeighborIndex, segment_ids: list[str]) -> None:
    for segment in segment_ids:
        select_in_context_examples(index, segment, 16)


def neighbours(count: int, dim: int, queries: int) -> dict:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((count, dim), dtype=np.float32)
    verbs, nouns = zipf(rng, 100, count, 1.0).astype(str), zipf(rng, 300, count, 0.8).astype(str)
    ids = [f"s{i}" for i in range(count)]
    report: dict = {"vectors": count, "dim": dim, "backends": {}}
    picks = rng.integers(0, count, queries)
    for backend in ["numpy", *(["faiss"] if faiss_available() else [])]:
        index, build_s = timed(NeighborIndex, features, ids, verbs, nouns, ids, np.zeros((count, 1)),
                               backend=backend)  # fmt: skip
        _, single_s = timed(search_each, index, features[picks])
        _, batch_s = timed(index.search, features[picks], 16)
        _, select_s = timed(select_each, index, [ids[i] for i in picks[:100]])
        report["backends"][backend] = {
            "build_s": build_s, "search_qps": queries / single_s, "batched_search_qps": queries / batch_s,
            "select_qps": 100 / select_s, "select_ms": 10 * select_s,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=EPIC_TRAIN_ROWS, help="training rows")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vectors", type=int, default=NEIGHBOUR_VECTORS)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--synthetic", action="store_true", help="don't read ../shared/data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["mir", "training", "neighbours"])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as scratch:
        if "mir" not in args.skip:
            print("[bench] MIR evaluation", file=sys.stderr, flush=True)
            report["mir"] = mir_evaluation(args.repeats, args.synthetic, Path(scratch))
    if "training" not in args.skip:
        report["training"] = training(args.rows, args.frames, args.dim, args.batch_size, args.repeats)
    if "neighbours" not in args.skip:
        print("[bench] neighbours", file=sys.stderr, flush=True)
        report["neighbours"] = neighbours(args.vectors, args.dim, args.queries)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_report(report)


def print_report(report: dict) -> None:
    table = Table(title=f"egofeat retrieval benchmark ({report['threads']} threads)")
    for column in ("part", "measure", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    if "mir" in report:
        mir = report["mir"]
        shape = "×".join(map(str, mir["shape"]))
        verdict = "meets" if mir["mir_metrics_s"] < TARGET_SECONDS else "MISSES"
        table.add_row("MIR eval", f"relevancy {shape} ({mir['relevancy']})", f"{mir['relevancy_s']:.2f} s")
        table.add_row("", f"mir_metrics, both directions ({verdict} < {TARGET_SECONDS:.0f} s)",
                      f"{mir['mir_metrics_s']:.2f} s")
        if "similarity_file_s" in mir:
            table.add_row("", "eval --similarity FILE (CSVs + relevancy + metrics)", f"{mir['similarity_file_s']:.2f} s")
    if "training" in report:
        train = report["training"]
        extrapolated = train["rows"] != EPIC_TRAIN_ROWS
        table.add_row("training", f"{train['rows']:,} rows, {train['captions']:,} distinct captions",
                      f"{train['distinct_captions_s']:.2f} s")
        for loss, timing in train["losses"].items():
            note = f" (x{EPIC_TRAIN_ROWS / train['rows']:.1f} to 67,217 rows)" if extrapolated else ""
            table.add_row("", f"epoch, {loss}{note}", f"{timing['epoch_s_at_epic']:.1f} s")
        table.add_row("", "MI-MM positive sampler: setup (once per run)", f"{train['mimm_sampler_setup_s']:.2f} s")
        table.add_row("", "MI-MM positive sampler: per batch (share of epoch)",
                      f"{train['mimm_sampler_ms_per_batch']:.1f} ms ({100 * train['mimm_sampler_share']:.0f} %)")
        val = train["validation"]
        table.add_row("", f"validation pass, {val['rows']:,} × {val['captions']:,}", f"{val['pass_s']:.2f} s")
    if "neighbours" in report:
        near = report["neighbours"]
        for backend, timing in near["backends"].items():
            label = f"{near['vectors']:,} × {near['dim']}, {backend}"
            table.add_row("neighbours", f"{label}: exact search, 1 query", f"{timing['search_qps']:.0f} q/s")
            table.add_row("", f"{label}: batched search", f"{timing['batched_search_qps']:.0f} q/s")
            table.add_row("", f"{label}: EILEV selection, k=16", f"{timing['select_ms']:.1f} ms/query")
    Console().print(table)


if __name__ == "__main__":
    main()
