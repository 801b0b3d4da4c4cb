"""X-MIC runs: class-name text streams, adapters trained on one dataset, scored on another.

:func:`run_xmic` is the cross-dataset protocol of X-MIC (``reference/xmic.md`` §4) for one
direction, source -> target:

1. optionally extract both datasets' visual streams (``[[extract]]`` jobs of a TOML file,
   oversampled so that training can jitter frames inside bins);
2. write the class-name **text streams** of both vocabularies (:func:`write_text_streams`):
   X-MIC reads the bare class names (template ``"{}"``, not normalized), zero-shot CLIP reads
   ``"a photo of a {}"`` (EPIC) / ``"a photo of a {} action"`` (Ego4D);
3. per task (noun, verb): train an X-MIC adapter through the heads trainer on all source
   classes, with X-MIC's recipe; the checkpoint is selected on a held-out part of the *source*
   train set (or, when asked, on the target val set: that is the reported split, so it is
   labelled as optimistic everywhere);
4. score X-MIC, zero-shot CLIP and a linear probe on the target val set over the target
   vocabulary: top-1 and class-mean accuracy over all / shared / novel classes for the exact
   and semantic splits, the harmonic mean of shared and novel, and within- vs cross-dataset
   accuracy (source val set, source vocabulary);
5. write ``report.json``, ``report.md`` and shared-vs-novel bar charts.

Text streams are named ``<encoder>/text/<dataset>/<task>-xmic`` and ``...-zeroshot``; their
rows are ``<task>:<class id>`` with the encoded text in the manifest's ``text`` column.
:func:`create_xmic_head` is how ``egofeat train --head xmic`` gets its classifier from them.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from egofeat import sources
from egofeat.eval import harmonic_mean, mean_class_accuracy, per_class_accuracy
from egofeat.eval import shared_novel_metrics as score_shared_novel
from egofeat.heads import HeadData, Trainer, create_head, predict
from egofeat.heads.config import DataConfig, HeadConfig, RunConfig, TrainConfig
from egofeat.heads.data import UNLABELLED
from egofeat.heads.xmic import (
    XMIC_BATCH_SIZE,
    XMIC_BETAS,
    XMIC_EPOCHS,
    XMIC_LR,
    XMIC_WARMUP_EPOCHS,
    XMIC_WEIGHT_DECAY,
    XMICClassifier,
    gather_frames,
    oversampled_bin_indices,
    zero_shot_logits,
)
from egofeat.store import FeatureStore, LoadedStream, PartAlreadyCommittedError

__all__ = [
    "XMIC_TEMPLATE",
    "ZERO_SHOT_TEMPLATES",
    "XMIC_TRAINER",
    "XMICRunOptions",
    "class_splits",
    "class_texts",
    "create_xmic_head",
    "dataset_vocabulary",
    "dense_to_bins",
    "load_class_text",
    "load_domain",
    "load_extract_jobs",
    "match_classes",
    "recipe_overrides",
    "report_markdown",
    "run_xmic",
    "stream_layout",
    "text_stream_name",
    "write_synthetic_domains",
    "write_text_streams",
    "xmic_demo",
]

XMIC_TEMPLATE = "{}"
"""X-MIC encodes the bare class name."""
ZERO_SHOT_TEMPLATES = {"epic100": "a photo of a {}", "ego4d": "a photo of a {} action"}
"""X-MIC's zero-shot CLIP prompts; other datasets use the EPIC one."""
#: X-MIC's training recipe as trainer settings: AdamW (0.9, 0.98), weight decay 0.01, 15 epochs,
#: linear warm-up over 5 then a constant rate (the trainer warms up per step, X-MIC per epoch,
#: and it does not decay biases and norm scales, which X-MIC does), no clipping, no early stop.
XMIC_TRAINER: dict[str, Any] = {
    "epochs": XMIC_EPOCHS,
    "lr": XMIC_LR,
    "betas": list(XMIC_BETAS),
    "weight_decay": XMIC_WEIGHT_DECAY,
    "warmup_epochs": XMIC_WARMUP_EPOCHS,
    "min_lr_ratio": 1.0,
    "batch_size": XMIC_BATCH_SIZE,
    "grad_clip": None,
    "patience": None,
}
Selection = Literal["source-holdout", "target-val"]
SPLIT_KINDS = ("exact", "semantic")
_XMIC_DATASETS = {"epic100": "epic", "ego4d": "ego4d"}  # egofeat name -> X-MIC split-file name
_NOT_IN_VOCABULARY = -1e9  # linear-probe logit of target classes the source lacks


# ---- vocabularies and text streams -----------------------------------------------------------


def class_texts(dataset: str, names: Sequence[str]) -> list[str]:
    """Class names as the text encoder reads them (X-MIC's forms).

    ``epic100``: the readable form (``"board:chopping"`` -> ``"chopping board"``). ``ego4d``:
    the taxonomy label before its parenthesised synonyms (``"adjust_(regulate,_...)"`` ->
    ``"adjust"``), kept whole where labels share that base (``"nut_(food)"``, ``"nut_(tool)"``),
    so that no two classes read the same. Everywhere underscores become spaces.
    """
    names = list(names)
    if dataset == "epic100":
        names = [sources.epic_readable_name(name) for name in names]
    elif dataset == "ego4d":
        bases = [name.split("(")[0].strip("_ ") for name in names]
        counts = Counter(bases)
        names = [b if counts[b] == 1 else n for b, n in zip(bases, names, strict=True)]
    return [name.replace("_", " ").strip() for name in names]


