"""EPIC-KITCHENS-100 action recognition scores, as the official C1 scorer defines them.

Definitions (``reference/formats.md`` §3.2):

- **Verb / noun top-k**: the ground-truth class is among the k highest logits of its row.
- **Action scores**: each (verb, noun) pair of a segment is scored by
  ``log p(verb) + log p(noun)``, with per-row softmaxes in float64, over the top-100 verbs ×
  top-100 nouns; the best ``top_n`` pairs are kept. The action id is ``verb * 1000 + noun``.
  Action top-k = the ground-truth pair is among the first k pairs of that list.
  The official scorer multiplies probabilities from one ``scipy.special.softmax`` over the whole
  N × 100 block; that gives the same order within a row, but in float32 it underflows to exact
  zeros (spurious ties) for rows far below the block's maximum. Per-row log-softmax cannot.
- **Subsets** (top-1 only): *unseen* = segments whose participant is in the unseen list;
  *tail verb* / *tail noun* = segments whose verb / noun class is a tail class, each scored on
  its own task; *tail action* = tail verb **or** tail noun.
- **Ties** in any ranking go to the lower class id (lower action id for pairs): this is a stable
  descending sort. The official scorer reverses numpy's default (unstable) argsort, so its order
  among exactly equal scores is unspecified; with real-valued logits exact ties do not occur.

All accuracies are percentages (×100), as published.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ._checks import class_id_set, class_labels, percent, scores_2d

VERB_CLASSES = 97
NOUN_CLASSES = 300
ACTION_ID_BASE = 1000
"""Action id of (verb, noun) = ``verb * ACTION_ID_BASE + noun``."""

_PAIR_CANDIDATES = 100  # the scorer pairs the top-100 verbs with the top-100 nouns
_ROWS_PER_BLOCK = 256  # keeps the (rows, 100 × 100) pair block near 20 MB


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Per-row log-softmax in float64."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ranked_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores of each row, best first.

    Ties go to the lower column index, exactly as a stable sort of ``-scores`` would order
    them, but in O(columns) per row plus a sort of only ``k`` values.
    """
    n_rows, n_cols = scores.shape
    if not 0 < k <= n_cols:
        raise ValueError(f"k must be in [1, {n_cols}], got {k}")
    if k == n_cols:
        return np.argsort(-scores, axis=1, kind="stable")
    kth_largest = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k : n_cols - k + 1]
    above = scores > kth_largest
    at = scores == kth_largest
    keep = above | at
    # Where the k-th largest value is tied beyond the k slots, keep its lowest-index entries.
    for row in np.nonzero(keep.sum(axis=1) > k)[0]:
        slots_left = k - above[row].sum()
        keep[row] = above[row] | (at[row] & (np.cumsum(at[row]) <= slots_left))
    columns = np.nonzero(keep)[1].reshape(n_rows, k)  # ascending column order per row
    kept = np.take_along_axis(scores, columns, axis=1)
    return np.take_along_axis(columns, np.argsort(-kept, axis=1, kind="stable"), axis=1)


