"""X-MIC runs: adapters trained on one dataset, scored on another (``egofeat run xmic``).

:func:`run_xmic` is the cross-dataset protocol of X-MIC (``reference/xmic.md`` §4) for one
direction, source -> target:

1. optionally extract both datasets' visual streams (``[[extract]]`` jobs of a TOML file,
   oversampled so that training can jitter frames inside bins, or every native frame for
   ``jitter="native"``, X-MIC's jitter exactly);
2. write the class-name text streams of both vocabularies (:mod:`.text_streams`): X-MIC reads
   the bare class names (``...-names``), zero-shot CLIP the dataset's prompt (``...-prompts``);
3. per task (noun, verb): train an X-MIC adapter (the ``xmic`` task, X-MIC's recipe) on all
   source classes. egofeat's default selects the checkpoint on a held-out part of the *source*
   train videos (and trains on the rest); ``selection="target-val"`` is X-MIC's protocol: train
   on every source train segment and select on the target val set, the reported split (so it
   is labelled as optimistic everywhere). The report says how many segments trained;
4. score X-MIC, zero-shot CLIP and a linear probe on the target val set over the target
   vocabulary, and within the source dataset (:mod:`.xmic_report`);
5. write ``report.json``, ``report.md`` and shared-vs-novel bar charts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from torch import Tensor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from egofeat import sources
from egofeat._util.jsonsafe import jsonable
from egofeat.config import ConfigError, ExtractConfig, XMICRunConfig, load
from egofeat.heads import HeadData, create_task, load_config, resolve_device
from egofeat.heads.jitter import gather_frames, oversampled_bin_indices
from egofeat.heads.xmic import zero_shot_logits
from egofeat.heads.xmic_task import load_class_text, stream_layout
from egofeat.pipelines.executors import execute
from egofeat.pipelines.text_streams import write_class_texts
from egofeat.pipelines.xmic_report import per_class_rows, plot_report, report_markdown, score_method
from egofeat.store import FeatureStore
from egofeat.store.names import class_text_stream, image_stream, zero_shot_template

__all__ = ["dataset_vocabulary", "load_extract_jobs", "run_xmic"]

#: linear-probe logit of target classes the source lacks
_NOT_IN_VOCABULARY = -1e9


def dataset_vocabulary(store: FeatureStore, dataset: str, task: str, *,
                       epic_classes: Path | None = None, splits_dir: Path | None = None) -> tuple[str, ...]:
    """Class names of ``dataset``'s ``task``, indexed by class id.

    ``epic100``: ``EPIC_100_{task}_classes.csv`` in ``epic_classes``; ``ego4d``: X-MIC's Ego4D
    vocabulary from the split lists in ``splits_dir``; any other dataset: the names in the
    store's segment table (``{task}`` beside ``{task}_class``), which must name every class id.
    """
    if dataset == "epic100":
        files = sources.epic_class_files(epic_classes) if epic_classes is not None else None
        if files is None:
            raise ValueError("EPIC classes need --epic-classes: the folder of EPIC_100_*_classes.csv")
        return sources.Vocabulary.from_epic_csv(files[task]).names
    if dataset == "ego4d":
        if splits_dir is None:
            raise ValueError("Ego4D classes need --splits-dir: the folder of X-MIC's split lists")
        return sources.ego4d_vocabulary(splits_dir, task).names
    return sources.Vocabulary.from_table(_segments(store, dataset), task, what=f"the {dataset!r} segments").names


def load_extract_jobs(path: str | Path) -> list[dict[str, Any]]:
    """The ``[[extract]]`` tables of a TOML file (:class:`~egofeat.config.ExtractConfig` fields)."""
    path = Path(path)
    try:
        jobs = tomllib.loads(path.read_text()).get("extract", [])
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise ValueError(f"{path}: write each extraction job as an [[extract]] table")
    return jobs


def run_xmic(options: XMICRunConfig) -> dict[str, Any]:
    """Extract (optional) -> text streams -> train -> evaluate, for one direction; the report."""
    started = time.perf_counter()
    resolve_device(options.device)  # refused before any stream or run folder is written
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    for job in options.extract:
        _extract(options, job)
    store = FeatureStore.open(options.store)
    classified, context, encoder = _resolve_streams(store, options)
    vocabularies = {
        dataset: {task: dataset_vocabulary(store, dataset, task, epic_classes=options.epic_classes,
                                           splits_dir=options.splits_dir) for task in options.tasks}
        for dataset in (options.source, options.target)
    }
    text = _write_texts(store, encoder, vocabularies, options)
    _check_joint_space(store, classified, text)
    report: dict[str, Any] = {
        "source": options.source, "target": options.target, "store": str(store.path),
        "classified": classified, "context": list(context), "text_streams": text,
    }
    if options.recipe:
        report["recipe"] = _recipe_record(options.recipe)
    if options.text_only:
        return report | {"seconds": round(time.perf_counter() - started, 1)}
    run = _Run(options, store, classified, list(context), encoder, text, vocabularies)
    data = run.load_data()
    rows = {name: 0 if value is None else len(value) for name, value in data.items()}
    report |= {"selection": _selection_label(options),
               "train_segments": {"source_train": rows["train"] + rows["holdout"],
                                  "trained_on": rows["train"], "held_out_for_selection": rows["holdout"]},
               "layout": {"bins": run.bins, "frames_per_bin": run.per_bin, "jitter": options.jitter},
               "rows": rows,
               "tasks": {}}
    for task in options.tasks:
        report["tasks"][task] = run.task(task, data)
    report["plots"] = plot_report(out, report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(jsonable(report), indent=1))
    (out / "report.md").write_text(report_markdown(report))
    return report


@dataclass
class _Run:
    """What every task of one run shares."""

    options: XMICRunConfig
    store: FeatureStore
    classified: str
    context: list[str]
    encoder: str
    text: dict[str, str]
    vocabularies: dict[str, dict[str, Sequence[str]]]

    def __post_init__(self) -> None:
        self.streams = list(dict.fromkeys([self.classified, *self.context]))
        if self.options.jitter == "native":  # every native frame stored; one read per bin
            self.bins, self.per_bin = self.options.bins, 1
        else:
            self.bins, self.per_bin = stream_layout(self.store, self.streams, self.options.bins,
                                                    self.options.dense_per_bin)

    def config(self, head: str, tasks: Sequence[str], streams: Sequence[str], **head_options: Any) -> Any:
        """The run config of one method on ``tasks``, over X-MIC's recipe."""
        options = self.options
        settings = {"trainer": {**options.trainer_settings(), "tasks": list(tasks)},
                    "head": {"name": head, **head_options},
                    "data": {"streams": list(streams), "dataset": options.source,
                             "train_split": options.train_split, "val_split": None}}
        if head == "xmic":
            settings["task"] = {"jitter": options.jitter}
        return load_config(layers=[settings])

    def load_data(self) -> dict[str, HeadData | None]:
        """Source train and the part held out of it for selection (none when selecting on the
        target val set, as X-MIC: then every source train segment trains), target and source
        evaluation."""
        options = self.options
        task = create_task(self.config("xmic", options.tasks, self.streams, classified=self.classified,
                                       context=self.context, bins=self.bins), self.store)
        layout = {"bins": self.bins, "per_bin": self.per_bin}

        def load(dataset: str, split: str) -> HeadData | None:
            if not _has_split(self.store, dataset, split):
                return None
            return task.load(split, dataset=dataset, vocabularies=self.vocabularies[dataset], **layout)

        source_train = load(options.source, options.train_split)
        target_eval = load(options.target, options.eval_split)
        if source_train is None or target_eval is None:
            raise ValueError(f"the store needs {options.source!r} {options.train_split!r} and "
                             f"{options.target!r} {options.eval_split!r} segments")
        train, held = source_train, None
        if options.selection == "source-holdout":
            train, held = source_train.holdout(options.holdout, seed=options.seed, group_by="video_id")
        return {"train": train, "holdout": held, "target_eval": target_eval,
                "source_eval": load(options.source, options.eval_split)}

    def embeddings(self, dataset: str, task: str, style: str) -> Tensor:
        return load_class_text(self.store, self.text[f"{dataset}/{task}-{style}"])[0]

    def task(self, task: str, data: Mapping[str, HeadData | None]) -> dict[str, Any]:
        options = self.options
        names = {d: self.vocabularies[d][task] for d in (options.source, options.target)}
        splits = sources.class_splits(options.source, options.target, task, names[options.source],
                                      names[options.target], options.splits_dir)
        target, source = data["target_eval"], data["source_eval"]
        methods: dict[str, dict[str, np.ndarray | None]] = {}
        methods["xmic"], trained = self.xmic(task, data)
        methods["zero_shot"] = {
            "cross": self.zero_shot(target, self.embeddings(options.target, task, "prompts")),
            "within": None if source is None
            else self.zero_shot(source, self.embeddings(options.source, task, "prompts")),
        }
        if options.linear_probe:
            methods["linear_probe"] = self.linear_probe(task, data, names)
        results = {name: score_method(outputs, task, target, source, splits)
                   for name, outputs in methods.items()}
        per_class = per_class_rows({name: outputs["cross"] for name, outputs in methods.items()}, task,
                                   target, list(names[options.target]), splits["exact"][0])
        return {
            "classes": {"source": len(names[options.source]), "target": len(names[options.target])},
            "splits": {kind: {"shared": len(s), "novel": len(n)} for kind, (s, n) in splits.items()},
            **trained,
            "methods": results,
            "per_class": per_class,
        }

    def xmic(self, task: str, data: Mapping[str, HeadData | None]) -> tuple[dict[str, np.ndarray | None], dict[str, Any]]:
        options = self.options
        config = self.config("xmic", [task], self.streams, classified=self.classified,
                             context=self.context, bins=self.bins, width=options.width,
                             class_text=class_text_stream(self.encoder, "{dataset}", "{task}"))
        xtask = create_task(config, self.store)
        model = xtask.build_model(data["train"])
        target_text = self.embeddings(options.target, task, "names")
        val = data["holdout"]
        if options.selection == "target-val":
            model.set_evaluation_vocabulary(task, target_text)
            val = data["target_eval"]
        fit = xtask.fit(model, data["train"], val, run_dir=Path(options.out) / f"xmic-{task}")
        model.set_evaluation_vocabulary(task, target_text)
        cross = xtask.outputs(model, data["target_eval"], options.device)[task]
        model.set_evaluation_vocabulary(task, None)
        source = data["source_eval"]
        within = None if source is None else xtask.outputs(model, source, options.device)[task]
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"cross": cross, "within": within}, {
            "trainable_parameters": parameters, "best_epoch": fit.best_epoch,
            "run": str(Path(options.out) / f"xmic-{task}"),
        }

    def zero_shot(self, data: HeadData, text: Tensor) -> np.ndarray:
        features = data.features[self.classified]
        index = oversampled_bin_indices(len(data), self.bins, self.per_bin, train=False)
        return zero_shot_logits(gather_frames(features.float(), index), text).numpy()

    def linear_probe(self, task: str, data: Mapping[str, HeadData | None],
                     names: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray | None]:
        """A linear classifier of the source classes on the classified stream's time-mean; on the
        target, the logits of matched classes (novel ones can never be predicted)."""
        options = self.options
        only = {key: None if value is None else value.with_streams([self.classified])
                for key, value in data.items()}
        probe = create_task(self.config("linear", [task], [self.classified]), self.store)
        model = probe.build_model(only["train"])
        probe.fit(model, only["train"], only["holdout"], run_dir=Path(options.out) / f"linear-{task}")
        source_logits = probe.outputs(model, only["target_eval"], options.device)[task]
        matched = sources.match_classes(sources.class_texts(options.source, names[options.source]),
                                        sources.class_texts(options.target, names[options.target]))
        cross = np.full((len(source_logits), len(names[options.target])), _NOT_IN_VOCABULARY, np.float32)
        cross[:, list(matched)] = source_logits[:, list(matched.values())]
        source = only["source_eval"]
        within = None if source is None else probe.outputs(model, source, options.device)[task]
        return {"cross": cross, "within": within}