def dataset_vocabulary(
    store: FeatureStore,
    dataset: str,
    task: str,
    *,
    epic_classes: Path | None = None,
    splits_dir: Path | None = None,
) -> tuple[str, ...]:
    """Class names of ``dataset``'s ``task``, indexed by class id.

    ``epic100``: ``EPIC_100_{task}_classes.csv`` in ``epic_classes``; ``ego4d``: X-MIC's Ego4D
    vocabulary from the split lists in ``splits_dir``; any other dataset: the names in the
    store's segment table (``{task}`` beside ``{task}_class``), which must name every class id.
    """
    if dataset == "epic100":
        if epic_classes is None:
            raise ValueError(
                "EPIC classes need --epic-classes: the folder of EPIC_100_*_classes.csv"
            )
        return sources.Vocabulary.from_epic_csv(
            Path(epic_classes) / f"EPIC_100_{task}_classes.csv"
        ).names
    if dataset == "ego4d":
        if splits_dir is None:
            raise ValueError("Ego4D classes need --splits-dir: the folder of X-MIC's split lists")
        return sources.ego4d_vocabulary(splits_dir, task).names
    table = _segments(store, dataset)
    pairs = table.select(f"{task}_class", task).drop_nulls().group_by(f"{task}_class", task).len()
    # the most frequent name of each class id wins (later rows overwrite earlier ones)
    named = {cls: name for cls, name, _ in pairs.sort("len", task).iter_rows()}
    missing = [i for i in range(max(named, default=-1) + 1) if i not in named]
    if not named or missing:
        raise ValueError(
            f"the {dataset!r} segments name no {task} class for ids {missing[:5] or 'any'}: the "
            f"class names of a dataset without a vocabulary file come from its {task!r} column"
        )
    return tuple(named[i] for i in range(len(named)))


def text_stream_name(
    encoder: str, dataset: str, task: str, style: str, template: str | None = None
) -> str:
    """``<encoder slug>/text/<dataset>/<task>-<style>``, style ``xmic`` or ``zeroshot``; a
    template other than the style's default adds a hash of it (``-zeroshot-1a2b3c4d``)."""
    from egofeat.pipelines.extract import encoder_slug

    default = XMIC_TEMPLATE if style == "xmic" else _zero_shot_template(dataset, None)
    suffix = "" if template in (None, default) else f"-{_sha([template])[:8]}"
    return f"{encoder_slug(encoder)}/text/{dataset}/{task}-{style}{suffix}"


def write_text_streams(
    store: FeatureStore,
    encoder: str,
    vocabularies: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    xmic_template: str = XMIC_TEMPLATE,
    zero_shot_templates: Mapping[str, str] | None = None,
    device: str = "cpu",
) -> dict[str, str]:
    """Class-name embeddings of every (dataset, task) vocabulary, in both styles.

    Args:
        encoder: a dual encoder (``clip:...``, ``tiny``); only its text side is run.
        vocabularies: dataset -> task -> class names by id (see :func:`dataset_vocabulary`).
        xmic_template: X-MIC's text, ``"{}"`` (bare names).
        zero_shot_templates: dataset -> zero-shot prompt (default :data:`ZERO_SHOT_TEMPLATES`).

    Returns:
        ``"<dataset>/<task>-<style>"`` -> stream name (:func:`text_stream_name`). Existing
        streams are kept; one of another encoder's weights is refused (the store says why).
    """
    from egofeat.extract.encoders import class_prompt_embeddings, create_encoder

    model = create_encoder(encoder, device=device)
    written = {}
    for dataset, tasks in vocabularies.items():
        templates = {
            "xmic": xmic_template,
            "zeroshot": _zero_shot_template(dataset, zero_shot_templates),
        }
        for task, names in tasks.items():
            texts = class_texts(dataset, names)
            for style, template in templates.items():
                name = text_stream_name(encoder, dataset, task, style, template)
                provenance = {
                    "encoder": model.name,
                    "weights_hash": model.weights_hash,
                    "text": model.text_provenance(),
                    "template": template,
                    "normalized": False,
                    "items": f"{dataset} {task} classes",
                    "vocabulary_sha": _sha(texts),
                }
                stream = store.create_stream(
                    name,
                    dim=model.text_dim,
                    provenance=provenance,
                    kind="text",
                    dtype="float32",
                    frames_per_row=1,
                )
                if not stream.committed_parts():
                    embeddings = class_prompt_embeddings(model, texts, [template])
                    _write_rows(stream, task, names, texts, embeddings)
                written[f"{dataset}/{task}-{style}"] = name
    return written


def _write_rows(
    stream: Any, task: str, names: Sequence[str], texts: Sequence[str], embeddings: np.ndarray
) -> None:
    writer = stream.part_writer("classes")
    for i, (name, text, vector) in enumerate(zip(names, texts, embeddings, strict=True)):
        writer.add(f"{task}:{i}", "", vector, extra={"text": text, "class_name": name})
    try:
        writer.commit()
    except PartAlreadyCommittedError:  # a concurrent run wrote the same stream first
        return
    stream.consolidate()


