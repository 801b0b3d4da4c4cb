"""Synthetic two-domain feature stores: the X-MIC part of `egofeat demo`, and its tests.

Two synthetic kitchens of pre-extracted features in the ``tiny`` encoder's text space: the
second shares some classes with the first, has new ones, and a stronger scene nuisance. An
adapter that reads the nuisance from the full frame can remove it, which is X-MIC's mechanism.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from egofeat.config import XMICRunConfig
from egofeat.pipelines.xmic import run_xmic
from egofeat.store import FeatureStore
from egofeat.store.names import NAMES_TEMPLATE, image_stream

__all__ = ["SYNTHETIC_DOMAINS", "write_synthetic_domains", "xmic_demo"]

#: Two synthetic kitchens: the second shares some classes with the first, and has new ones.
SYNTHETIC_DOMAINS = {
    "kitchen-a": {
        "noun": ("knife", "plate", "spoon", "pan", "bowl", "cup", "sponge", "onion"),
        "verb": ("take", "put", "open", "close", "wash", "cut"),
    },
    "kitchen-b": {
        "noun": ("knife", "plate", "spoon", "pan", "hammer", "wrench", "drill", "brush"),
        "verb": ("take", "put", "open", "tighten", "sand", "paint"),
    },
}
_NUISANCE_WEIGHTS = {"kitchen-a": (0.5, 2.0), "kitchen-b": (1.0, 2.5)}  # the target's is stronger


def write_synthetic_domains(
    store_path: str | Path,
    *,
    encoder: str = "tiny",
    bins: int = 4,
    per_bin: int = 3,
    videos: Mapping[str, int] | None = None,
    segments_per_video: int = 24,
    seed: int = 0,
    native_frames: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Two synthetic domains of pre-extracted features, written with the store API.

    The image features of a segment live in the text space of ``encoder`` (as CLIP's do):
    hand crops are its noun's plus its verb's bare-name text embedding (unit length), plus a
    per-video *nuisance* (lighting, scene) and frame noise; full frames are dominated by the
    nuisance. The nuisance is a non-negative mix of two directions, each resembling a class of
    each domain, so zero-shot CLIP confuses videos with those classes; the second domain's
    nuisance is stronger. An adapter that reads the nuisance from the full frame can remove it,
    which is X-MIC's mechanism. Streams ``<encoder>/hand`` and ``<encoder>/full`` are stored
    oversampled (``bins`` x ``per_bin`` frames); ``kitchen-a`` has train and val videos,
    ``kitchen-b`` val videos. With ``native_frames=(low, high)`` they hold instead every
    "native" frame of a segment, ``low`` to ``high`` of them (sampling ``native``, 30 fps), as
    ``--sampling native`` extracts for native-frame jitter.
    """
    from egofeat.extract.encoders import class_prompt_embeddings, create_encoder

    model = create_encoder(encoder)
    text = {
        d: {
            t: torch.nn.functional.normalize(
                torch.from_numpy(class_prompt_embeddings(model, names)), dim=-1
            )
            for t, names in tasks.items()
        }
        for d, tasks in SYNTHETIC_DOMAINS.items()
    }
    a, b = SYNTHETIC_DOMAINS
    directions = torch.nn.functional.normalize(
        torch.stack(
            [torch.relu(text[a][t][-1]) + torch.relu(text[b][t][-1]) for t in ("noun", "verb")]
        ),
        dim=-1,
    )
    store = FeatureStore.open(store_path, create=True)
    sampling = ({"kind": "oversampled", "num_frames": bins, "per_bin": per_bin}
                if native_frames is None else {"kind": "native", "fps": 30.0})
    provenance = {
        "encoder": model.name,
        "weights_hash": model.weights_hash,
        "synthetic": "two-domain X-MIC features",
        "sampling": sampling,
    }
    streams = {
        crop: store.create_stream(
            image_stream(encoder, crop),
            dim=model.text_dim,
            provenance=provenance,
            frames_per_row=bins * per_bin if native_frames is None else None,
        )
        for crop in ("hand", "full")
    }
    generator = torch.Generator().manual_seed(seed)
    counts = dict(videos or {f"{a}/train": 32, f"{a}/val": 4, f"{b}/val": 8})
    for key, n_videos in counts.items():
        dataset, split = key.split("/")
        rows = _synthetic_rows(dataset, split, n_videos, segments_per_video, generator)
        store.add_segments(rows)
        noun, verb = (
            torch.from_numpy(rows[f"{t}_class"].to_numpy().copy()) for t in ("noun", "verb")
        )
        semantic = text[dataset]["noun"][noun] + text[dataset]["verb"][verb]
        low, high = _NUISANCE_WEIGHTS[dataset]
        video = torch.from_numpy(
            rows["video_id"].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
        )
        weights = low + (high - low) * torch.rand(n_videos, 2, generator=generator)
        nuisance = (weights @ directions)[video][:, None]
        frames = bins * per_bin if native_frames is None else native_frames[1]
        counts_per_row = (torch.full((rows.height,), frames) if native_frames is None else
                          torch.randint(native_frames[0], native_frames[1] + 1, (rows.height,),
                                        generator=generator))
        shape = (rows.height, frames, model.text_dim)
        features = {
            "hand": semantic[:, None] + nuisance + 0.3 * torch.randn(shape, generator=generator),
            "full": 0.3 * semantic[:, None]
            + 2 * nuisance
            + 0.3 * torch.randn(shape, generator=generator),
        }
        for crop, stream in streams.items():
            if stream.is_committed(key.replace("/", "-")):  # written by an earlier run
                continue
            with stream.part_writer(key.replace("/", "-")) as writer:
                for i, (segment_id, video_id) in enumerate(
                    rows.select("segment_id", "video_id").iter_rows()
                ):
                    writer.add(segment_id, video_id, features[crop][i, : counts_per_row[i]].numpy())
    for stream in streams.values():
        stream.consolidate()
    return {
        "store": str(store.path),
        "streams": [s.name for s in streams.values()],
        "encoder": encoder,
        "source": a,
        "target": b,
        "domains": {d: {t: list(n) for t, n in v.items()} for d, v in SYNTHETIC_DOMAINS.items()},
    }