def action_scores(
    verb_logits: np.ndarray, noun_logits: np.ndarray, top_n: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Rank the (verb, noun) pairs of every segment, as the EPIC-100 scorer does.

    Only the top-``min(top_n, 100)`` verbs and nouns are paired: a verb with ``top_n``
    better verbs ahead of it has ``top_n`` better pairs ahead of each of its pairs, so this
    gives exactly the official top-100 × top-100 result, faster for small ``top_n``.

    Args:
        verb_logits: (N, V) pre-softmax verb scores.
        noun_logits: (N, M) pre-softmax noun scores, M ≤ 1000.
        top_n: how many pairs to keep per segment (at most min(V,100) · min(M,100)).

    Returns:
        ``(action_ids, scores)``: int64 (N, top_n) action ids ``verb * 1000 + noun``, best
        first, and their float64 scores ``log p(verb) + log p(noun)`` (per-row softmaxes).
    """
    verb_lp = log_softmax(scores_2d("verb_logits", verb_logits))
    noun_lp = log_softmax(scores_2d("noun_logits", noun_logits))
    if verb_lp.shape[0] != noun_lp.shape[0]:
        raise ValueError(
            f"verb_logits has {verb_lp.shape[0]} rows but noun_logits has {noun_lp.shape[0]}"
        )
    if noun_lp.shape[1] > ACTION_ID_BASE:
        raise ValueError(
            f"{noun_lp.shape[1]} noun classes: action ids verb * {ACTION_ID_BASE} + noun "
            f"need at most {ACTION_ID_BASE}"
        )
    n_verbs = min(_PAIR_CANDIDATES, verb_lp.shape[1])
    n_nouns = min(_PAIR_CANDIDATES, noun_lp.shape[1])
    if not 0 < top_n <= n_verbs * n_nouns:
        raise ValueError(f"top_n must be in [1, {n_verbs * n_nouns}], got {top_n}")
    n_verbs, n_nouns = min(n_verbs, top_n), min(n_nouns, top_n)

    # Candidate ids sorted ascending, so the flattened verb-major pair grid is in ascending
    # action-id order and ranked_top_k's lower-index tie rule means lower action id.
    verbs = np.sort(ranked_top_k(verb_lp, n_verbs), axis=1)
    nouns = np.sort(ranked_top_k(noun_lp, n_nouns), axis=1)
    n_rows = verb_lp.shape[0]
    action_ids = np.empty((n_rows, top_n), dtype=np.int64)
    scores = np.empty((n_rows, top_n), dtype=np.float64)
    for start in range(0, n_rows, _ROWS_PER_BLOCK):
        rows = slice(start, start + _ROWS_PER_BLOCK)
        v, n = verbs[rows], nouns[rows]
        pair_scores = (
            np.take_along_axis(verb_lp[rows], v, axis=1)[:, :, None]
            + np.take_along_axis(noun_lp[rows], n, axis=1)[:, None, :]
        ).reshape(v.shape[0], -1)
        best = ranked_top_k(pair_scores, top_n)
        best_verb = np.take_along_axis(v, best // n_nouns, axis=1)
        best_noun = np.take_along_axis(n, best % n_nouns, axis=1)
        action_ids[rows] = best_verb * ACTION_ID_BASE + best_noun
        scores[rows] = np.take_along_axis(pair_scores, best, axis=1)
    return action_ids, scores


def per_class_accuracy(
    logits: np.ndarray, labels: np.ndarray, n_classes: int | None = None
) -> np.ndarray:
    """Top-1 recall of every class (×100): correct / ground-truth segments of that class.

    Args:
        logits: (N, C) scores; the prediction is the argmax (lowest class id on ties).
        labels: (N,) ground-truth class ids.
        n_classes: C; defaults to the number of logit columns (pass it to have it checked).

    Returns:
        float64 (C,), NaN for classes absent from the ground truth.
    """
    logits = scores_2d("logits", logits)
    if n_classes is not None and n_classes != logits.shape[1]:
        raise ValueError(f"n_classes={n_classes} but logits have {logits.shape[1]} columns")
    n_classes = logits.shape[1]
    labels = class_labels("labels", labels, n_samples=logits.shape[0], n_classes=n_classes)
    correct = logits.argmax(axis=1) == labels if labels.size else np.zeros(0, dtype=bool)
    return _per_class_recall(correct, labels, n_classes)


def _per_class_recall(correct: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    hits = np.bincount(labels, weights=correct, minlength=n_classes)
    support = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 100.0 * hits / support, np.nan)


def mean_class_accuracy(per_class: np.ndarray) -> float:
    """Mean of per-class accuracies over the classes present in the ground truth (non-NaN)."""
    present = per_class[~np.isnan(per_class)]
    return float(present.mean()) if present.size else float("nan")


def _label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each row's label under the lower-index-first tie rule."""
    if not labels.size:
        return np.zeros(0, dtype=np.int64)
    label_score = scores[np.arange(labels.size), labels][:, None]
    columns = np.arange(scores.shape[1])
    ahead = (scores > label_score) | ((scores == label_score) & (columns < labels[:, None]))
    return ahead.sum(axis=1)


def _action_ranks(
    verb_logits: np.ndarray,
    noun_logits: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    depth: int,
) -> np.ndarray:
    """0-based rank of the true action in the top-``depth`` pair list (int64 max if absent)."""
    if not verb_labels.size:
        return np.zeros(0, dtype=np.int64)
    n_pairs = min(_PAIR_CANDIDATES, verb_logits.shape[1]) * min(
        _PAIR_CANDIDATES, noun_logits.shape[1]
    )
    depth = min(depth, n_pairs)
    ids, _ = action_scores(verb_logits, noun_logits, top_n=depth)
    truth = (verb_labels * ACTION_ID_BASE + noun_labels)[:, None]
    return np.where(ids == truth, np.arange(depth), np.iinfo(np.int64).max).min(axis=1)


def epic_action_metrics(
    verb_logits: np.ndarray,
    noun_logits: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    *,
    participant_ids: Sequence[str] | None = None,
    unseen_participants: Iterable[str] | None = None,
    tail_verbs: Iterable[int] | None = None,
    tail_nouns: Iterable[int] | None = None,
) -> dict[str, float]:
    """Score verb, noun and action predictions with the EPIC-KITCHENS-100 C1 definitions.

    Args:
        verb_logits, noun_logits: (N, V) and (N, M) pre-softmax scores (pass logits, not
            probabilities: the action ranking re-normalises them).
        verb_labels, noun_labels: (N,) ground-truth class ids.
        participant_ids: (N,) participant of each segment, e.g. ``"P18"``; together with
            ``unseen_participants`` it adds the ``unseen_*`` keys.
        tail_verbs, tail_nouns: tail class ids (``EPIC_100_tail_{verbs,nouns}.csv``); give
            both to add the ``tail_*`` keys.

    Returns:
        The official keys ``{all,tail,unseen}_{verb,noun,action}_accuracy_at_1`` and
        ``all_{verb,noun,action}_accuracy_at_5`` (×100); ``{verb,noun}_mean_class_accuracy``
        (×100: mean over classes present in the ground truth of their top-1 recall); and the
        segment counts ``all_count``, ``tail_{verb,noun,action}_count``, ``unseen_count``.
        A subset with no segments scores NaN and counts 0.
    """
    verb_logits = scores_2d("verb_logits", verb_logits)
    noun_logits = scores_2d("noun_logits", noun_logits)
    n = verb_logits.shape[0]
    if noun_logits.shape[0] != n:
        raise ValueError(f"verb_logits has {n} rows but noun_logits has {noun_logits.shape[0]}")
    verb_labels = class_labels(
        "verb_labels", verb_labels, n_samples=n, n_classes=verb_logits.shape[1]
    )
    noun_labels = class_labels(
        "noun_labels", noun_labels, n_samples=n, n_classes=noun_logits.shape[1]
    )
    ranks = {
        "verb": _label_ranks(verb_logits, verb_labels),
        "noun": _label_ranks(noun_logits, noun_labels),
        "action": _action_ranks(verb_logits, noun_logits, verb_labels, noun_labels, depth=5),
    }

    everyone = np.ones(n, dtype=bool)
    metrics: dict[str, float] = {}
    for task, rank in ranks.items():
        metrics[f"all_{task}_accuracy_at_1"] = _top_k(rank, everyone, 1)
    for task, rank in ranks.items():
        metrics[f"all_{task}_accuracy_at_5"] = _top_k(rank, everyone, 5)
    metrics["all_count"] = n

    if (tail_verbs is None) != (tail_nouns is None):
        raise ValueError("give both tail_verbs and tail_nouns (tail action = tail verb OR noun)")
    if tail_verbs is not None and tail_nouns is not None:
        tail_verb = np.isin(
            verb_labels, class_id_set("tail_verbs", tail_verbs, n_classes=verb_logits.shape[1])
        )
        tail_noun = np.isin(
            noun_labels, class_id_set("tail_nouns", tail_nouns, n_classes=noun_logits.shape[1])
        )
        subsets = {"verb": tail_verb, "noun": tail_noun, "action": tail_verb | tail_noun}
        for task, subset in subsets.items():
            metrics[f"tail_{task}_accuracy_at_1"] = _top_k(ranks[task], subset, 1)
        for task, subset in subsets.items():
            metrics[f"tail_{task}_count"] = int(subset.sum())

    if (participant_ids is None) != (unseen_participants is None):
        raise ValueError("give both participant_ids and unseen_participants for unseen scores")
    if participant_ids is not None and unseen_participants is not None:
        participants = np.asarray([str(p) for p in participant_ids])
        if participants.shape != (n,):
            raise ValueError(f"participant_ids must have {n} entries, got {participants.shape}")
        unseen = np.isin(participants, [str(p) for p in unseen_participants])
        for task, rank in ranks.items():
            metrics[f"unseen_{task}_accuracy_at_1"] = _top_k(rank, unseen, 1)
        metrics["unseen_count"] = int(unseen.sum())

    metrics["verb_mean_class_accuracy"] = mean_class_accuracy(
        _per_class_recall(ranks["verb"] == 0, verb_labels, verb_logits.shape[1])
    )
    metrics["noun_mean_class_accuracy"] = mean_class_accuracy(
        _per_class_recall(ranks["noun"] == 0, noun_labels, noun_logits.shape[1])
    )
    return metrics


def _top_k(rank: np.ndarray, subset: np.ndarray, k: int) -> float:
    return percent(float((rank[subset] < k).sum()), float(subset.sum()))
