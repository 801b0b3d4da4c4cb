"""A synthetic multimodal feature store: the distillation part of `egofeat demo`, and its test.

One synthetic kitchen of pre-extracted features in three modalities, as the multimodal
distillation reference has them: RGB, optical flow and audio. Each segment's action has a hidden
content ``z``. Annotators name it with a verb and a noun drawn from ``p(label | z)``: narrations
are ambiguous, so the labels are noisy. Flow and audio show ``z`` under a little noise (the
teachers' modalities, at training time only); RGB shows only part of it, under more noise and
among distractor dimensions (the cheap stream the student keeps at test time).

Teachers trained on the labels, one linear head per modality, cannot fit the labels' noise from
their low-dimensional views: their logits approach ``p(label | z)``, a better target than the
labels themselves for a student that has few labelled segments of a weaker view. That is what
distillation exists for (generalised distillation with privileged information); on the demo's
video store, whose labels are exactly what its pixels show, teachers fit their training
segments and their logits there are the labels again, so a distilled student cannot gain.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from egofeat.config import DistillConfig
from egofeat.heads import load_config
from egofeat.pipelines.distill import run_distill
from egofeat.pipelines.train import train_run
from egofeat.recipes import get_recipe
from egofeat.store import FeatureStore
from egofeat.store.names import image_stream

__all__ = ["DEMO_RECIPE", "MODALITIES", "distill_demo", "write_synthetic_modalities"]

VERBS = ("take", "put", "open", "close", "wash", "cut")
NOUNS = ("plate", "cup", "knife", "pan", "bowl")
#: modality -> (dimensions of z shown, noise on them, distractor dimensions)
MODALITIES: dict[str, tuple[int, float, int]] = {"rgb": (6, 0.5, 40), "flow": (8, 0.3, 0), "audio": (8, 0.6, 0)}
LATENT = 8
#: how sharply the content decides its labels (higher: less ambiguous narrations)
SHARPNESS = 4.0
FRAMES = 2
ENCODER = "synthetic"
#: the student's recipe, and what the demo changes of it: the reference's 1e-4 fine-tunes a
#: pretrained Swin-T; a linear head trained from scratch on frozen features needs a larger step
DEMO_RECIPE = "mmdistill-iccv23"
RECIPE_OVERRIDES = {"trainer.lr": 1e-3}
_RUNTIME = {"device": "cpu", "progress": False, "precision": "fp32"}
_TEACHER_TRAINER = {"lr": 0.01, "batch_size": 32, "epochs": 30, "patience": None, **_RUNTIME}


def write_synthetic_modalities(store_path: str | Path, *, sizes: Mapping[str, int] | None = None,
                               seed: int = 0) -> FeatureStore:
    """The store of the module docstring: splits of ``sizes`` segments (default 300 train, 900
    val; ten segments a video), streams ``synthetic/rgb``, ``synthetic/flow``, ``synthetic/audio``
    of two frames each; deterministic for a ``seed`` (a store written before is completed, not
    written again)."""
    sizes = dict(sizes or {"train": 300, "val": 900})
    rng = np.random.default_rng(seed)
    rows = sum(sizes.values())
    latent = rng.normal(size=(rows, LATENT))

    def annotated(classes: int) -> np.ndarray:
        logits = latent @ rng.normal(size=(LATENT, classes)) * SHARPNESS / LATENT**0.5
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        return (probs.cumsum(1) > rng.random((rows, 1))).argmax(1)

    verbs, nouns = annotated(len(VERBS)), annotated(len(NOUNS))
    ids = [f"s{i:05d}" for i in range(rows)]
    videos = [f"v{i // 10:03d}" for i in range(rows)]
    store = FeatureStore.open(store_path, create=True)
    store.add_segments(pl.DataFrame({
        "dataset": "synthetic", "split": [split for split, n in sizes.items() for _ in range(n)],
        "segment_id": ids, "video_id": videos, "participant_id": "P01",
        "verb": [VERBS[v] for v in verbs], "verb_class": verbs,
        "noun": [NOUNS[n] for n in nouns], "noun_class": nouns,
    }))
    for modality, (shown, noise, distractors) in MODALITIES.items():
        view = np.concatenate([latent[:, :shown] + noise * rng.normal(size=(rows, shown)),
                               rng.normal(size=(rows, distractors))], axis=1)
        if distractors:  # spread the content over every dimension
            view = view @ np.linalg.qr(rng.normal(size=(view.shape[1], view.shape[1])))[0]
        stream = store.create_stream(image_stream(ENCODER, modality), dim=view.shape[1], frames_per_row=FRAMES,
                                     provenance={"encoder": ENCODER, "synthetic": f"{modality}: {shown} of "
                                                 f"{LATENT} content dimensions, noise {noise}, "
                                                 f"{distractors} distractors"})
        frames = view[:, None] + 0.1 * rng.normal(size=(rows, FRAMES, view.shape[1]))
        if stream.is_committed("all"):  # written by an earlier run
            continue
        with stream.part_writer("all") as part:
            for i, segment in enumerate(ids):
                part.add(segment, videos[i], frames[i])
        stream.consolidate()
    return store


def distill_demo(out: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Train one linear teacher per modality, distil them into an RGB student with the
    ``mmdistill-iccv23`` recipe (its rate raised, :data:`RECIPE_OVERRIDES`) and train its CE-only
    twin (the same recipe and rows, labels instead of teachers); returns ``distill_gain``: verb,
    noun and action top-1 of both on the val split, and the gain."""
    out = Path(out)
    store = write_synthetic_modalities(out / "store", seed=seed)
    teachers = []
    for modality in MODALITIES:
        config = load_config(layers=[{"head": {"name": "linear"}, "trainer": {**_TEACHER_TRAINER, "seed": seed},
                                      "data": {"streams": [image_stream(ENCODER, modality)]}}])
        teachers.append(train_run(store.path, out / "teachers" / modality, config)["run"])
    recipe = get_recipe(DEMO_RECIPE, "distill")
    values = {**RECIPE_OVERRIDES, **{f"trainer.{k}": v for k, v in _RUNTIME.items()},
              "trainer.seed": seed, "task.name": "distill", "data.streams": [image_stream(ENCODER, "rgb")]}
    student = load_config(values=values, layers=[recipe.layer()])
    result = run_distill(DistillConfig(teachers=teachers, out=out / "student", store=str(store.path),
                                       student=student), run_info=recipe.record())
    distilled, ce_only = result["student"]["metrics"], result["baseline"]["metrics"]
    gain = {}
    for task in ("verb", "noun", "action"):
        key = f"all_{task}_accuracy_at_1"
        gain[task] = {"distilled": distilled[key], "ce_only": ce_only[key], "gain": distilled[key] - ce_only[key]}
    return {
        "store": str(store.path), "student_stream": image_stream(ENCODER, "rgb"), "teachers": teachers,
        "recipe": DEMO_RECIPE, "recipe_overrides": RECIPE_OVERRIDES, "seed": seed,
        "student": result["student"]["run"], "ce_only": result["baseline"]["run"],
        "report": result.get("report", {}).get("markdown"), **gain,
    }
