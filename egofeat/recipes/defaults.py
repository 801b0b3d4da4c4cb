"""egofeat's own defaults, named, so that a published recipe can be compared with them.

Each ``egofeat-*`` recipe lists what a run of that head (or command) gets when nothing is set:
the trainer's defaults (``egofeat/heads/config.py``), the head's (``egofeat/heads/models.py``,
``egofeat/heads/retrieval.py``), the distillation task's (``egofeat/heads/distill.py``) and the
in-context sampler's (``egofeat/pipelines/neighbors.py``). Applying one changes nothing but the
run's record; ``tests/test_recipes.py`` checks they still equal the defaults in the code.
"""

from __future__ import annotations

from typing import Any

from egofeat.recipes import Recipe, Setting, register_recipe

CONFIG = "egofeat/heads/config.py"
FROZEN_HEADS = "heads on frozen features: many segments a step, a few passes, early stop on val"


def _settings(path: str, owner: str, values: dict[str, Any], notes: dict[str, str] | None = None) -> tuple[Setting, ...]:
    notes = notes or {}
    return tuple(Setting(key, value, f"egofeat: {path} ({owner}.{key.rsplit('.', 1)[-1]})", notes.get(key, ""))
                 for key, value in values.items())


TRAINER = _settings(CONFIG, "TrainConfig", {
    "trainer.optimizer": "adamw", "trainer.betas": (0.9, 0.999), "trainer.lr": 1e-3,
    "trainer.weight_decay": 1e-4, "trainer.decay_all_parameters": False, "trainer.schedule": "cosine",
    "trainer.warmup_epochs": 1.0, "trainer.warmup_lr": 0.0, "trainer.min_lr_ratio": 0.01,
    "trainer.step_on_epochs": False, "trainer.epochs": 20, "trainer.batch_size": 512,
    "trainer.grad_clip": 5.0, "trainer.label_smoothing": 0.0, "trainer.tasks": ("verb", "noun"),
    "trainer.seed": 0, "trainer.patience": 5, "trainer.monitor": None, "trainer.restore_best": True,
}, {
    "trainer.lr": FROZEN_HEADS, "trainer.batch_size": FROZEN_HEADS, "trainer.patience": FROZEN_HEADS,
    "trainer.decay_all_parameters": "biases and norm scales are not decayed",
    "trainer.monitor": "None: the task's metric (classification: val_top1_mean, the mean of verb and noun top-1)",
})

HEADS: dict[str, dict[str, Any]] = {
    "linear": {"dropout": 0.0},
    "mlp": {"hidden": 512, "dropout": 0.5},
    "tsn": {"dropout": 0.5, "bins": None, "init_std": None},
    "trn": {"bottleneck": 256, "hidden": 256, "dropout": 0.5, "max_subsets": 3, "eval_subsets": 3,
            "eval_seed": 0, "bins": None, "init_std": None},
    "tsm": {"width": 256, "depth": 2, "mlp_ratio": 2.0, "dropout": 0.5, "fold_div": 8,
            "block_dropout": None, "bins": None, "init_std": None},
    "retrieval": {"embed_dim": 256, "video_head": "linear", "text_head": "linear", "loss": "infonce",
                  "temperature": 0.05, "margin": 0.2, "adaptive_margin": False,
                  "positive_threshold": 0.1, "same_video_negatives": True, "chunk_sec": 60.0},
}
HEAD_NOTES = {
    "head.bins": "None: the stored frames as they are, in training and evaluation",
    "head.init_std": "None: torch's default initialisation",
}
SUMMARIES = {
    "linear": "linear probe on the time-mean of the frames",
    "mlp": "one GELU hidden layer on the time-mean of the frames",
    "tsn": "TSN: per-frame dropout, a shared linear layer, average consensus",
    "trn": "multi-scale TRN over the stored frames",
    "tsm": "TSM-style shift-MLP head over the stored frames",
    "retrieval": "video-text projectors trained with InfoNCE",
}

for head, options in HEADS.items():
    path = "egofeat/heads/retrieval.py" if head == "retrieval" else "egofeat/heads/models.py"
    register_recipe(Recipe(
        name=f"egofeat-{head}",
        command="train",
        summary=f"egofeat's defaults for --head {head}: {SUMMARIES[head]}",
        reference="egofeat",
        settings=(Setting("head.name", head, f"egofeat: {path} (@register_head({head!r}))"),
                  *_settings(path, head, {f"head.{k}": v for k, v in options.items()}, HEAD_NOTES),
                  *TRAINER),
    ))

register_recipe(Recipe(
    name="egofeat-distill",
    command="distill",
    summary="egofeat's defaults for `egofeat distill`: a linear student, pure KL to the teachers' mean "
            "logits (T = 1), the default trainer",
    reference="egofeat",
    settings=(
        Setting("head.name", "linear", "egofeat: egofeat/heads/config.py (HeadConfig.name)"),
        Setting("head.dropout", 0.0, "egofeat: egofeat/heads/models.py (linear.dropout)"),
        *_settings("egofeat/heads/distill.py", "DistillTask.Options", {
            "task.weighting": "mean", "task.tau_w": 1.0, "task.temperature": 1.0, "task.w_distill": 1.0,
            "task.w_gt": 0.0}),
        *TRAINER,
    ),
))

register_recipe(Recipe(
    name="egofeat-neighbors",
    command="neighbors",
    summary="egofeat's defaults for `egofeat neighbors`: EILEV's buckets and quotas, ranked by feature "
            "similarity inside them (a kNN variant, not EILEV's random sampler)",
    reference="egofeat",
    settings=_settings("egofeat/pipelines/neighbors.py", "NeighborOptions", {
        "sampler": "similarity-ranked", "k": 16, "verb_ratio": 0.5, "order": "shuffle", "seed": 0,
    }, {"sampler": "the examples most similar to the query inside each bucket, then the most similar "
                   "others; EILEV draws them at random (recipe eilev-incontext)"}),
))
