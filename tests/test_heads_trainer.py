"""The trainer: learning, determinism, checkpoints, resume, provenance, predictions."""

from __future__ import annotations

import importlib
import json
import warnings

import numpy as np
import pytest
import torch

from egofeat.heads import (
    HeadData,
    MultiTaskCrossEntropy,
    ProvenanceMismatchError,
    RunConfig,
    TrainConfig,
    Trainer,
    check_provenance,
    create_head,
    load_checkpoint,
    load_config,
    predict,
)
from egofeat.heads.config import ConfigError
from egofeat.heads.optim import create_optimizer, create_scheduler, param_groups, scheduled_lr
from egofeat.heads.trainer import evaluate, topk_accuracy

PROVENANCE = {
    "full": {"encoder": "clip-vit-b16", "weights_sha256": "ab12", "crop": "full", "fps": 2},
    "hand": {"encoder": "clip-vit-b16", "weights_sha256": "ab12", "crop": {"rule": "union"}},
}
SMALL = {
    "linear": {},
    "mlp": {"hidden": 32},
    "tsn": {"dropout": 0.2},
    "trn": {"bottleneck": 16, "hidden": 32, "dropout": 0.2},
    "tsm": {"width": 32, "depth": 1, "dropout": 0.2},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def separable(rows: int, frames: int = 4, seed: int = 0) -> HeadData:
    """Two streams; the verb is readable from one, the noun from the other (plus noise)."""
    centres = torch.Generator().manual_seed(1234)
    verb_centres = torch.randn(5, 16, generator=centres) * 2
    noun_centres = torch.randn(7, 8, generator=centres) * 2
    g = torch.Generator().manual_seed(seed)
    verb = torch.randint(0, 5, (rows,), generator=g)
    noun = torch.randint(0, 7, (rows,), generator=g)
    full = verb_centres[verb][:, None] + 0.5 * torch.randn(rows, frames, 16, generator=g)
    hand = noun_centres[noun][:, None] + 0.5 * torch.randn(rows, frames, 8, generator=g)
    return HeadData(
        features={"full": full.half(), "hand": hand.half()},
        labels={"verb": verb, "noun": noun},
        segment_ids=np.array([f"s{seed}_{i}" for i in range(rows)]),
        num_classes={"verb": 5, "noun": 7},
        class_names={"verb": [f"v{i}" for i in range(5)], "noun": [f"n{i}" for i in range(7)]},
        provenance=PROVENANCE,
    )


def head(name: str = "mlp", data: HeadData | None = None, seed: int = 0):
    data = data or separable(8)
    torch.manual_seed(seed)
    return create_head(
        name,
        in_dims=data.in_dims,
        num_frames=data.num_frames,
        num_classes=data.num_classes,
        **SMALL[name],
    )


def config(**changes) -> TrainConfig:
    settings = {"epochs": 4, "batch_size": 32, "lr": 1e-2, "warmup_epochs": 0.5, "progress": False}
    return TrainConfig(**{**settings, **changes})


def without_time(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_head_learns_a_separable_task(name):
    train, val = separable(320, seed=0), separable(160, seed=1)
    model = head(name, train)
    result = Trainer(config(epochs=8, patience=None)).fit(model, train, val)
    final = result.history[-1]
    assert final["val_verb_top1"] > 97 and final["val_noun_top1"] > 97, final  # percent
    assert final["val_loss"] < result.history[0]["val_loss"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_gives_bitwise_identical_metrics(precision):
    train, val = separable(128, seed=0), separable(64, seed=1)
    settings = config(precision=precision)
    runs = [Trainer(settings).fit(head("trn", train), train, val) for _ in range(2)]
    assert runs[0].precision == precision
    assert without_time(runs[0].history) == without_time(runs[1].history)
    other = Trainer(config(seed=1, precision=precision)).fit(head("trn", train), train, val)
    assert without_time(other.history) != without_time(runs[0].history)


def test_checkpoint_round_trip_gives_equal_predictions(tmp_path):
    train, val = separable(128, seed=0), separable(64, seed=1)
    model = head("trn", train)
    run = RunConfig(trainer=config())
    result = Trainer(run, run_dir=tmp_path).fit(model, train, val)
    assert result.best_checkpoint.exists() and result.last_checkpoint.exists()

    # plain torch.load(weights_only=True) reads it: only tensors and plain python inside
    raw = torch.load(result.best_checkpoint, weights_only=True)
    assert raw["format"] == "egofeat.heads.checkpoint"

    checkpoint = load_checkpoint(result.best_checkpoint)
    assert checkpoint.epoch == result.best_epoch
    assert checkpoint.head == model.head_spec
    assert checkpoint.class_names == {
        "verb": train.class_names["verb"],
        "noun": train.class_names["noun"],
    }
    assert checkpoint.provenance == PROVENANCE
    assert checkpoint.config == run.to_dict()
    assert [r["epoch"] for r in checkpoint.history] == [r["epoch"] for r in result.history]
    restored = checkpoint.build_model()
    expected = predict(model, val, batch_size=50)
    got = predict(restored, val, batch_size=50)
    assert set(got) == {"verb", "noun"}
    for task in got:
        assert got[task].dtype == np.float32 and got[task].shape == (64, train.num_classes[task])
        np.testing.assert_array_equal(got[task], expected[task])


def test_best_epoch_weights_are_restored_and_saved(tmp_path):
    train, val = separable(128, seed=0), separable(64, seed=1)
    model = head("mlp", train)
    result = Trainer(config(epochs=3, monitor="val_loss"), run_dir=tmp_path).fit(model, train, val)
    losses = [r["val_loss"] for r in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    assert result.best_score == min(losses)
    best = load_checkpoint(tmp_path / "best.pt").build_model()
    for key, value in best.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    train, val = separable(128, seed=0), separable(64, seed=1)
    settings = config(epochs=5, patience=None)
    full = head("trn", train)
    expected = Trainer(settings, run_dir=tmp_path / "full").fit(full, train, val)

    class Crash(Exception):
        pass

    def crash_after_two(record):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        Trainer(settings, run_dir=tmp_path / "cut", callbacks=[crash_after_two]).fit(
            head("trn", train), train, val
        )
    assert load_checkpoint(tmp_path / "cut" / "last.pt").epoch == 2

    resumed_model = head("trn", train, seed=99)  # initial weights are replaced by the checkpoint
    resumed = Trainer(settings, run_dir=tmp_path / "cut").fit(
        resumed_model, train, val, resume=True
    )
    assert without_time(resumed.history) == without_time(expected.history)
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=0, atol=0)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]


def test_resume_refuses_changed_settings(tmp_path):
    train = separable(64)
    Trainer(config(epochs=2), run_dir=tmp_path).fit(head("mlp", train), train)
    with pytest.raises(ValueError, match=r"trainer settings changed .*'lr': \(0.01, 0.5\)"):
        Trainer(config(epochs=2, lr=0.5), run_dir=tmp_path).fit(
            head("mlp", train), train, resume=True
        )
    with pytest.raises(ValueError, match="no resume state"):
        Trainer(config(epochs=2), run_dir=tmp_path).fit(
            head("mlp", train), train, resume=tmp_path / "best.pt"
        )


def test_early_stopping_stops_after_patience():
    train, val = separable(64, seed=0), separable(64, seed=1)
    # a zero learning rate never improves the monitored metric after epoch 1
    settings = config(epochs=10, lr=1e-12, warmup_epochs=0, patience=2, monitor="val_loss")
    result = Trainer(settings).fit(head("linear", train), train, val)
    assert result.stopped_early
    assert len(result.history) == 3 and result.best_epoch == 1


def test_metrics_log_and_history_fields(tmp_path):
    train, val = separable(64, seed=0), separable(32, seed=1)
    result = Trainer(config(epochs=2), run_dir=tmp_path).fit(head("tsn", train), train, val)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == result.history
    assert set(records[0]) == {
        "epoch", "lr", "train_loss", "val_loss", "seconds", "val_top1_mean",
        "val_verb_top1", "val_verb_top5", "val_noun_top1", "val_noun_top5", "val_action_top1",
    }  # fmt: skip

    model = head("tsn", train)  # action top-1: verb and noun both right, as the EPIC scorer counts
    metrics = evaluate(model, val, tasks=iter(["verb", "noun"]), device="cpu", precision="fp32")
    outputs = model.eval()(val.batch(torch.arange(len(val))))
    both = (outputs["verb"].argmax(1) == val.labels["verb"]) & (outputs["noun"].argmax(1) == val.labels["noun"])
    assert metrics["val_action_top1"] == pytest.approx(100 * both.float().mean().item())


def test_loss_function_is_pluggable():
    train = separable(64)
    calls = []

    def noun_only(outputs, batch):
        calls.append(sorted(batch))
        return torch.nn.functional.cross_entropy(outputs["noun"], batch["labels"]["noun"])

    Trainer(config(epochs=1, tasks=("noun",)), loss_fn=noun_only).fit(head("mlp", train), train)
    assert calls and calls[0] == ["features", "index", "labels"]


def test_single_task_training_and_unlabelled_rows_are_ignored():
    train = separable(96)
    train.labels["verb"][:10] = -1
    result = Trainer(config(epochs=2, tasks=("verb",))).fit(head("mlp", train), train, train)
    assert "val_noun_top1" not in result.history[-1]
    assert np.isfinite(result.history[-1]["train_loss"])


def test_bad_training_data_is_explained():
    train = separable(32)
    with pytest.raises(KeyError, match=r"no labels for task\(s\) \['action'\]"):
        Trainer(config(tasks=("action",))).fit(head("mlp", train), train)
    unlabelled = separable(32)
    unlabelled.labels["noun"][:] = -1
    with pytest.raises(ValueError, match="val data has no noun labels"):
        Trainer(config()).fit(head("mlp", train), train, unlabelled)
    with pytest.raises(KeyError, match="monitored metric 'val_verb_top3'"):
        Trainer(config(monitor="val_verb_top3")).fit(head("mlp", train), train, train)


def test_provenance_mismatch_is_refused(tmp_path):
    train = separable(64)
    Trainer(config(epochs=1), run_dir=tmp_path).fit(head("mlp", train), train)
    checkpoint = load_checkpoint(tmp_path / "best.pt")
    check_provenance(checkpoint, PROVENANCE)  # same provenance passes
    check_provenance(checkpoint, {**PROVENANCE, "other": {"x": 1}})  # extra streams are fine
    volatile = {name: {**p, "egofeat_version": "9.9"} for name, p in PROVENANCE.items()}
    check_provenance(checkpoint, volatile)  # who-wrote-it keys don't matter

    changed = {
        "full": {**PROVENANCE["full"], "weights_sha256": "ff00", "fps": 4},
        "hand": {**PROVENANCE["hand"], "crop": {"rule": "largest"}},
    }
    with pytest.raises(ProvenanceMismatchError) as error:
        check_provenance(checkpoint, changed)
    message = str(error.value)
    assert "full weights_sha256: trained 'ab12', now 'ff00'" in message
    assert "full fps: trained 2, now 4" in message
    assert "hand crop.rule: trained 'union', now 'largest'" in message
    with pytest.raises(ProvenanceMismatchError, match="stream 'hand': trained on it, not given"):
        check_provenance(checkpoint, {"full": PROVENANCE["full"]})
    check_provenance(
        checkpoint, changed | {"hand": PROVENANCE["hand"]}, ignore=["weights_sha256", "fps"]
    )


def test_predict_keeps_row_order_and_restores_mode():
    data = separable(50)
    model = head("trn", data).train()
    full = predict(model, data, batch_size=7)
    assert model.training
    reversed_rows = predict(model, data.subset(np.arange(49, -1, -1)), batch_size=16)
    for task in full:
        np.testing.assert_allclose(reversed_rows[task][::-1], full[task], rtol=1e-5, atol=1e-5)


def test_evaluate_and_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, -1])
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == {1: 0.5, 2: 0.5, 5: 1.0}
    data = separable(40)
    metrics = evaluate(head("mlp", data), data, tasks=["verb"], prefix="test_")
    assert set(metrics) == {"test_verb_top1", "test_verb_top5", "test_top1_mean"}


