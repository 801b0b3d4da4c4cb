"""Inference with heads: device and precision, outputs over a HeadData, classification metrics.

:func:`predict` runs a model over every row of a :class:`~egofeat.heads.data.HeadData` (eval
mode, batches gathered from RAM) and returns its outputs as numpy arrays; :func:`evaluate` is
the classification validation (loss, top-1/top-5 per task, mean top-1) the trainer runs each
epoch unless a task brings its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from egofeat.heads.data import UNLABELLED, HeadData

__all__ = [
    "DeviceError",
    "action_accuracy",
    "LossFn",
    "autocast",
    "evaluate",
    "grad_scaler",
    "predict",
    "resolve_device",
    "resolve_precision",
    "topk_accuracy",
]

LossFn = Callable[[Mapping[str, Tensor], dict[str, Any]], Tensor]


class DeviceError(ValueError):
    """A device that this machine does not have (e.g. ``cuda`` without a CUDA GPU)."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; a CUDA device this machine lacks is a
    :class:`DeviceError` saying so (rather than a failure deep inside torch)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {device!r} asked for, but this machine has no CUDA GPU: "
                              "use --device cpu (or auto)")
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"device {device!r} asked for, but this machine has {count} CUDA "
                              f"GPU(s): cuda:0..cuda:{count - 1}")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``. ``"auto"`` is bf16 where the hardware multiplies
    bf16 natively (CUDA GPUs with bf16, CPUs with AMX, where it trains heads ~2x faster), fp32
    elsewhere; ``"fp16"`` (mixed precision with a gradient scaler) is fp16 on CUDA and ``"auto"``
    elsewhere."""
    if precision in ("fp32", "bf16"):
        return precision
    if precision not in ("auto", "fp16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if device.type == "cuda":
        if precision == "fp16":
            return "fp16"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        capabilities = getattr(torch.cpu, "get_capabilities", dict)()
        return "bf16" if capabilities.get("amx_bf16", False) else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 or fp16 autocast when ``precision`` resolves to one on ``device``, else a no-op
    context."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The gradient scaler of a run: active for fp16 (whose small gradients underflow without
    it), a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=resolve_precision(precision, device) == "fp16")


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
    ``{prefix}top1_mean`` and, when verb and noun are both scored, ``{prefix}action_top1``
    (both top-1 right, among rows labelled for both: what the distillation reference selects
    its checkpoint on); accuracies in percent, as every report and the CLI print them.
    """
    tasks = tuple(tasks)
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
        accuracy = {k: 100 * v for k, v in topk_accuracy(outputs[task], data.labels[task].cpu()).items()}
        metrics[f"{prefix}{task}_top1"] = accuracy[1]
        metrics[f"{prefix}{task}_top5"] = accuracy[5]
        top1.append(accuracy[1])
    metrics[f"{prefix}top1_mean"] = float(np.mean(top1))
    if "verb" in tasks and "noun" in tasks:
        metrics[f"{prefix}action_top1"] = 100 * action_accuracy(
            outputs["verb"], outputs["noun"], data.labels["verb"].cpu(), data.labels["noun"].cpu())
    return metrics


def action_accuracy(verb_logits: Tensor, noun_logits: Tensor, verbs: Tensor, nouns: Tensor) -> float:
    """Fraction of rows (labelled for verb and noun) whose top-1 verb and top-1 noun are both
    right; NaN without such rows."""
    labelled = (verbs != UNLABELLED) & (nouns != UNLABELLED)
    if not bool(labelled.any()):
        return float("nan")
    right = (verb_logits.argmax(1) == verbs) & (noun_logits.argmax(1) == nouns)
    return right[labelled].float().mean().item()
