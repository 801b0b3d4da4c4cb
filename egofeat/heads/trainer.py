"""The training loop for heads: a plain torch loop with the model, the data and the loop apart.

* The **model** is any ``nn.Module`` whose ``forward(batch)`` returns a dict of outputs
  (task -> logits for the built-in heads).
* The **data** is a :class:`~egofeat.heads.data.HeadData`; batches are gathered from its
  in-RAM tensors (see :meth:`HeadData.batch` for the batch layout).
* The **loss** is any callable ``loss_fn(outputs, batch) -> scalar tensor``; the default,
  :class:`MultiTaskCrossEntropy`, is the mean over tasks of cross-entropy. Distillation and
  retrieval losses plug in the same way.

:class:`Trainer` is seeded and deterministic on CPU (same seed, same data, same thread count:
bitwise the same metrics), runs AdamW with a per-step linear-warmup + cosine schedule, clips
gradients, autocasts to bf16 on CUDA, early-stops on a validation split, writes
``metrics.jsonl``, ``last.pt`` (resume state) and ``best.pt`` into its run folder, and resumes
from ``last.pt`` exactly as if never interrupted.

A head whose class sets ``time_pooled = True`` (the linear probe, the MLP) reads only each
stream's time-mean; the trainer then averages the frames once instead of in every batch.

Model initialisation happens before the trainer sees the model: seed it yourself
(``torch.manual_seed(seed)`` before ``create_head``) for fully reproducible runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import Tensor, nn

from egofeat.heads.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from egofeat.heads.config import RunConfig, TrainConfig
from egofeat.heads.data import UNLABELLED, Batch, HeadData

__all__ = [
    "FitResult",
    "LossFn",
    "MultiTaskCrossEntropy",
    "Trainer",
    "WarmupCosineSchedule",
    "autocast",
    "evaluate",
    "metrics_table",
    "predict",
    "resolve_device",
    "resolve_precision",
    "topk_accuracy",
]

log = logging.getLogger(__name__)

LossFn = Callable[[Mapping[str, Tensor], Batch], Tensor]

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


@dataclass(frozen=True)
class WarmupCosineSchedule:
    """Learning rate per optimizer step: linear warmup, then cosine to ``base_lr * min_lr_ratio``."""

    base_lr: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.base_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``. ``"auto"`` is bf16 where the hardware multiplies bf16 natively
    (CUDA GPUs with bf16, CPUs with AMX, where it trains heads ~2x faster), fp32 elsewhere."""
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        capabilities = getattr(torch.cpu, "get_capabilities", dict)()
        return "bf16" if capabilities.get("amx_bf16", False) else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast when ``precision`` resolves to bf16 on ``device``, else a no-op context."""
    if resolve_precision(precision, device) != "bf16":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Fraction of labelled rows whose label is among the ``k`` highest logits, per ``k``.

    Rows labelled :data:`UNLABELLED` are skipped; ``k`` beyond the class count counts all.
    """
    labelled = labels != UNLABELLED
    logits, labels = logits[labelled], labels[labelled]
    if labels.numel() == 0:
        return {k: float("nan") for k in ks}
    ks = list(ks)
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