def load_class_text(store: FeatureStore, name: str) -> tuple[Tensor, list[str]]:
    """A class text stream as ``(C, D)`` float32 embeddings and the encoded texts, by class id."""
    stream = store.stream(name)
    loaded = stream.load()
    ids = [int(segment_id.rpartition(":")[2]) for segment_id in loaded.segment_ids]
    if sorted(ids) != list(range(len(ids))):
        raise ValueError(
            f"text stream {name!r} does not hold classes 0..{len(ids) - 1} exactly once"
        )
    order = np.argsort(ids)
    manifest = stream.manifest().collect()
    has_text = "text" in manifest.columns
    texts = dict(zip(manifest["segment_id"], manifest["text"], strict=True)) if has_text else {}
    features = torch.from_numpy(np.ascontiguousarray(loaded.features[order, 0], dtype=np.float32))
    return features, [str(texts.get(loaded.segment_ids[i], "")) for i in order]


def _zero_shot_template(dataset: str, templates: Mapping[str, str] | None) -> str:
    templates = {**ZERO_SHOT_TEMPLATES, **(templates or {})}
    return templates.get(dataset, ZERO_SHOT_TEMPLATES["epic100"])


def _sha(items: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(items).encode()).hexdigest()[:12]


# ---- data ------------------------------------------------------------------------------------


def load_domain(
    store: FeatureStore,
    dataset: str,
    split: str,
    streams: Sequence[str],
    vocabularies: Mapping[str, Sequence[str]],
    *,
    bins: int = 16,
    dense_per_bin: int = 3,
) -> HeadData:
    """One (dataset, split) of the store as :class:`HeadData`, labelled in ``vocabularies``.

    Labels come from ``{task}_class``, else from the ``{task}`` name looked up in the
    vocabulary (Ego4D segments extracted without class ids); others are ``UNLABELLED``.
    Segments without an ok row in every stream are left out. Densely sampled streams are
    resampled to ``bins`` equal bins of ``dense_per_bin`` evenly spaced frames (the middle one
    is the bin centre for odd counts), so that the model can jitter inside bins.
    """
    table = _segments(store, dataset).filter(pl.col("split") == split)
    if table.height == 0:
        raise ValueError(f"the store has no {dataset!r} segments in split {split!r}")
    ok = None
    for name in streams:
        have = store.stream(name).manifest().filter(pl.col("status") == "ok").select("segment_id")
        ok = have.collect() if ok is None else ok.join(have.collect(), on="segment_id")
    kept = table.join(ok.unique(), on="segment_id", how="semi")
    if kept.height == 0:
        raise ValueError(
            f"no {dataset!r} {split!r} segment has ok features in all of {list(streams)}"
        )
    ids = kept["segment_id"].to_list()
    features = {}
    for name in streams:
        loaded = store.stream(name).load(segment_ids=ids)
        array = (
            loaded.features
            if loaded.offsets is None
            else dense_to_bins(loaded, bins, dense_per_bin)
        )
        features[name] = torch.from_numpy(np.ascontiguousarray(array))
    labels = {
        task: torch.from_numpy(_labels(kept, task, names, dataset))
        for task, names in vocabularies.items()
    }
    return HeadData(
        features=features,
        labels=labels,
        segment_ids=np.asarray(ids),
        meta=kept.select(
            [c for c in ("segment_id", "dataset", "split", "video_id") if c in kept.columns]
        ),
        num_classes={task: len(names) for task, names in vocabularies.items()},
        class_names={task: list(names) for task, names in vocabularies.items()},
        provenance={name: dict(store.stream(name).info.provenance) for name in streams},
    )


def dense_to_bins(loaded: LoadedStream, bins: int, per_bin: int) -> np.ndarray:
    """``(N, bins * per_bin, D)`` frames of a densely sampled stream: ``per_bin`` evenly spaced
    frames in each of ``bins`` equal bins of every segment (short segments repeat frames)."""
    lengths = np.diff(loaded.offsets)
    positions = (np.arange(bins)[:, None] + (np.arange(per_bin)[None, :] + 0.5) / per_bin).ravel()
    index = np.floor(positions[None, :] * lengths[:, None] / bins).astype(np.int64)
    index = np.minimum(index, lengths[:, None] - 1)
    return loaded.features[loaded.offsets[:-1, None] + index]


