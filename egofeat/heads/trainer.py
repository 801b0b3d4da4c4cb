"""The training loop for heads: a plain torch loop with the model, the data and the loop apart.

* The **model** is any ``nn.Module`` whose ``forward(batch)`` returns a dict of outputs
  (task -> logits for the classification heads).
* The **data** is a :class:`~egofeat.heads.data.HeadData`; batches are gathered from its
  in-RAM tensors (see :meth:`HeadData.batch` for the batch layout). A
  :class:`~egofeat.heads.jitter.JitteredData` gives each epoch its own draw of native frames.
* The **loss** is any callable ``loss_fn(outputs, batch) -> scalar tensor``; the default,
  :class:`MultiTaskCrossEntropy`, is the mean over tasks of cross-entropy.
* The **validation** is any callable ``validation(model, val) -> {metric: value}`` run after
  every epoch; the default is classification accuracy (:func:`~egofeat.heads.predict.evaluate`).
  A training task (:mod:`egofeat.heads.tasks`) brings its loss, validation and the metric to
  monitor; the loop never asks which task or head it runs.

:class:`Trainer` is seeded and deterministic on CPU (same seed, same data, same thread count:
bitwise the same metrics), runs AdamW with timm's warm-up + cosine / linear / constant
schedules (:mod:`egofeat.heads.optim`), clips gradients, autocasts to bf16 where the hardware
has it (or fp16 with a gradient scaler on CUDA, when asked), early-stops on a validation
split, writes ``metrics.jsonl``, ``last.pt`` (resume state) and ``best.pt`` into its run
folder, reports progress (:mod:`egofeat._util.progress`), and resumes from ``last.pt``
exactly as if never interrupted.

A head whose class sets ``time_pooled = True`` (the linear probe, the MLP) reads only each
stream's time-mean; the trainer then averages the frames once instead of in every batch.

Model initialisation happens before the trainer sees the model: seed it yourself
(``torch.manual_seed(seed)`` before ``create_head``) for fully reproducible runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from egofeat._util.progress import ProgressReporter
from egofeat.heads.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from egofeat.heads.config import RunConfig, TrainConfig
from egofeat.heads.data import UNLABELLED, Batch, HeadData
from egofeat.heads.jitter import JitteredData
from egofeat.heads.optim import create_optimizer, create_scheduler, scheduled_lr
from egofeat.heads.predict import (
    LossFn,
    autocast,
    evaluate,
    grad_scaler,
    predict,
    resolve_device,
    resolve_precision,
    topk_accuracy,
)

__all__ = [
    "DEFAULT_MONITOR",
    "FitResult",
    "LossFn",
    "MultiTaskCrossEntropy",
    "Trainer",
    "Validation",
    "autocast",
    "evaluate",
    "metrics_table",
    "predict",
    "resolve_device",
    "resolve_precision",
    "topk_accuracy",
]

log = logging.getLogger(__name__)

Validation = Callable[[nn.Module, HeadData], Mapping[str, float]]
"""``validation(model, val) -> {"val_...": value}``, run after every epoch."""

DEFAULT_MONITOR = "val_top1_mean"
"""What early stopping watches when neither the config nor the task names a metric."""

METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"

# Trainer settings that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset(
    {"progress", "num_threads", "device", "features_on_device", "eval_batch_size"}
)


class MultiTaskCrossEntropy:
    """Mean over ``tasks`` of the cross-entropy of ``outputs[task]`` against the batch labels.

    Rows labelled :data:`~egofeat.heads.data.UNLABELLED` are ignored.
    """

    def __init__(self, tasks: Iterable[str], label_smoothing: float = 0.0) -> None:
        self.tasks = tuple(tasks)
        self.label_smoothing = label_smoothing

    def __call__(self, outputs: Mapping[str, Tensor], batch: Batch) -> Tensor:
        losses = [
            F.cross_entropy(
                outputs[task].float(),
                batch["labels"][task],
                ignore_index=UNLABELLED,
                label_smoothing=self.label_smoothing,
            )
            for task in self.tasks
        ]
        return torch.stack(losses).mean()


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` did: per-epoch metrics and the epoch kept as best."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float | None
    stopped_early: bool
    device: str = "cpu"
    precision: str = "fp32"
    run_dir: Path | None = None

    @property
    def best_checkpoint(self) -> Path | None:
        return self.run_dir / BEST_CHECKPOINT if self.run_dir else None

    @property
    def last_checkpoint(self) -> Path | None:
        return self.run_dir / LAST_CHECKPOINT if self.run_dir else None


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


class Trainer:
    """Fits a model on :class:`HeadData` (see the module docstring).

    Args:
        config: training settings, or a whole :class:`RunConfig` (kept in checkpoints).
        loss_fn: ``loss_fn(outputs, batch) -> loss``; default mean cross-entropy over
            ``config.tasks``.
        validation: ``validation(model, val) -> metrics`` after every epoch; default
            classification accuracy and loss (:func:`~egofeat.heads.predict.evaluate`).
        monitor: the metric early stopping and the best checkpoint follow when the config
            names none (a task's default); else :data:`DEFAULT_MONITOR`.
        run_dir: folder for ``metrics.jsonl``, ``last.pt`` and ``best.pt``; nothing is written
            without one (and nothing can be resumed).
        callbacks: called with each epoch's metrics record after it is saved.
        console: where the metrics table goes (``config.progress``).
    """

    def __init__(
        self,
        config: TrainConfig | RunConfig,
        *,
        loss_fn: LossFn | None = None,
        validation: Validation | None = None,
        monitor: str | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        callbacks: Iterable[Callable[[dict[str, Any]], None]] = (),
        console: Console | None = None,
    ) -> None:
        if isinstance(config, RunConfig):
            self.config, self.run_config = config.trainer, config.to_dict()
        else:
            self.config = config
            self.run_config = {"trainer": config.model_dump(mode="json")}
        self.loss_fn = loss_fn or MultiTaskCrossEntropy(
            self.config.tasks, self.config.label_smoothing
        )
        self.validation = validation or self._classification_metrics
        self.monitor = self.config.monitor or monitor or DEFAULT_MONITOR
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        self.console = console or Console(stderr=True)

    # ---- public API ---------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        train: HeadData,
        val: HeadData | None = None,
        *,
        resume: bool | str | os.PathLike[str] = False,
    ) -> FitResult:
        """Train ``model`` on ``train``, early-stopping on ``val``.

        ``resume=True`` continues from ``run_dir/last.pt`` when it exists (a fresh start
        otherwise); a path continues from that checkpoint. With ``restore_best`` the model
        ends with the weights of the best epoch.
        """
        config = self.config
        threads = torch.get_num_threads()
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        try:
            return self._fit(model, train, val, resume)
        finally:
            torch.set_num_threads(threads)

    # ---- the loop -----------------------------------------------------------------------
    def _fit(
        self, model: nn.Module, train: HeadData, val: HeadData | None, resume: Any
    ) -> FitResult:
        config = self.config
        device = resolve_device(config.device)
        self._check_data(train, val)
        log.info("training on %s in %s", device, resolve_precision(config.precision, device))
        model.to(device)
        optimizer = create_optimizer(model, config, device)
        steps_per_epoch = train.num_batches(config.batch_size)
        scheduler = create_scheduler(optimizer, config, steps_per_epoch)
        scaler = grad_scaler(device, config.precision)
        state = _LoopState()
        torch.manual_seed(config.seed)
        checkpoint_path = self._resume_path(resume)
        if checkpoint_path is not None:
            state = self._restore(checkpoint_path, model, optimizer, device)
            if state.scaler:
                scaler.load_state_dict(state.scaler)
        if getattr(model, "time_pooled", False):
            # the head reads only time-means: average the frames once, not in every batch
            train = train.time_mean()
            val = val.time_mean() if val is not None else None
        if device.type == "cuda" and config.features_on_device:
            train = train.to(device)
            val = val.to(device) if val is not None else None
        self._rewrite_metrics(state.history)

        progress = ProgressReporter("train", config.epochs * steps_per_epoch, unit="steps",
                                    mode="auto" if config.progress else "off")
        progress.done = state.step
        with progress:
            while state.epoch < config.epochs and not state.stopped_early:
                record = self._run_epoch(model, optimizer, scheduler, scaler, train, val, state,
                                         device, progress)
                state.scaler = scaler.state_dict() if scaler.is_enabled() else None
                self._end_epoch(model, optimizer, train, state, record, val is not None)
                progress.set(description=_summary(record, config.epochs))
        if config.restore_best and state.best_state is not None:
            model.load_state_dict(state.best_state)
        if config.progress:
            self.console.print(metrics_table(state.history))
        return FitResult(
            history=state.history,
            best_epoch=state.best_epoch,
            best_score=state.best_score,
            stopped_early=state.stopped_early,
            device=str(device),
            precision=resolve_precision(config.precision, device),
            run_dir=self.run_dir,
        )

    def _run_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        scaler: torch.amp.GradScaler,
        train: HeadData,
        val: HeadData | None,
        state: _LoopState,
        device: torch.device,
        progress: ProgressReporter,
    ) -> dict[str, Any]:
        config = self.config
        started = time.perf_counter()
        # The shuffle depends only on (seed, epoch), so a resumed run sees the same batches.
        order = torch.Generator().manual_seed(config.seed * 1_000_003 + state.epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        lr = scheduled_lr(scheduler, config, step=state.step, epoch=state.epoch)
        rows = train
        if isinstance(train, JitteredData):  # native-frame jitter: this epoch's frames
            rows = train.epoch(config.seed, state.epoch)
            if device.type == "cuda" and config.features_on_device:
                rows = rows.to(device)
        for batch in rows.batches(config.batch_size, shuffle=True, generator=order, device=device):
            lr = scheduled_lr(scheduler, config, step=state.step, epoch=state.epoch)
            with autocast(device, config.precision):
                loss = self.loss_fn(model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp16: a scaled loss; otherwise loss.backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)  # skips the step when fp16 gradients overflowed
            scaler.update()
            state.step += 1
            loss_sum += loss.detach().float() * len(batch["index"])
            progress.advance(1)
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "lr": lr,
            "train_loss": loss_sum.item() / len(train),
        }
        if val is not None:
            record.update(self.validation(model, val))
        record["seconds"] = round(time.perf_counter() - started, 3)
        return record

    def _classification_metrics(self, model: nn.Module, val: HeadData) -> dict[str, float]:
        config = self.config
        return evaluate(model, val, tasks=config.tasks, loss_fn=self.loss_fn,
                        batch_size=config.eval_batch_size, device=resolve_device(config.device),
                        precision=config.precision)

    def _end_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: HeadData,
        state: _LoopState,
        record: dict[str, Any],
        validating: bool,
    ) -> None:
        state.epoch += 1
        state.history.append(record)
        improved = self._track_best(record, state, validating)
        if improved:
            state.best_state = _state_copy(model)
        state.rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state.rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.run_dir is not None:
            base = self._checkpoint(model, train, state.history, state.epoch)
            if improved:
                best = dataclasses.replace(base, model_state=state.best_state)
                save_checkpoint(self.run_dir / BEST_CHECKPOINT, best)
            last = dataclasses.replace(
                base,
                optimizer_state=optimizer.state_dict(),
                scheduler_state={"step": state.step, "epoch": state.epoch},
                trainer_state=state.to_dict(),
            )
            save_checkpoint(self.run_dir / LAST_CHECKPOINT, last)
            with open(self.run_dir / METRICS_FILE, "a") as file:
                file.write(json.dumps(record) + "\n")
        for callback in self.callbacks:
            callback(record)

    def _track_best(self, record: dict[str, Any], state: _LoopState, validating: bool) -> bool:
        """Update best/patience bookkeeping; True when this epoch is the new best."""
        config = self.config
        if not validating:  # nothing to select on: the latest epoch is the best
            state.best_epoch, state.best_score = record["epoch"], None
            return True
        monitor = self.monitor
        if monitor not in record:
            raise KeyError(
                f"monitored metric {monitor!r} is not computed; "
                f"metrics: {sorted(k for k in record if k != 'epoch')} (set trainer.monitor)"
            )
        score = float(record[monitor])
        sign = -1.0 if monitor.endswith("loss") else 1.0
        if state.best_score is None or sign * score > sign * state.best_score:
            state.best_epoch, state.best_score, state.bad_epochs = record["epoch"], score, 0
            return True
        state.bad_epochs += 1
        if config.patience is not None and state.bad_epochs >= config.patience:
            state.stopped_early = True
            log.info("early stop after epoch %d (best %d)", record["epoch"], state.best_epoch)
        return False

    # ---- checkpoints and resume ---------------------------------------------------------
    def _checkpoint(
        self, model: nn.Module, train: HeadData, history: list[dict[str, Any]], epoch: int
    ) -> Checkpoint:
        spec = getattr(model, "head_spec", None)
        return Checkpoint(
            model_state=_state_copy(model),
            head=spec,
            config=self.run_config,
            class_names={task: train.class_names[task] for task in self.config.tasks},
            provenance=train.provenance,
            history=list(history),
            epoch=epoch,
        )

    def _resume_path(self, resume: Any) -> Path | None:
        if resume is False or resume is None:
            return None
        if resume is True:
            if self.run_dir is None:
                raise ValueError("resume=True needs a run_dir holding last.pt")
            path = self.run_dir / LAST_CHECKPOINT
            if not path.exists():
                log.info("no %s yet: starting a fresh run", path)
                return None
            return path
        return Path(resume)

    def _restore(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
    ) -> _LoopState:
        checkpoint = load_checkpoint(path)
        if checkpoint.trainer_state is None or checkpoint.optimizer_state is None:
            raise ValueError(f"{path} holds no resume state (use last.pt, not best.pt)")
        saved = checkpoint.config.get("trainer", {})
        current = self.config.model_dump(mode="json")
        # a setting added after the checkpoint was written had its default then
        defaults = TrainConfig().model_dump(mode="json")
        changed = {
            key: (saved.get(key, defaults[key]), value)
            for key, value in current.items()
            if key not in _RESUMABLE_CHANGES and saved.get(key, defaults[key]) != value
        }
        if changed:
            raise ValueError(
                f"cannot resume from {path}: trainer settings changed (saved, now): {changed}"
            )
        spec = getattr(model, "head_spec", None)
        if spec is not None and checkpoint.head is not None and spec != checkpoint.head:
            raise ValueError(
                f"cannot resume from {path}: it holds head {checkpoint.head}, the model is {spec}"
            )
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        state = _LoopState.from_dict(checkpoint.trainer_state, checkpoint.history)
        torch.set_rng_state(state.rng["torch"])
        if "cuda" in state.rng and device.type == "cuda":
            torch.cuda.set_rng_state_all(state.rng["cuda"])
        log.info("resuming from %s after epoch %d", path, state.epoch)
        return state

    def _rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        """Start ``metrics.jsonl`` over, holding exactly the epochs of ``history``."""
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / METRICS_FILE, "w") as file:
            file.writelines(json.dumps(record) + "\n" for record in history)

    def _check_data(self, train: HeadData, val: HeadData | None) -> None:
        for name, data in (("train", train), ("val", val)):
            if data is None:
                continue
            if len(data) == 0:
                raise ValueError(f"{name} data is empty")
            missing = [task for task in self.config.tasks if task not in data.labels]
            if missing:
                raise KeyError(
                    f"{name} data has no labels for task(s) {missing}; tasks: {data.tasks}"
                )
            for task in self.config.tasks:
                if not data.labelled(task).any():
                    raise ValueError(
                        f"{name} data has no {task} labels (an unlabelled split?); "
                        f"train and validate on labelled splits"
                    )


@dataclass
class _LoopState:
    """Everything about the loop, beyond model and optimizer, that resuming needs."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    best_state: dict[str, Tensor] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
            "best_state": self.best_state,
            "rng": self.rng,
            "scaler": self.scaler,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], history: list[dict[str, Any]]) -> _LoopState:
        return cls(
            epoch=int(data["epoch"]),
            step=int(data["step"]),
            history=list(history),
            best_epoch=int(data["best_epoch"]),
            best_score=data["best_score"],
            bad_epochs=int(data["bad_epochs"]),
            stopped_early=bool(data["stopped_early"]),
            best_state=data["best_state"],
            rng=dict(data["rng"]),
            scaler=data.get("scaler"),
        )


def _summary(record: Mapping[str, Any], epochs: int) -> str:
    """``epoch 3/20 loss 0.512 val_top1_mean 61.20``: the CLI's units (accuracies ×100)."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.3f}"]
    for key, value in record.items():
        if key.startswith("val_") and key.endswith(("top1_mean", "map_avg")):
            parts.append(f"{key} {value:.2f}")
    return " ".join(parts)


def metrics_table(history: list[dict[str, Any]]) -> Table:
    """A rich table of per-epoch metrics (one row per epoch)."""
    table = Table(title="training")
    columns = list(dict.fromkeys(key for record in history for key in record))
    for column in columns:
        table.add_column(column, justify="right")
    for record in history:
        table.add_row(*(_format(record.get(column)) for column in columns))
    return table


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return "" if value is None else str(value)
