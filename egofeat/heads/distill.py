"""Knowledge distillation from a teacher ensemble into a student head.

Follows multimodal distillation for egocentric action recognition (Radevski et al., ICCV 2023;
``reference/heads.md`` §1): several frozen unimodal teachers (e.g. heads on RGB, flow, audio or
hand-crop streams) are combined by a weighted sum of their *pre-softmax* logits, separately per
task, and a student on one cheap stream is trained to match the ensemble's softened distribution.

Logits travel as dicts keyed by task (``{"verb": (B, 97), "noun": (B, 300)}``), the same shape as
a head's output and as a batch's labels (``{"verb": (B,), "noun": (B,)}``). Teacher logits are
constants: they are detached here, so they can come from a cached teacher-logit stream or from
teachers run under ``no_grad``.

Cached teacher logits are stored one row per segment, *teacher-major*: the row of N teachers
over tasks ``(verb: 97, noun: 300)`` is ``[t0 verb | t0 noun | t1 verb | t1 noun | ...]``, of
width ``N · ΣC`` (:func:`pack_teacher_logits`, :func:`unpack_teacher_logits`). Loaded as a
one-frame stream of a :class:`~egofeat.heads.data.HeadData`, such a row reaches the loss in
``batch["features"]``, where :class:`DistillationLoss` reads it.

The ``distill`` training task (:class:`DistillTask`) trains any registered head on its own
streams with that loss; its options (``[task]`` table) name the teacher-logit stream and the
ensemble's weighting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from egofeat.heads.data import UNLABELLED, HeadData
from egofeat.heads.registry import register_task
from egofeat.heads.tasks import Task

__all__ = [
    "WEIGHTINGS",
    "DistillTask",
    "DistillationLoss",
    "dataset_weights",
    "distillation_loss",
    "ensemble_logits",
    "kd_kl",
    "pack_teacher_logits",
    "per_sample_weights",
    "unpack_teacher_logits",
]

Logits = Mapping[str, Tensor]
Weighting = Literal["mean", "per-sample", "dataset"]

#: How teachers are weighted in the ensemble: a uniform mean of logits, per-sample
#: ``softmin(CE / tau_w)`` weights (training batches; needs labels), or fixed weights calibrated
#: on held-out data (:func:`dataset_weights`).
WEIGHTINGS: tuple[str, ...] = ("mean", "per-sample", "dataset")


def kd_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, averaged over the batch.

    Computed from log-softmaxes (``batchmean`` reduction: the sum over classes, mean over
    samples). The ``T²`` factor keeps gradient magnitudes comparable across temperatures.
    """
    student_log = F.log_softmax(student / temperature, dim=-1)
    teacher_log = F.log_softmax(teacher.detach() / temperature, dim=-1)
    kl = F.kl_div(student_log, teacher_log, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def distillation_loss(
    student_logits: Logits,
    teacher_logits: Logits,
    labels: Mapping[str, Tensor] | None = None,
    *,
    temperature: float = 1.0,
    w_distill: float = 1.0,
    w_gt: float = 0.0,
    tasks: Sequence[str] = ("verb", "noun"),
) -> Tensor:
    """Distillation objective, averaged over tasks.

    Per task: ``w_distill · T² · KL(teacher ‖ student) + w_gt · CE(student, label)``. The
    defaults (``T = 1``, ``w_distill = 1``, ``w_gt = 0``) are the reference's: pure distillation,
    labels unused.

    Args:
        student_logits: ``{task: (B, C)}`` student outputs.
        teacher_logits: ``{task: (B, C)}`` teacher (ensemble) logits, e.g. from
            :func:`ensemble_logits`.
        labels: ``{task: (B,)}`` class indices, -1 for an unlabelled row (skipped by the
            cross-entropy); required when ``w_gt > 0``.
        temperature: Softening temperature ``T`` of both distributions.
        w_distill: Weight of the distillation term.
        w_gt: Weight of the ground-truth cross-entropy term.
        tasks: Tasks to average over.
    """
    if w_gt and labels is None:
        raise ValueError("distillation_loss: w_gt > 0 needs labels; pass the batch's labels")
    if not tasks:
        raise ValueError("distillation_loss: tasks is empty")
    total = 0.0
    for task in tasks:
        student = _task(student_logits, task, "student_logits")
        teacher = _task(teacher_logits, task, "teacher_logits")
        if student.shape != teacher.shape:
            raise ValueError(
                f"task {task!r}: student logits {tuple(student.shape)} and teacher logits "
                f"{tuple(teacher.shape)} differ; both need the same batch and class count"
            )
        loss = w_distill * kd_kl(student, teacher, temperature) if w_distill else 0.0
        if w_gt:
            target = _task(labels, task, "labels").long()
            loss = loss + w_gt * F.cross_entropy(student, target, ignore_index=UNLABELLED)
        total = total + loss
    return total / len(tasks)


def ensemble_logits(
    teacher_logits: Sequence[Logits],
    weights: Sequence[float] | Tensor | Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Weighted sum of teacher logits (before softmax), per task.

    Args:
        teacher_logits: One ``{task: (B, C)}`` dict per teacher; every teacher covers the tasks of
            the first.
        weights: ``None`` for a uniform average; a sequence or ``(N,)`` tensor of per-teacher
            weights; a ``(B, N)`` tensor of per-sample weights; or a dict of such tensors per
            task (what :func:`per_sample_weights` and :func:`dataset_weights` return). Weights
            are normalized to sum to one over teachers.

    Returns:
        ``{task: (B, C)}`` ensemble logits (detached).
    """
    if not teacher_logits:
        raise ValueError("ensemble_logits: no teachers given")
    count = len(teacher_logits)
    out = {}
    for task in teacher_logits[0]:
        logits = [
            _task(t, task, f"teacher_logits[{i}]").detach() for i, t in enumerate(teacher_logits)
        ]
        shapes = {tuple(x.shape) for x in logits}
        if len(shapes) != 1:
            raise ValueError(f"task {task!r}: teachers' logits differ in shape: {sorted(shapes)}")
        task_weights = _task(weights, task, "weights") if isinstance(weights, Mapping) else weights
        # A sum over the few teachers: a reduction over a (B, C, N) stack with N last is
        # several times slower, and this runs on every training batch.
        if task_weights is None:
            out[task] = sum(logits[1:], logits[0]) / count
            continue
        w = _normalized_weights(task_weights, count, logits[0].shape[0], task).to(logits[0])
        out[task] = sum(
            (w[:, i, None] * x for i, x in enumerate(logits[1:], 1)), w[:, :1] * logits[0]
        )
    return out


def per_sample_weights(
    teacher_logits: Sequence[Logits],
    labels: Mapping[str, Tensor],
    tau_w: float = 1.0,
) -> dict[str, Tensor]:
    """Per-sample teacher weights ``softmin(CE(teacher, label) / tau_w)`` over teachers.

    A teacher that is right about a sample gets more say on it. Labels are needed, so this
    applies to training batches only; an unlabelled row (-1) weighs its teachers uniformly.

    Returns:
        ``{task: (B, N)}`` weights summing to one over the ``N`` teachers.
    """
    losses = _teacher_losses(teacher_logits, labels)
    return {task: torch.softmax(-ce / tau_w, dim=-1) for task, ce in losses.items()}


def dataset_weights(
    teacher_logits: Sequence[Logits],
    labels: Mapping[str, Tensor],
    tau_w: float = 1.0,
) -> dict[str, Tensor]:
    """Fixed teacher weights ``softmin(mean CE / tau_w)`` from a calibration set.

    Pass the teachers' logits on a held-out part of the training split (samples the teachers
    were not fitted on), so a teacher that memorized its training data does not look better
    than it is.

    Returns:
        ``{task: (N,)}`` weights summing to one over the ``N`` teachers.
    """
    losses = _teacher_losses(teacher_logits, labels)
    weights = {}
    for task, ce in losses.items():
        labelled = _task(labels, task, "labels") != UNLABELLED
        if not bool(labelled.any()):
            raise ValueError(f"dataset_weights: no labelled {task!r} rows to calibrate on")
        weights[task] = torch.softmax(-ce[labelled.to(ce.device)].mean(dim=0) / tau_w, dim=-1)
    return weights


def pack_teacher_logits(
    teacher_logits: Sequence[Mapping[str, Tensor | np.ndarray]], num_classes: Mapping[str, int]
) -> np.ndarray:
    """Teachers' logits as cached rows: float32 ``(B, N · ΣC)``, teacher-major, tasks in
    ``num_classes`` order (see the module docstring)."""
    if not teacher_logits:
        raise ValueError("pack_teacher_logits: no teachers given")
    blocks = []
    for i, logits in enumerate(teacher_logits):
        for task, count in num_classes.items():
            block = np.asarray(_task(logits, task, f"teacher_logits[{i}]"), dtype=np.float32)
            if block.ndim != 2 or block.shape[1] != count:
                raise ValueError(
                    f"teacher_logits[{i}][{task!r}] has shape {block.shape}; expected "
                    f"(rows, {count})"
                )
            blocks.append(block)
    rows = {block.shape[0] for block in blocks}
    if len(rows) != 1:
        raise ValueError(f"teachers' logits have different row counts: {sorted(rows)}")
    return np.concatenate(blocks, axis=1)


def unpack_teacher_logits(
    packed: Tensor, num_classes: Mapping[str, int]
) -> list[dict[str, Tensor]]:
    """Split cached rows ``(B, N · ΣC)`` (or a one-frame ``(B, 1, N · ΣC)`` stream batch) into
    one ``{task: (B, C)}`` dict per teacher; the inverse of :func:`pack_teacher_logits`."""
    if packed.ndim == 3 and packed.shape[1] == 1:
        packed = packed[:, 0]
    width = sum(num_classes.values())
    if packed.ndim != 2 or width == 0 or packed.shape[1] % width:
        raise ValueError(
            f"teacher logits of shape {tuple(packed.shape)} are not rows of N teachers x "
            f"{width} classes ({dict(num_classes)})"
        )
    sizes = list(num_classes.values()) * (packed.shape[1] // width)
    blocks = iter(packed.split(sizes, dim=1))
    return [{task: next(blocks) for task in num_classes} for _ in range(packed.shape[1] // width)]


class DistillationLoss:
    """The trainer's ``loss_fn(outputs, batch)`` for distillation from cached teacher logits.

    The batch carries the teachers' logits as the one-frame feature stream ``teacher_stream``
    (rows as :func:`pack_teacher_logits` lays them out); the student head does not read it. Per
    batch the teachers are combined with :func:`ensemble_logits` and the student is scored
    with :func:`distillation_loss`.

    Args:
        teacher_stream: Name of the stream holding the teachers' logits in ``batch["features"]``.
        num_classes: The teachers' tasks and class counts, in their cached order.
        weighting: ``"mean"`` (uniform), ``"per-sample"`` (``softmin(CE / tau_w)`` per sample,
            from the batch's labels) or ``"dataset"`` (the fixed ``teacher_weights``).
        teacher_weights: ``{task: (N,)}`` weights for ``"dataset"``, e.g. from
            :func:`dataset_weights`.
        tau_w: Temperature of the per-sample softmin.
        temperature, w_distill, w_gt, tasks: As in :func:`distillation_loss`.
    """

    def __init__(
        self,
        teacher_stream: str,
        num_classes: Mapping[str, int],
        *,
        weighting: Weighting = "mean",
        teacher_weights: Mapping[str, Tensor] | None = None,
        tau_w: float = 1.0,
        temperature: float = 1.0,
        w_distill: float = 1.0,
        w_gt: float = 0.0,
        tasks: Sequence[str] = ("verb", "noun"),
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if (weighting == "dataset") != (teacher_weights is not None):
            raise ValueError("teacher_weights go with weighting='dataset', and only with it")
        if temperature <= 0 or tau_w <= 0:
            raise ValueError(f"temperature and tau_w must be positive, got {temperature}, {tau_w}")
        if w_distill < 0 or w_gt < 0 or w_distill + w_gt == 0:
            raise ValueError(
                f"w_distill and w_gt must be non-negative, not both 0; got {w_distill}, {w_gt}"
            )
        missing = [task for task in tasks if task not in num_classes]
        if missing:
            raise KeyError(f"the teachers predict {sorted(num_classes)}, not task(s) {missing}")
        self.teacher_stream = teacher_stream
        self.num_classes = dict(num_classes)
        self.weighting = weighting
        self.teacher_weights = dict(teacher_weights) if teacher_weights is not None else None
        self.tau_w = tau_w
        self.temperature = temperature
        self.w_distill = w_distill
        self.w_gt = w_gt
        self.tasks = tuple(tasks)

    def teachers(self, batch: Mapping) -> list[dict[str, Tensor]]:
        """The batch's per-teacher logits ``[{task: (B, C)}, ...]``."""
        features = batch["features"]
        if self.teacher_stream not in features:
            raise KeyError(
                f"the batch has no teacher-logit stream {self.teacher_stream!r} (it has "
                f"{sorted(features)}); load it into the HeadData beside the student's streams"
            )
        return unpack_teacher_logits(features[self.teacher_stream].float(), self.num_classes)

    def __call__(self, outputs: Mapping[str, Tensor], batch: Mapping) -> Tensor:
        teachers = [{task: t[task] for task in self.tasks} for t in self.teachers(batch)]
        weights: Mapping[str, Tensor] | None = self.teacher_weights
        if self.weighting == "per-sample":
            weights = per_sample_weights(teachers, batch["labels"], self.tau_w)
        target = ensemble_logits(teachers, weights)
        student = {task: outputs[task].float() for task in self.tasks}
        return distillation_loss(
            student,
            target,
            batch["labels"],
            temperature=self.temperature,
            w_distill=self.w_distill,
            w_gt=self.w_gt,
            tasks=self.tasks,
        )


def _teacher_losses(teacher_logits: Sequence[Logits], labels: Mapping[str, Tensor]) -> dict:
    if not teacher_logits:
        raise ValueError("no teachers given")
    losses = {}
    for task in teacher_logits[0]:
        target = _task(labels, task, "labels").long()
        losses[task] = torch.stack(
            [
                F.cross_entropy(
                    _task(t, task, f"teacher_logits[{i}]").detach(),
                    target,
                    reduction="none",
                    ignore_index=UNLABELLED,
                )
                for i, t in enumerate(teacher_logits)
            ],
            dim=-1,
        )  # (B, N)
    return losses


def _normalized_weights(
    weights: Sequence[float] | Tensor | None, count: int, batch: int, task: str
) -> Tensor:
    if weights is None:
        return torch.full((batch, count), 1.0 / count)
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.ndim == 1:
        w = w.expand(batch, -1)
    if w.shape != (batch, count):
        raise ValueError(
            f"task {task!r}: weights of shape {tuple(w.shape)} do not fit {count} teachers and a "
            f"batch of {batch}; give (N,) per-teacher or (B, N) per-sample weights"
        )
    if bool((w < 0).any()) or bool((w.sum(dim=-1) <= 0).any()):
        raise ValueError(f"task {task!r}: teacher weights must be non-negative with a positive sum")
    return w / w.sum(dim=-1, keepdim=True)


def _task(logits: Mapping[str, Tensor] | None, task: str, what: str) -> Tensor:
    if logits is None or task not in logits:
        have = sorted(logits) if logits is not None else []
        raise KeyError(f"{what} has no entry for task {task!r}; it holds {have}")
    return logits[task]


@register_task("distill")
class DistillTask(Task):
    """A student head on its own streams, trained on cached teacher logits (and labels).

    The teacher-logit stream is loaded on the same rows as the student's streams (the head does
    not read it, and checkpoints keep only the student's streams' provenance).
    """

    class Options(BaseModel):
        """``[task]`` options of a distillation run (see :class:`DistillationLoss`)."""

        model_config = ConfigDict(extra="forbid")

        teacher_stream: str = ""
        teacher_classes: dict[str, int] = Field(default_factory=dict)
        weighting: Literal["mean", "per-sample", "dataset"] = "mean"
        teacher_weights: dict[str, list[float]] | None = None
        tau_w: float = Field(1.0, gt=0)
        temperature: float = Field(1.0, gt=0)
        w_distill: float = Field(1.0, ge=0)
        w_gt: float = Field(0.0, ge=0)

        @model_validator(mode="after")
        def _some_loss(self) -> DistillTask.Options:
            if self.w_distill + self.w_gt == 0:
                raise ValueError("w_distill and w_gt must not both be 0: nothing would be learned")
            return self

    @property
    def training_streams(self) -> list[str]:
        if not self.options.teacher_stream:
            raise ValueError("the distill task needs task.teacher_stream: the cached teacher logits "
                             "(egofeat distill --teachers RUN[,RUN] writes them)")
        return [*self.config.data.streams, self.options.teacher_stream]

    def loss(self, model: Any, train: HeadData) -> DistillationLoss:
        options = self.options
        weights = options.teacher_weights
        return DistillationLoss(
            options.teacher_stream, options.teacher_classes, weighting=options.weighting,
            teacher_weights=None if weights is None else {k: torch.tensor(v) for k, v in weights.items()},
            tau_w=options.tau_w, temperature=options.temperature, w_distill=options.w_distill,
            w_gt=options.w_gt, tasks=self.config.trainer.tasks,
        )  # fmt: skip