def stream_layout(
    store: FeatureStore, streams: Sequence[str], bins: int = 16, dense_per_bin: int = 3
) -> tuple[int, int]:
    """``(bins, frames per bin)`` shared by the streams, from their sampling provenance.

    ``oversampled`` streams give ``(num_frames, per_bin)``; ``uniform``/``random`` ones
    ``(num_frames, 1)``; dense ones ``(bins, dense_per_bin)`` (see :func:`load_domain`);
    streams without a sampling record split their frames into ``bins`` when they can.
    """
    layouts = {}
    for name in streams:
        info = store.stream(name).info
        sampling = info.provenance.get("sampling") or {}
        kind = sampling.get("kind")
        if kind == "oversampled":
            layouts[name] = (int(sampling["num_frames"]), int(sampling["per_bin"]))
        elif kind in ("uniform", "random"):
            layouts[name] = (int(sampling["num_frames"]), 1)
        elif kind == "dense" or info.frames_per_row is None:
            layouts[name] = (bins, dense_per_bin)
        elif kind == "clip":
            raise ValueError(
                f"stream {name!r} holds clips (a video encoder's): X-MIC reads frame streams"
            )
        else:
            frames = int(info.frames_per_row)
            layouts[name] = (bins, frames // bins) if frames % bins == 0 else (frames, 1)
    if len(set(layouts.values())) > 1:
        raise ValueError(
            f"the streams are sampled differently (bins, frames per bin): {layouts}; "
            "extract them with the same --frames / --sampling / --per-bin"
        )
    return next(iter(layouts.values()))


def _labels(table: pl.DataFrame, task: str, names: Sequence[str], dataset: str) -> np.ndarray:
    by_name = {name: i for i, name in enumerate(names)}
    ids = (
        table[f"{task}_class"]
        if f"{task}_class" in table.columns
        else pl.Series([None] * table.height)
    )
    if task in table.columns:
        looked_up = table[task].replace_strict(by_name, default=None, return_dtype=pl.Int64)
        ids = ids.cast(pl.Int64).fill_null(looked_up)
    labels = ids.cast(pl.Int64).fill_null(UNLABELLED).to_numpy().copy()
    if labels.max(initial=UNLABELLED) >= len(names):
        raise ValueError(
            f"{dataset!r} has {task}_class {labels.max()} but its vocabulary {len(names)} "
            "classes: give the vocabulary the class ids refer to"
        )
    return labels


def _segments(store: FeatureStore, dataset: str) -> pl.DataFrame:
    table = store.segments().collect()
    found = sorted(table["dataset"].unique().to_list()) if table.height else []
    if dataset not in found:
        raise ValueError(f"the store has no {dataset!r} segments; its datasets are {found}")
    return table.filter(pl.col("dataset") == dataset)


# ---- shared and novel classes ----------------------------------------------------------------


def match_classes(
    source_texts: Sequence[str],
    target_texts: Sequence[str],
    target_ids: Sequence[int] | None = None,
) -> dict[int, int]:
    """Target class id -> source class id of the same class: equal names before any
    parenthesised synonyms (``"nut (food)"`` matches ``"nut"``), unique on both sides.
    ``target_ids`` limits the target classes considered (e.g. the exact-shared ones)."""

    def key(text: str) -> str:
        return text.split("(")[0].strip().lower()

    candidates = range(len(target_texts)) if target_ids is None else sorted(target_ids)
    source = Counter(key(t) for t in source_texts)
    target = Counter(key(target_texts[i]) for i in candidates)
    by_key = {key(t): i for i, t in enumerate(source_texts) if source[key(t)] == 1}
    return {
        i: by_key[key(target_texts[i])]
        for i in candidates
        if target[key(target_texts[i])] == 1 and key(target_texts[i]) in by_key
    }


def class_splits(
    source: str,
    target: str,
    task: str,
    source_names: Sequence[str],
    target_names: Sequence[str],
    splits_dir: Path | None,
) -> dict[str, tuple[list[int], list[int]]]:
    """Split kind -> (shared, novel) target class ids.

    EPIC <-> Ego4D with ``splits_dir``: X-MIC's exact and semantic lists. Otherwise one
    ``exact`` split: a target class is shared when the source has a class of the same name.
    """
    if splits_dir is not None and {source, target} == set(_XMIC_DATASETS):
        vocabulary = sources.Vocabulary.from_names(target_names)
        result = {}
        for kind in SPLIT_KINDS:
            split = sources.load_xmic_split(
                splits_dir,
                _XMIC_DATASETS[target],
                task,
                kind,  # type: ignore[arg-type]
                vocabulary=vocabulary,
            )
            result[kind] = (sorted(split.shared), sorted(split.novel))
        return result
    shared = sorted(
        match_classes(class_texts(source, source_names), class_texts(target, target_names))
    )
    return {"exact": (shared, sorted(set(range(len(target_names))) - set(shared)))}


# ---- the head for `egofeat train --head xmic` -------------------------------------------------


def recipe_overrides(
    head: str | None, config_file: Path | None, overrides: Sequence[str]
) -> list[str]:
    """``overrides`` preceded by X-MIC's recipe (:data:`XMIC_TRAINER`) for ``--head xmic``
    without a config file; a config file sets the trainer itself."""
    if head != "xmic" or config_file is not None:
        return list(overrides)
    return [f"trainer.{key}={json.dumps(value)}" for key, value in XMIC_TRAINER.items()] + list(
        overrides
    )


def create_xmic_head(store: FeatureStore, config: RunConfig, train: HeadData) -> XMICClassifier:
    """The ``xmic`` head of a run, its class embeddings loaded from the store's text streams.

    ``head.class_text`` names the text stream (``{task}`` and ``{dataset}`` are filled in);
    by default ``<prefix>/text/<dataset>/<task>-xmic`` (:func:`write_text_streams`), else
    ``<prefix>/text/<task>-prompts`` (``egofeat extract``), where ``<prefix>`` is the classified
    stream's first part. ``head.bins`` defaults to the streams' sampling bins.
    """
    kwargs = dict(config.head.kwargs)
    streams = config.data.streams
    classified = kwargs.get("classified") or streams[0]
    if not kwargs.get("bins"):
        layout_streams = [classified, *(kwargs.get("context") or streams)]
        kwargs["bins"] = stream_layout(store, layout_streams, bins=min(16, train.num_frames))[0]
    datasets = train.meta["dataset"].unique().to_list() if "dataset" in train.meta.columns else []
    dataset = config.data.dataset or (datasets[0] if len(datasets) == 1 else "")
    tasks = list(config.trainer.tasks)
    kwargs["class_text"] = _class_text_pattern(
        store, kwargs.get("class_text"), classified, dataset, tasks
    )
    model = create_head(
        "xmic",
        in_dims={name: train.in_dims[name] for name in streams},
        num_frames=train.num_frames,
        num_classes=train.num_classes,
        **kwargs,
    )
    for task in tasks:
        name = kwargs["class_text"].format(task=task, dataset=dataset)
        text, _ = load_class_text(store, name)
        if text.shape[0] != train.num_classes[task]:
            raise ValueError(
                f"text stream {name!r} holds {text.shape[0]} classes, the data "
                f"{train.num_classes[task]} {task} classes: use the dataset's vocabulary"
            )
        model.set_class_embeddings(task, text)
    return model


def _class_text_pattern(
    store: FeatureStore, given: str | None, classified: str, dataset: str, tasks: Sequence[str]
) -> str:
    prefix = classified.split("/")[0]
    candidates = (
        [given]
        if given
        else [f"{prefix}/text/{{dataset}}/{{task}}-xmic", f"{prefix}/text/{{task}}-prompts"]
    )
    for pattern in candidates:
        if all(store.has_stream(pattern.format(task=t, dataset=dataset)) for t in tasks):
            return pattern
    texts = [name for name in store.stream_names() if "/text/" in name]
    raise ValueError(
        f"no class text stream {candidates} for tasks {list(tasks)} of {dataset!r} (text streams: "
        f"{texts or 'none'}): write them with `egofeat run xmic --text-only` or set head.class_text"
    )


# ---- the cross-dataset run -------------------------------------------------------------------


@dataclass
class XMICRunOptions:
    """Everything `egofeat run xmic` is configured with (see ``egofeat run xmic --help``).

    Streams: ``classified`` (default ``<encoder>/hand``) and ``context`` (default
    ``<encoder>/hand, <encoder>/full``); the full-frame variant is ``classified=<e>/full,
    context=[<e>/full]``, the second-encoder variant lists e.g. DINO streams as ``context``.
    ``encoder`` is the dual encoder whose text side writes the class embeddings (default: the
    classified stream's encoder). ``extract``: extraction jobs (``ExtractOptions`` fields) run
    first into ``store``, oversampled with ``bins`` x ``per_bin`` frames.
    """

    store: Path
    out: Path
    source: str = "epic100"
    target: str = "ego4d"
    tasks: Sequence[str] = ("noun", "verb")
    encoder: str | None = None
    classified: str | None = None
    context: Sequence[str] | None = None
    splits_dir: Path | None = None
    epic_classes: Path | None = None
    train_split: str = "train"
    eval_split: str = "val"
    selection: Selection = "source-holdout"
    holdout: float = 0.1
    bins: int = 16
    per_bin: int = 3
    dense_per_bin: int = 3
    epochs: int = XMIC_EPOCHS
    lr: float = XMIC_LR
    batch_size: int = XMIC_BATCH_SIZE
    warmup_epochs: float = XMIC_WARMUP_EPOCHS
    width: int | None = None
    xmic_template: str = XMIC_TEMPLATE
    zero_shot_templates: Mapping[str, str] | None = None
    linear_probe: bool = True
    extract: Sequence[Mapping[str, Any]] = field(default_factory=list)
    text_only: bool = False
    device: str = "auto"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.selection not in ("source-holdout", "target-val"):
            raise ValueError(
                f"--select must be source-holdout or target-val, not {self.selection!r}"
            )
        if self.source == self.target:
            raise ValueError(
                f"source and target are both {self.source!r}: X-MIC runs cross datasets"
            )
        if not (self.encoder or self.classified):
            raise ValueError("give --encoder (e.g. clip:ViT-B-16:openai) or --classified STREAM")


def load_extract_jobs(path: str | Path) -> list[dict[str, Any]]:
    """The ``[[extract]]`` tables of a TOML file (``ExtractOptions`` fields per job)."""
    path = Path(path)
    try:
        jobs = tomllib.loads(path.read_text()).get("extract", [])
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise ValueError(f"{path}: write each extraction job as an [[extract]] table")
    return jobs


def run_xmic(options: XMICRunOptions) -> dict[str, Any]:
    """Extract (optional) -> text streams -> train -> evaluate, for one direction; the report."""
    started = time.perf_counter()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    for job in options.extract:
        _extract(options, job)
    store = FeatureStore.open(options.store)
    classified, context, encoder = _resolve_streams(store, options)
    datasets = (options.source, options.target)
    vocabularies = {
        d: {
            t: dataset_vocabulary(
                store, d, t, epic_classes=options.epic_classes, splits_dir=options.splits_dir
            )
            for t in options.tasks
        }
        for d in datasets
    }
    text = write_text_streams(
        store,
        encoder,
        vocabularies,
        xmic_template=options.xmic_template,
        zero_shot_templates=options.zero_shot_templates,
    )
    _check_joint_space(store, classified, text)
    report: dict[str, Any] = {
        "source": options.source,
        "target": options.target,
        "store": str(store.path),
        "classified": classified,
        "context": list(context),
        "text_streams": text,
    }
    if options.text_only:
        return report | {"seconds": round(time.perf_counter() - started, 1)}
    streams = list(dict.fromkeys([classified, *context]))
    bins, per_bin = stream_layout(store, streams, options.bins, options.dense_per_bin)
    load = {"bins": bins, "dense_per_bin": options.dense_per_bin}
    source_train = load_domain(
        store, options.source, options.train_split, streams, vocabularies[options.source], **load
    )
    target_eval = load_domain(
        store, options.target, options.eval_split, streams, vocabularies[options.target], **load
    )
    source_eval = None
    if _has_split(store, options.source, options.eval_split):
        source_eval = load_domain(
            store, options.source, options.eval_split, streams, vocabularies[options.source], **load
        )
    train, held = source_train.holdout(options.holdout, seed=options.seed, group_by="video_id")
    report |= {
        "selection": _selection_label(options),
        "layout": {"bins": bins, "frames_per_bin": per_bin},
        "rows": {
            "train": len(train),
            "holdout": len(held),
            "target_eval": len(target_eval),
            "source_eval": len(source_eval) if source_eval is not None else 0,
        },
        "tasks": {},
    }
    run = _Run(options, store, classified, list(context), bins, per_bin, text, vocabularies)
    for task in options.tasks:
        report["tasks"][task] = run.task(task, train, held, target_eval, source_eval)
    report["plots"] = _plot(out, report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(_finite(report), indent=1))
    (out / "report.md").write_text(report_markdown(report))
    return report


@dataclass
class _Run:
    """What every task of one run shares."""

    options: XMICRunOptions
    store: FeatureStore
    classified: str
    context: list[str]
    bins: int
    per_bin: int
    text: dict[str, str]
    vocabularies: dict[str, dict[str, Sequence[str]]]

    def embeddings(self, dataset: str, task: str, style: str) -> Tensor:
        return load_class_text(self.store, self.text[f"{dataset}/{task}-{style}"])[0]

    def task(
        self, task: str, train: HeadData, held: HeadData, target: HeadData, source: HeadData | None
    ) -> dict[str, Any]:
        options = self.options
        names = {d: self.vocabularies[d][task] for d in (options.source, options.target)}
        splits = class_splits(
            options.source,
            options.target,
            task,
            names[options.source],
            names[options.target],
            options.splits_dir,
        )
        methods: dict[str, dict[str, np.ndarray | None]] = {}
        methods["xmic"], trained = self.xmic(task, train, held, target, source)
        methods["zero_shot"] = {
            "cross": self.zero_shot(target, self.embeddings(options.target, task, "zeroshot")),
            "within": None
            if source is None
            else self.zero_shot(source, self.embeddings(options.source, task, "zeroshot")),
        }
        if options.linear_probe:
            methods["linear_probe"] = self.linear_probe(task, train, held, target, source, names)
        results = {
            name: _score(outputs, task, target, source, splits) for name, outputs in methods.items()
        }
        return {
            "classes": {"source": len(names[options.source]), "target": len(names[options.target])},
            "splits": {
                kind: {"shared": len(s), "novel": len(n)} for kind, (s, n) in splits.items()
            },
            **trained,
            "methods": results,
        }

    def xmic(
        self, task: str, train: HeadData, held: HeadData, target: HeadData, source: HeadData | None
    ) -> tuple[dict[str, np.ndarray | None], dict[str, Any]]:
        options = self.options
        torch.manual_seed(options.seed)
        model = create_head(
            "xmic",
            in_dims=train.in_dims,
            num_frames=train.num_frames,
            num_classes={task: train.num_classes[task]},
            classified=self.classified,
            context=self.context,
            bins=self.bins,
            width=options.width,
        )
        model.set_class_embeddings(task, self.embeddings(options.source, task, "xmic"))
        target_text = self.embeddings(options.target, task, "xmic")
        val = held
        if options.selection == "target-val":
            model.set_evaluation_vocabulary(task, target_text)
            val = target
        streams = list(dict.fromkeys([self.classified, *self.context]))
        trainer = self._trainer("xmic", task, streams, lr=options.lr, warmup=options.warmup_epochs)
        fit = trainer.fit(model, train, val)
        model.set_evaluation_vocabulary(task, target_text)
        cross = predict(model, target, device=options.device)[task]
        model.set_evaluation_vocabulary(task, None)
        within = None if source is None else predict(model, source, device=options.device)[task]
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"cross": cross, "within": within}, {
            "trainable_parameters": parameters,
            "best_epoch": fit.best_epoch,
            "run": str(Path(options.out) / f"xmic-{task}"),
        }

    def zero_shot(self, data: HeadData, text: Tensor) -> np.ndarray:
        features = data.features[self.classified]
        index = oversampled_bin_indices(len(data), self.bins, self.per_bin, train=False)
        return zero_shot_logits(gather_frames(features.float(), index), text).numpy()

    def linear_probe(
        self,
        task: str,
        train: HeadData,
        held: HeadData,
        target: HeadData,
        source: HeadData | None,
        names: dict[str, Sequence[str]],
    ) -> dict[str, np.ndarray | None]:
        """A linear classifier of the source classes on the classified stream's time-mean; on the
        target, the logits of matched classes (novel ones can never be predicted)."""
        options = self.options
        only = {self.classified: train.features[self.classified]}
        torch.manual_seed(options.seed)
        model = create_head(
            "linear",
            in_dims={self.classified: train.in_dims[self.classified]},
            num_frames=train.num_frames,
            num_classes={task: train.num_classes[task]},
        )
        self._trainer(
            "linear", task, [self.classified], lr=options.lr, warmup=options.warmup_epochs
        ).fit(model, replace(train, features=only), _only(held, self.classified))
        source_logits = predict(model, _only(target, self.classified), device=options.device)[task]
        matched = match_classes(
            class_texts(options.source, names[options.source]),
            class_texts(options.target, names[options.target]),
        )
        cross = np.full((len(target), len(names[options.target])), _NOT_IN_VOCABULARY, np.float32)
        cross[:, list(matched)] = source_logits[:, list(matched.values())]
        within = (
            None
            if source is None
            else predict(model, _only(source, self.classified), device=options.device)[task]
        )
        return {"cross": cross, "within": within}

    def _trainer(
        self, method: str, task: str, streams: Sequence[str], *, lr: float, warmup: float
    ) -> Trainer:
        options = self.options
        settings = {
            **XMIC_TRAINER,
            "epochs": options.epochs,
            "lr": lr,
            "warmup_epochs": warmup,
            "batch_size": options.batch_size,
            "betas": tuple(XMIC_BETAS),
            "tasks": (task,),
            "seed": options.seed,
            "device": options.device,
            "progress": options.progress,
        }
        config = RunConfig(
            head=HeadConfig(method),
            trainer=TrainConfig(**settings),
            data=DataConfig(streams=list(streams), dataset=options.source),
        )
        return Trainer(config, run_dir=Path(options.out) / f"{method}-{task}")