def _write_texts(store: FeatureStore, encoder: str, vocabularies: Mapping[str, Mapping[str, Sequence[str]]],
                 options: XMICRunConfig) -> dict[str, str]:
    """Class names (X-MIC's text) and zero-shot prompts of both vocabularies."""
    from egofeat.extract.encoders import create_encoder

    model = create_encoder(encoder, device="cpu")
    zero_shot = options.zero_shot_templates or {}
    written = {}
    for dataset, tasks in vocabularies.items():
        templates = {"names": [options.xmic_template],
                     "prompts": [zero_shot.get(dataset, zero_shot_template(dataset))]}
        for task, names in tasks.items():
            for style, template in templates.items():
                written[f"{dataset}/{task}-{style}"] = write_class_texts(
                    store, model, dataset, task, names, templates=template)
    return written


def _resolve_streams(store: FeatureStore, options: XMICRunConfig) -> tuple[str, list[str], str]:
    hand = image_stream(options.encoder, "hand") if options.encoder else None
    classified = options.classified or hand
    context = list(options.context or ([hand, image_stream(options.encoder, "full")] if hand else [classified]))
    for name in (classified, *context):
        store.stream(name)  # a missing stream is reported with the store's streams
    encoder = options.encoder or store.stream(classified).info.provenance.get("encoder")
    if not encoder:
        raise ValueError(f"stream {classified!r} records no encoder: pass --encoder for the text side")
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


