"""X-MIC runs: class text streams, vocabularies and splits, the registered head, the
cross-dataset pipeline end to end on a synthetic two-domain store, and its CLI paths."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.config import XMICRunConfig
from egofeat.extract.encoders import class_prompt_embeddings, create_encoder
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.heads import create_head, load_config, load_head_data
from egofeat.heads.jitter import dense_bin_indices
from egofeat.heads.loading import dense_to_bins
from egofeat.heads.xmic import XMIC_TRAINER, XMICConfig, XMICHead
from egofeat.heads.xmic_task import load_class_text, stream_layout
from egofeat.pipelines.synthetic_domains import write_synthetic_domains
from egofeat.pipelines.text_streams import write_class_texts, write_vocabulary_texts
from egofeat.pipelines.xmic import dataset_vocabulary, run_xmic
from egofeat.sources import (
    Vocabulary,
    class_splits,
    class_texts,
    ego4d_vocabulary,
    load_epic100,
    match_classes,
)
from egofeat.store import FeatureStore, LoadedStream
from egofeat.store.names import class_text_stream, text_style

runner = CliRunner()
SOURCE, TARGET = "kitchen-a", "kitchen-b"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """The synthetic two-domain store (kitchen-a train/val, kitchen-b val), 4 bins x 3 frames."""
    return write_synthetic_domains(tmp_path_factory.mktemp("xmic") / "store")


def fast_options(store: str, out, epochs: int = 15, **overrides) -> XMICRunConfig:
    settings = dict(
        store=store, out=out, source=SOURCE, target=TARGET, encoder="tiny", device="cpu",
        trainer={"epochs": epochs, "lr": 3e-3, "batch_size": 64, "warmup_epochs": 1},
        progress=False, zero_shot_templates={SOURCE: "{}", TARGET: "{}"},
    )
    return XMICRunConfig(**(settings | overrides))


# ---- class names, vocabularies, splits ------------------------------------------------------


def test_class_texts_follow_xmic_forms():
    assert class_texts("epic100", ["board:chopping", "turn-on", "machine:sous:vide"]) == [
        "chopping board", "turn on", "vide sous machine"]
    ego = ["adjust_(regulate,_increase/reduce,_change)", "nut_(food)", "nut_(tool)", "pot",
           "pot_(planter)", "carry"]
    assert class_texts("ego4d", ego) == [
        "adjust", "nut", "nut tool", "pot", "planter", "carry"]
    assert class_texts("kitchen-a", ["cutting_board"]) == ["cutting board"]


def test_real_vocabularies_read_distinctly_and_match_on_the_exact_lists(shared_data, epic_dir):
    splits_dir = shared_data / "xmic_splits"
    for task, (shared, epic_novel, ego_novel) in {"noun": (163, 137, 358), "verb": (51, 46, 66)}.items():
        epic = Vocabulary.from_epic_csv(epic_dir / f"EPIC_100_{task}_classes.csv").names
        ego = ego4d_vocabulary(splits_dir, task).names
        ego_texts = class_texts("ego4d", ego)
        assert len(set(ego_texts)) == len(ego_texts)  # no two Ego4D classes read the same
        to_ego = class_splits("epic100", "ego4d", task, epic, ego, splits_dir)
        assert {k: (len(s), len(n)) for k, (s, n) in to_ego.items()}["exact"] == (shared, ego_novel)
        to_epic = class_splits("ego4d", "epic100", task, ego, epic, splits_dir)
        assert (len(to_epic["exact"][0]), len(to_epic["exact"][1])) == (shared, epic_novel)
        assert len(to_ego["semantic"][0]) > shared  # semantic is the looser match
        # the linear probe's class mapping covers every exact-shared class, one to one
        matched = match_classes(class_texts("epic100", epic), ego_texts, to_ego["exact"][0])
        assert sorted(matched) == to_ego["exact"][0]
        assert len(set(matched.values())) == shared


def test_class_splits_without_lists_match_names():
    shared, novel = class_splits("a", "b", "noun", ["cup", "pan_lid"], ["pan lid", "drill", "cup"],
                                 None)["exact"]
    assert (shared, novel) == ([0, 2], [1])


def test_vocabularies_need_their_sources(domains):
    store = FeatureStore.open(domains["store"])
    with pytest.raises(ValueError, match="--epic-classes"):
        dataset_vocabulary(store, "epic100", "noun")
    with pytest.raises(ValueError, match="--splits-dir"):
        dataset_vocabulary(store, "ego4d", "noun")
    assert dataset_vocabulary(store, TARGET, "noun") == tuple(domains["domains"][TARGET]["noun"])


# ---- text streams -----------------------------------------------------------------------------


def test_text_streams_hold_bare_names_and_prompts_by_class_id(tmp_path):
    store = FeatureStore.open(tmp_path / "store", create=True)
    vocabularies = {"epic100": {"noun": ["board:chopping", "tap"]}}
    tiny = create_encoder("tiny")
    written = write_vocabulary_texts(store, tiny, vocabularies)
    assert written == {"epic100/noun-names": "tiny/text/epic100/noun-names",
                       "epic100/noun-prompts": "tiny/text/epic100/noun-prompts"}
    bare, texts = load_class_text(store, written["epic100/noun-names"])
    assert texts == ["chopping board", "tap"]
    np.testing.assert_allclose(bare.numpy(), tiny.encode_text(texts), rtol=1e-5, atol=1e-6)
    prompts, _ = load_class_text(store, written["epic100/noun-prompts"])
    expected = class_prompt_embeddings(tiny, texts, ["a photo of a {}"])
    np.testing.assert_allclose(prompts.numpy(), expected, rtol=1e-5, atol=1e-6)
    info = store.stream(written["epic100/noun-prompts"]).info
    assert info.provenance["templates"] == ["a photo of a {}"] and not info.provenance["normalized"]
    # writing again keeps the streams; another template is another stream
    assert write_vocabulary_texts(store, tiny, vocabularies) == written
    other = write_class_texts(store, tiny, "epic100", "noun", ["board:chopping", "tap"],
                              templates=["{} now"])
    assert other.startswith("tiny/text/epic100/noun-prompts-")
    assert class_text_stream("tiny", "ego4d", "verb", text_style("ego4d", ["a photo of a {} action"])) == (
        "tiny/text/ego4d/verb-prompts")


# ---- sampling and data ------------------------------------------------------------------------


def test_dense_streams_resample_to_bins_with_centres_in_the_middle():
    lengths = np.array([7, 16, 2])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    frames = np.arange(offsets[-1], dtype=np.float32)[:, None]  # a frame's feature is its index
    loaded = LoadedStream(np.array(["a", "b", "c"]), frames, offsets)
    binned = dense_to_bins(loaded, bins=4, per_bin=3)[..., 0] - offsets[:-1, None]
    assert binned.shape == (3, 12)
    for row, length in zip(binned.reshape(3, 4, 3), lengths, strict=True):
        bin_of_frame = np.floor(row * 4 / length)  # every frame lies in its own bin ...
        assert (bin_of_frame <= np.arange(4)[:, None]).all() and (row < length).all()
    centres = dense_bin_indices(torch.as_tensor(lengths), 4, train=False).numpy()
    np.testing.assert_array_equal(binned.reshape(3, 4, 3)[:, :, 1], centres)  # ... centre in the middle


def test_stream_layout_from_sampling_provenance(tmp_path):
    store = FeatureStore.open(tmp_path / "store", create=True)

    def stream(name, sampling, frames):
        provenance = {"sampling": sampling} if sampling else {}
        store.create_stream(name, dim=4, provenance=provenance, frames_per_row=frames)
        return name

    over = stream("e/over", {"kind": "oversampled", "num_frames": 8, "per_bin": 5}, 40)
    uniform = stream("e/uniform", {"kind": "uniform", "num_frames": 16}, 16)
    dense = stream("e/dense", {"kind": "dense", "fps": 8.0}, None)
    bare = stream("e/bare", None, 48)
    assert stream_layout(store, [over]) == (8, 5)
    assert stream_layout(store, [uniform]) == (16, 1)
    assert stream_layout(store, [dense], bins=16, dense_per_bin=3) == (16, 3)
    assert stream_layout(store, [bare], bins=16) == (16, 3)
    with pytest.raises(ValueError, match="sampled differently"):
        stream_layout(store, [over, uniform])


def test_load_domain_labels_segments_by_name_when_class_ids_are_missing(tmp_path):
    store = FeatureStore.open(tmp_path / "store", create=True)
    store.add_segments(pl.DataFrame({
        "dataset": ["ego4d"] * 3, "split": ["val"] * 3, "segment_id": ["v_1", "v_2", "v_3"],
        "video_id": ["v"] * 3, "noun": ["nut_(food)", "bowl", "[other]"],
        "noun_class": pl.Series([None, None, None], dtype=pl.Int64),
    }))
    stream = store.create_stream("e/hand", dim=2, provenance={}, frames_per_row=4)
    with stream.part_writer("p") as writer:
        for i, segment in enumerate(["v_1", "v_2", "v_3"]):
            writer.add(segment, "v", np.full((4, 2), i, np.float32))
    data = load_head_data(store, ["e/hand"], tasks=["noun"], splits=["val"], dataset="ego4d",
                          vocabularies={"noun": ["bowl", "nut_(food)"]})
    assert data.labels["noun"].tolist() == [1, 0, -1]
    assert data.features["e/hand"].shape == (3, 4, 2) and data.num_classes == {"noun": 2}


# ---- the registered head ----------------------------------------------------------------------


def test_registered_head_jitters_in_training_and_reads_bin_centres_in_eval():
    torch.manual_seed(0)
    model = create_head("xmic", in_dims={"c/hand": 32, "c/full": 32}, num_frames=12,
                        num_classes={"noun": 5}, bins=4)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    batch = {"features": {"c/hand": torch.randn(2, 12, 32), "c/full": torch.randn(2, 12, 32)}}
    with pytest.raises(ValueError, match="never set"):
        model(batch)
    model.set_class_embeddings("noun", torch.randn(5, 32))
    model.eval()
    head = model.heads["noun"]
    centres = {name: x[:, 1::3] for name, x in batch["features"].items()}  # 3 frames per bin
    with torch.no_grad():
        assert torch.allclose(model(batch)["noun"], head(centres)["noun"])
        model.set_evaluation_vocabulary("noun", torch.randn(9, 32))  # another dataset's classes
        assert model(batch)["noun"].shape == (2, 9)
        model.train()
        torch.manual_seed(1)
        first = model(batch)["noun"]
        torch.manual_seed(1)  # jitter draws from the global RNG: the trainer's seed covers it
        assert torch.equal(first, model(batch)["noun"]) and first.shape == (2, 5)
    assert "class_text_noun" in model.state_dict()  # a checkpoint carries its vocabulary
    with pytest.raises(ValueError, match="multiple of bins=5"):
        create_head("xmic", in_dims={"c/hand": 32}, num_frames=12, num_classes={"noun": 5}, bins=5)


def test_registered_head_matches_the_published_size():
    model = create_head("xmic", in_dims={"clip/hand": 512, "clip/full": 512}, num_frames=48,
                        num_classes={"noun": 300}, bins=16)
    reference = XMICHead(torch.zeros(300, 512), XMICConfig())
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == sum(p.numel() for p in reference.parameters()) == 3_594_657


def test_the_xmic_task_starts_from_the_xmic_recipe(tmp_path):
    config = load_config(None, ["head.name=xmic", "trainer.epochs=2"])
    assert (config.trainer.lr, config.trainer.betas, config.trainer.schedule) == (5e-4, (0.9, 0.98), "constant")
    assert config.trainer.epochs == 2  # the user's settings come last, and win
    assert load_config(None, ["head.name=mlp"]).trainer.lr == 1e-3  # other heads: the defaults
    (tmp_path / "c.toml").write_text("[head]\nname = 'xmic'\n[trainer]\nlr = 0.01\n")
    from_file = load_config(tmp_path / "c.toml")
    assert from_file.trainer.lr == 0.01 and from_file.trainer.warmup_lr == XMIC_TRAINER["warmup_lr"]


# ---- the cross-dataset pipeline ---------------------------------------------------------------


def test_xmic_beats_zero_shot_on_novel_classes_end_to_end(domains, tmp_path):
    report = run_xmic(fast_options(domains["store"], tmp_path))
    assert report["rows"] == {"train": 696, "holdout": 72, "target_eval": 192, "source_eval": 96}
    assert "egofeat's protocol: best epoch on a held-out 10% of the kitchen-a train videos" in (
        report["selection"])
    assert report["train_segments"] == {"source_train": 768, "trained_on": 696,
                                        "held_out_for_selection": 72}
    for task, classes in (("noun", 4), ("verb", 3)):
        result = report["tasks"][task]
        assert result["splits"] == {"exact": {"shared": classes, "novel": classes}}
        methods = {m: s["cross"]["exact"] for m, s in result["methods"].items()}
        # X-MIC generalizes to the target's new classes better than zero-shot CLIP
        assert methods["xmic"]["novel_accuracy"] > methods["zero_shot"]["novel_accuracy"] + 5
        assert methods["linear_probe"]["novel_accuracy"] == 0.0  # it has no novel classes
        assert methods["linear_probe"]["shared_accuracy"] > 50
        within = result["methods"]["xmic"]["within"]
        assert within["count"] == 96 and within["accuracy"] > 80
        assert result["methods"]["xmic"]["within_cross_harmonic_mean"] > 0
    # 3 blocks at width 64 (MLP 16), 4 temporal positions, adapter 64 -> 4 -> 64, logit scale
    block = 2 * 128 + (3 * 64 * 64 + 3 * 64) + (64 * 64 + 64) + (64 * 16 + 16 + 16 * 64 + 64)
    adapter = 64 * 4 + 4 + 4 * 64 + 64
    assert report["tasks"]["noun"]["trainable_parameters"] == 3 * block + 4 * 64 + adapter + 1
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["tasks"]["noun"]["methods"]["xmic"]["cross"]["exact"]["novel_count"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "| X-MIC |" in markdown and "| zero-shot CLIP |" in markdown and "novel" in markdown
    assert [p.rsplit("/", 1)[1] for p in report["plots"]] == ["noun-exact.png", "verb-exact.png"]
    assert (tmp_path / "xmic-noun" / "best.pt").exists()
    # per target class, by name: the counts add up, shared/novel as the split says
    rows = report["tasks"]["noun"]["per_class"]
    assert sum(r["count"] for r in rows) == 192 and {r["exact"] for r in rows} == {"shared", "novel"}
    assert [r["count"] for r in rows] == sorted((r["count"] for r in rows), reverse=True)
    assert all(r["name"] and not r["name"].isdigit() for r in rows)
    novel = [r for r in rows if r["exact"] == "novel"]
    assert all(r["accuracy"]["linear_probe"] == 0.0 for r in novel)  # it cannot name novel classes
    assert f"| {rows[0]['name']} | {rows[0]['exact']} | {rows[0]['count']} |" in markdown


def test_selection_on_the_target_val_set_is_labelled_and_used(domains, tmp_path):
    report = run_xmic(fast_options(domains["store"], tmp_path, tasks=["noun"], epochs=3,
                                   selection="target-val", linear_probe=False))
    assert "optimistic" in report["selection"] and "X-MIC's protocol" in report["selection"]
    # X-MIC trains on 100% of the source train set: nothing is held out
    assert report["train_segments"] == {"source_train": 768, "trained_on": 768,
                                        "held_out_for_selection": 0}
    assert report["rows"]["holdout"] == 0
    assert "Trained on 768 of the 768 kitchen-a train segments" in (tmp_path / "report.md").read_text()
    history = [json.loads(line) for line in (tmp_path / "xmic-noun" / "metrics.jsonl").open()]
    best = max(record["val_noun_top1"] for record in history)  # scored on kitchen-b's classes
    cross = report["tasks"]["noun"]["methods"]["xmic"]["cross"]["exact"]["all_accuracy"]
    assert cross == pytest.approx(best)  # both in percent


def test_bad_runs_are_refused(domains, tmp_path):
    with pytest.raises(ValueError, match="cross datasets"):
        XMICRunConfig(store=tmp_path, out=tmp_path, source="a", target="a", encoder="tiny")
    with pytest.raises(ValueError, match="selection"):
        XMICRunConfig(store=tmp_path, out=tmp_path, encoder="tiny", selection="best")
    with pytest.raises(KeyError, match="no stream 'clip/hand'"):
        run_xmic(fast_options(domains["store"], tmp_path, encoder=None, classified="clip/hand"))


# ---- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", ["stored", "native"])
def test_cli_text_streams_then_train_head_xmic_then_eval(jitter, request, tmp_path):
    store = request.getfixturevalue("domains" if jitter == "stored" else "native_domains")["store"]
    result = runner.invoke(app, ["run", "xmic", "--store", store, "--out", str(tmp_path / "x"),
                                 "--source", SOURCE, "--target", TARGET, "--encoder", "tiny",
                                 "--text-only", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text_streams"][f"{SOURCE}/noun-names"] == (
        f"tiny/text/{SOURCE}/noun-names")
    args = ["train", "--store", store, "--stream", "tiny/hand,tiny/full", "--head", "xmic",
            "--task", "noun", "--set", f"data.dataset={SOURCE}", "--set", f"task.jitter={jitter}",
            "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "run"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["trainable_parameters"] > 0 and summary["epochs"] == 2
    trainer = json.loads((tmp_path / "run" / "run.json").read_text())["config"]["trainer"]
    assert (trainer["lr"], trainer["betas"], trainer["weight_decay"]) == (5e-4, [0.9, 0.98], 0.01)
    evaluated = runner.invoke(app, ["eval", str(tmp_path / "run"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metrics"] == pytest.approx(summary["metrics"])


def test_cli_train_head_xmic_without_text_streams_says_how_to_write_them(tmp_path):
    store = write_synthetic_domains(tmp_path / "store", videos={f"{SOURCE}/train": 2})["store"]
    result = runner.invoke(app, ["train", "--store", store, "--stream", "tiny/hand", "--head",
                                 "xmic", "--task", "noun", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "egofeat run xmic --text-only" in result.output


def test_run_chains_extraction_jobs_from_videos(tmp_path):
    """`egofeat run xmic --extract jobs.toml`: synthetic EPIC videos as the source, the same videos
    relabelled as a second dataset (one noun renamed: a novel class) as the target."""
    dataset = write_synthetic_dataset(tmp_path / "data", n_videos=3, segments_per_video=4)
    annotations = dataset.annotations_dir
    files = [annotations / "EPIC_100_train.csv", annotations / "EPIC_100_validation.csv"]
    columns = ["segment_id", "video_id", "participant_id", "start_sec", "end_sec", "verb",
               "verb_class", "noun", "noun_class"]
    target = pl.concat([load_epic100(f) for f in files]).select(columns).with_columns(
        ("b-" + pl.col("segment_id")).alias("segment_id"), pl.col("noun").replace({"cup": "mug"}))
    target.write_csv(tmp_path / "kitchen-b.csv")
    common = f'videos = "{dataset.root}"\nboxes = "{dataset.root}"\n'
    (tmp_path / "jobs.toml").write_text(
        f'[[extract]]\ndataset = "epic100"\nannotations = {json.dumps([str(f) for f in files])}\n'
        + common + f'[[extract]]\ndataset = "generic"\nsplit = "val"\nannotations = '
        f'["{tmp_path / "kitchen-b.csv"}"]\nmapping = {{ '
        + ", ".join(f'{c} = "{c}"' for c in columns) + " }\n" + common)
    store = tmp_path / "store"
    result = runner.invoke(app, [
        "run", "xmic", "--store", str(store), "--out", str(tmp_path / "run"), "--extract",
        str(tmp_path / "jobs.toml"), "--source", "epic100", "--target", "kitchen-b", "--encoder",
        "tiny", "--epic-classes", str(annotations), "--bins", "4", "--per-bin", "2", "--epochs",
        "1", "--task", "noun", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == {"bins": 4, "frames_per_bin": 2, "jitter": "stored"}
    assert FeatureStore.open(store).stream("tiny/hand").info.frames_per_row == 8
    assert report["rows"]["target_eval"] == 12
    assert report["tasks"]["noun"]["splits"] == {"exact": {"shared": 5, "novel": 1}}
    assert report["text_streams"]["kitchen-b/noun-names"] == "tiny/text/kitchen-b/noun-names"


# ---- native-frame jitter ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def native_domains(tmp_path_factory):
    """The two domains with every "native" frame stored: 6 to 40 frames a segment."""
    return write_synthetic_domains(tmp_path_factory.mktemp("native") / "store", native_frames=(6, 40))


def test_native_frame_jitter_end_to_end(native_domains, domains, tmp_path):
    report = run_xmic(fast_options(native_domains["store"], tmp_path, jitter="native", bins=4))
    assert report["layout"] == {"bins": 4, "frames_per_bin": 1, "jitter": "native"}
    for task in ("noun", "verb"):  # the adapter learns the source from jittered native frames
        within = {m: s["within"]["accuracy"] for m, s in report["tasks"][task]["methods"].items()}
        assert within["xmic"] > 90 and within["xmic"] > within["zero_shot"] + 5
        assert report["tasks"][task]["methods"]["xmic"]["cross"]["exact"]["all_accuracy"] > 60
    spec = torch.load(tmp_path / "xmic-noun" / "best.pt", weights_only=False)["head"]
    assert spec["kwargs"]["context"] == ["tiny/hand@context", "tiny/full@context"]
    # oversampled streams are not native: refused with what to extract
    with pytest.raises(ValueError, match="--sampling native"):
        run_xmic(fast_options(domains["store"], tmp_path / "x", jitter="native", epochs=1))