def _only(data: HeadData, stream: str) -> HeadData:
    return replace(data, features={stream: data.features[stream]})


def _score(
    outputs: Mapping[str, np.ndarray | None],
    task: str,
    target: HeadData,
    source: HeadData | None,
    splits: Mapping[str, tuple[list[int], list[int]]],
) -> dict[str, Any]:
    """Cross-dataset metrics per split kind (labelled target rows), within-dataset top-1 and
    class-mean accuracy on the source, and the harmonic mean of within and cross top-1."""
    labels = target.labels[task].numpy()
    labelled = labels != UNLABELLED
    cross = {
        kind: score_shared_novel(outputs["cross"][labelled], labels[labelled], shared, novel)
        for kind, (shared, novel) in splits.items()
    }
    result: dict[str, Any] = {"cross": cross, "within": None, "within_cross_harmonic_mean": None}
    if source is not None and outputs["within"] is not None:
        truth = source.labels[task].numpy()
        keep = truth != UNLABELLED
        logits = outputs["within"][keep]
        within = {
            "accuracy": float((logits.argmax(1) == truth[keep]).mean() * 100),
            "class_mean_accuracy": mean_class_accuracy(
                per_class_accuracy(logits, truth[keep], logits.shape[1])
            ),
            "count": int(keep.sum()),
        }
        result["within"] = within
        result["within_cross_harmonic_mean"] = harmonic_mean(
            within["accuracy"], cross["exact"]["all_accuracy"]
        )
    return result


