"""Retrieval end to end: `egofeat train --head retrieval`, `egofeat eval --protocol ...`, samplers."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.eval import charades_map_nanmean, mir_relevancy
from egofeat.heads import create_head, load_head_data
from egofeat.heads.contrastive import (
    ClipLabels,
    PositiveCaptionSampler,
    SameChunkNegatives,
    distinct_captions,
)
from egofeat.heads.retrieval import MirValidation, RetrievalLoss
from egofeat.heads.trainer import Trainer
from egofeat.sources import load_charades_ego, load_egomcq, load_epic100
from egofeat.store import FeatureStore

runner = CliRunner()
VIDEO, TEXT = "toy/full", "toy/text/narration"
# 40 actions own their verb and noun; 8 more share a verb with one of them (relevancy 0.5).
ACTIONS = [(k, k) for k in range(40)] + [(k, 40 + k) for k in range(8)]


def toy_store(path: Path, *, shared_space: bool = False, seed: int = 0) -> pl.DataFrame:
    """Segments whose video and narration features are two noisy views of their action.

    Each action has a latent vector and two narrations (two text features); a video is its
    action's latent plus noise, frame by frame. ``shared_space`` maps both sides with one matrix,
    so that stored features are directly comparable (as CLIP image and text features are).
    """
    rng = np.random.default_rng(seed)
    n_train, n_val, frames, latent = 600, 200, 4, 8
    video_dim, text_dim = (16, 16) if shared_space else (24, 16)
    z = rng.normal(size=(len(ACTIONS), latent))
    to_video = rng.normal(size=(latent, video_dim))
    to_text = to_video if shared_space else rng.normal(size=(latent, text_dim))
    narrations = z[:, None] + 0.3 * rng.normal(size=(len(ACTIONS), 2, latent))
    n = n_train + n_val
    action, variant = rng.integers(0, len(ACTIONS), n), rng.integers(0, 2, n)
    table = pl.DataFrame({
        "dataset": ["toy"] * n, "split": ["train"] * n_train + ["val"] * n_val,
        "segment_id": [f"P01_{i:04d}" for i in range(n)], "video_id": [f"P01_{i % 10:02d}" for i in range(n)],
        "start_sec": np.arange(n) * 3.0, "end_sec": np.arange(n) * 3.0 + 2,
        "narration": [f"verb{ACTIONS[a][0]} noun{ACTIONS[a][1]} ({v})" for a, v in zip(action, variant, strict=True)],
        "verb": [f"verb{ACTIONS[a][0]}" for a in action], "verb_class": [ACTIONS[a][0] for a in action],
        "noun": [f"noun{ACTIONS[a][1]}" for a in action], "noun_class": [ACTIONS[a][1] for a in action],
        "all_noun_classes": [[ACTIONS[a][1]] for a in action],
    })  # fmt: skip
    store = FeatureStore.create(path)
    store.add_segments(table)
    video = store.create_stream(VIDEO, dim=video_dim, provenance={"encoder": "toy"}, frames_per_row=frames)
    text = store.create_stream(TEXT, dim=text_dim, provenance={"encoder": "toy", "items": "segment narrations"},
                               kind="text", dtype="float32", frames_per_row=1)
    with video.part_writer("all") as videos, text.part_writer("all") as texts:
        for i, (segment, video_id) in enumerate(table.select("segment_id", "video_id").iter_rows()):
            clip = (z[action[i]] + 0.5 * rng.normal(size=latent)) @ to_video
            videos.add(segment, video_id, clip + 0.5 * rng.normal(size=(frames, video_dim)))
            texts.add(segment, video_id, narrations[action[i], variant[i]] @ to_text)
    return table


def train_args(store: Path, out: Path, loss: str, *extra: str) -> list[str]:
    return ["train", "--store", str(store), "--stream", f"{VIDEO},{TEXT}", "--head", "retrieval",
            "--loss", loss, "--out", str(out), "--epochs", "8", "--set", "trainer.lr=0.01",
            "--set", "trainer.batch_size=32", "--set", "head.embed_dim=32",
            "--set", "trainer.num_threads=1", *extra, "--json"]  # fmt: skip


def invoke(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("retrieval") / "store"
    toy_store(path)
    return path


@pytest.fixture(scope="module")
def untrained_map(store) -> float:
    """MIR mAP of a freshly initialised head on the val split: what training must beat."""
    torch.set_num_threads(1)
    opened = FeatureStore.open(store)
    val = load_head_data(opened, [VIDEO, TEXT], splits=["val"], meta_columns=["verb_class", "noun_class"])
    validation = MirValidation.of(val, TEXT, device="cpu")
    torch.manual_seed(0)
    head = create_head("retrieval", in_dims=val.in_dims, num_frames=val.num_frames,
                       num_classes=val.num_classes, embed_dim=32)
    return validation(head, val)["val_map_avg"]


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    """``trained(loss)``: (run folder, `egofeat train` summary), trained once per loss."""
    runs: dict[str, tuple[Path, dict]] = {}

    def train(loss: str) -> tuple[Path, dict]:
        if loss not in runs:
            run = tmp_path_factory.mktemp(f"run-{loss}")
            runs[loss] = run, invoke(train_args(store, run, loss))
        return runs[loss]

    return train


@pytest.mark.parametrize("loss", ["infonce", "egonce", "mimm"])
def test_training_learns_a_synthetic_retrieval_task(trained, untrained_map, loss):
    run, summary = trained(loss)
    assert summary["head"] == "retrieval" and summary["loss"] == loss
    assert summary["train_captions"] == 2 * len(ACTIONS)  # distinct narrations of the train split
    assert untrained_map < 15
    assert summary["metrics"]["map_avg"] > 60 and summary["metrics"]["ndcg_avg"] > 50
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_map_avg" in record and "val_top1_mean" not in record for record in history)
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["head"]["loss"] == loss and config["task"]["name"] == "retrieval"
    assert summary["monitor"] == "val_map_avg"  # the retrieval task's, as the config names none
    assert json.loads((run / "metrics.json").read_text())["val"] == pytest.approx(summary["metrics"])


def test_eval_of_a_run_reproduces_its_report_and_saves_the_matrix(trained, tmp_path):
    run, summary = trained("infonce")
    assert invoke(["eval", str(run), "--json"])["metrics"] == pytest.approx(summary["metrics"])
    saved = tmp_path / "sim.npy"
    scored = invoke(["eval", str(run), "--protocol", "ek100-mir", "--save-similarity", str(saved), "--json"])
    assert scored["gallery"] == "split 'val', distinct narrations" and scored["videos"] == 200
    similarity = np.load(saved)
    assert similarity.shape == (200, scored["captions"]) and np.abs(similarity).max() <= 1 + 1e-5
    assert len((tmp_path / "sim.videos.txt").read_text().split()) == 200
    dual = invoke(["eval", str(run), "--protocol", "ek100-mir", "--dual-softmax", "--json"])
    assert dual["dual_softmax"] and dual["metrics"] != scored["metrics"]
    text = runner.invoke(app, ["eval", str(run), "--protocol", "ek100-mir"]).output
    assert "map_avg" in text and "graded" in text


def test_resumed_training_continues_as_if_never_stopped(store, tmp_path, monkeypatch):
    extra = ("--set", "trainer.patience=none", "--set", "head.adaptive_margin=true")
    straight = invoke(train_args(store, tmp_path / "straight", "mimm", *extra))

    def crash_after_epoch_3(record: dict) -> None:
        if record["epoch"] == 3:
            raise RuntimeError("simulated crash")

    build = Trainer.__init__
    monkeypatch.setattr(Trainer, "__init__",
                        lambda self, *a, **k: build(self, *a, callbacks=[crash_after_epoch_3], **k))
    crashed = runner.invoke(app, train_args(store, tmp_path / "resumed", "mimm", *extra))
    assert isinstance(crashed.exception, RuntimeError)
    monkeypatch.undo()
    resumed = invoke([*train_args(store, tmp_path / "resumed", "mimm", *extra), "--resume"])
    assert resumed["metrics"] == straight["metrics"]  # MI-MM positives were drawn identically


def test_zero_shot_scores_stored_features_of_one_space(tmp_path):
    toy_store(tmp_path / "clip", shared_space=True)
    args = ["eval", "--protocol", "ek100-mir", "--store", str(tmp_path / "clip"), "--video-stream", VIDEO,
            "--text-stream", TEXT, "--json"]  # fmt: skip
    summary = invoke(args)
    assert summary["model"] == "zero-shot" and summary["metrics"]["map_avg"] > 60
    toy_store(tmp_path / "two-spaces")
    result = runner.invoke(app, [*args[:4], str(tmp_path / "two-spaces"), *args[5:]])
    assert result.exit_code == 2 and "one space" in result.output


def real_mir_relevancy(epic_dir: Path) -> np.ndarray:
    """R of the official test split, built here from the CSVs independently of the pipeline."""
    folder = epic_dir / "retrieval_annotations"
    videos = pl.read_csv(folder / "EPIC_100_retrieval_test.csv")
    sentences = pl.read_csv(folder / "EPIC_100_retrieval_test_sentence.csv")
    nouns = [ast.literal_eval(text) for text in videos["all_noun_classes"]]
    row = {narration_id: i for i, narration_id in enumerate(videos["narration_id"])}
    captions = [row[narration_id] for narration_id in sentences["narration_id"]]
    verbs = videos["verb_class"].to_list()
    return mir_relevancy(verbs, nouns, [verbs[i] for i in captions], [nouns[i] for i in captions])


def test_similarity_files_are_scored_against_the_real_mir_annotations(epic_dir, tmp_path):
    relevancy = real_mir_relevancy(epic_dir)
    folder = epic_dir / "retrieval_annotations"
    files = ["--annotations", str(folder / "EPIC_100_retrieval_test.csv"),
             "--sentences", str(folder / "EPIC_100_retrieval_test_sentence.csv")]  # fmt: skip
    np.save(tmp_path / "perfect.npy", relevancy)
    np.save(tmp_path / "random.npy", np.random.default_rng(0).random(relevancy.shape, dtype=np.float32))
    np.save(tmp_path / "transposed.npy", np.zeros(relevancy.shape[::-1], dtype=np.float32))

    def score(name: str) -> dict:
        return invoke(["eval", "--protocol", "ek100-mir", "--similarity", str(tmp_path / name), *files, "--json"])

    perfect = score("perfect.npy")
    assert (perfect["videos"], perfect["captions"]) == (9668, 3842)
    assert all(value == pytest.approx(100.0) for value in perfect["metrics"].values())
    chance = score("random.npy")["metrics"]
    assert 2 < chance["map_avg"] < 10 and 5 < chance["ndcg_avg"] < 15
    result = runner.invoke(app, ["eval", "--protocol", "ek100-mir", "--similarity",
                                 str(tmp_path / "transposed.npy"), *files])  # fmt: skip
    assert result.exit_code == 2 and "transposed" in result.output


def test_official_items_and_a_saved_matrix_score_alike(epic_dir, tmp_path):
    """Zero-shot over the real MIR files' items (a slice of them), then the saved matrix scored
    with --similarity: both paths give the same numbers."""
    folder = epic_dir / "retrieval_annotations"
    sentences = pl.read_csv(folder / "EPIC_100_retrieval_test_sentence.csv").head(200)
    videos = pl.read_csv(folder / "EPIC_100_retrieval_test.csv").filter(
        pl.col("narration_id").is_in(sentences["narration_id"].to_list()))
    annotations, captions = tmp_path / "EPIC_100_retrieval_test.csv", tmp_path / "EPIC_100_retrieval_test_sentence.csv"
    videos.write_csv(annotations)
    sentences.write_csv(captions)
    store = FeatureStore.create(tmp_path / "store")
    store.add_segments(load_epic100(annotations))
    rng = np.random.default_rng(0)
    verb_vectors, noun_vectors = rng.normal(size=(97, 32)), rng.normal(size=(300, 32))
    video = store.create_stream("clip/full", dim=32, provenance={"encoder": "clip"}, frames_per_row=2)
    text = store.create_stream("clip/text/narration", dim=32, provenance={"encoder": "clip"}, kind="text",
                               frames_per_row=1)  # fmt: skip
    with video.part_writer("all") as clips, text.part_writer("all") as narrations:
        for segment, verb, nouns in videos.select("narration_id", "verb_class", "all_noun_classes").iter_rows():
            feature = verb_vectors[verb] + noun_vectors[ast.literal_eval(nouns)].mean(axis=0)
            clips.add(segment, "v", np.stack([feature, feature]))
            narrations.add(segment, "v", feature)
    saved = tmp_path / "zero-shot.npy"
    files = ["--annotations", str(annotations), "--sentences", str(captions)]
    zero_shot = invoke(["eval", "--protocol", "ek100-mir", "--store", str(tmp_path / "store"), "--video-stream",
                        "clip/full", "--text-stream", "clip/text/narration", *files,
                        "--save-similarity", str(saved), "--json"])  # fmt: skip
    assert (zero_shot["videos"], zero_shot["captions"], zero_shot["videos_missing"]) == (videos.height, 200, 0)
    assert zero_shot["metrics"]["map_v2t"] == pytest.approx(100.0)  # R == 1 means identical features
    rescored = invoke(["eval", "--protocol", "ek100-mir", "--similarity", str(saved), *files, "--json"])
    assert rescored["metrics"] == pytest.approx(zero_shot["metrics"])


def clip(video: str, start: float, text: str) -> dict:
    return {"video_uid": video, "clip_start": start, "clip_end": start + 2, "clip_text": text}


def test_egomcq_accuracy_per_type_with_correct_labels(tmp_path):
    """Inter-video questions are built answerable and intra-video ones not: the labels follow."""
    rng = np.random.default_rng(0)
    questions, features = {}, {}
    for q, kind in enumerate([1, 1, 1, 2, 2]):
        texts = [f"#C C does thing {q}.{k}" for k in range(5)]
        videos = [f"v{q}" if kind == 2 else f"v{q}-{k}" for k in range(5)]
        choices = {str(k): clip(videos[k], 10.0 * k, texts[k]) for k in range(5)}
        questions[str(q)] = {"query": choices["2"], "choices": choices, "answer": 2, "types": kind}
        narration = [rng.normal(size=8) for _ in range(5)]
        looks = list(narration)  # each clip looks like its narration, except in intra questions:
        if kind == 2:  # there the answer clip looks unlike it and clip 4 looks like the query
            looks[2], looks[4] = -narration[2], narration[2]
        features.update({f"{q}_{k}": (looks[k], narration[k]) for k in range(5)})
    (tmp_path / "egomcq.json").write_text(json.dumps(questions))
    store = FeatureStore.create(tmp_path / "store")
    store.add_segments(load_egomcq(tmp_path / "egomcq.json").choices)
    video = store.create_stream("clip/full", dim=8, provenance={"encoder": "clip"}, frames_per_row=2)
    text = store.create_stream("clip/text/narration", dim=8, provenance={"encoder": "clip"}, kind="text",
                               frames_per_row=1)  # fmt: skip
    with video.part_writer("all") as videos, text.part_writer("all") as texts:
        for segment, (seen, said) in features.items():
            videos.add(segment, "v", np.stack([seen, seen]))
            texts.add(segment, "v", said)
    args = ["eval", "--protocol", "egomcq", "--annotations", str(tmp_path / "egomcq.json"), "--store",
            str(tmp_path / "store"), "--video-stream", "clip/full", "--text-stream", "clip/text/narration"]  # fmt: skip
    summary = invoke([*args, "--json"])
    assert summary["metrics"] == {"inter_video": 100.0, "intra_video": 0.0}
    assert (summary["inter_video_questions"], summary["intra_video_questions"]) == (3, 2)
    assert "types 1" in runner.invoke(app, args).output

    questions["0"]["query"] = clip("v0-2", 20.0, "something else")
    (tmp_path / "egomcq.json").write_text(json.dumps(questions))
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "question '0'" in result.output


def test_charades_ego_map_with_its_nan_and_no_label_rules(tmp_path):
    csv = tmp_path / "CharadesEgo_v1_test_only1st.csv"
    pl.DataFrame({
        "id": ["A", "B", "C", "D"], "subject": ["s1"] * 4, "script": ["x"] * 4, "length": [30.0] * 4,
        "actions": ["c000 0.0 5.0;c001 3.0 9.0", "c001 1.0 2.0", "c000 4.0 8.0", None],
    }).write_csv(csv)  # fmt: skip
    store = FeatureStore.create(tmp_path / "store")
    store.add_segments(load_charades_ego(csv))
    rng = np.random.default_rng(0)
    classes = rng.normal(size=(3, 8))
    video = store.create_stream("clip/full", dim=8, provenance={"encoder": "clip"}, frames_per_row=2)
    prompts = store.create_stream("clip/text/charades-prompts", dim=8, provenance={"encoder": "clip"},
                                  kind="text", frames_per_row=1)  # fmt: skip
    labels = {"A": [1, 1, 0], "B": [0, 1, 0], "C": [1, 0, 0], "D": [0, 0, 0]}
    with video.part_writer("all") as videos:
        for segment, hot in labels.items():
            videos.add(segment, segment, np.stack([np.array(hot) @ classes + 0.1 * rng.normal(size=8)] * 2))
    with prompts.part_writer("classes") as writer:
        for i in (2, 0, 1):  # rows are put in class order by their "<task>:<index>" ids
            writer.add(f"charades:{i}", "", classes[i])
    args = ["eval", "--protocol", "charades-ego", "--annotations", str(csv), "--store", str(tmp_path / "store"),
            "--video-stream", "clip/full", "--text-stream", "clip/text/charades-prompts"]  # fmt: skip
    summary = invoke([*args, "--json"])
    assert summary["metrics"]["map"] is None  # class 2 has no positive video: NaN, as the reference
    assert summary["classes_without_positives"] == [2] and summary["videos_without_labels"] == 1
    assert summary["per_class_ap"][:2] == [100.0, 100.0]
    assert summary["metrics"]["map_nanmean"] == pytest.approx(100.0)
    scores = np.stack([np.array(hot) @ classes for hot in labels.values()]) @ classes.T
    assert charades_map_nanmean(scores, np.array(list(labels.values())))[0] == pytest.approx(100.0)
    text = runner.invoke(app, args).output
    assert "n/a" in text and "rank last" in text and "map_nanmean" in text


def test_protocol_inputs_are_checked(store, tmp_path):
    def error(*args: str) -> str:
        result = runner.invoke(app, ["eval", *args])
        assert result.exit_code == 2, result.output
        return result.output

    assert "choose one of" in error("--protocol", "ek100", "--store", str(store))
    assert "zero-shot" in error("--protocol", "ek100-mir", "--store", str(store))
    assert "missing --annotations" in error("--protocol", "egomcq", "--store", str(store),
                                            "--video-stream", VIDEO, "--text-stream", TEXT)  # fmt: skip
    assert "no such file" in error("--protocol", "ek100-mir", "--similarity", "s.npy",
                                   "--annotations", "nowhere.csv", "--sentences", "nowhere.csv")  # fmt: skip
    assert "use --protocol ek100-mir" in error("--protocol", "egomcq", "--similarity", "s.npy")


# ---- the head-side pieces the pipeline relies on ---------------------------------------------


def test_positive_captions_are_drawn_uniformly_among_the_relevant():
    labels = ClipLabels(
        verbs=[0, 0, 1, 1, 3, 2], noun_sets=[(0,), (1,), (0, 1), (1,), (6,), (5,)],
        video_ids=["a"] * 6, times_sec=np.zeros(6),
    )  # fmt: skip
    gallery = np.array([0, 1, 2, 3, 4])  # row 5 is no caption, and no caption is relevant to it
    sampler = PositiveCaptionSampler(labels, gallery, threshold=0.1)
    relevancy = labels.relevancy(np.arange(6), gallery)
    rows = np.repeat(np.arange(6), 3000)
    captions, weights = sampler.sample(rows, np.random.default_rng(0).random((len(rows), 2)))
    for row in range(6):
        drawn = captions[rows == row]
        candidates = gallery[relevancy[row] > 0.1]
        if row == 5:  # nothing relevant in the gallery: its own caption, weight 1
            assert set(drawn) == {5} and set(weights[rows == row]) == {1.0}
            continue
        assert set(drawn) == set(candidates.tolist())
        shares = np.bincount(drawn, minlength=6)[candidates] / len(drawn)
        assert np.allclose(shares, 1 / len(candidates), atol=0.04)
        column = {c: i for i, c in enumerate(gallery)}
        assert np.allclose(weights[rows == row], [relevancy[row, column[c]] for c in drawn])


def test_same_chunk_negatives_never_pick_the_clip_itself():
    negatives = SameChunkNegatives(["a", "a", "a", "b", "b", "c"], [1.0, 30.0, 61.0, 5.0, 6.0, 3.0])
    rows = np.repeat(np.arange(6), 200)
    picked = negatives.sample(rows, np.random.default_rng(0).random(len(rows)))
    assert set(picked[rows == 0]) == {1} and set(picked[rows == 3]) == {4}
    assert set(picked[rows == 2]) == {0, 1, 3, 4, 5}  # alone in its chunk: any other clip


def test_the_loss_needs_labels_and_a_two_stream_head(store):
    data = load_head_data(FeatureStore.open(store), [VIDEO, TEXT], splits=["val"])
    head = create_head("retrieval", in_dims=data.in_dims, num_frames=4, num_classes=data.num_classes,
                       loss="egonce")  # fmt: skip
    assert (head.video_stream, head.text_stream) == (VIDEO, TEXT)
    with pytest.raises(ValueError, match="needs ClipLabels"):
        RetrievalLoss(head, data)
    with pytest.raises(ValueError, match="two streams"):
        create_head("retrieval", in_dims={VIDEO: 24}, num_frames=4, num_classes=data.num_classes)
    with pytest.raises(ValueError, match="head.text_stream"):
        create_head("retrieval", in_dims={"a/full": 4, "b/full": 4}, num_frames=4, num_classes={"verb": 2})
    assert len(distinct_captions(data.features[TEXT].numpy())) <= 2 * len(ACTIONS)
