"""Run configs: TOML / YAML files, typed overrides, clear errors."""

from __future__ import annotations

import pytest

from egofeat.heads import ConfigError, RunConfig, TrainConfig, load_config

TOML = """
[head]
name = "trn"
dropout = 0.6
eval_subsets = 4

[trainer]
epochs = 30
lr = 0.0005
betas = [0.9, 0.98]
patience = 3

[data]
streams = ["clip-vit-b16/full", "clip-vit-b16/hand"]
val_split = "val"
"""

YAML = """
head:
  name: trn
  dropout: 0.6
  eval_subsets: 4
trainer:
  epochs: 30
  lr: 5.0e-4
  betas: [0.9, 0.98]
  patience: 3
data:
  streams: [clip-vit-b16/full, clip-vit-b16/hand]
  val_split: val
"""


@pytest.fixture
def toml_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    return path


def test_toml_and_yaml_give_the_same_config(toml_file, tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text(YAML)
    from_toml, from_yaml = load_config(toml_file), load_config(yaml_file)
    assert from_toml == from_yaml
    assert from_toml.head.name == "trn"
    assert from_toml.head.kwargs == {"dropout": 0.6, "eval_subsets": 4}
    assert from_toml.trainer.betas == (0.9, 0.98)
    assert from_toml.trainer.batch_size == TrainConfig().batch_size  # defaults fill the rest
    assert from_toml.data.streams == ["clip-vit-b16/full", "clip-vit-b16/hand"]


def test_defaults_without_a_file():
    config = load_config()
    assert config == RunConfig()
    assert config.head.name == "linear"


def test_overrides_are_typed_by_the_field_they_set(toml_file):
    config = load_config(
        toml_file,
        [
            "trainer.epochs=5",
            "trainer.lr=1e-2",
            "trainer.grad_clip=none",
            "trainer.patience=null",
            "trainer.progress=false",
            "trainer.betas=0.8,0.9",
            'trainer.tasks=["noun"]',
            "trainer.precision=bf16",
            "head.hidden=512",
            "data.streams=a/full,b/hand",
            "data.cache_dir=/tmp/cache",
        ],
    )
    trainer = config.trainer
    assert (trainer.epochs, trainer.lr, trainer.grad_clip, trainer.patience) == (
        5,
        0.01,
        None,
        None,
    )
    assert trainer.progress is False and trainer.betas == (0.8, 0.9) and trainer.tasks == ("noun",)
    assert trainer.precision == "bf16"
    assert config.head.kwargs == {"dropout": 0.6, "eval_subsets": 4, "hidden": 512}
    assert config.data.streams == ["a/full", "b/hand"] and config.data.cache_dir == "/tmp/cache"


def test_head_name_override_applies_before_its_options(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[trainer]\nepochs = 3\n")
    config = load_config(path, ["head.width=64", "head.name=tsm", "head.dropout=0.1"])
    assert config.head.name == "tsm"
    assert config.head.kwargs == {"width": 64, "dropout": 0.1}


def test_file_options_must_fit_an_overridden_head(toml_file):
    with pytest.raises(ConfigError, match="head 'tsm' has no option 'eval_subsets'"):
        load_config(toml_file, ["head.name=tsm"])


def test_to_dict_round_trips(toml_file):
    config = load_config(toml_file, ["trainer.grad_clip=none"])
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.epoch=5"], r"trainer has no field 'epoch'; fields: \[.*'epochs'"),
        (["head.hiden=5"], r"head 'trn' has no option 'hiden'; it accepts \[.*'hidden'"),
        (["optim.lr=1"], "unknown table 'optim'"),
        (["trainer.epochs"], "write overrides as table.key=value"),
        (["trainer.epochs=five"], "trainer.epochs: expected an integer, got 'five'"),
        (["trainer.epochs=2.5"], "trainer.epochs: expected an integer, got '2.5'"),
        (["trainer.progress=maybe"], "expected true or false"),
        (["trainer.betas=0.9"], r"trainer.betas: expected 2 values or more, got \['0.9'\]"),
        (["trainer.precision=fp8"], "trainer.precision: expected one of 'auto', 'fp32', 'bf16' or 'fp16'"),
        (["trainer.epochs=none"], "a value is required|expected an integer"),
        (["head.name=resnet"], "unknown head 'resnet'"),
        (["trainer.lr=-1"], "trainer.lr: must be greater than 0"),
    ],
)
def test_bad_overrides_are_explained(toml_file, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(toml_file, overrides)


def test_bad_files_are_explained(tmp_path):
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[trainer]\nepochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(
        ConfigError, match=rf"{unknown}: trainer has no field 'learning_rate'; fields: \[.*'lr'"
    ):
        load_config(unknown)
    table = tmp_path / "table.toml"
    table.write_text("[optimizer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match="unknown table 'optimizer'; use data, head, task, trainer"):
        load_config(table)
    typed = tmp_path / "typed.yaml"
    typed.write_text("trainer:\n  epochs: many\n")
    with pytest.raises(ConfigError, match="trainer.epochs: expected an integer, got 'many'"):
        load_config(typed)
    broken = tmp_path / "broken.toml"
    broken.write_text("[trainer\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match=".toml, .yaml or .yml"):
        (tmp_path / "run.json").write_text("{}")
        load_config(tmp_path / "run.json")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")
