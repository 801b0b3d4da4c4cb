"""Exact cosine search and EILEV-style in-context example selection."""

from __future__ import annotations

import numpy as np
import pytest

from egofeat.heads.neighbors import (
    NeighborIndex,
    faiss_available,
    select_in_context_examples,
)

# (segment id, verb, noun, similarity to the query "q"). Features are built so that each
# segment's cosine with the query is exactly the listed value.
POOL = [
    ("q", "take", "cup", 1.0),
    ("dup", "take", "cup", 0.99),  # exact (verb, noun) duplicate: never chosen
    ("v1", "take", "plate", 0.50),
    ("v2", "take", "knife", 0.90),
    ("v3", "take", "spoon", 0.70),
    ("n1", "wash", "cup", 0.60),
    ("n2", "put", "cup", 0.80),
    ("o1", "open", "door", 0.95),
    ("o2", "cut", "onion", 0.40),
    ("o3", "[other]", "bag", 0.30),
    ("o4", "", "", 0.20),
]


def pool_index(rows=POOL, **kwargs) -> NeighborIndex:
    rng = np.random.default_rng(0)
    query = np.zeros(8)
    query[0] = 1.0
    features = []
    for *_, cosine in rows:
        other = rng.standard_normal(7)
        other *= np.sqrt(1 - cosine**2) / np.linalg.norm(other)
        features.append(np.concatenate([[cosine], other]) * rng.uniform(0.5, 3.0))
    ids = [row[0] for row in rows]
    return NeighborIndex(
        np.array(features),
        segment_ids=ids,
        verbs=[row[1] for row in rows],
        nouns=[row[2] for row in rows],
        video_ids=[f"video-{s}" for s in ids],
        frame_times=[(i, i + 0.5) for i in range(len(rows))],
        **kwargs,
    )


def chosen(examples):
    return [(e.segment_id, e.bucket) for e in examples]


def test_quotas_split_between_buckets_and_rank_by_similarity():
    examples = select_in_context_examples(pool_index(), "q", k=4, order="similarity")
    assert chosen(examples) == [
        ("v2", "verb"),
        ("n2", "noun"),
        ("v3", "verb"),
        ("n1", "noun"),
        ("q", "query"),
    ]
    assert [e.similarity for e in examples[:-1]] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert examples[0].video_id == "video-v2" and examples[0].frame_times == (3.0, 3.5)
    assert (examples[0].verb, examples[0].noun) == ("take", "knife")


def test_short_buckets_are_drawn_empty_then_filled_by_similarity():
    examples = select_in_context_examples(
        pool_index(), "q", k=8, order="similarity", include_query=False
    )
    picked = dict(chosen(examples))
    assert picked == {
        "v1": "verb", "v2": "verb", "v3": "verb", "n1": "noun", "n2": "noun",
        "o1": "fill", "o2": "fill", "o3": "fill",
    }  # fmt: skip
    assert "dup" not in picked and "q" not in picked
    everything = select_in_context_examples(pool_index(), "q", k=50, include_query=False)
    assert {e.segment_id for e in everything} == {row[0] for row in POOL} - {"q", "dup"}


def test_verb_ratio_sets_the_verb_quota():
    examples = select_in_context_examples(
        pool_index(), "q", k=3, verb_ratio=1 / 3, include_query=False
    )
    assert sorted(b for _, b in chosen(examples)) == ["noun", "noun", "verb"]  # int(3/3) = 1 verb
    all_verbs = select_in_context_examples(pool_index(), "q", k=3, verb_ratio=1.0)
    assert [b for _, b in chosen(all_verbs)][:3] == ["verb"] * 3


def test_vague_verbs_get_no_verb_bucket():
    rows = [
        ("q", "[other]", "cup", 1.0),
        ("a", "[other]", "plate", 0.9),  # same vague verb: not a verb-bucket example
        ("b", "wash", "cup", 0.5),
        ("c", "put", "cup", 0.4),
        ("d", "[other]", "cup", 0.8),  # exact duplicate
    ]
    examples = select_in_context_examples(
        pool_index(rows), "q", k=3, order="similarity", include_query=False
    )
    assert chosen(examples) == [("a", "fill"), ("b", "noun"), ("c", "noun")]
    rows[0] = ("q", "", "cup", 1.0)
    examples = select_in_context_examples(pool_index(rows), "q", k=2, include_query=False)
    assert {b for _, b in chosen(examples)} == {"noun"}