def _resolve_streams(store: FeatureStore, options: XMICRunOptions) -> tuple[str, list[str], str]:
    from egofeat.pipelines.extract import encoder_slug

    prefix = encoder_slug(options.encoder) if options.encoder else None
    classified = options.classified or f"{prefix}/hand"
    context = list(
        options.context or ([f"{prefix}/hand", f"{prefix}/full"] if prefix else [classified])
    )
    for name in (classified, *context):
        store.stream(name)  # a missing stream is reported with the store's streams
    encoder = options.encoder or store.stream(classified).info.provenance.get("encoder")
    if not encoder:
        raise ValueError(
            f"stream {classified!r} records no encoder: pass --encoder for the text side"
        )
    return classified, context, encoder


def _check_joint_space(store: FeatureStore, classified: str, text: Mapping[str, str]) -> None:
    image_hash = store.stream(classified).info.provenance.get("weights_hash")
    text_hash = store.stream(next(iter(text.values()))).info.provenance.get("weights_hash")
    if image_hash and text_hash and image_hash != text_hash:
        raise ValueError(
            f"stream {classified!r} and the class texts come from different weights "
            f"({image_hash[:12]} vs {text_hash[:12]}): not a joint image-text space; "
            "pass the classified stream's encoder as --encoder"
        )


