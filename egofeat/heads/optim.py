"""The optimizer and learning-rate schedule of a training run (AdamW and timm's schedulers)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from egofeat.heads.config import TrainConfig

__all__ = ["DasslWarmup", "create_optimizer", "create_scheduler", "param_groups", "scheduled_lr"]

#: "constant" as a step schedule that never decays
_NEVER = 1e12


def param_groups(model: nn.Module, weight_decay: float, *, decay_all: bool = False) -> list[dict[str, Any]]:
    """Weight decay on matrices only (biases and norm scales are not decayed), or on every
    trainable parameter with ``decay_all`` (as X-MIC and the distillation reference do)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if decay_all or param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def create_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (or SGD with momentum) over the model's trainable parameters, as ``config`` says."""
    groups = param_groups(model, config.weight_decay, decay_all=config.decay_all_parameters)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas),
                             fused=device.type in ("cpu", "cuda"))


def create_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Any:
    """timm's scheduler for ``config.schedule``: linear warm-up from ``warmup_lr`` over
    ``warmup_epochs`` (or Dassl's warm-up with ``warmup_rule="dassl"``, see
    :class:`DasslWarmup`), then cosine / linear (poly, power 1) decay to ``lr * min_lr_ratio``,
    a constant rate, or steps of ``decay_rate`` at ``decay_epochs``. Its time unit is the
    optimizer step, or the epoch with ``step_on_epochs``; read it with :func:`scheduled_lr`."""
    from timm.scheduler import (
        CosineLRScheduler,
        MultiStepLRScheduler,
        PolyLRScheduler,
        StepLRScheduler,
    )

    per = 1 if config.step_on_epochs else steps_per_epoch
    warmup = round(config.warmup_epochs * per)
    total = config.epochs * per
    common = {
        "warmup_t": warmup,
        "warmup_lr_init": config.warmup_lr,
        "warmup_prefix": True,
        "t_in_epochs": config.step_on_epochs,
    }
    if config.schedule == "constant":
        scheduler = StepLRScheduler(optimizer, decay_t=_NEVER, decay_rate=1.0, **common)
    elif config.schedule == "step":
        # timm applies milestone m from t = m - 1 on; torch's MultiStepLR (the C1 baselines'),
        # from the m-th epoch (0-based t = m): hence the + 1
        milestones = [round(epoch * per) + 1 for epoch in config.decay_epochs]
        scheduler = MultiStepLRScheduler(optimizer, decay_t=milestones, decay_rate=config.decay_rate,
                                         **common)
    else:
        decay = {"t_initial": max(1, total - warmup), "lr_min": config.lr * config.min_lr_ratio}
        scheduler = (PolyLRScheduler(optimizer, power=1.0, **decay, **common)
                     if config.schedule == "linear" else CosineLRScheduler(optimizer, **decay, **common))
    if config.warmup_rule == "dassl" and warmup > 0:
        return DasslWarmup(scheduler, warmup, config.warmup_lr)
    return scheduler


class DasslWarmup:
    """Dassl's ``LinearWarmupScheduler`` (X-MIC's warm-up) in front of a timm scheduler: the
    rate is ``warmup_lr`` at ``t = 0``, ``lr * t / warmup_t`` for ``0 < t < warmup_t``, then
    the wrapped schedule's (which starts after its own warm-up, ``warmup_prefix``)."""

    def __init__(self, scheduler: Any, warmup_t: int, warmup_lr: float) -> None:
        self.scheduler = scheduler
        self.optimizer = scheduler.optimizer
        self.warmup_t = warmup_t
        self.warmup_lr = warmup_lr
        self.base_lrs = list(scheduler.base_values)  # timm's: each group's configured rate

    def step(self, epoch: int) -> None:
        self.scheduler.step(epoch)
        self._warm(epoch)

    def step_update(self, num_updates: int) -> None:
        self.scheduler.step_update(num_updates)
        self._warm(num_updates)

    def _warm(self, t: int) -> None:
        if t >= self.warmup_t:
            return
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = self.warmup_lr if t == 0 else base * t / self.warmup_t


def scheduled_lr(scheduler: Any, config: TrainConfig, *, step: int, epoch: int) -> float:
    """Set and return the learning rate at optimizer ``step`` of (0-based) ``epoch``."""
    if config.step_on_epochs:
        scheduler.step(epoch)
    else:
        scheduler.step_update(step)
    return float(scheduler.optimizer.param_groups[0]["lr"])