def _extract(options: XMICRunConfig, job: Mapping[str, Any]) -> None:
    """One ``[[extract]]`` job: `egofeat extract` with the recipe's crops and sampling."""
    if not (options.encoder or job.get("encoders")):
        raise ValueError("extraction jobs need --encoder (or encoders = [...] in the job)")
    sampling = ({"sampling": "native"} if options.jitter == "native" else
                {"sampling": "oversampled", "frames": options.bins, "per_bin": options.per_bin})
    settings: dict[str, Any] = {
        "store": options.store, "encoders": [options.encoder], "crop": "both", **sampling,
        "text": False, "progress": options.progress, **job,
    }
    try:
        config = load(ExtractConfig, values=settings)
    except ConfigError as error:
        raise ConfigError(f"extraction job {dict(job)}: {error}; its keys are `egofeat extract` "
                          "options with underscores (annotations, videos, dataset, layout, boxes, "
                          "split, ...)") from None
    execute(config)


def _segments(store: FeatureStore, dataset: str) -> pl.DataFrame:
    table = store.segments().collect()
    found = sorted(table["dataset"].unique().to_list()) if table.height else []
    if dataset not in found:
        raise ValueError(f"the store has no {dataset!r} segments; its datasets are {found}")
    return table.filter(pl.col("dataset") == dataset)


def _has_split(store: FeatureStore, dataset: str, split: str) -> bool:
    return _segments(store, dataset).filter(pl.col("split") == split).height > 0


def _selection_label(options: XMICRunConfig) -> str:
    if options.selection == "target-val":
        return (f"X-MIC's protocol: trained on every {options.source} {options.train_split} "
                f"segment, best epoch on the {options.target} {options.eval_split} set, the reported "
                "split (optimistic: selection sees the evaluation data; the linear probe, which "
                "cannot score the target's classes, keeps its last epoch)")
    return (f"egofeat's protocol: best epoch on a held-out {options.holdout:.0%} of the "
            f"{options.source} {options.train_split} videos, trained on the rest")


def _recipe_record(name: str) -> dict[str, Any]:
    """The named recipe a run started from, as `egofeat recipes --json` lists it."""
    from egofeat.recipes import get_recipe

    return get_recipe(name, "run xmic").to_json()

