"""The ``xmic`` training task: X-MIC adapters on store streams, classes from class-name texts.

The task reads the classified and context streams through the one loader, resampling densely
stored streams into the bins the head jitters over (:func:`stream_layout` tells the layout from
the streams' sampling provenance), and loads each task's class embeddings from the store's
class-name text stream (``<prefix>/text/<dataset>/<task>-names``, see
:mod:`egofeat.store.names`; ``head.class_text`` names another, ``{task}`` and ``{dataset}``
filled in). Its default trainer settings are X-MIC's recipe (:data:`~egofeat.heads.xmic.XMIC_TRAINER`).

``[task] jitter = "native"`` trains on streams holding every native frame of a segment
(``--sampling native``) with X-MIC's jitter exactly: any frame of each bin, drawn every epoch
(:class:`~egofeat.heads.jitter.JitteredData`), by the bin rule of the dataset's X-MIC loader
(:func:`xmic_native_bins`: EPIC's, or Ego4D's with its offset conditioning frames). The head
then reads its conditioning frames from :func:`~egofeat.heads.jitter.context_view` keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from egofeat.heads.data import HeadData
from egofeat.heads.jitter import NativeBins, context_view
from egofeat.heads.registry import create_head, register_task
from egofeat.heads.tasks import Task
from egofeat.heads.xmic import XMIC_TRAINER, XMICClassifier
from egofeat.store.names import class_text_stream, stream_prefix

__all__ = ["XMICTask", "load_class_text", "stream_layout", "xmic_native_bins"]


def xmic_native_bins(dataset: str | None, bins: int = 16) -> NativeBins:
    """The bin rule of X-MIC's loader for ``dataset``: Ego4D's (bins over all ``n`` stored frames,
    conditioning frames jittered twice / shifted half a bin), else EPIC's (bins over ``[0, n-1)``,
    conditioning on the classified frames), which Dassl's data manager applies to every dataset
    it reads frame by frame."""
    if dataset == "ego4d":
        return NativeBins(bins, span="to-end", context_offset=True)
    return NativeBins(bins, span="to-last", context_offset=False)


def stream_layout(store: Any, streams: Sequence[str], bins: int = 16, dense_per_bin: int = 3) -> tuple[int, int]:
    """``(bins, frames per bin)`` shared by the streams, from their sampling provenance.

    ``oversampled`` streams give ``(num_frames, per_bin)``; ``uniform``/``random`` ones
    ``(num_frames, 1)``; dense ones ``(bins, dense_per_bin)`` (the loader resamples them);
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
            raise ValueError(f"stream {name!r} holds clips (a video encoder's): X-MIC reads frame streams")
        else:
            frames = int(info.frames_per_row)
            layouts[name] = (bins, frames // bins) if frames % bins == 0 else (frames, 1)
    if len(set(layouts.values())) > 1:
        raise ValueError(
            f"the streams are sampled differently (bins, frames per bin): {layouts}; "
            "extract them with the same --frames / --sampling / --per-bin"
        )
    return next(iter(layouts.values()))


def load_class_text(store: Any, name: str) -> tuple[Tensor, list[str]]:
    """A class text stream as ``(C, D)`` float32 embeddings and the encoded texts, by class id."""
    stream = store.stream(name)
    loaded = stream.load()
    ids = [int(segment_id.rpartition(":")[2]) for segment_id in loaded.segment_ids]
    if sorted(ids) != list(range(len(ids))):
        raise ValueError(f"text stream {name!r} does not hold classes 0..{len(ids) - 1} exactly once")
    order = np.argsort(ids)
    manifest = stream.manifest().collect()
    texts = (dict(zip(manifest["segment_id"], manifest["text"], strict=True))
             if "text" in manifest.columns else {})
    features = torch.from_numpy(np.ascontiguousarray(loaded.features[order, 0], dtype=np.float32))
    return features, [str(texts.get(loaded.segment_ids[i], "")) for i in order]


@register_task("xmic")
class XMICTask(Task):
    """X-MIC adapters trained on all classes of one dataset (see the module docstring)."""

    defaults = {"trainer": XMIC_TRAINER}

    class Options(BaseModel):
        """``jitter``: ``stored`` (one of the frames stored per bin) or ``native`` (any native
        frame of a bin, X-MIC's; streams extracted with ``--sampling native``)."""

        model_config = ConfigDict(extra="forbid")
        jitter: Literal["stored", "native"] = "stored"

    @property
    def native(self) -> bool:
        return self.options.jitter == "native"

    @property
    def classified(self) -> str:
        return self.config.head.kwargs.get("classified") or self.config.data.streams[0]

    @property
    def context(self) -> list[str]:
        """The conditioning streams (the head's ``context``, default: the run's streams)."""
        return list(self.config.head.kwargs.get("context") or self.config.data.streams)

    def layout(self) -> tuple[int, int]:
        """``(bins, frames per bin)`` of the head's streams (native jitter: one per bin)."""
        bins = self.config.head.kwargs.get("bins") or 16
        if self.native:
            return bins, 1
        streams = list(dict.fromkeys([self.classified, *self.context]))
        return stream_layout(self.store, streams, bins=bins)

    def load_options(self) -> dict[str, Any]:
        if self.native:  # every stored frame: the bins are drawn from them (see load)
            return {}
        bins, per_bin = self.layout()
        return {"bins": bins, "per_bin": per_bin}

    def load(self, split: str | None = None, *, segment_ids: Sequence[str] | None = None,
             streams: Sequence[str] | None = None, **options: Any) -> HeadData:
        """As :meth:`Task.load`; with native jitter, a
        :class:`~egofeat.heads.jitter.JitteredData` of the classified stream and the
        conditioning views, by the bin rule of the dataset's X-MIC loader."""
        if self.native:
            dataset = options.get("dataset") or self.config.data.dataset
            options = {**options, "native": xmic_native_bins(dataset, self.layout()[0]),
                       "context_views": {context_view(name): name for name in self.context}}
            streams = [self.classified]
        return super().load(split, segment_ids=segment_ids, streams=streams, **options)

    def in_dims(self, train: HeadData) -> dict[str, int]:
        if not self.native:
            return super().in_dims(train)
        keys = [self.classified, *(context_view(name) for name in self.context)]
        return {key: train.in_dims[key] for key in keys}

    def dataset(self, data: HeadData) -> str:
        """The dataset whose vocabulary the head is trained on."""
        if self.config.data.dataset:
            return self.config.data.dataset
        found = data.meta["dataset"].unique().to_list() if "dataset" in data.meta.columns else []
        return found[0] if len(found) == 1 else ""

    def build_model(self, train: HeadData) -> XMICClassifier:
        torch.manual_seed(self.config.trainer.seed)
        kwargs = dict(self.config.head.kwargs)
        kwargs["bins"] = kwargs.get("bins") or self.layout()[0]
        if self.native:
            kwargs["classified"] = self.classified
            kwargs["context"] = [context_view(name) for name in self.context]
        dataset, tasks = self.dataset(train), list(self.config.trainer.tasks)
        kwargs["class_text"] = self._class_text_pattern(kwargs.get("class_text"), dataset, tasks)
        model = create_head("xmic", in_dims=self.in_dims(train), num_frames=train.num_frames,
                            num_classes=self.num_classes(train), **kwargs)
        for task in tasks:
            name = kwargs["class_text"].format(task=task, dataset=dataset)
            text, _ = load_class_text(self.store, name)
            if text.shape[0] != train.num_classes[task]:
                raise ValueError(f"text stream {name!r} holds {text.shape[0]} classes, the data "
                                 f"{train.num_classes[task]} {task} classes: use the dataset's vocabulary")
            model.set_class_embeddings(task, text)
        return model

    def _class_text_pattern(self, given: str | None, dataset: str, tasks: Sequence[str]) -> str:
        pattern = given or class_text_stream(stream_prefix(self.classified), "{dataset}", "{task}")
        if all(self.store.has_stream(pattern.format(task=t, dataset=dataset)) for t in tasks):
            return pattern
        texts = [name for name in self.store.stream_names() if "/text/" in name]
        raise ValueError(
            f"no class text stream {pattern!r} for tasks {list(tasks)} of {dataset!r} (text streams: "
            f"{texts or 'none'}): write them with `egofeat run xmic --text-only` or set head.class_text"
        )

