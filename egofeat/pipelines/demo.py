"""`egofeat demo`: the whole flow on a small synthetic egocentric dataset, on a laptop CPU.

It writes MP4s (PyAV), EPIC-format annotations whose verbs and nouns look different, and
hand-object detections; extracts full-frame and hand-crop streams with the built-in ``tiny``
encoder; then trains and evaluates heads on the cached features. Its X-MIC part is a two-domain
feature store in the ``tiny`` encoder's text space, trained on one kitchen and scored on another;
its distillation part (``distill_gain``) a three-modality feature store whose RGB student,
distilled from RGB, flow and audio teachers with the ``mmdistill-iccv23`` recipe, is compared
with its CE-only twin (:mod:`egofeat.pipelines.synthetic_modalities` says why that store).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from egofeat.config import ExtractConfig
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.heads import RunConfig, load_config
from egofeat.pipelines.executors import execute
from egofeat.pipelines.synthetic_domains import xmic_demo
from egofeat.pipelines.synthetic_modalities import distill_demo
from egofeat.pipelines.train import train_run
from egofeat.store import FeatureStore

#: the demo's head: an MLP on full-frame + hand-crop features (see `egofeat heads`)
DEMO_HEAD = "mlp"
DEMO_EPOCHS = 40
DEMO_TRAINER = {"lr": 0.01, "patience": None, "batch_size": 64, "epochs": DEMO_EPOCHS, "device": "cpu",
                "progress": False, "tasks": ["verb", "noun"]}


def demo_config(streams: list[str]) -> RunConfig:
    """The demo head's run config on ``streams``."""
    return load_config(layers=[{"head": {"name": DEMO_HEAD}, "trainer": DEMO_TRAINER,
                                "data": {"streams": streams}}])


def run_demo(out: str | Path = "egofeat-demo", *, progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Build the synthetic dataset and store under ``out``; returns a JSON-able summary."""
    started = time.perf_counter()
    out = Path(out)
    dataset_dir = out / "dataset"
    if (dataset_dir / "annotations" / "EPIC_100_validation.csv").exists():
        from egofeat.extract.synthetic import SYNTHETIC_NOUNS, SYNTHETIC_VERBS

        annotations = dataset_dir / "annotations"
        verbs, nouns = SYNTHETIC_VERBS, SYNTHETIC_NOUNS
    else:
        dataset = write_synthetic_dataset(dataset_dir, n_videos=12, segments_per_video=30)
        annotations, verbs, nouns = dataset.annotations_dir, dataset.verbs, dataset.nouns
    options = ExtractConfig(
        annotations=[annotations / "EPIC_100_train.csv", annotations / "EPIC_100_validation.csv"],
        videos=dataset_dir, store=str(out / "store"), crop="both", boxes=dataset_dir, frames=8,
        encoders=["tiny"], workers=workers, progress=progress,
    )
    extraction = execute(options)
    run = train_run(extraction.store, out / "runs" / DEMO_HEAD, demo_config(["tiny/full", "tiny/hand"]))
    runs = [{"name": DEMO_HEAD, "path": run["run"], "streams": run["streams"],
             "metrics": {k: v for k, v in run["metrics"].items() if k.startswith("all_") and "count" not in k},
             "chance": {"verb": 100 / len(verbs), "noun": 100 / len(nouns)},
             "plots": str(Path(run["run"]) / "plots")}]
    return {
        "out": str(out),
        "dataset": {"path": str(dataset_dir), "verbs": list(verbs), "nouns": list(nouns)},
        "store": extraction.store,
        "streams": FeatureStore.open(extraction.store).stream_names(),  # extracted and derived
        "extract": extraction.to_dict(),
        "runs": runs,
        "xmic": xmic_demo(out / "xmic", progress=False),
        "distill_gain": distill_demo(out / "distill"),
        "seconds": round(time.perf_counter() - started, 1),
    }