def test_shuffled_order_is_seeded_and_the_query_comes_last():
    index = pool_index()
    first = select_in_context_examples(index, "q", k=8, seed=1)
    assert first[-1].segment_id == "q" and first[-1].bucket == "query"
    assert chosen(first) == chosen(select_in_context_examples(index, "q", k=8, seed=1))
    orders = {tuple(chosen(select_in_context_examples(index, "q", k=8, seed=s))) for s in range(6)}
    assert len(orders) > 1
    by_similarity = select_in_context_examples(index, "q", k=8, order="similarity")
    assert sorted(chosen(first)) == sorted(chosen(by_similarity))
    with pytest.raises(ValueError, match="order must be"):
        select_in_context_examples(index, "q", order="random")


def test_query_from_another_split():
    pool = pool_index([row for row in POOL if row[0] != "q"])
    queries = pool_index([POOL[0]])
    examples = select_in_context_examples(pool, "q", k=4, order="similarity", queries=queries)
    assert chosen(examples) == [
        ("v2", "verb"),
        ("n2", "noun"),
        ("v3", "verb"),
        ("n1", "noun"),
        ("q", "query"),
    ]
    with pytest.raises(KeyError, match="'nope' is not in the index"):
        select_in_context_examples(pool, "nope")


def test_search_matches_brute_force():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((500, 16)).astype(np.float32)
    ids = [f"s{i}" for i in range(500)]
    index = NeighborIndex(features, ids, ["v"] * 500, ["n"] * 500, ["x"] * 500, [()] * 500,
                          backend="numpy")  # fmt: skip
    queries = rng.standard_normal((300, 16)).astype(np.float32)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = np.argsort(-(queries @ unit.T), axis=1)[:, :7]
    scores, positions = index.search(queries, 7)
    assert positions.shape == scores.shape == (300, 7)
    assert np.array_equal(positions, expected)
    assert np.all(np.diff(scores, axis=1) <= 0)
    single_scores, single = index.search(queries[0], 7)
    assert np.array_equal(single, expected[0]) and single_scores.shape == (7,)
    assert index.search(queries[:2], 10_000)[1].shape == (2, 500)  # k capped at the index size
    assert np.allclose(index.similarities(queries[0])[expected[0]], single_scores, atol=1e-6)


@pytest.mark.skipif(not faiss_available(), reason="optional faiss extra is not installed")
def test_faiss_backend_agrees_with_numpy():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((300, 16)).astype(np.float32)
    args = ([f"s{i}" for i in range(300)], ["v"] * 300, ["n"] * 300, ["x"] * 300, [()] * 300)
    exact = NeighborIndex(features, *args, backend="numpy")
    fast = NeighborIndex(features, *args, backend="faiss")
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    assert np.array_equal(exact.search(queries, 5)[1], fast.search(queries, 5)[1])


@pytest.mark.skipif(faiss_available(), reason="faiss is installed")
def test_missing_faiss_backend_says_how_to_install():
    with pytest.raises(ImportError, match=r"egofeat\[faiss\]"):
        pool_index(backend="faiss")
    assert pool_index(backend="auto").backend == "numpy"


def test_bad_indexes_are_refused_with_the_culprit_named():
    features = np.eye(3, dtype=np.float32)
    features[1] = 0
    with pytest.raises(ValueError, match="row 1 \\(segment 'b'\\) is all zeros"):
        NeighborIndex(features, ["a", "b", "c"], ["v"] * 3, ["n"] * 3, ["x"] * 3, [()] * 3)
    with pytest.raises(ValueError, match="verbs has 2 entries but features has 3 rows"):
        NeighborIndex(np.eye(3), ["a", "b", "c"], ["v"] * 2, ["n"] * 3, ["x"] * 3, [()] * 3)
    with pytest.raises(ValueError, match="'a' appears more than once"):
        NeighborIndex(np.eye(3), ["a", "b", "a"], ["v"] * 3, ["n"] * 3, ["x"] * 3, [()] * 3)
    index = NeighborIndex(np.eye(3), ["a", "b", "c"], [None] * 3, ["n"] * 3, ["x"] * 3, [()] * 3)
    assert index.verbs == ["", "", ""]
    with pytest.raises(ValueError, match="dimension 2, the index 3"):
        index.search(np.ones(2), 1)


