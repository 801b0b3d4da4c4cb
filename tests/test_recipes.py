"""Named recipes: registry, layers under the user's settings, messages naming the valid ones; the
recipes egofeat ships (each setting with its source, egofeat's own equal to the code's defaults),
`egofeat recipes` and `--recipe`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from egofeat import recipes
from egofeat.cli import app
from egofeat.config import XMICRunConfig, load
from egofeat.heads import load_config
from egofeat.heads.config import TrainConfig
from egofeat.heads.distill import DistillTask
from egofeat.heads.registry import head_kwargs
from egofeat.pipelines.neighbors import NeighborOptions
from egofeat.recipes import Recipe, Setting, get_recipe, list_recipes, register_recipe
from egofeat.store import FeatureStore


@pytest.fixture
def probe():
    recipe = register_recipe(Recipe(
        name="probe-recipe", command="run xmic", summary="a test recipe", reference="tests",
        settings=(Setting("selection", "target-val", "tests/test_recipes.py"),
                  Setting("trainer.epochs", 7, "tests/test_recipes.py", note="shorter"),
                  Setting("tasks", ("noun",), "tests/test_recipes.py"))))
    yield recipe
    recipes._RECIPES.pop(recipe.name)


def test_a_recipe_is_a_layer_under_files_and_overrides(probe, tmp_path):
    assert probe.layer() == {"selection": "target-val", "trainer": {"epochs": 7}, "tasks": ["noun"]}
    base = {"store": "s", "out": str(tmp_path), "encoder": "tiny"}
    config = load(XMICRunConfig, values=base, layers=[get_recipe("probe-recipe", "run xmic").layer()])
    assert (config.selection, config.trainer, config.tasks) == ("target-val", {"epochs": 7}, ["noun"])
    settings = tmp_path / "x.toml"
    settings.write_text('selection = "source-holdout"\n')
    config = load(XMICRunConfig, settings, ["tasks=verb"], base, layers=[probe.layer()])
    assert (config.selection, config.tasks) == ("source-holdout", ["verb"])  # the user's settings win
    assert probe in list_recipes("run xmic") and probe not in list_recipes("train")
    assert probe.to_json()["settings"][1] == {"key": "trainer.epochs", "value": 7,
                                              "source": "tests/test_recipes.py", "note": "shorter"}


def test_unknown_or_misplaced_recipes_name_the_valid_ones(probe):
    with pytest.raises(KeyError, match="no recipe 'nope'.*probe-recipe"):
        get_recipe("nope")
    with pytest.raises(KeyError, match="is for `egofeat run xmic`"):
        get_recipe("probe-recipe", "train")
    with pytest.raises(ValueError, match="registered twice"):
        register_recipe(probe)
    with pytest.raises(ValueError, match="sets .*'lr'.* twice"):
        register_recipe(Recipe("twice", "train", "", "", (Setting("lr", 1, "a"), Setting("lr", 2, "b"))))


# ---- the recipes egofeat ships ----------------------------------------------------------------

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {
    "tsn-c1": "epic-kitchens/C1-Action-Recognition-TSN-TRN-TSM",
    "trn-c1": "epic-kitchens/C1-Action-Recognition-TSN-TRN-TSM",
    "tsm-c1-features": "epic-kitchens/C1-Action-Recognition-TSN-TRN-TSM",
    "mmdistill-iccv23": "gorjanradevski/multimodal-distillation",
    "egovlp-mimm": "showlab/EgoVLP",
    "egovlp-egonce": "showlab/EgoVLP",
    "eilev-incontext": "yukw777/EILEV",
}
DEFAULTS = ["egofeat-linear", "egofeat-mlp", "egofeat-tsn", "egofeat-trn", "egofeat-tsm", "egofeat-retrieval",
            "egofeat-distill", "egofeat-neighbors"]


def built(recipe: Recipe) -> dict:
    """The config the recipe's command builds from the recipe alone, as a plain dict."""
    if recipe.command == "train":
        return load_config(layers=[recipe.layer()]).to_dict()
    if recipe.command == "distill":
        return load_config(values={"task.name": "distill"}, layers=[recipe.layer()]).to_dict()
    if recipe.command == "neighbors":
        return load(NeighborOptions, layers=[recipe.layer()]).model_dump(mode="json")
    base = {key: value for key, value in {"store": "s", "out": "o", "encoder": "tiny"}.items()
            if recipe.value(key) is None}  # the command's own values, where the recipe sets none
    return load(XMICRunConfig, values=base, layers=[recipe.layer()]).model_dump(mode="json")


