"""EPIC-KITCHENS-100 action recognition scores against hand-computed cases and the real labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from egofeat.eval import (
    action_scores,
    epic_action_metrics,
    mean_class_accuracy,
    per_class_accuracy,
)
from egofeat.eval.epic import log_softmax, ranked_top_k

VERB_P = [0.5, 0.3, 0.2]
NOUN_P = [0.6, 0.3, 0.1]
# Pair probabilities p_v·p_n, best first: (0,0) .30, (1,0) .18, (0,1) .15, (2,0) .12,
# (1,1) .09, (2,1) .06, (0,2) .05, (1,2) .03, (2,2) .02.
PAIR_IDS = [0, 1000, 1, 2000, 1001, 2001, 2, 1002, 2002]
PAIR_P = [0.30, 0.18, 0.15, 0.12, 0.09, 0.06, 0.05, 0.03, 0.02]


def test_action_scores_rank_pairs_by_joint_probability():
    ids, scores = action_scores(np.log([VERB_P]), np.log([NOUN_P]), top_n=9)
    assert ids.dtype == np.int64 and scores.dtype == np.float64
    assert ids.tolist() == [PAIR_IDS]
    np.testing.assert_allclose(np.exp(scores[0]), PAIR_P)


def test_action_scores_are_invariant_to_a_per_row_logit_shift():
    shifted_ids, shifted = action_scores(np.log([VERB_P]) + 7.0, np.log([NOUN_P]) - 3.0, top_n=9)
    assert shifted_ids.tolist() == [PAIR_IDS]
    np.testing.assert_allclose(np.exp(shifted[0]), PAIR_P)


@pytest.mark.parametrize("top_n", [1, 5, 100])
@pytest.mark.parametrize("tied", [False, True])
def test_action_scores_match_brute_force_over_all_pairs(top_n, tied):
    # 120 nouns exercise the top-100 noun restriction; integer logits make many exact ties,
    # which must go to the lower action id.
    rng = np.random.default_rng(top_n)
    verbs, nouns = rng.standard_normal((20, 10)), rng.standard_normal((20, 120))
    if tied:
        verbs, nouns = np.round(verbs), np.round(nouns)
    ids, scores = action_scores(verbs, nouns, top_n=top_n)

    joint = (log_softmax(verbs)[:, :, None] + log_softmax(nouns)[:, None, :]).reshape(20, -1)
    all_ids = (np.arange(10)[:, None] * 1000 + np.arange(120)[None, :]).ravel()
    best = np.stack([np.lexsort((all_ids, -row))[:top_n] for row in joint])
    np.testing.assert_array_equal(ids, all_ids[best])
    np.testing.assert_array_equal(scores, np.take_along_axis(joint, best, axis=1))


def test_action_scores_per_row_float64_avoids_global_softmax_underflow():
    verbs = np.array([[0.0, -1.0, -2.0], [-200.0, -201.0, -202.0]], dtype=np.float32)
    nouns = np.array([[0.0, -0.5], [-200.0, -199.5]], dtype=np.float32)
    # The official scorer's scipy softmax over the whole block, in float32: row 1 underflows
    # to exact zeros, so all of its pairs tie and its ranking is arbitrary.
    global_softmax = np.exp(verbs - verbs.max()) / np.exp(verbs - verbs.max()).sum()
    assert (global_softmax[1] == 0).all()

    ids, scores = action_scores(verbs, nouns, top_n=6)
    assert ids[1].tolist() == [1, 0, 1001, 1000, 2001, 2000]
    assert len(set(scores[1].tolist())) == 6
    assert ids[0].tolist() == [0, 1, 1000, 1001, 2000, 2001]


def test_ranked_top_k_breaks_ties_towards_the_lower_index():
    scores = np.array([[0.0, 5.0, 5.0, 5.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    assert ranked_top_k(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert ranked_top_k(scores, 5).tolist() == [[1, 2, 3, 4, 0], [0, 1, 2, 3, 4]]


def test_ties_in_top_1_go_to_the_lower_class_id():
    verbs = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    nouns = np.array([[0.0, 3.0], [0.0, 3.0]])
    metrics = epic_action_metrics(verbs, nouns, [0, 1], [1, 1])
    assert metrics["all_verb_accuracy_at_1"] == 50.0
    assert metrics["all_action_accuracy_at_1"] == 50.0  # pair (0, 1) beats its tie (1, 1)
    assert action_scores(verbs, nouns, top_n=2)[0][0].tolist() == [1, 1001]


def test_action_top_5_comes_from_the_pair_list_and_k_may_exceed_the_class_count():
    verbs, nouns = np.log([VERB_P, VERB_P]), np.log([NOUN_P, NOUN_P])
    # Row 0's true pair (1, 1) ranks 5th; row 1's (2, 1) ranks 6th.
    metrics = epic_action_metrics(verbs, nouns, [1, 2], [1, 1])
    assert metrics["all_action_accuracy_at_1"] == 0.0
    assert metrics["all_action_accuracy_at_5"] == 50.0
    assert metrics["all_verb_accuracy_at_1"] == 0.0
    assert metrics["all_verb_accuracy_at_5"] == 100.0  # 3 verbs, k = 5
    assert metrics["all_noun_accuracy_at_5"] == 100.0


def test_tail_action_is_tail_verb_or_tail_noun():
    # Classes: verbs {0 head, 1 tail}, nouns {0 head, 1 tail}.
    verb_labels = np.array([1, 0, 1, 0])
    noun_labels = np.array([0, 1, 1, 0])
    verbs = np.eye(2)[[1, 1, 1, 0]]  # row 1's verb is wrong
    nouns = np.eye(2)[[0, 1, 0, 0]]  # row 2's noun is wrong
    metrics = epic_action_metrics(
        verbs, nouns, verb_labels, noun_labels, tail_verbs=[1], tail_nouns=[1]
    )
    assert metrics["tail_verb_count"] == 2  # rows 0, 2
    assert metrics["tail_noun_count"] == 2  # rows 1, 2
    assert metrics["tail_action_count"] == 3  # rows 0, 1, 2
    assert metrics["tail_verb_accuracy_at_1"] == 100.0
    assert metrics["tail_noun_accuracy_at_1"] == 50.0
    assert metrics["tail_action_accuracy_at_1"] == pytest.approx(100 / 3)
    assert metrics["all_action_accuracy_at_1"] == 50.0
    assert "tail_verb_accuracy_at_5" not in metrics


def test_unseen_subset_scores_only_unseen_participants():
    verbs = np.eye(3)[[0, 1, 2, 0]]
    nouns = np.eye(3)[[0, 1, 1, 0]]
    metrics = epic_action_metrics(
        verbs,
        nouns,
        [0, 1, 2, 2],
        [0, 1, 2, 0],
        participant_ids=["P01", "P18", "P32", "P01"],
        unseen_participants=["P18", "P32"],
    )
    assert metrics["unseen_count"] == 2
    assert metrics["unseen_verb_accuracy_at_1"] == 100.0
    assert metrics["unseen_noun_accuracy_at_1"] == 50.0
    assert metrics["unseen_action_accuracy_at_1"] == 50.0
    assert metrics["all_verb_accuracy_at_1"] == 75.0


def test_empty_subsets_score_nan_with_count_zero():
    verbs, nouns = np.eye(3)[[0, 1]], np.eye(3)[[0, 1]]
    metrics = epic_action_metrics(
        verbs,
        nouns,
        [0, 1],
        [0, 1],
        participant_ids=["P01", "P02"],
        unseen_participants=["P18"],
        tail_verbs=[2],
        tail_nouns=[2],
    )
    assert metrics["unseen_count"] == 0 and math.isnan(metrics["unseen_verb_accuracy_at_1"])
    assert metrics["tail_action_count"] == 0 and math.isnan(metrics["tail_action_accuracy_at_1"])
    assert metrics["all_action_accuracy_at_1"] == 100.0


def test_no_segments_at_all_gives_nan_not_a_crash():
    metrics = epic_action_metrics(np.zeros((0, 97)), np.zeros((0, 300)), [], [])
    assert metrics["all_count"] == 0
    assert math.isnan(metrics["all_action_accuracy_at_5"])
    assert math.isnan(metrics["verb_mean_class_accuracy"])


def test_per_class_accuracy_is_nan_for_classes_absent_from_ground_truth():
    logits = np.eye(4)[[0, 0, 2, 1, 2]]
    labels = np.array([0, 0, 0, 2, 2])
    per_class = per_class_accuracy(logits, labels, 4)
    np.testing.assert_allclose(per_class[[0, 2]], [200 / 3, 50.0])
    assert np.isnan(per_class[[1, 3]]).all()
    assert mean_class_accuracy(per_class) == pytest.approx((200 / 3 + 50) / 2)
    metrics = epic_action_metrics(logits, logits, labels, labels)
    assert metrics["verb_mean_class_accuracy"] == pytest.approx((200 / 3 + 50) / 2)


def test_action_top_1_is_verb_top_1_and_noun_top_1():
    rng = np.random.default_rng(1)
    verbs, nouns = rng.standard_normal((500, 97)), rng.standard_normal((500, 300))
    verb_labels, noun_labels = verbs.argmax(1), rng.integers(0, 300, 500)
    noun_labels[:250] = nouns[:250].argmax(1)
    metrics = epic_action_metrics(verbs, nouns, verb_labels, noun_labels)
    both = (verbs.argmax(1) == verb_labels) & (nouns.argmax(1) == noun_labels)
    assert metrics["all_action_accuracy_at_1"] == pytest.approx(100 * both.mean())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"verb_labels": [0, 97]}, r"verb_labels\[1\] = 97 is outside \[0, 97\)"),
        ({"tail_verbs": [1]}, "give both tail_verbs and tail_nouns"),
        ({"participant_ids": ["P01", "P02"]}, "give both participant_ids"),
        ({"noun_logits": np.full((2, 300), np.nan)}, "NaN or infinite values in rows"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, message):
    args = {
        "verb_logits": np.zeros((2, 97)),
        "noun_logits": np.zeros((2, 300)),
        "verb_labels": [0, 1],
        "noun_labels": [0, 1],
    }
    args.update(kwargs)
    positional = [args.pop(k) for k in ("verb_logits", "noun_logits", "verb_labels", "noun_labels")]
    with pytest.raises(ValueError, match=message):
        epic_action_metrics(*positional, **args)


def test_real_validation_labels_perfect_logits_and_subset_counts(epic_dir: Path):
    validation = pl.read_csv(epic_dir / "EPIC_100_validation.csv")
    tail_verbs = pl.read_csv(epic_dir / "EPIC_100_tail_verbs.csv")["verb"].to_list()
    tail_nouns = pl.read_csv(epic_dir / "EPIC_100_tail_nouns.csv")["noun"].to_list()
    unseen = pl.read_csv(epic_dir / "EPIC_100_unseen_participant_ids_validation.csv")
    verb_labels = validation["verb_class"].to_numpy()
    noun_labels = validation["noun_class"].to_numpy()
    n = validation.height
    verbs = np.zeros((n, 97), dtype=np.float32)
    nouns = np.zeros((n, 300), dtype=np.float32)
    verbs[np.arange(n), verb_labels] = 4.0
    nouns[np.arange(n), noun_labels] = 4.0

    metrics = epic_action_metrics(
        verbs,
        nouns,
        verb_labels,
        noun_labels,
        participant_ids=validation["participant_id"].to_list(),
        unseen_participants=unseen["participant_id"].to_list(),
        tail_verbs=tail_verbs,
        tail_nouns=tail_nouns,
    )
    counts = {k: v for k, v in metrics.items() if k.endswith("_count")}
    assert counts == {
        "all_count": 9668,
        "tail_verb_count": 1760,
        "tail_noun_count": 1900,
        "tail_action_count": 3105,
        "unseen_count": 1065,
    }
    accuracies = {k: v for k, v in metrics.items() if not k.endswith("_count")}
    assert len(accuracies) == 14  # 12 official keys + 2 mean class accuracies
    assert all(v == 100.0 for v in accuracies.values()), accuracies