def _synthetic_rows(
    dataset: str, split: str, n_videos: int, per_video: int, generator: torch.Generator
) -> pl.DataFrame:
    vocabulary = SYNTHETIC_DOMAINS[dataset]
    n = n_videos * per_video
    labels = {
        t: torch.randint(len(names), (n,), generator=generator).numpy()
        for t, names in vocabulary.items()
    }
    video = [f"{dataset}-{split}-{i // per_video:02d}" for i in range(n)]
    return pl.DataFrame(
        {
            "dataset": [dataset] * n,
            "split": [split] * n,
            "segment_id": [f"{v}_{i % per_video}" for i, v in enumerate(video)],
            "video_id": video,
            "start_sec": [float(i % per_video) * 2 for i in range(n)],
            "end_sec": [float(i % per_video) * 2 + 1.5 for i in range(n)],
            "verb": [vocabulary["verb"][c] for c in labels["verb"]],
            "verb_class": labels["verb"].astype(np.int64),
            "noun": [vocabulary["noun"][c] for c in labels["noun"]],
            "noun_class": labels["noun"].astype(np.int64),
        }
    )


def xmic_demo(out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """`egofeat demo`'s X-MIC part: :func:`write_synthetic_domains`, then :func:`run_xmic` from
    the first kitchen to the second (small, fast settings); shared/novel accuracy per method."""
    out = Path(out)
    store = write_synthetic_domains(out / "store")
    report = run_xmic(
        XMICRunConfig(
            store=store["store"],
            out=out,
            source=store["source"],
            target=store["target"],
            encoder=store["encoder"],
            trainer={"epochs": 15, "lr": 3e-3, "batch_size": 64, "warmup_epochs": 1},
            device="cpu",
            progress=progress,
            # the features are built from bare-name embeddings: zero-shot reads those too
            zero_shot_templates=dict.fromkeys(store["domains"], NAMES_TEMPLATE),
        )
    )
    keys = {"shared": "shared_accuracy", "novel": "novel_accuracy", "hm": "harmonic_mean_accuracy"}
    tasks = {
        task: {
            method: {name: scores["cross"]["exact"][key] for name, key in keys.items()}
            for method, scores in result["methods"].items()
        }
        for task, result in report["tasks"].items()
    }
    return {
        "source": report["source"],
        "target": report["target"],
        "report": str(out / "report.md"),
        "plots": report["plots"],
        "tasks": tasks,
        "seconds": report["seconds"],
        "trainable_parameters": {t: r["trainable_parameters"] for t, r in report["tasks"].items()},
    }
