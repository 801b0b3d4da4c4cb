"""Typed configuration: one pydantic model per run kind.

==================  =========================================  ===========================
run kind            model                                      command
==================  =========================================  ===========================
extraction          :class:`ExtractConfig`                     ``egofeat extract``
training            :class:`~egofeat.heads.config.RunConfig`   ``egofeat train``
distillation        :class:`DistillConfig`                     ``egofeat distill``
X-MIC cross-data    :class:`XMICRunConfig`                     ``egofeat run xmic``
retrieval scoring   :class:`ProtocolConfig`                    ``egofeat eval --protocol``
==================  =========================================  ===========================

Each is filled the same way (:func:`load`): a ``--config`` TOML/YAML file, ``--set a.b=c``
overrides read as the type of the field they set, then the command's own options (typed
values, never stringified); the model validates the result and an error names the field path
(or the CLI flag) and what was expected. The CLI derives its options from these models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from egofeat._util.settings import (
    ConfigError,
    apply_overrides,
    build,
    merge_settings,
    read_settings_file,
    set_path,
)
from egofeat.heads.config import RunConfig, TrainConfig, load_config
from egofeat.heads.xmic import XMIC_TRAINER
from egofeat.recipes import Command, Recipe, get_recipe

__all__ = [
    "CROPS",
    "ConfigError",
    "DistillConfig",
    "ExtractConfig",
    "ProtocolConfig",
    "RunConfig",
    "XMICRunConfig",
    "load",
    "load_config",
    "chosen_recipe",
]

M = TypeVar("M", bound=BaseModel)

#: a store location: a local path or an fsspec URL (``s3://...``), as text
StoreLocation = Annotated[str, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)]

CROPS: dict[str, tuple[str, ...]] = {"full": ("full",), "hand": ("hand",), "both": ("full", "hand")}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ExtractConfig(_Settings):
    """Everything `egofeat extract` is configured with (``egofeat extract --help``)."""

    annotations: list[Path] = Field(description="Annotation file(s); repeatable.")
    videos: Path = Field(description="Root of the videos or frame folders.")
    store: StoreLocation = Field(description="The feature store to write (created if missing).")
    dataset: Literal["epic100", "ego4d", "generic"] = Field("epic100", description="Annotation format.")
    layout: str = Field("epic-mp4", description="epic-mp4 | epic-frames | flat | a template like '{video_id}.mp4'.")
    encoders: list[str] = Field(["tiny"], description="Encoder name; repeatable (see `egofeat encoders`).")
    crop: Literal["full", "hand", "both"] = Field("full", description="Crops to extract.")
    boxes: Path | None = Field(None, description="Hand-object pickles folder (EPIC layout) or a parquet of boxes.")
    frames: int = Field(8, ge=1, description="Frames (bins) per segment.")
    sampling: Literal["uniform", "random", "oversampled", "dense", "native", "clip"] = Field("uniform", description="Frame sampling (native: every frame of the segment at the videos' rate, for X-MIC's native-frame jitter).")
    per_bin: int = Field(3, ge=1, description="oversampled: frames per bin (odd: the middle one is the bin centre).")
    fps: float | None = Field(None, gt=0, description="dense: frames per second; native: the videos' frame rate (epic100 default: its JPEG rule, 60 or 50 fps).")
    clip_len: int = Field(4, ge=1, description="clip: frames per clip (LaViLa: 4 or 16).")
    seed: int = Field(0, description="Seed of random sampling.")
    device: str = Field("cpu", description="cpu, cuda, cuda:1, ...")
    batch_size: int | None = Field(None, ge=1, description="Encoder batch size (default: automatic).")
    workers: int = Field(2, ge=0, description="Decoder worker processes (0: decode in-process).")
    prefetch: int = Field(2, ge=1, description="Videos decoded ahead per worker.")
    decode_timeout: float = Field(300.0, gt=0, description="Seconds before a hanging decode is killed.")
    decode_device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu | cuda[:N]: decode with NVDEC (torchcodec); a video NVDEC can't read falls back to the CPU, counted in the summary.")
    videos_per_part: int = Field(1, ge=1, description="Videos per committed part.")
    hand_threshold: float = Field(0.8, ge=0, le=1, description="Hand detection score threshold.")
    object_threshold: float = Field(0.01, ge=0, le=1, description="Object detection score threshold.")
    box_margin: float = Field(0.0, ge=0, description="Grow boxes by this fraction.")
    box_square: bool = Field(True, description="Square crops around the boxes.")
    box_fallback: Literal["full", "nearest"] = Field("full", description="Frames without a qualifying box.")
    text: bool = Field(True, description="Also write class-name and narration text streams.")
    templates: list[str] = Field(["{}"], description="Class-prompt template(s), e.g. 'a photo of a {}'.")
    tag: str = Field("", description="Suffix for stream names (a new configuration -> a new stream).")
    split: str | None = Field(None, description="Split name (default: from the file name; ego4d fho_main.json: required).")
    classes: Path | None = Field(None, description="Class lists: EPIC's folder of EPIC_100_{verb,noun}_classes.csv (default: beside the annotations), an Ego4D taxonomy JSON, Charades_v1_classes.txt, or a folder of verb.txt / noun.txt.")
    allow_pickle: bool = Field(False, description="Allow .pkl annotation files (pickles can run code).")
    mapping: dict[str, str] | None = Field(None, description="generic: JSON canonical->file column map.")
    window: Literal["action", "xmic", "xmic-original", "eilev"] = Field("action", description="ego4d: time window (xmic: the central 4 s of start..end + 0.9 s; xmic-original: X-MIC's central 4*(n//8) frames of that decode, ~4.4 s; eilev: 8 s).")
    limit: int | None = Field(None, ge=1, description="Only the first N segments (a trial run).")
    executor: Literal["serial", "dask", "torchrun"] = Field("serial", description="serial | dask | torchrun (launch: torchrun --nproc_per_node=N -m egofeat extract ...).")
    dask_workers: int | None = Field(None, ge=1, description="dask: LocalCluster worker processes (default: one per GPU, else half the CPU cores).")
    scheduler: str | None = Field(None, description="dask: address of a running scheduler (e.g. tcp://10.0.0.1:8786).")
    retries: int = Field(2, ge=0, description="dask: times a part task that raised is retried.")
    sharding: Literal["balanced", "strided"] = Field("balanced", description="torchrun and --shard: balanced (by frames to decode) | strided.")
    shard: str | None = Field(None, pattern=r"^\d+/\d+$", description="I/N: write only shard I (0-based) of N of the plan, e.g. one task of a SLURM array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (serial executor).")
    cache_dir: Path | None = Field(None, description="Hugging Face hub cache to read encoder weights from (default: HF_HUB_CACHE).")
    retry_errors: bool = Field(False, description="Also redo the parts holding retryable error rows (missing or unreadable videos, timeouts); their ok rows are kept byte for byte.")
    min_found: float = Field(0.1, ge=0, le=1, description="Stop before writing anything when fewer than this share of the annotated videos is found (always when none is).")
    log_interval: float = Field(30.0, gt=0, description="Seconds between progress lines when stderr is not a terminal (a SLURM or nohup log).")
    progress: bool = Field(True, description="Show progress.")
    progress_json: bool = Field(False, description="Progress as JSON lines (egofeat extract --json).")

    @field_validator("mapping", mode="before")
    @classmethod
    def _json_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"not a JSON object ({error})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExtractConfig:
        if "hand" in CROPS[self.crop] and self.boxes is None:
            raise ValueError("hand crops need --boxes: a folder of EPIC hand-object pickles or a parquet of boxes")
        if self.sampling == "dense" and not self.fps:
            raise ValueError("--sampling dense needs --fps")
        if self.sampling == "native" and not self.fps and self.dataset != "epic100":
            raise ValueError("--sampling native needs --fps, the videos' frame rate (e.g. 30 for Ego4D clips)")
        if self.shard is not None:
            index, count = self.shard_index
            if not 0 <= index < count:
                raise ValueError(f"--shard {self.shard}: the shard index counts from 0 and must be below "
                                 f"the number of shards ({count})")
            if self.executor != "serial":
                raise ValueError("--shard splits the plan between independent serial runs (e.g. a SLURM "
                                 f"array); --executor {self.executor} shards the plan itself")
        return self

    @property
    def shard_index(self) -> tuple[int, int]:
        """``--shard I/N`` as ``(I, N)``; ``(0, 1)`` without it."""
        if self.shard is None:
            return 0, 1
        index, count = self.shard.split("/")
        return int(index), int(count)

    @property
    def crops(self) -> tuple[str, ...]:
        return CROPS[self.crop]


class XMICRunConfig(_Settings):
    """Everything `egofeat run xmic` is configured with (``egofeat run xmic --help``).

    Streams: ``classified`` (default ``<encoder>/hand``) and ``context`` (default
    ``<encoder>/hand, <encoder>/full``); the full-frame variant is ``classified=<e>/full,
    context=[<e>/full]``, the second-encoder variant lists e.g. DINO streams as ``context``.
    ``encoder`` is the dual encoder whose text side writes the class embeddings (default: the
    classified stream's encoder). ``extract``: extraction jobs (:class:`ExtractConfig` fields)
    run first into ``store``, oversampled with ``bins`` x ``per_bin`` frames. ``trainer``:
    settings over X-MIC's recipe (:data:`~egofeat.heads.xmic.XMIC_TRAINER`).
    """

    store: StoreLocation = Field(description="The feature store holding both datasets.")
    out: Path = Field(description="Folder for the runs, report.json/.md and plots.")
    recipe: str | None = Field(None, description="Named recipe under --config/--set (see `egofeat recipes`), recorded in the report.")
    source: str = Field("epic100", description="Dataset trained on (epic100 | ego4d | a store dataset).")
    target: str = Field("ego4d", description="Dataset evaluated on, over its own classes.")
    tasks: list[str] = Field(["noun", "verb"], min_length=1, description="Task(s): noun,verb.")
    encoder: str | None = Field(None, description="Dual encoder: streams <slug>/hand,full; its text side writes the class texts.")
    classified: str | None = Field(None, description="Stream compared with the class texts (default <encoder>/hand).")
    context: list[str] | None = Field(None, description="Conditioning streams NAME[,NAME] (default <encoder>/hand,<encoder>/full).")
    splits_dir: Path | None = Field(None, description="X-MIC's split lists (Ego4D vocabulary, exact/semantic shared classes).")
    epic_classes: Path | None = Field(None, description="Folder of EPIC_100_{verb,noun}_classes.csv.")
    train_split: str = "train"
    eval_split: str = "val"
    selection: Literal["source-holdout", "target-val"] = Field(
        "source-holdout", description="source-holdout (egofeat's: select on held-out source train videos) | target-val (X-MIC's: train on all source train, select on the reported split: optimistic).")
    holdout: float = Field(0.1, gt=0, lt=1, description="source-holdout: share of source train videos held out for selection.")
    bins: int = Field(16, ge=1, description="Temporal bins (extraction --frames).")
    jitter: Literal["stored", "native"] = Field("stored", description="stored: one of the frames stored per bin (--sampling oversampled streams); native: any native frame of a bin, as X-MIC (--sampling native streams; Ego4D's offset conditioning frames).")
    per_bin: int = Field(3, ge=1, description="Frames per bin for extract jobs (temporal jitter).")
    dense_per_bin: int = Field(3, ge=1, description="Frames per bin read from dense streams.")
    width: int | None = Field(None, ge=1, description="Width of the conditioning transformer.")
    xmic_template: str = "{}"
    zero_shot_templates: dict[str, str] | None = None
    linear_probe: bool = True
    extract: list[dict[str, Any]] = Field(default_factory=list)
    text_only: bool = Field(False, description="Only write the class text streams.")
    trainer: dict[str, Any] = Field(default_factory=dict, description="Trainer settings over X-MIC's recipe.")
    device: str = Field("auto", description="cpu, cuda, auto.")
    seed: int = 0
    progress: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> XMICRunConfig:
        if self.source == self.target:
            raise ValueError(f"source and target are both {self.source!r}: X-MIC runs cross datasets")
        if not (self.encoder or self.classified):
            raise ValueError("give --encoder (e.g. clip:ViT-B-16:openai) or --classified STREAM")
        TrainConfig.model_validate({**XMIC_TRAINER, **self.trainer})  # refused here, not later
        if self.recipe is not None:
            try:
                get_recipe(self.recipe, "run xmic")
            except KeyError as error:
                raise ValueError(error.args[0]) from None
        return self

    def trainer_settings(self) -> dict[str, Any]:
        """X-MIC's recipe with this run's trainer settings on top."""
        return {**XMIC_TRAINER, **self.trainer, "seed": self.seed, "device": self.device,
                "progress": self.progress}


class DistillConfig(_Settings):
    """`egofeat distill`: teachers, and the student run (a :class:`RunConfig` whose task is
    ``distill``; its ``[task]`` table holds the ensemble's weighting and the loss weights)."""

    teachers: list[StoreLocation] = Field(min_length=1, description="Teacher run folders: RUN[,RUN]; repeatable.")
    out: Path = Field(description="The student's run folder (report; CE-only head in baseline/).")
    store: StoreLocation | None = Field(None, description="The feature store (default: the first teacher's).")
    baseline: bool = Field(True, description="Also train the head with CE only, for the report.")
    teacher_stream: str | None = Field(None, description="Name of the cached teacher-logit stream.")
    student: RunConfig = Field(default_factory=RunConfig)


class ProtocolConfig(_Settings):
    """What a retrieval protocol scores: a run (or zero-shot streams), a store, annotation files."""

    run: Path | None = Field(None, description="A run folder from `egofeat train`.")
    store: StoreLocation | None = Field(None, description="Score on this store instead of the run's (zero-shot: the store).")
    split: str = Field("val", description="Split of the store to score.")
    annotations: Path | None = Field(None, description="With --results: the annotation CSV; with --protocol: the retrieval CSV, egomcq.json or Charades-Ego CSV.")
    sentences: Path | None = Field(None, description="ek100-mir: the sentence CSV (the captions, in its row order).")
    similarity: Path | None = Field(None, description="ek100-mir: score this .npy (videos x captions in file order) against --annotations and --sentences.")
    video_stream: str | None = Field(None, description="Zero-shot (no run): the video stream of --store.")
    text_stream: str | None = Field(None, description="Zero-shot: the text stream; charades-ego: the class-prompt stream.")
    dual_softmax: bool = Field(False, description="Re-score similarities with EgoVLP's dual softmax.")
    save_similarity: Path | None = Field(None, description="ek100-mir: write the similarity matrix (.npy, with row and column id files).")


def chosen_recipe(
    command: Command,
    name: str | None = None,
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
) -> Recipe | None:
    """The recipe the user chose for ``command``: ``name`` (``--recipe``), else a
    ``recipe=NAME`` override, else the settings file's ``recipe``; None when none is named
    (a ``KeyError`` naming the valid ones for a wrong name)."""
    for text in overrides:
        key, sep, value = text.partition("=")
        if name is None and sep and key.strip() == "recipe":
            name = value.strip()
    if name is None and path is not None:
        name = read_settings_file(path).get("recipe")
    return get_recipe(str(name), command) if name else None


def load(
    model: type[M],
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
    *,
    flags: Mapping[str, str] | None = None,
    layers: Iterable[Mapping[str, Any]] = (),
) -> M:
    """``model`` from ``layers`` (dicts in the config-file layout, e.g. a named recipe's
    :meth:`~egofeat.recipes.Recipe.layer`), a settings file over them, ``key=value``
    overrides and typed ``values`` (dotted keys, the last word); ``flags`` names the CLI flag
    of each field for messages."""
    raw: dict[str, Any] = {}
    for layer in layers:
        raw = merge_settings(raw, layer)
    source = "options"
    if path is not None:
        raw, source = merge_settings(raw, read_settings_file(path)), str(path)
    overrides = list(overrides)
    raw = apply_overrides(model, raw, overrides)
    for dotted, value in (values or {}).items():
        if value is not None:
            set_path(raw, dotted, list(value) if isinstance(value, tuple) else value)
    return build(model, raw, source, flags=flags)