def _extract(options: XMICRunOptions, job: Mapping[str, Any]) -> None:
    from egofeat.pipelines.extract import ExtractOptions, run_extract

    if not (options.encoder or job.get("encoders")):
        raise ValueError("extraction jobs need --encoder (or encoders = [...] in the job)")
    settings: dict[str, Any] = {
        "store": options.store,
        "encoders": [options.encoder],
        "crop": "both",
        "sampling": "oversampled",
        "frames": options.bins,
        "per_bin": options.per_bin,
        "text": False,
        "progress": options.progress,
        **job,
    }
    for key in ("videos", "boxes", "store"):
        if settings.get(key) is not None:
            settings[key] = Path(settings[key])
    settings["annotations"] = [Path(p) for p in settings.get("annotations", [])]
    try:
        extract_options = ExtractOptions(**settings)
    except TypeError as error:
        raise ValueError(
            f"extraction job {dict(job)}: {error}; its keys are `egofeat extract` "
            "options with underscores (annotations, videos, dataset, layout, boxes, split, ...)"
        ) from None
    run_extract(extract_options)


def _has_split(store: FeatureStore, dataset: str, split: str) -> bool:
    return _segments(store, dataset).filter(pl.col("split") == split).height > 0


def _selection_label(options: XMICRunOptions) -> str:
    if options.selection == "target-val":
        return (
            f"best epoch on the {options.target} {options.eval_split} set, the reported split "
            "(optimistic: selection sees the evaluation data)"
        )
    return f"best epoch on a held-out {options.holdout:.0%} of the {options.source} train videos"