# ---- EILEV's sampler: random draws inside the buckets ---------------------------------------


def eilev(index, query="q", k=4, **kwargs):
    return select_in_context_examples(index, query, k, sampler="eilev-random", include_query=False, **kwargs)


def test_eilev_sampler_draws_at_random_inside_the_buckets_with_its_quotas():
    index = pool_index()
    draws = [chosen(eilev(index, seed=seed, order="similarity")) for seed in range(40)]
    for picked in draws:  # int(4 * 0.5) = 2 of the 3 verb candidates, then both noun ones
        assert sorted(b for _, b in picked) == ["noun", "noun", "verb", "verb"]
        assert {s for s, b in picked if b == "verb"} <= {"v1", "v2", "v3"}
        assert {s for s, b in picked if b == "noun"} == {"n1", "n2"}
    verb_pairs = {frozenset(s for s, b in picked if b == "verb") for picked in draws}
    assert len(verb_pairs) == 3  # every pair of the three, not the two most similar
    ranked = chosen(select_in_context_examples(index, "q", 4, order="similarity", include_query=False))
    assert {s for s, b in ranked if b == "verb"} == {"v2", "v3"}  # the other sampler: most similar
    assert chosen(eilev(index, seed=3)) == chosen(eilev(index, seed=3))


def test_eilev_sampler_redoes_the_split_when_a_bucket_runs_dry_then_draws_the_rest():
    index = pool_index()
    # k=5: int(5 * 0.5) = 2 verb and 3 noun asked; the noun bucket holds 2, so the split is
    # redone on the one left, which the verb bucket alone can give: nothing from the rest
    picked = chosen(eilev(index, k=5, seed=0))
    assert sorted(b for _, b in picked) == ["noun", "noun", "verb", "verb", "verb"]
    for seed in range(20):  # k=7: both buckets dry after 5, two of the others at random
        picked = dict(chosen(eilev(index, k=7, seed=seed)))
        assert [s for s, b in picked.items() if b == "fill"] and len(picked) == 7
        assert {s for s, b in picked.items() if b == "fill"} <= {"o1", "o2", "o3", "o4"}
        assert "q" not in picked and "dup" not in picked  # never the query, never its exact action
    fills = {frozenset(s for s, b in chosen(eilev(index, k=7, seed=seed)) if b == "fill") for seed in range(30)}
    assert len(fills) > 3


def test_eilev_sampler_never_buckets_the_other_verb_or_an_empty_noun():
    rows = [
        ("q", "[other]", "cup", 1.0),
        ("a", "[other]", "plate", 0.9),  # same catch-all verb: not a verb-bucket example
        ("b", "wash", "cup", 0.5),
        ("d", "[other]", "cup", 0.8),  # exact duplicate
    ]
    picked = dict(chosen(eilev(pool_index(rows), k=2, seed=0)))
    assert picked == {"b": "noun", "a": "fill"}
    rows = [("q", "take", "", 1.0), ("a", "take", "cup", 0.9), ("b", "put", "", 0.5), ("c", "take", "", 0.3)]
    picked = dict(chosen(eilev(pool_index(rows), k=3, seed=0)))
    assert picked == {"a": "verb", "b": "fill"}  # no noun bucket for "", and never the duplicate c


def test_one_generator_draws_a_run_of_queries_as_eilev_presamples():
    index = pool_index()
    rng = np.random.default_rng(42)
    first = [chosen(eilev(index, query, rng=rng)) for query in ("q", "v1", "n1")]
    rng = np.random.default_rng(42)
    assert [chosen(eilev(index, query, rng=rng)) for query in ("q", "v1", "n1")] == first
    with pytest.raises(ValueError, match="sampler must be one of"):
        select_in_context_examples(index, "q", sampler="random")
