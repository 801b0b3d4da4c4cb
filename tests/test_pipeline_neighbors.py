"""`egofeat neighbors`: EILEV-style in-context examples from a store stream."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.store import FeatureStore

runner = CliRunner()

# (segment id, split, verb, noun, cosine of its features with the query "q")
SEGMENTS = [
    ("q", "val", "take", "cup", 1.0),
    ("dup", "train", "take", "cup", 0.99),  # exact (verb, noun) duplicate: never an example
    ("v1", "train", "take", "plate", 0.50),
    ("v2", "train", "take", "knife", 0.90),
    ("v3", "train", "take", "spoon", 0.70),
    ("n1", "train", "wash", "cup", 0.60),
    ("n2", "train", "put", "cup", 0.80),
    ("o1", "train", "open", "door", 0.95),
    ("o2", "val", "cut", "onion", 0.40),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("neighbors") / "store"
    rng = np.random.default_rng(0)
    table = pl.DataFrame({
        "dataset": "toy", "split": [s[1] for s in SEGMENTS], "segment_id": [s[0] for s in SEGMENTS],
        "video_id": [f"P01_{i:02d}" for i in range(len(SEGMENTS))], "start_sec": 0.0, "end_sec": 4.0,
        "verb": [s[2] for s in SEGMENTS], "noun": [s[3] for s in SEGMENTS],
    })  # fmt: skip
    opened = FeatureStore.create(path)
    opened.add_segments(table)
    stream = opened.create_stream("toy/full", dim=8, provenance={"encoder": "toy"}, frames_per_row=2)
    with stream.part_writer("all") as writer:
        for i, (segment, *_, cosine) in enumerate(SEGMENTS):
            other = rng.standard_normal(7)
            other *= np.sqrt(1 - cosine**2) / np.linalg.norm(other)
            feature = np.concatenate([[cosine], other]) * rng.uniform(0.5, 2.0)
            writer.add(segment, f"P01_{i:02d}", np.stack([feature, feature]), frame_times=[i + 0.5, i + 2.5])
    return path


def neighbors(store, *args: str) -> dict:
    result = runner.invoke(app, ["neighbors", "--store", str(store), "--stream", "toy/full", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def chosen(result: dict) -> list[tuple[str, str]]:
    return [(e["segment_id"], e["bucket"]) for e in result["examples"]]


def test_examples_follow_bucket_quotas_ranked_by_similarity(store):
    summary = neighbors(store, "--query", "q", "--k", "4", "--order", "similarity")
    assert summary["pool"] == len(SEGMENTS) and summary["backend"] in ("numpy", "faiss")
    [result] = summary["results"]
    expected = [("v2", "verb"), ("n2", "noun"), ("v3", "verb"), ("n1", "noun"), ("q", "query")]
    assert chosen(result) == expected  # 2 + 2 from the buckets, then sorted by similarity
    query = result["examples"][-1]
    assert query["video_id"] == "P01_00" and query["frame_times"] == [0.5, 2.5]
    similarities = [e["similarity"] for e in result["examples"][:-1]]
    assert similarities == pytest.approx([0.90, 0.80, 0.70, 0.60], abs=1e-3)  # fp16 storage


def test_short_buckets_are_filled_by_similarity_and_duplicates_never_drawn(store):
    [result] = neighbors(store, "--query", "q", "--k", "7", "--verb-ratio", "1.0")["results"]
    picked = dict(chosen(result))
    assert "dup" not in picked and picked["q"] == "query"
    assert {s for s, b in picked.items() if b == "verb"} == {"v1", "v2", "v3"}
    assert {s for s, b in picked.items() if b == "noun"} == {"n1", "n2"}
    assert {s for s, b in picked.items() if b == "fill"} == {"o1", "o2"}  # the rest of the pool


def test_the_pool_can_be_one_split_while_the_query_comes_from_another(store):
    summary = neighbors(store, "--query", "q", "--query", "n1", "--split", "train", "--k", "3")
    assert summary["pool"] == 7  # train segments only
    first, second = summary["results"]
    assert first["query"] == "q" and "o2" not in dict(chosen(first))
    assert second["query"] == "n1" and chosen(second)[-1] == ("n1", "query")
    assert all(segment != "n1" for segment, _ in chosen(second)[:-1])


def test_unknown_queries_and_text_output(store):
    result = runner.invoke(app, ["neighbors", "--store", str(store), "--stream", "toy/full", "--query", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
    text = runner.invoke(app, ["neighbors", "--store", str(store), "--stream", "toy/full", "--query", "q"])
    assert text.exit_code == 0 and "in-context examples of q" in text.output


def test_the_eilev_recipe_draws_at_random_and_is_recorded(store, tmp_path):
    drawn = neighbors(store, "--query", "q", "--query", "v1", "--recipe", "eilev-incontext", "--k", "2")
    assert (drawn["recipe"], drawn["sampler"], drawn["seed"], drawn["verb_ratio"]) == (
        "eilev-incontext", "eilev-random", 42, 0.5)  # the recipe's settings, --k over them
    assert {s["key"] for s in drawn["recipe_settings"]} == {"sampler", "k", "verb_ratio", "order", "seed"}
    assert drawn["k"] == 2 and [len(r["examples"]) for r in drawn["results"]] == [3, 3]
    again = neighbors(store, "--query", "q", "--query", "v1", "--recipe", "eilev-incontext", "--k", "2")
    assert [chosen(r) for r in again["results"]] == [chosen(r) for r in drawn["results"]]
    verb_examples = set()
    for seed in range(12):  # random draws in the verb bucket {v1, v2, v3}: not always the most similar
        result = neighbors(store, "--query", "q", "--recipe", "eilev-incontext", "--k", "2", "--seed", str(seed))
        verb_examples |= {s for s, b in chosen(result["results"][0]) if b == "verb"}
    assert verb_examples == {"v1", "v2", "v3"}
    settings = tmp_path / "n.toml"
    settings.write_text('sampler = "similarity-ranked"\n')
    ranked = neighbors(store, "--query", "q", "--recipe", "eilev-incontext", "--config", str(settings),
                       "--set", "k=2")
    assert ranked["sampler"] == "similarity-ranked" and ranked["recipe"] == "eilev-incontext"
    assert {s for s, b in chosen(ranked["results"][0]) if b == "verb"} == {"v2"}  # the most similar
    wrong = runner.invoke(app, ["neighbors", "--store", str(store), "--stream", "toy/full", "--query", "q",
                                "--recipe", "trn-c1"])
    assert wrong.exit_code == 2
    assert "recipe 'trn-c1' is for `egofeat train`; recipes for `egofeat neighbors`: " in wrong.output
    assert "eilev-incontext" in wrong.output and len(wrong.output.strip().splitlines()) == 1
