"""X-MIC's recipes: their settings and sources, the schedule they give, and `egofeat run xmic
--recipe` (the paper's protocol trains on every source train segment, and says so)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.config import XMICRunConfig, chosen_recipe, load
from egofeat.heads import TrainConfig
from egofeat.heads.optim import create_optimizer, create_scheduler, scheduled_lr
from egofeat.pipelines.synthetic_domains import write_synthetic_domains
from egofeat.recipes import get_recipe, list_recipes

runner = CliRunner()
XMIC_RECIPES = ("xmic-cvpr24", "xmic-cvpr24-ego4d-epic", "xmic-egofeat")


@pytest.mark.parametrize("name", XMIC_RECIPES)
def test_every_setting_is_valid_and_names_its_source(name, tmp_path):
    recipe = get_recipe(name, "run xmic")
    assert recipe in list_recipes("run xmic")
    for setting in recipe.settings:
        assert setting.source.startswith(("Annusha/xmic ", "egofeat: ")), setting
        if setting.source.startswith("egofeat: "):
            assert setting.note or name == "xmic-egofeat", setting  # egofeat's own: says what X-MIC does
    config = load(XMICRunConfig, values={"store": "s", "out": str(tmp_path)}, layers=[recipe.layer()])
    settings = TrainConfig(**config.trainer_settings())
    assert (settings.lr, settings.betas, settings.weight_decay) == (5e-4, (0.9, 0.98), 0.01)
    assert settings.decay_all_parameters and settings.step_on_epochs and settings.epochs == 15
    # X-MIC's rates per epoch, exactly
    optimizer = create_optimizer(torch.nn.Linear(2, 2), settings, torch.device("cpu"))
    scheduler = create_scheduler(optimizer, settings, steps_per_epoch=1)
    rates = [scheduled_lr(scheduler, settings, step=e, epoch=e) for e in range(15)]
    assert rates[:5] == pytest.approx([1e-7, 1e-4, 2e-4, 3e-4, 4e-4], rel=1e-12, abs=0)
    assert rates[5:] == [5e-4] * 10


def test_the_papers_protocol_against_egofeats():
    paper, reverse, ours = (get_recipe(name) for name in XMIC_RECIPES)
    assert (paper.value("source"), paper.value("target")) == ("epic100", "ego4d")
    assert (reverse.value("source"), reverse.value("target")) == ("ego4d", "epic100")
    for recipe in (paper, reverse):
        assert recipe.value("selection") == "target-val" and recipe.value("jitter") == "native"
        assert recipe.value("trainer.precision") == "fp16" and recipe.value("trainer.batch_size") == 128
        assert "optimistic" in next(s.note for s in recipe.settings if s.key == "selection")
    assert (paper.value("seed"), reverse.value("seed")) == (6549, 1)
    assert ours.value("selection") == "source-holdout" and ours.value("jitter") == "stored"
    assert ours.value("source") is None  # either direction
    listed = ours.to_json()
    assert listed["command"] == "run xmic" and {"key", "value", "source", "note"} <= set(listed["settings"][0])


def test_recipe_named_in_a_settings_file_or_by_set(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('recipe = "xmic-cvpr24"\nseed = 3\n')
    config = load(XMICRunConfig, path, [], {"store": "s", "out": str(tmp_path)},
                  layers=[chosen_recipe("run xmic", path=path).layer()])
    assert (config.recipe, config.selection, config.seed) == ("xmic-cvpr24", "target-val", 3)
    assert chosen_recipe("run xmic", overrides=["recipe=xmic-egofeat"]) is get_recipe("xmic-egofeat")
    assert chosen_recipe("run xmic", "xmic-cvpr24", path, ["recipe=xmic-egofeat"]).name == "xmic-cvpr24"
    assert chosen_recipe("run xmic") is None
    with pytest.raises(KeyError, match="no recipe 'nope'.*xmic-cvpr24"):
        chosen_recipe("run xmic", "nope")


def test_xmic_cvpr24_trains_on_every_source_train_segment_and_records_it(tmp_path):
    """The done-when of issue 14: target-val selection, 100% of the source train set, reported."""
    store = write_synthetic_domains(tmp_path / "store", native_frames=(6, 24),
                                    videos={"kitchen-a/train": 4, "kitchen-b/val": 3})["store"]
    result = runner.invoke(app, [
        "run", "xmic", "--recipe", "xmic-cvpr24", "--store", store, "--out", str(tmp_path / "run"),
        "--source", "kitchen-a", "--target", "kitchen-b", "--encoder", "tiny", "--task", "noun",
        "--epochs", "2", "--device", "cpu", "--set", "trainer.batch_size=16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recipe"]["name"] == "xmic-cvpr24"
    assert {s["key"] for s in report["recipe"]["settings"]} >= {"selection", "jitter", "trainer.lr"}
    assert report["train_segments"] == {"source_train": 96, "trained_on": 96, "held_out_for_selection": 0}
    assert "X-MIC's protocol" in report["selection"] and "optimistic" in report["selection"]
    assert report["layout"]["jitter"] == "native"
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["train_segments"]["trained_on"] == 96 and saved["recipe"]["name"] == "xmic-cvpr24"
    # the command's options still win over the recipe (epochs, batch size)
    history = (tmp_path / "run" / "xmic-noun" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 2


def test_unknown_recipe_is_one_line_naming_the_valid_ones(tmp_path):
    result = runner.invoke(app, ["run", "xmic", "--recipe", "xmic-2024", "--store", str(tmp_path),
                                 "--out", str(tmp_path / "o"), "--encoder", "tiny"])
    assert result.exit_code == 2
    assert "no recipe 'xmic-2024'" in result.output and "xmic-cvpr24" in result.output