@torch.no_grad()
def _outputs(
    model: nn.Module,
    data: HeadData,
    batch_size: int,
    device: torch.device,
    precision: str,
    loss_fn: LossFn | None = None,
) -> tuple[dict[str, Tensor], float]:
    """All model outputs over ``data`` in row order (float32, CPU) and the mean loss."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[Tensor]] = {}
    loss_sum, rows = 0.0, 0
    try:
        for batch in data.batches(batch_size, device=device):
            with autocast(device, precision):
                outputs = model(batch)
                if loss_fn is not None:
                    size = len(batch["index"])
                    loss_sum += float(loss_fn(outputs, batch)) * size
                    rows += size
            for key, value in outputs.items():
                chunks.setdefault(key, []).append(value.float().cpu())
    finally:
        model.train(was_training)
    return {key: torch.cat(parts) for key, parts in chunks.items()}, loss_sum / max(rows, 1)


def predict(
    model: nn.Module,
    data: HeadData,
    batch_size: int = 1024,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> dict[str, np.ndarray]:
    """Model outputs (task -> float32 logits ``(N, C)``) for every row of ``data``, in order.

    The model is moved to ``device``; eval mode is used and the model's mode restored after.
    """
    device = resolve_device(device)
    model.to(device)
    outputs, _ = _outputs(model, data, batch_size, device, precision)
    return {key: value.numpy() for key, value in outputs.items()}


def evaluate(
    model: nn.Module,
    data: HeadData,
    *,
    tasks: Iterable[str],
    loss_fn: LossFn | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "auto",
    precision: str = "auto",
    prefix: str = "val_",
) -> dict[str, float]:
    """Loss (when ``loss_fn`` is given), top-1/top-5 per task, and mean top-1 over tasks.

    Keys: ``{prefix}loss``, ``{prefix}{task}_top1``, ``{prefix}{task}_top5``,
    ``{prefix}top1_mean``.
    """
    device = resolve_device(device)
    model.to(device)
    outputs, loss = _outputs(model, data, batch_size, device, precision, loss_fn)
    metrics: dict[str, float] = {}
    if loss_fn is not None:
        metrics[f"{prefix}loss"] = loss
    top1 = []
    for task in tasks:
        if task not in outputs:
            raise KeyError(f"model gives no output for task {task!r}; outputs: {sorted(outputs)}")
        accuracy = topk_accuracy(outputs[task], data.labels[task].cpu())
        metrics[f"{prefix}{task}_top1"] = accuracy[1]
        metrics[f"{prefix}{task}_top5"] = accuracy[5]
        top1.append(accuracy[1])
    metrics[f"{prefix}top1_mean"] = float(np.mean(top1))
    return metrics


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: biases and norm scales are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Trainer:
    """Fits a head on :class:`HeadData` (see the module docstring).

    Args:
        config: training settings, or a whole :class:`RunConfig` (kept in checkpoints).
        loss_fn: ``loss_fn(outputs, batch) -> loss``; default mean cross-entropy over
            ``config.tasks``.
        run_dir: folder for ``metrics.jsonl``, ``last.pt`` and ``best.pt``; nothing is written
            without one (and nothing can be resumed).
        callbacks: called with each epoch's metrics record after it is saved.
        console: where the progress bar and the metrics table go (``config.progress``).
    """

    def __init__(
        self,
        config: TrainConfig | RunConfig,
        *,
        loss_fn: LossFn | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        callbacks: Iterable[Callable[[dict[str, Any]], None]] = (),
        console: Console | None = None,
    ) -> None:
        if isinstance(config, RunConfig):
            self.config, self.run_config = config.trainer, config.to_dict()
        else:
            self.config = config
            self.run_config = {"trainer": RunConfig(trainer=config).to_dict()["trainer"]}
        self.loss_fn = loss_fn or MultiTaskCrossEntropy(
            self.config.tasks, self.config.label_smoothing
        )
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
        optimizer = torch.optim.AdamW(
            _param_groups(model, config.weight_decay),
            lr=config.lr,
            betas=tuple(config.betas),
            fused=device.type in ("cpu", "cuda"),
        )
        steps_per_epoch = train.num_batches(config.batch_size)
        schedule = WarmupCosineSchedule(
            config.lr,
            round(config.warmup_epochs * steps_per_epoch),
            config.epochs * steps_per_epoch,
            config.min_lr_ratio,
        )
        state = _LoopState()
        torch.manual_seed(config.seed)
        checkpoint_path = self._resume_path(resume)
        if checkpoint_path is not None:
            state = self._restore(checkpoint_path, model, optimizer, device)
        if getattr(model, "time_pooled", False):
            # the head reads only time-means: average the frames once, not in every batch
            train = train.time_mean()
            val = val.time_mean() if val is not None else None
        if device.type == "cuda" and config.features_on_device:
            train = train.to(device)
            val = val.to(device) if val is not None else None
        self._rewrite_metrics(state.history)

        with self._progress() as progress:
            epochs_bar = progress.add_task("epochs", total=config.epochs, completed=state.epoch)
            while state.epoch < config.epochs and not state.stopped_early:
                record = self._run_epoch(
                    model, optimizer, schedule, train, val, state, device, progress
                )
                self._end_epoch(model, optimizer, schedule, train, state, record, val is not None)
                progress.update(epochs_bar, advance=1, description=_summary(record))
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
        schedule: WarmupCosineSchedule,
        train: HeadData,
        val: HeadData | None,
        state: _LoopState,
        device: torch.device,
        progress: Progress,
    ) -> dict[str, Any]:
        config = self.config
        started = time.perf_counter()
        # The shuffle depends only on (seed, epoch), so a resumed run sees the same batches.
        order = torch.Generator().manual_seed(config.seed * 1_000_003 + state.epoch)
        batches_bar = progress.add_task(
            f"epoch {state.epoch + 1}", total=train.num_batches(config.batch_size)
        )
        model.train()
        loss_sum = torch.zeros((), device=device)
        lr = schedule(state.step)
        for batch in train.batches(config.batch_size, shuffle=True, generator=order, device=device):
            lr = schedule(state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, config.precision):
                loss = self.loss_fn(model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            state.step += 1
            loss_sum += loss.detach().float() * len(batch["index"])
            progress.advance(batches_bar)
        progress.remove_task(batches_bar)
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "lr": lr,
            "train_loss": loss_sum.item() / len(train),
        }
        if val is not None:
            record.update(
                evaluate(
                    model,
                    val,
                    tasks=config.tasks,
                    loss_fn=self.loss_fn,
                    batch_size=config.eval_batch_size,
                    device=device,
                    precision=config.precision,
                )
            )
        record["seconds"] = round(time.perf_counter() - started, 3)
        return record

    def _end_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: WarmupCosineSchedule,
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
                scheduler_state=dataclasses.asdict(schedule) | {"step": state.step},
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
        if config.monitor not in record:
            raise KeyError(
                f"monitored metric {config.monitor!r} is not computed; "
                f"metrics: {sorted(k for k in record if k != 'epoch')}"
            )
        score = float(record[config.monitor])
        sign = -1.0 if config.monitor.endswith("loss") else 1.0
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
        current = RunConfig(trainer=self.config).to_dict()["trainer"]
        changed = {
            key: (saved.get(key), value)
            for key, value in current.items()
            if key not in _RESUMABLE_CHANGES and saved.get(key) != value
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

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.config.progress,
            transient=True,
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
        )


def _summary(record: Mapping[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.3f}"]
    if "val_top1_mean" in record:
        parts.append(f"val top1 {record['val_top1_mean']:.3f}")
    return "  ".join(parts)


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
