"""EK-100 multi-instance retrieval: relevancy, graded mAP, truncated nDCG, real annotation files."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from egofeat.eval import mir_map, mir_metrics, mir_ndcg, mir_relevancy, mir_relevancy_blocks


def test_relevancy_is_half_verb_match_plus_half_noun_set_iou():
    relevancy = mir_relevancy(
        video_verbs=[1, 0],
        video_noun_sets=[[2, 3], [2]],
        caption_verbs=[1, 0],
        caption_noun_sets=[[3, 2, 2], [5]],  # a repeated noun counts once
    )
    assert relevancy.dtype == np.float32
    np.testing.assert_array_equal(relevancy, [[1.0, 0.0], [0.25, 0.5]])


def test_relevancy_blocks_tile_the_dense_matrix():
    rng = np.random.default_rng(0)
    verbs = rng.integers(0, 4, 50)
    nouns = [rng.choice(6, size=rng.integers(1, 4)).tolist() for _ in range(50)]
    dense = mir_relevancy(verbs, nouns, verbs[:20], nouns[:20])
    blocks = list(mir_relevancy_blocks(verbs, nouns, verbs[:20], nouns[:20], rows_per_block=16))
    assert [rows for rows, _ in blocks] == [
        slice(0, 16),
        slice(16, 32),
        slice(32, 48),
        slice(48, 50),
    ]
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks]), dense)
    assert (np.diag(dense[:20]) == 1).all()


def test_relevancy_refuses_an_empty_noun_set():
    with pytest.raises(ValueError, match=r"caption_noun_sets\[1\] is empty"):
        mir_relevancy([0], [[1]], [0, 0], [[1], []])


# One query, four items ranked in index order, graded relevance [1, 0.5, 0, 1].
S_ONE = np.array([[0.9, 0.8, 0.7, 0.1]])
R_ONE = np.array([[1.0, 0.5, 0.0, 1.0]], dtype=np.float32)


def test_map_precision_counts_graded_relevance():
    # Terms at ranks 1 and 4 (R == 1); precision there = cumulative graded R / rank:
    # (1/1 + 2.5/4) / 2 = 0.8125, where textbook binary AP gives (1/1 + 2/4) / 2 = 0.75.
    assert mir_map(S_ONE, R_ONE) == pytest.approx(81.25)


def test_ndcg_is_truncated_at_the_number_of_relevant_items():
    # K = 3 items with R > 0; the item at rank 4 (R = 1) is cut off.
    dcg = 1 + 0.5 / math.log2(3) + 0 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 0.5 / math.log2(4)
    assert mir_ndcg(S_ONE, R_ONE) == pytest.approx(100 * dcg / idcg)


def test_ties_follow_the_reference_argsort_calls():
    # mAP ranks by (-S).argsort(), nDCG by argsort(S)[::-1]: with tied scores they differ.
    similarity = np.array([[0.5, 0.5, 0.1]])
    relevancy = np.array([[1.0, 0.5, 0.25]])
    map_order = np.argsort(-similarity[0])
    ndcg_order = np.argsort(similarity[0])[::-1]
    assert map_order.tolist() != ndcg_order.tolist()

    ranked = relevancy[0, map_order]
    expected_ap = (np.cumsum(ranked) / np.arange(1, 4))[ranked == 1].mean()
    assert mir_map(similarity, relevancy) == pytest.approx(100 * expected_ap)
    discount = 1 / np.log2(np.arange(2, 5))
    ideal = np.sort(relevancy[0])[::-1]
    expected_ndcg = (relevancy[0, ndcg_order] * discount).sum() / (ideal * discount).sum()
    assert mir_ndcg(similarity, relevancy) == pytest.approx(100 * expected_ndcg)


def reference_map(similarity: np.ndarray, relevancy: np.ndarray) -> float:
    """The published definition, written directly over the whole matrix."""
    ranked = np.take_along_axis(relevancy, np.argsort(-similarity, axis=1), axis=1)
    precision = np.cumsum(ranked, axis=1) / np.arange(1, ranked.shape[1] + 1)
    fully = ranked == 1
    return 100 * float(((precision * fully).sum(1) / fully.sum(1)).mean())


def reference_ndcg(similarity: np.ndarray, relevancy: np.ndarray) -> float:
    ranked = np.take_along_axis(relevancy, np.argsort(similarity, axis=1)[:, ::-1], axis=1)
    ideal = np.sort(relevancy, axis=1)[:, ::-1]
    within = ideal > 0
    discount = 1 / np.log2(np.arange(2, ranked.shape[1] + 2))
    return 100 * float(((ranked * discount * within).sum(1) / (ideal * discount).sum(1)).mean())


@pytest.mark.parametrize("tied", [False, True])
def test_metrics_match_the_definition_in_both_directions(tied: bool):
    # 300 videos (more than one query batch), captions = the first 90 videos' labels; keep
    # the videos that some caption matches fully, so that every AP is defined.
    rng = np.random.default_rng(3)
    verbs = rng.integers(0, 3, 300)
    nouns = [rng.choice(4, size=rng.integers(1, 3)).tolist() for _ in range(300)]
    relevancy = mir_relevancy(verbs, nouns, verbs[:90], nouns[:90]).astype(np.float64)
    relevancy = relevancy[(relevancy == 1).any(axis=1)]
    assert relevancy.shape[0] > 200
    similarity = relevancy + rng.standard_normal(relevancy.shape)
    if tied:
        similarity = np.round(similarity, 1)

    metrics = mir_metrics(similarity, relevancy)
    assert list(metrics) == ["map_avg", "map_t2v", "map_v2t", "ndcg_avg", "ndcg_t2v", "ndcg_v2t"]
    assert metrics["map_v2t"] == pytest.approx(reference_map(similarity, relevancy))
    assert metrics["map_t2v"] == pytest.approx(reference_map(similarity.T, relevancy.T))
    assert metrics["ndcg_v2t"] == pytest.approx(reference_ndcg(similarity, relevancy))
    assert metrics["ndcg_t2v"] == pytest.approx(reference_ndcg(similarity.T, relevancy.T))
    assert metrics["map_avg"] == pytest.approx((metrics["map_v2t"] + metrics["map_t2v"]) / 2)
    assert metrics["ndcg_avg"] == pytest.approx((metrics["ndcg_v2t"] + metrics["ndcg_t2v"]) / 2)


def test_a_query_without_a_fully_relevant_item_is_refused():
    relevancy = np.array([[1.0, 0.0], [0.5, 0.0]])
    with pytest.raises(
        ValueError, match=r"queries \[1\] \(1 in all\) have no item with relevancy 1"
    ):
        mir_map(np.zeros((2, 2)), relevancy)
    with pytest.raises(ValueError, match="must be non-empty 2-D matrices of the same shape"):
        mir_metrics(np.zeros((2, 3)), relevancy)


@pytest.fixture(scope="module")
def test_relevancy(epic_dir: Path) -> np.ndarray:
    """R of the official MIR test split, columns in the sentence file's order."""
    videos = pl.read_csv(epic_dir / "retrieval_annotations" / "EPIC_100_retrieval_test.csv")
    sentences = pl.read_csv(
        epic_dir / "retrieval_annotations" / "EPIC_100_retrieval_test_sentence.csv"
    )
    video_nouns = [ast.literal_eval(text) for text in videos["all_noun_classes"]]
    segment = {
        narration_id: (verb, nouns)
        for narration_id, verb, nouns in zip(
            videos["narration_id"], videos["verb_class"], video_nouns, strict=True
        )
    }
    captions = [segment[narration_id] for narration_id in sentences["narration_id"]]
    return mir_relevancy(
        videos["verb_class"].to_list(),
        video_nouns,
        [verb for verb, _ in captions],
        [nouns for _, nouns in captions],
    )


def test_real_test_split_relevancy_statistics(test_relevancy: np.ndarray):
    relevancy = test_relevancy
    assert relevancy.shape == (9668, 3842)
    fully = relevancy == 1
    assert fully.any(axis=1).all() and fully.any(axis=0).all()
    assert fully.sum(axis=1).mean() == pytest.approx(6.47, abs=0.005)
    assert fully.sum(axis=0).mean() == pytest.approx(16.3, abs=0.05)
    assert (relevancy > 0).sum(axis=1).mean() == pytest.approx(437, abs=0.5)
    assert (relevancy > 0).sum(axis=0).mean() == pytest.approx(1100, abs=0.5)


def test_real_relevancy_ranked_by_itself_scores_100(test_relevancy: np.ndarray):
    # A block of videos and the captions they fully match: ranking by R itself is ideal.
    rows = test_relevancy[:1500]
    block = rows[:, (rows == 1).any(axis=0)]
    metrics = mir_metrics(block, block)
    assert all(value == pytest.approx(100.0) for value in metrics.values()), metrics