def _lrs(steps: int, per_epoch: int = 1, **settings) -> list[float]:
    config = TrainConfig(lr=1.0, **settings)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = create_scheduler(optimizer, config, per_epoch)
    return [scheduled_lr(scheduler, config, step=i, epoch=i // per_epoch) for i in range(steps)]


def test_schedule_warms_up_then_decays_to_the_floor():
    lrs = _lrs(21, epochs=20, warmup_epochs=4, min_lr_ratio=0.1)
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[20] == pytest.approx(0.1)
    linear = _lrs(21, epochs=20, warmup_epochs=0, schedule="linear", min_lr_ratio=0.0)
    assert linear[0] == 1.0 and linear[10] == pytest.approx(0.5) and linear[20] == pytest.approx(0.0)


def test_per_epoch_warmup_then_constant_as_xmic():
    """X-MIC's recipe: 1e-7 in the first epoch, linear warm-up over 5 epochs, then constant."""
    lrs = _lrs(30, per_epoch=2, epochs=15, warmup_epochs=5, warmup_lr=1e-7, schedule="constant",
               step_on_epochs=True)
    per_epoch = lrs[::2]
    assert lrs[1] == lrs[0] == pytest.approx(1e-7)  # the rate changes between epochs only
    assert per_epoch[1:5] == pytest.approx([0.2, 0.4, 0.6, 0.8], rel=1e-5)
    assert per_epoch[5:] == [1.0] * 10
    # Dassl's warm-up (X-MIC's): warmup_lr first, then lr * epoch / warmup, exactly
    dassl = _lrs(30, per_epoch=2, epochs=15, warmup_epochs=5, warmup_lr=1e-7, schedule="constant",
                 step_on_epochs=True, warmup_rule="dassl")[::2]
    assert dassl[:6] == pytest.approx([1e-7, 0.2, 0.4, 0.6, 0.8, 1.0], rel=1e-12, abs=0)
    assert dassl[5:] == [1.0] * 10
    per_step = _lrs(6, per_epoch=1, epochs=6, warmup_epochs=4, warmup_lr=0.05, schedule="cosine",
                    warmup_rule="dassl", min_lr_ratio=0.0)
    assert per_step[:5] == pytest.approx([0.05, 0.25, 0.5, 0.75, 1.0]) and per_step[5] < 1.0


def test_xmic_schedule_is_what_the_trainer_runs():
    """The per-epoch rates a fit logs with X-MIC's recipe: 1e-7, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4."""
    from egofeat.heads.xmic import XMIC_TRAINER

    train = separable(64)
    settings = TrainConfig(**{**XMIC_TRAINER, "epochs": 7, "batch_size": 16, "progress": False})
    history = Trainer(settings).fit(head("mlp", train), train).history
    assert [r["lr"] for r in history] == pytest.approx([1e-7, 1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 5e-4],
                                                      rel=1e-12, abs=0)


def test_fp16_is_mixed_precision_with_a_scaler_on_cuda_and_auto_elsewhere():
    from egofeat.heads.predict import autocast, grad_scaler, resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("fp16", cuda) == "fp16"
    assert resolve_precision("fp16", cpu) == resolve_precision("auto", cpu)
    assert not grad_scaler(cpu, "fp16").is_enabled() and not grad_scaler(cpu, "bf16").is_enabled()
    with warnings.catch_warnings():  # without a GPU torch warns that it disables the context
        warnings.simplefilter("ignore")
        assert autocast(cuda, "fp16").fast_dtype == torch.float16


def test_fp16_training_scales_the_loss_and_resumes_exactly(tmp_path, monkeypatch):
    """The fp16 path (autocast + GradScaler), run on the CPU by resolving fp16 as on CUDA."""
    predict_module = importlib.import_module("egofeat.heads.predict")
    real = predict_module.resolve_precision
    monkeypatch.setattr(predict_module, "resolve_precision",
                        lambda precision, device: "fp16" if precision == "fp16" else real(precision, device))
    train, val = separable(128, seed=0), separable(64, seed=1)
    settings = config(precision="fp16", epochs=4, patience=None)
    whole = Trainer(settings, run_dir=tmp_path / "whole").fit(head("mlp", train), train, val)
    assert whole.history[-1]["val_verb_top1"] > 90
    state = load_checkpoint(tmp_path / "whole" / "last.pt").trainer_state
    assert state["scaler"]["scale"] > 1  # the loss was scaled
    class Crash(Exception):
        pass

    def crash_after_two(record):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        Trainer(settings, run_dir=tmp_path / "cut", callbacks=[crash_after_two]).fit(
            head("mlp", train), train, val)
    resumed = Trainer(settings, run_dir=tmp_path / "cut").fit(head("mlp", train), train, val,
                                                              resume=True)
    assert without_time(resumed.history) == without_time(whole.history)


def test_weight_decay_skips_biases_and_norms_unless_all():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = param_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    (only,) = param_groups(model, 0.1, decay_all=True)
    assert len(only["params"]) == 4 and only["weight_decay"] == 0.1


def test_trainer_takes_a_run_config_from_a_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[head]\nname = "mlp"\nhidden = 16\n[trainer]\nepochs = 2\nprogress = false\n')
    run = load_config(path, ["trainer.batch_size=16"])
    train = separable(48)
    torch.manual_seed(0)
    model = create_head(
        run.head.name,
        in_dims=train.in_dims,
        num_frames=train.num_frames,
        num_classes=train.num_classes,
        **run.head.kwargs,
    )
    Trainer(run, run_dir=tmp_path / "run").fit(model, train)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved.config["head"] == {"name": "mlp", "hidden": 16}
    assert saved.config["trainer"]["batch_size"] == 16
    assert saved.scheduler_state == {"step": 2 * 3, "epoch": 2}


def test_multitask_cross_entropy_is_the_mean_of_task_losses():
    outputs = {"verb": torch.randn(6, 5), "noun": torch.randn(6, 7)}
    batch = {"labels": {"verb": torch.arange(6) % 5, "noun": torch.arange(6)}}
    loss = MultiTaskCrossEntropy(["verb", "noun"])(outputs, batch)
    expected = (
        sum(torch.nn.functional.cross_entropy(outputs[t], batch["labels"][t]) for t in outputs) / 2
    )
    torch.testing.assert_close(loss, expected)


def test_time_pooled_heads_train_on_time_means_computed_once():
    train, val = separable(96, seed=0), separable(48, seed=1)
    means = train.time_mean(chunk_rows=10)
    assert means.features["full"].shape == (96, 1, 16)
    torch.testing.assert_close(means.features["full"][:, 0], train.features["full"].float().mean(1))
    pooled = Trainer(config(epochs=2)).fit(head("mlp", train), train, val)
    per_batch = head("mlp", train)
    per_batch.time_pooled = False  # average in every batch instead
    reference = Trainer(config(epochs=2)).fit(per_batch, train, val)
    for got, want in zip(pooled.history, reference.history, strict=True):
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-4)
        assert got["val_top1_mean"] == want["val_top1_mean"]


def test_step_schedule_decays_at_the_epochs_torch_multisteplr_does():
    """The C1 baselines: SGD, x0.1 at epochs 20 and 40, stepped once per epoch."""
    lrs = _lrs(50 * 3, per_epoch=3, epochs=50, warmup_epochs=0, schedule="step", decay_epochs=(20, 40),
               step_on_epochs=True)
    model = torch.nn.Linear(1, 1)
    reference = torch.optim.lr_scheduler.MultiStepLR(torch.optim.SGD(model.parameters(), lr=1.0), [20, 40])
    expected = []
    for _ in range(50):
        expected += [reference.get_last_lr()[0]] * 3
        reference.optimizer.step()
        reference.step()
    assert lrs == pytest.approx(expected)
    per_step = _lrs(12, per_epoch=2, epochs=6, warmup_epochs=0, schedule="step", decay_epochs=(2.5,))
    assert per_step[:5] == [1.0] * 5 and per_step[5:] == pytest.approx([0.1] * 7)
    with pytest.raises(ConfigError, match="decay_epochs"):
        load_config(None, ["trainer.schedule=step"])


def test_sgd_with_momentum_is_the_c1_optimizer():
    model = torch.nn.Linear(4, 2)
    run = load_config(None, ["trainer.optimizer=sgd", "trainer.momentum=0.9", "trainer.lr=0.01"])
    optimizer = create_optimizer(model, run.trainer, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.SGD)
    assert [(g["momentum"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        (0.9, 0.01, 1e-4), (0.9, 0.01, 0.0)]  # biases are not decayed, as C1's decay_mult 0
