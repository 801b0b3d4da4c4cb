"""Benchmark: EK-100 MIR metrics (mAP + nDCG, both directions) on the 9,668 × 3,842 test matrix.

Run on demand (not part of the tests):

    python bench/eval_mir.py              # real relevancy from ../shared/data when present
    python bench/eval_mir.py --synthetic  # synthetic relevancy of similar density
    python bench/eval_mir.py --json       # machine-readable

Times ``mir_metrics`` (query batches, one argsort per query row and direction) on a random
similarity matrix S = R + noise, beside a direct whole-matrix transcription of the published
definitions (one argsort of the full matrix for mAP, another for nDCG, float64 temporaries of
the full size), in one run; both must give the same numbers. Target: ``mir_metrics`` < 5 s.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

from egofeat.eval import mir_metrics, mir_relevancy

EPIC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "epic100"
N_VIDEOS, N_CAPTIONS = 9668, 3842
TARGET_SECONDS = 5.0


def real_labels(epic_dir: Path) -> tuple[list, list, list, list]:
    """Video and caption (verb, noun set) labels of the official MIR test split."""
    videos = pl.read_csv(epic_dir / "retrieval_annotations" / "EPIC_100_retrieval_test.csv")
    sentences = pl.read_csv(
        epic_dir / "retrieval_annotations" / "EPIC_100_retrieval_test_sentence.csv"
    )
    nouns = [ast.literal_eval(text) for text in videos["all_noun_classes"]]
    verbs = videos["verb_class"].to_list()
    row_of = {narration_id: row for row, narration_id in enumerate(videos["narration_id"])}
    rows = [row_of[narration_id] for narration_id in sentences["narration_id"]]
    return verbs, nouns, [verbs[r] for r in rows], [nouns[r] for r in rows]


def synthetic_labels(seed: int = 0) -> tuple[list, list, list, list]:
    """Zipf-distributed (verb, noun set) labels; every video and caption has an exact match.

    Captions draw from 1,800 label tuples and videos from the captions' tuples. With these
    exponents R == 1 entries are as dense as in the real split (6.5 per video, 16.3 per
    caption) and R > 0 entries a little sparser (≈ 340 per video, 437 in the real split).
    """
    rng = np.random.default_rng(seed)

    def zipf(n: int, size: int, exponent: float) -> np.ndarray:
        weights = np.arange(1, n + 1) ** -exponent
        return rng.choice(n, size=size, p=weights / weights.sum())

    tuples = [
        (int(verb), sorted(set(zipf(300, rng.integers(1, 3), exponent=0.7).tolist())))
        for verb in zipf(97, 1800, exponent=1.0)
    ]
    caption_tuples = [tuples[i] for i in zipf(len(tuples), N_CAPTIONS, exponent=0.5)]
    video_tuples = caption_tuples + [
        caption_tuples[i] for i in rng.integers(0, N_CAPTIONS, N_VIDEOS - N_CAPTIONS)
    ]
    return (
        [v for v, _ in video_tuples],
        [n for _, n in video_tuples],
        [v for v, _ in caption_tuples],
        [n for _, n in caption_tuples],
    )


def direct_metrics(similarity: np.ndarray, relevancy: np.ndarray) -> dict[str, float]:
    """The definitions written over whole matrices, as the reference evaluation code does."""

    def average_precision(s: np.ndarray, r: np.ndarray) -> float:
        ranked = np.take_along_axis(r, np.argsort(-s, axis=1), axis=1).astype(np.float64)
        precision = np.cumsum(ranked, axis=1) / np.arange(1, ranked.shape[1] + 1)
        fully = ranked == 1
        return 100 * float(((precision * fully).sum(1) / fully.sum(1)).mean())

    def ndcg(s: np.ndarray, r: np.ndarray) -> float:
        ranked = np.take_along_axis(r, np.argsort(s, axis=1)[:, ::-1], axis=1).astype(np.float64)
        ideal = np.sort(r, axis=1)[:, ::-1].astype(np.float64)
        discount = 1 / np.log2(np.arange(2, r.shape[1] + 2))
        within = ideal > 0
        return 100 * float(((ranked * discount * within).sum(1) / (ideal * discount).sum(1)).mean())

    return {
        "map_v2t": average_precision(similarity, relevancy),
        "map_t2v": average_precision(similarity.T, relevancy.T),
        "ndcg_v2t": ndcg(similarity, relevancy),
        "ndcg_t2v": ndcg(similarity.T, relevancy.T),
    }


def timed(fn, repeats: int) -> tuple[object, list[float]]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", action="store_true", help="don't read ../shared/data")
    parser.add_argument("--repeats", type=int, default=3, help="runs of mir_metrics (median)")
    parser.add_argument("--no-direct", action="store_true", help="skip the whole-matrix version")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    real = EPIC_DIR.is_dir() and not args.synthetic
    labels = real_labels(EPIC_DIR) if real else synthetic_labels()
    relevancy, build_seconds = timed(lambda: mir_relevancy(*labels), 1)
    rng = np.random.default_rng(0)
    similarity = relevancy + rng.standard_normal(relevancy.shape, dtype=np.float32)

    metrics, seconds = timed(lambda: mir_metrics(similarity, relevancy), args.repeats)
    report = {
        "relevancy": "real EPIC_100_retrieval_test" if real else "synthetic",
        "shape": list(relevancy.shape),
        "fully_relevant_per_video": float((relevancy == 1).sum(1).mean()),
        "fully_relevant_per_caption": float((relevancy == 1).sum(0).mean()),
        "relevant_per_video": float((relevancy > 0).sum(1).mean()),
        "relevancy_seconds": build_seconds[0],
        "mir_metrics_seconds_median": statistics.median(seconds),
        "mir_metrics_seconds_min": min(seconds),
        "target_seconds": TARGET_SECONDS,
        "meets_target": statistics.median(seconds) < TARGET_SECONDS,
        "metrics": metrics,
    }
    if not args.no_direct:
        direct, direct_seconds = timed(lambda: direct_metrics(similarity, relevancy), 1)
        report["direct_seconds"] = direct_seconds[0]
        report["speedup_vs_direct"] = direct_seconds[0] / statistics.median(seconds)
        report["same_as_direct"] = all(
            abs(metrics[key] - value) < 1e-9 for key, value in direct.items()
        )

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"EK-100 MIR metrics, {report['relevancy']} relevancy {relevancy.shape}")
    print(
        f"  R == 1 per video {report['fully_relevant_per_video']:.2f}, per caption "
        f"{report['fully_relevant_per_caption']:.2f}; R > 0 per video "
        f"{report['relevant_per_video']:.0f}"
    )
    print(f"{'step':<34}{'seconds':>10}")
    print(f"{'mir_relevancy (build R)':<34}{build_seconds[0]:>10.2f}")
    label = f"mir_metrics (median of {args.repeats})"
    print(f"{label:<34}{statistics.median(seconds):>10.2f}")
    if "direct_seconds" in report:
        print(f"{'direct whole-matrix definitions':<34}{report['direct_seconds']:>10.2f}")
        print(
            f"speed-up {report['speedup_vs_direct']:.2f}x, same numbers: {report['same_as_direct']}"
        )
    verdict = "meets" if report["meets_target"] else "MISSES"
    print(f"target < {TARGET_SECONDS:.0f} s: {verdict}")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