def at(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("recipe", list_recipes(), ids=lambda r: r.name)
def test_every_recipe_builds_its_command_config_with_each_setting_and_its_source(recipe):
    config = built(recipe)
    for setting in recipe.settings:
        assert at(config, setting.key) == setting.to_json()["value"], setting.key
        assert setting.source.strip() and setting.key
        if setting.source.startswith("egofeat:"):  # egofeat's own: the file exists
            assert (ROOT / setting.source.split()[1]).is_file(), setting.source
    if recipe.name in PUBLISHED:
        repository = PUBLISHED[recipe.name]
        assert recipe.reference.startswith(repository)
        for setting in recipe.settings:  # each published value names the repository file it comes from
            if not setting.source.startswith("egofeat:"):
                assert setting.source.split()[0].count("/") == 1 and "(" in setting.source, setting.source


def test_the_required_recipes_are_listed_with_parameters_and_sources():
    result = runner.invoke(app, ["recipes", "--json"])
    assert result.exit_code == 0, result.output
    listed = {recipe["name"]: recipe for recipe in json.loads(result.output)["recipes"]}
    assert set(PUBLISHED) | set(DEFAULTS) <= set(listed)
    for name, repository in PUBLISHED.items():
        settings = listed[name]["settings"]
        assert settings and all(s["source"].startswith(repository) or s["source"].startswith(
            ("facebookresearch/EgoVLPv2", "egofeat:")) for s in settings), name
        assert all(set(s) == {"key", "value", "source", "note"} for s in settings)
    values = {s["key"]: s["value"] for s in listed["mmdistill-iccv23"]["settings"]}
    assert (values["trainer.lr"], values["trainer.weight_decay"], values["trainer.grad_clip"],
            values["trainer.warmup_epochs"], values["trainer.schedule"], values["trainer.monitor"],
            values["trainer.decay_all_parameters"]) == (1e-4, 1e-4, 5.0, 2.0, "linear", "val_action_top1", True)
    for name in ("tsn-c1", "trn-c1", "tsm-c1-features"):
        values = {s["key"]: s["value"] for s in listed[name]["settings"]}
        assert (values["head.dropout"], values["head.init_std"], values["head.bins"]) == (0.7, 0.001, 8)
    assert {s["key"]: s["value"] for s in listed["egovlp-mimm"]["settings"]}["head.margin"] == 0.4
    shown = runner.invoke(app, ["recipes", "tsn-c1"])
    assert shown.exit_code == 0 and "configs/tsn_rgb.yaml" in shown.output and "head.init_std" in shown.output
    unknown = runner.invoke(app, ["recipes", "tsn"])
    assert unknown.exit_code == 2 and "no recipe 'tsn'" in unknown.output and "tsn-c1" in unknown.output


def test_egofeat_recipes_are_the_current_defaults():
    """Change a default in the code and this fails: update egofeat/recipes/defaults.py with it."""
    trainer = TrainConfig().model_dump(mode="json")
    for name in DEFAULTS:
        recipe = get_recipe(name)
        for setting in recipe.settings:
            table, key = setting.key.split(".", 1) if "." in setting.key else ("", setting.key)
            value = setting.to_json()["value"]
            if table == "trainer":
                assert trainer[key] == value, setting.key
            elif table == "head" and key != "name":
                assert head_kwargs(recipe.value("head.name"))[key] == value, (name, setting.key)
            elif table == "task":
                assert getattr(DistillTask.Options(), key) == value, setting.key
            elif not table:
                assert getattr(NeighborOptions(), key) == value, setting.key
    assert get_recipe("egofeat-trn").value("head.dropout") == 0.5 != get_recipe("trn-c1").value("head.dropout")


def frames_store(path, frames: int = 16, rows: int = 48):
    """A store whose stream holds 8 bins x 2 frames per segment, labels readable from frame order."""
    rng = np.random.default_rng(0)
    verbs = rng.integers(0, 3, rows)
    store = FeatureStore.create(path)
    store.add_segments(pl.DataFrame({
        "dataset": "toy", "split": ["train"] * (rows // 2) + ["val"] * (rows // 2),
        "segment_id": [f"s{i:03d}" for i in range(rows)], "video_id": [f"v{i // 4:02d}" for i in range(rows)],
        "verb": [f"v{v}" for v in verbs], "verb_class": verbs, "noun": "n0", "noun_class": 0,
    }))
    stream = store.create_stream("toy/full", dim=6, provenance={"encoder": "toy"}, frames_per_row=frames)
    with stream.part_writer("all") as part:
        for i in range(rows):
            ramp = np.linspace(-1, 1, frames)[:, None] * (verbs[i] - 1)
            part.add(f"s{i:03d}", f"v{i // 4:02d}", ramp + 0.3 * rng.normal(size=(frames, 6)))
    return path


def test_train_with_a_recipe_records_it_and_the_user_settings_still_win(tmp_path):
    store = frames_store(tmp_path / "store")
    settings = tmp_path / "mine.toml"
    settings.write_text("[trainer]\nepochs = 3\n")
    run = tmp_path / "trn"
    result = runner.invoke(app, ["train", "--store", str(store), "--stream", "toy/full", "--out", str(run),
                                 "--recipe", "trn-c1", "--config", str(settings), "--set",
                                 "trainer.batch_size=8", "--task", "verb", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["recipe"] == "trn-c1"
    assert [s["key"] for s in info["recipe_settings"]] == [s.key for s in get_recipe("trn-c1").settings]
    head, trainer = info["config"]["head"], info["config"]["trainer"]
    assert (head["name"], head["dropout"], head["init_std"], head["bins"]) == ("trn", 0.7, 0.001, 8)
    assert (trainer["optimizer"], trainer["schedule"], trainer["decay_epochs"], trainer["seed"]) == (
        "sgd", "step", [20, 40], 42)
    assert (trainer["epochs"], trainer["batch_size"], trainer["tasks"]) == (3, 8, ["verb"])  # file, --set, flag
    assert info["summary"]["epochs"] == 3
    table = runner.invoke(app, ["runs", str(run), "--json"])
    assert json.loads(table.output)["runs"][0]["recipe"] == "trn-c1"
    wrong = runner.invoke(app, ["train", "--store", str(store), "--stream", "toy/full", "--out",
                                str(tmp_path / "x"), "--recipe", "mmdistill-iccv23"])
    assert wrong.exit_code == 2 and len(wrong.output.strip().splitlines()) == 1
    assert "recipe 'mmdistill-iccv23' is for `egofeat distill`; recipes for `egofeat train`:" in wrong.output
    assert "trn-c1" in wrong.output and not (tmp_path / "x").exists()


def test_recipes_md_has_a_table_of_every_published_recipe():
    doc = (ROOT / "docs" / "RECIPES.md").read_text()
    for name in PUBLISHED:
        start = doc.index(f"### {name}") if f"### {name}" in doc else doc.index(f"(`{name}`)")
        section = doc[start:doc.find("\n## ", start + 1)]
        for setting in get_recipe(name).settings:
            row = next((line for line in section.splitlines() if line.startswith(f"| `{setting.key}` |")), None)
            assert row is not None, (name, setting.key)
            assert f"`{json.dumps(setting.to_json()['value'])}`" in row, (name, row)
    assert "(docs/RECIPES.md)" in (ROOT / "README.md").read_text()  # the README links it
    for name in DEFAULTS:
        assert f"`{name}`" in doc