# ---- the report ------------------------------------------------------------------------------

_METHOD_NAMES = {"xmic": "X-MIC", "zero_shot": "zero-shot CLIP", "linear_probe": "linear probe"}


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report's tables: per task and split kind, one row per method (accuracies, %)."""
    lines = [
        f"# X-MIC {report['source']} -> {report['target']}",
        "",
        f"Checkpoint selection: {report['selection']}.",
        "",
    ]
    header = (
        "| method | top-1 all | top-1 shared | top-1 novel | HM | class-mean all | "
        "class-mean shared | class-mean novel | HM (class-mean) | within | HM within/cross |"
    )
    for task, result in report["tasks"].items():
        for kind in result["splits"]:
            counts = result["splits"][kind]
            lines += [
                f"## {task}, {kind} split ({counts['shared']} shared, {counts['novel']} novel "
                f"{report['target']} classes)",
                "",
                header,
                "|" + " --- |" * 11,
            ]
            for method, scores in result["methods"].items():
                m = scores["cross"][kind]
                within = (scores["within"] or {}).get("accuracy")
                cells = [
                    m["all_accuracy"],
                    m["shared_accuracy"],
                    m["novel_accuracy"],
                    m["harmonic_mean_accuracy"],
                    m["all_class_mean_accuracy"],
                    m["shared_class_mean_accuracy"],
                    m["novel_class_mean_accuracy"],
                    m["harmonic_mean_class_mean_accuracy"],
                    within,
                    scores["within_cross_harmonic_mean"],
                ]
                lines.append(
                    f"| {_METHOD_NAMES[method]} | " + " | ".join(_cell(c) for c in cells) + " |"
                )
            lines.append("")
        lines.append(
            f"X-MIC {task}: {result['trainable_parameters']:,} trainable parameters, "
            f"best epoch {result['best_epoch']}."
        )
        lines.append("")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.1f}"
    )


def _plot(out: Path, report: Mapping[str, Any]) -> list[str]:
    from egofeat.eval.plots import plot_shared_novel

    paths = []
    for task, result in report["tasks"].items():
        for kind in result["splits"]:
            methods = {
                _METHOD_NAMES[m]: {k: _zero_nan(v) for k, v in s["cross"][kind].items()}
                for m, s in result["methods"].items()
            }
            title = f"{report['source']} -> {report['target']}: {task}, {kind} split"
            paths.append(
                str(plot_shared_novel(methods, out / "plots" / f"{task}-{kind}.png", title=title))
            )
    return paths


def _zero_nan(value: float) -> float:
    return 0.0 if isinstance(value, float) and math.isnan(value) else value


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


# ---- a synthetic two-domain store ------------------------------------------------------------

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
    ``kitchen-b`` val videos.
    """
    from egofeat.extract.encoders import class_prompt_embeddings, create_encoder
    from egofeat.pipelines.extract import encoder_slug

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
    prefix = encoder_slug(encoder)
    provenance = {
        "encoder": model.name,
        "weights_hash": model.weights_hash,
        "synthetic": "two-domain X-MIC features",
        "sampling": {"kind": "oversampled", "num_frames": bins, "per_bin": per_bin},
    }
    streams = {
        crop: store.create_stream(
            f"{prefix}/{crop}",
            dim=model.text_dim,
            provenance=provenance,
            frames_per_row=bins * per_bin,
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
        shape = (rows.height, bins * per_bin, model.text_dim)
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
                    writer.add(segment_id, video_id, features[crop][i].numpy())
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
        XMICRunOptions(
            store=Path(store["store"]),
            out=out,
            source=store["source"],
            target=store["target"],
            encoder=store["encoder"],
            epochs=15,
            lr=3e-3,
            batch_size=64,
            warmup_epochs=1,
            device="cpu",
            progress=progress,
            # the features are built from bare-name embeddings: zero-shot reads those too
            zero_shot_templates=dict.fromkeys(store["domains"], XMIC_TEMPLATE),
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
