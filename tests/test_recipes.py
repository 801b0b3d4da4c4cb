"""Named recipes: registry, layers under the user's settings, messages naming the valid ones."""

from __future__ import annotations

import pytest

from egofeat import recipes
from egofeat.config import XMICRunConfig, load
from egofeat.recipes import Recipe, Setting, get_recipe, list_recipes, register_recipe


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
