"""Retrieval on store streams: training projector runs, and scoring the retrieval protocols.

Training (``egofeat train --head retrieval --loss infonce|egonce|mimm --stream VIDEO,TEXT``): a
:class:`~egofeat.heads.retrieval.RetrievalHead` projects a video stream (frames averaged) and a
text stream (e.g. ``<encoder>/text/narration``) into a joint space through the shared trainer.
Each epoch is validated by MIR mAP / nDCG on the validation split, where the captions are the
split's distinct narrations (one per distinct stored text feature) and relevancy comes from the
segment table's ``verb_class`` and ``all_noun_classes`` (``noun_class`` when absent).

Protocols (``egofeat eval --protocol ...``), scored with a trained run's projections or
zero-shot, straight from stored features whose video and text sides share one space (CLIP image
and text features):

- ``ek100-mir``: videos × captions cosine similarity, mAP and nDCG in both directions
  (:mod:`egofeat.eval.mir`). The captions are the rows of a sentence file (``--annotations``
  retrieval CSV with ``--sentences``), or the split's distinct narrations. A similarity matrix
  computed elsewhere (``.npy``) is scored against the files directly, like the official script.
- ``egomcq``: each text query against its five candidate clips; accuracy per question type.
- ``charades-ego``: video × class-prompt scores; video-level mAP.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from egofeat import eval as metrics_lib
from egofeat.heads import HeadData, TrainConfig, create_head
from egofeat.heads.checkpoint import check_provenance
from egofeat.heads.config import RunConfig
from egofeat.heads.retrieval import ClipLabels, RetrievalHead, RetrievalLoss, dual_softmax
from egofeat.heads.trainer import Trainer, predict
from egofeat.pipelines.runs import (
    METRICS_FILE,
    RUN_FILE,
    _plot_curves,
    _train_val,
    count_parameters,
    load_run,
)
from egofeat.sources import MirItems, load_charades_ego, load_egomcq, load_epic_mir
from egofeat.store import STATUS_OK, FeatureStore, Stream

PROTOCOLS = ("ek100-mir", "egomcq", "charades-ego")
MONITOR = "val_map_avg"
"""Metric a retrieval run early-stops on, unless the config names another."""

#: Provenance keys that say which items a text stream embeds, not how: a class-prompt stream
#: may be projected by a head trained on the narration stream of the same text encoder.
TEXT_ITEM_KEYS = ("items", "templates", "vocabulary_sha")

MIR_NOTES = (
    "mAP counts an item as relevant only at relevancy 1 but its precision is graded (as JPoSE, "
    "EgoVLP and LaViLa compute it); nDCG is graded and truncated at the items with relevancy > 0",
)
EGOMCQ_NOTES = (
    "inter_video = questions of types 1 (the five candidates come from different videos); "
    "intra_video = types 2 (all five from the same video); EgoVLP and LaViLa print these two "
    "labels swapped",
)
CHARADES_NOTES = (
    "videos without any label get score -inf for every class, so they rank last",
    "a class without a positive video has AP NaN (null in JSON); 'map' is the plain mean over "
    "classes as in the reference code, so any such class makes it NaN; 'map_nanmean' averages "
    "over the classes that have positives",
)


# ---- labels ------------------------------------------------------------------------------------


def _verbs_and_nouns(frame: pl.DataFrame, what: str) -> tuple[np.ndarray, list[list[int]]]:
    """Verb classes and noun-class sets (``all_noun_classes``, else ``[noun_class]``) of rows."""
    has_nouns = "all_noun_classes" in frame.columns or "noun_class" in frame.columns
    if "verb_class" not in frame.columns or not has_nouns:
        raise KeyError(f"{what} needs columns verb_class and all_noun_classes (or noun_class): "
                       f"MIR relevancy is built from them; it has {frame.columns}")
    nouns = pl.col("all_noun_classes") if "all_noun_classes" in frame.columns else None
    if "noun_class" in frame.columns:
        single = pl.concat_list(pl.col("noun_class"))
        nouns = single if nouns is None else nouns.fill_null(single)
    labels = frame.select(pl.col("segment_id"), pl.col("verb_class"), nouns.alias("nouns"))
    unlabelled = labels.filter(pl.col("verb_class").is_null() | pl.col("nouns").is_null())
    if unlabelled.height:
        raise ValueError(
            f"{what}: {unlabelled.height} segments have no verb or noun class (e.g. "
            f"{unlabelled['segment_id'].head(3).to_list()}); retrieval needs both"
        )
    return labels["verb_class"].to_numpy().astype(np.int64), labels["nouns"].to_list()


def clip_labels(table: pl.DataFrame, segment_ids: Sequence[str]) -> ClipLabels:
    """:class:`ClipLabels` of ``segment_ids`` (in that order) from a store's segment table."""
    rows = pl.DataFrame({"segment_id": list(segment_ids)}, schema={"segment_id": pl.Utf8}).join(
        table, on="segment_id", how="left", maintain_order="left"
    )
    verbs, nouns = _verbs_and_nouns(rows, "the segment table")
    times = np.zeros(rows.height)
    if {"start_sec", "end_sec"} <= set(rows.columns):  # the middle of each segment
        middle = rows.select((pl.col("start_sec") + pl.col("end_sec")) / 2).to_series()
        times = middle.fill_null(0.0).to_numpy()
    return ClipLabels(verbs, tuple(tuple(n) for n in nouns), rows["video_id"].fill_null("").to_numpy(), times)


def distinct_captions(text_features: np.ndarray) -> np.ndarray:
    """Rows holding the first occurrence of each distinct text feature, ascending.

    Segments with the same narration have the same stored text feature: the distinct rows are
    the distinct captions, as a sentence file lists them.
    """
    flat = np.ascontiguousarray(np.asarray(text_features).reshape(len(text_features), -1))
    _, first = np.unique(flat, axis=0, return_index=True)
    return np.sort(first)


def score_mir(similarity: np.ndarray, relevancy: np.ndarray) -> tuple[dict[str, float], dict]:
    """MIR metrics, leaving out videos and captions without any item of relevancy 1.

    Their AP is undefined (the official split has none). Returns the metrics and the counts left
    out (``videos_without_match``, ``captions_without_match``).
    """
    rows = (relevancy == 1).any(axis=1)
    columns = (relevancy[rows] == 1).any(axis=0)
    if not (rows.all() and columns.all()):
        similarity = similarity[np.ix_(rows, columns)]
        relevancy = relevancy[np.ix_(rows, columns)]
    dropped = {"videos_without_match": int((~rows).sum()), "captions_without_match": int((~columns).sum())}
    return metrics_lib.mir_metrics(similarity, relevancy), dropped


# ---- training ----------------------------------------------------------------------------------


@dataclass
class MirValidation:
    """Scores a retrieval head on a split: each video against the split's distinct captions.

    Embeddings are computed in fp32 whatever precision training used, so that `egofeat eval`
    reproduces the scores.
    """

    caption_rows: np.ndarray
    relevancy: np.ndarray

    @classmethod
    def of(cls, data: HeadData, labels: ClipLabels, text_stream: str) -> MirValidation:
        captions = distinct_captions(data.features[text_stream].cpu().numpy())
        return cls(captions, labels.relevancy(np.arange(len(labels)), captions))

    def __call__(self, model: torch.nn.Module, data: HeadData, *, batch_size: int = 1024,
                 device: Any = "auto") -> dict[str, float]:
        embedded = predict(model, data, batch_size, device=device, precision="fp32")
        similarity = embedded["video"] @ embedded["text"][self.caption_rows].T
        return score_mir(similarity, self.relevancy)[0]


class RetrievalTrainer(Trainer):
    """The shared trainer, validating by MIR metrics instead of classification accuracy.

    Each epoch's record gets ``val_map_v2t`` … ``val_ndcg_avg`` from ``validation``, so early
    stopping and the best checkpoint follow ``trainer.monitor`` (``val_map_avg`` by default).
    """

    def __init__(self, config: RunConfig, *, validation: MirValidation | None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.validation = validation

    def _run_epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
                   train: HeadData, val: HeadData | None, state: Any, device: torch.device,
                   progress: Any) -> dict[str, Any]:
        # The base epoch would score classification outputs on ``val``: train without it.
        record = super()._run_epoch(model, optimizer, schedule, train, None, state, device, progress)
        if val is not None and self.validation is not None:
            started = time.perf_counter()
            scores = self.validation(model, val, batch_size=self.config.eval_batch_size, device=device)
            record.update({f"val_{key}": value for key, value in scores.items()})
            record["seconds"] = round(record["seconds"] + time.perf_counter() - started, 3)
        return record


def retrieval_config(config: RunConfig) -> RunConfig:
    """``config`` early-stopping on :data:`MONITOR` when it names the classification default."""
    if config.trainer.monitor != TrainConfig.monitor:
        return config
    return dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, monitor=MONITOR))


def train_retrieval_run(store_path: str | Path, out: str | Path, config: RunConfig, *,
                        resume: bool = False) -> dict[str, Any]:
    """Train a retrieval head on a video and a text stream into run folder ``out``.

    The run folder is laid out as other runs (``run.json``, ``metrics.jsonl``, checkpoints,
    ``metrics.json`` with the validation split's MIR metrics, ``plots/``).
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = retrieval_config(config)
    store = FeatureStore.open(store_path)
    train, val, val_name = _train_val(store, config)
    train = train.time_mean()  # the head reads frame means: the loss gathers extra rows from them
    (out / RUN_FILE).write_text(json.dumps({
        "store": str(store.path), "streams": config.data.streams, "tasks": list(config.trainer.tasks),
        "head": config.head.name, "config": config.to_dict(), "val_split": val_name,
    }, indent=1))
    torch.manual_seed(config.trainer.seed)
    model = create_head(config.head.name, in_dims=train.in_dims, num_frames=train.num_frames,
                        num_classes=train.num_classes, **config.head.kwargs)
    table = store.segments().collect()
    captions = distinct_captions(train.features[model.text_stream].numpy())
    loss = RetrievalLoss(model, train, clip_labels(table, train.segment_ids), caption_rows=captions)
    validation = None
    if val is not None:
        validation = MirValidation.of(val, clip_labels(table, val.segment_ids), model.text_stream)
    trainer = RetrievalTrainer(config, validation=validation, loss_fn=loss, run_dir=out)
    fit = trainer.fit(model, train, val, resume=resume)
    summary: dict[str, Any] = {
        "run": str(out), "head": config.head.name, "loss": model.objective.loss,
        "streams": config.data.streams, "epochs": len(fit.history), "best_epoch": fit.best_epoch,
        "stopped_early": fit.stopped_early, "train_rows": len(train), "train_captions": len(captions),
        "trainable_parameters": count_parameters(model),
    }
    if validation is not None:
        metrics = validation(model, val, batch_size=config.trainer.eval_batch_size,
                             device=config.trainer.device)
        (out / METRICS_FILE).write_text(json.dumps({val_name: metrics}, indent=1))
        summary["metrics"] = metrics
    _plot_curves(out, fit.history)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


# ---- embedding stored features -----------------------------------------------------------------


def ok_segment_ids(stream: Stream) -> set[str]:
    """Segment ids with an ``ok`` row in ``stream``."""
    ok = stream.manifest().filter(pl.col("status") == STATUS_OK).select("segment_id").collect()
    return set(ok["segment_id"].to_list())


def pooled_features(stream: Stream, segment_ids: Sequence[str]) -> np.ndarray:
    """Frame-averaged float32 features ``(N, D)`` of ``segment_ids``, in that order."""
    if not len(segment_ids):
        return np.zeros((0, stream.info.dim), dtype=np.float32)
    loaded = stream.load(segment_ids=list(segment_ids))
    if loaded.offsets is not None:  # a variable number of frames per row
        sums = np.add.reduceat(loaded.features.astype(np.float32), loaded.offsets[:-1], axis=0)
        return sums / np.diff(loaded.offsets)[:, None]
    pooled = np.empty((len(loaded), stream.info.dim), dtype=np.float32)
    for start in range(0, len(pooled), 4096):  # bounded float32 temporaries
        pooled[start : start + 4096] = loaded.features[start : start + 4096].mean(axis=1, dtype=np.float32)
    return pooled


@dataclass
class Embedder:
    """Maps stored features to unit vectors of a joint space: a trained head, or zero-shot.

    Zero-shot (``head`` is None), videos are their frame-averaged features and texts their
    features, L2-normalized: cosine similarity of stored features (e.g. CLIP image and text).
    """

    video_stream: str
    text_stream: str
    head: RetrievalHead | None = None
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "zero-shot"

    @classmethod
    def from_run(cls, run: str | Path) -> tuple[Embedder, str]:
        """The projections of a retrieval run, and the store it was trained on."""
        info, checkpoint = load_run(run)
        if info.get("head") != "retrieval":
            raise ValueError(
                f"{run} is a {info.get('head')!r} run; retrieval protocols need a run trained with "
                "--head retrieval (or zero-shot: --store S --video-stream V --text-stream T)"
            )
        head = checkpoint.build_model()
        embedder = cls(head.video_stream, head.text_stream, head, checkpoint.provenance, f"run {run}")
        return embedder, info["store"]

    def features(self, store: FeatureStore, stream: str, ids: Sequence[str], *, side: str) -> np.ndarray:
        """Pooled features of ``ids`` from ``stream``, checked against the head's training
        features (a text stream of other items, e.g. class prompts, only by its encoder)."""
        trained_as = self.video_stream if side == "video" else self.text_stream
        handle = store.stream(stream)
        if trained_as in self.provenance:
            ignore = TEXT_ITEM_KEYS if side == "text" and stream != trained_as else ()
            check_provenance({trained_as: self.provenance[trained_as]},
                             {trained_as: handle.info.provenance}, ignore=ignore)
        return pooled_features(handle, ids)

    def embed(self, features: np.ndarray, *, side: str) -> np.ndarray:
        """``(N, D)`` pooled features of one side to ``(N, E)`` unit vectors."""
        if self.head is None:
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            return features / np.maximum(norms, 1e-8)
        encode = self.head.encode_video if side == "video" else self.head.encode_text
        self.head.eval()
        embedded = np.empty((len(features), self.head.projector.embed_dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(features), 8192):
                embedded[start : start + 8192] = encode(torch.from_numpy(features[start : start + 8192])).numpy()
        return embedded

    def similarity(self, videos: np.ndarray, texts: np.ndarray) -> np.ndarray:
        """Videos × texts cosine similarity of embedded features."""
        if videos.shape[1] != texts.shape[1]:
            raise ValueError(
                f"video embeddings have dimension {videos.shape[1]} but text embeddings "
                f"{texts.shape[1]}: zero-shot scoring needs video and text features of one space "
                "(e.g. the image and text features of one CLIP model)"
            )
        return videos @ texts.T


# ---- protocols ---------------------------------------------------------------------------------


@dataclass
class ProtocolInputs:
    """What a protocol scores: a run (or zero-shot streams), a store, and annotation files."""

    run: Path | None = None
    store: Path | None = None
    split: str = "val"
    annotations: Path | None = None
    sentences: Path | None = None
    similarity: Path | None = None
    video_stream: str | None = None
    text_stream: str | None = None
    dual_softmax: bool = False
    save_similarity: Path | None = None


def evaluate_protocol(protocol: str, inputs: ProtocolInputs) -> dict[str, Any]:
    """Score ``protocol`` (one of :data:`PROTOCOLS`) and return a summary with its metrics (×100)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if inputs.similarity is not None:
        if protocol != "ek100-mir":
            raise ValueError("--similarity scores an EK-100 MIR matrix: use --protocol ek100-mir")
        return score_mir_similarity_file(inputs.similarity, _needed(inputs.annotations, "--annotations FILE (the retrieval CSV)"),
                                         _needed(inputs.sentences, "--sentences FILE (the sentence CSV)"),
                                         dual=inputs.dual_softmax)
    if inputs.run is not None:
        embedder, run_store = Embedder.from_run(inputs.run)
        store = FeatureStore.open(inputs.store or run_store)
    elif inputs.store and inputs.video_stream and inputs.text_stream:
        embedder, store = Embedder(inputs.video_stream, inputs.text_stream), FeatureStore.open(inputs.store)
    else:
        raise ValueError("give a retrieval run folder, or for zero-shot scoring --store S "
                         "--video-stream V --text-stream T (features of one space, e.g. CLIP)")
    streams = (inputs.video_stream or embedder.video_stream, inputs.text_stream or embedder.text_stream)
    scorer = {"ek100-mir": _ek100_mir, "egomcq": _egomcq, "charades-ego": _charades_ego}[protocol]
    summary = scorer(embedder, store, streams, inputs)
    context = {"protocol": protocol, "model": embedder.source, "store": str(store.path),
               "video_stream": streams[0], "text_stream": streams[1]}
    return {**context, **summary}


def _needed(value: Path | None, option: str) -> Path:
    """``value`` of a required file option, which must exist."""
    if value is None:
        raise ValueError(f"missing {option}")
    if not Path(value).exists():
        raise FileNotFoundError(f"{option.split()[0]} {value}: no such file")
    return Path(value)


def mir_items_relevancy(items: MirItems) -> np.ndarray:
    """Relevancy of EK-100 MIR items: videos in retrieval-CSV order × captions in sentence-file
    order (each caption labelled as the segment it names)."""
    captions = items.captions.rename({"narration_id": "segment_id"})
    return metrics_lib.mir_relevancy(*_verbs_and_nouns(items.videos, "the retrieval CSV"),
                                     *_verbs_and_nouns(captions, "the sentence file"))


def score_mir_similarity_file(similarity: str | Path, annotations: str | Path, sentences: str | Path,
                              *, dual: bool = False) -> dict[str, Any]:
    """Score a videos × captions similarity matrix (``.npy``, rows in the retrieval CSV's order,
    columns in the sentence file's) as the official EK-100 MIR evaluation does."""
    items = load_epic_mir(annotations, sentences)
    try:
        matrix = np.load(similarity, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{similarity}: not a plain .npy array ({error})") from None
    expected = (items.videos.height, items.captions.height)
    if matrix.shape != expected:
        hint = "; it looks transposed (captions × videos): save S.T" if matrix.shape == expected[::-1] else ""
        raise ValueError(f"{similarity}: shape {matrix.shape}, expected {expected} (videos of "
                         f"{Path(annotations).name} × captions of {Path(sentences).name}, in file order){hint}")
    if dual:
        matrix = _dual_softmax(matrix)
    return {"protocol": "ek100-mir", "similarity": str(similarity), "annotations": str(annotations),
            "sentences": str(sentences), "videos": expected[0], "captions": expected[1],
            "dual_softmax": dual, "metrics": metrics_lib.mir_metrics(matrix, mir_items_relevancy(items)),
            "notes": list(MIR_NOTES)}


def _dual_softmax(similarity: np.ndarray) -> np.ndarray:
    """EgoVLP's dual softmax for a videos × captions matrix (its reference runs on captions × videos)."""
    return dual_softmax(torch.from_numpy(np.ascontiguousarray(similarity.T, dtype=np.float32))).T.numpy()


@dataclass
class MirGallery:
    """Videos and captions of an EK-100 MIR evaluation, with their relevancy.

    ``captions`` holds the pooled text features of the captions that have one (``caption_ids``
    in the text stream), in ``caption_ids`` order.
    """

    description: str
    video_ids: list[str]
    caption_ids: list[str]
    captions: np.ndarray
    relevancy: np.ndarray


def _files_gallery(embedder: Embedder, store: FeatureStore, text_stream: str, text_ok: set[str],
                   annotations: Path, sentences: Path) -> MirGallery:
    """The official items: retrieval-CSV rows × sentence-file rows, in file order."""
    items = load_epic_mir(annotations, sentences)
    caption_ids = items.captions["narration_id"].to_list()
    captions = embedder.features(store, text_stream, [c for c in caption_ids if c in text_ok], side="text")
    return MirGallery(f"{annotations.name} × {sentences.name}", items.videos["segment_id"].to_list(),
                      caption_ids, captions, mir_items_relevancy(items))


def _split_gallery(embedder: Embedder, store: FeatureStore, text_stream: str, text_ok: set[str],
                   split: str) -> MirGallery:
    """A split of the store: its segments × its distinct narrations."""
    table = store.segments().collect().filter(pl.col("split") == split)
    if table.height == 0:
        raise ValueError(f"the store has no segments in split {split!r}")
    video_ids = table["segment_id"].to_list()
    texts = [segment for segment in video_ids if segment in text_ok]
    features = embedder.features(store, text_stream, texts, side="text")
    distinct = distinct_captions(features)
    row_of = {segment: row for row, segment in enumerate(video_ids)}
    caption_rows = np.array([row_of[texts[i]] for i in distinct], dtype=np.int64)
    labels = clip_labels(table, video_ids)
    return MirGallery(f"split {split!r}, distinct narrations", video_ids, [texts[i] for i in distinct],
                      features[distinct], labels.relevancy(np.arange(len(labels)), caption_rows))


def _ek100_mir(embedder: Embedder, store: FeatureStore, streams: tuple[str, str],
               inputs: ProtocolInputs) -> dict[str, Any]:
    """EK-100 MIR over the files' items (``--annotations`` and ``--sentences``) or a split."""
    video_stream, text_stream = streams
    video_ok, text_ok = ok_segment_ids(store.stream(video_stream)), ok_segment_ids(store.stream(text_stream))
    if inputs.annotations is not None or inputs.sentences is not None:
        gallery = _files_gallery(embedder, store, text_stream, text_ok,
                                 _needed(inputs.annotations, "--annotations FILE (the retrieval CSV)"),
                                 _needed(inputs.sentences, "--sentences FILE (the sentence CSV)"))
    else:
        gallery = _split_gallery(embedder, store, text_stream, text_ok, inputs.split)
    keep_videos = np.array([v in video_ok for v in gallery.video_ids], dtype=bool)
    keep_captions = np.array([c in text_ok for c in gallery.caption_ids], dtype=bool)
    video_ids = [v for v, keep in zip(gallery.video_ids, keep_videos, strict=True) if keep]
    caption_ids = [c for c, keep in zip(gallery.caption_ids, keep_captions, strict=True) if keep]
    videos = embedder.embed(embedder.features(store, video_stream, video_ids, side="video"), side="video")
    similarity = embedder.similarity(videos, embedder.embed(gallery.captions, side="text"))
    if inputs.dual_softmax:
        similarity = _dual_softmax(similarity)
    metrics, unmatched = score_mir(similarity, gallery.relevancy[np.ix_(keep_videos, keep_captions)])
    summary: dict[str, Any] = {
        "gallery": gallery.description, "videos": len(video_ids), "captions": len(caption_ids),
        "videos_missing": int((~keep_videos).sum()), "captions_missing": int((~keep_captions).sum()),
        **unmatched, "dual_softmax": inputs.dual_softmax, "metrics": metrics, "notes": list(MIR_NOTES),
    }
    if inputs.save_similarity is not None:  # in file order when nothing is missing: scoreable with --similarity
        summary["saved"] = save_similarity(inputs.save_similarity, similarity, video_ids, caption_ids)
    return summary


def save_similarity(path: str | Path, similarity: np.ndarray, video_ids: Sequence[str],
                    caption_ids: Sequence[str]) -> list[str]:
    """Write ``similarity`` as float32 ``.npy``, its row ids to ``<stem>.videos.txt`` and its
    column ids to ``<stem>.captions.txt`` (one segment id a line)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"--save-similarity writes a .npy file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, similarity.astype(np.float32))
    written = [path]
    for suffix, ids in ((".videos.txt", video_ids), (".captions.txt", caption_ids)):
        written.append(path.with_suffix(suffix))
        written[-1].write_text("".join(f"{segment}\n" for segment in ids))
    return [str(p) for p in written]


def _egomcq(embedder: Embedder, store: FeatureStore, streams: tuple[str, str],
            inputs: ProtocolInputs) -> dict[str, Any]:
    """EgoMCQ from a store holding the choice clips of ``egomcq.json`` as segments
    ``{question}_{k}`` (:func:`egofeat.sources.load_egomcq`); the text query of a question is the
    stored narration feature of its answer clip, whose text must equal the query's."""
    annotations = _needed(inputs.annotations, "--annotations FILE (egomcq.json)")
    mcq = load_egomcq(annotations)
    answers = mcq.questions.join(
        mcq.choices.select("question_id", pl.col("choice").alias("answer"), "narration"),
        on=["question_id", "answer"], how="left", maintain_order="left",
    )
    differs = answers.filter(pl.col("narration") != pl.col("query_text"))
    if differs.height:
        first = differs.row(0, named=True)
        raise ValueError(
            f"{annotations}: question {first['question_id']!r} asks {first['query_text']!r} but its "
            f"answer clip says {first['narration']!r}; egofeat embeds the answer clip's narration "
            f"as the query ({differs.height} questions differ)"
        )
    video_ok, text_ok = ok_segment_ids(store.stream(streams[0])), ok_segment_ids(store.stream(streams[1]))
    questions = answers["question_id"].to_list()
    choice_ids = [[f"{q}_{k}" for k in range(5)] for q in questions]
    query_ids = [f"{q}_{a}" for q, a in zip(questions, answers["answer"], strict=True)]
    keep = np.array([all(c in video_ok for c in choices) and query in text_ok
                     for choices, query in zip(choice_ids, query_ids, strict=True)], dtype=bool)
    if not keep.any():
        raise ValueError(f"no question of {annotations} has all its clips in {streams[0]!r} and its "
                         f"query text in {streams[1]!r}")
    kept = np.flatnonzero(keep)
    clip_ids = [c for i in kept for c in choice_ids[i]]
    videos = embedder.embed(embedder.features(store, streams[0], clip_ids, side="video"), side="video")
    texts = embedder.embed(embedder.features(store, streams[1], [query_ids[i] for i in kept], side="text"),
                           side="text")
    embedder.similarity(videos[:1], texts[:1])  # checks the two sides share a space
    similarity = np.einsum("qe,qke->qk", texts, videos.reshape(len(kept), 5, -1))
    types = answers["type"].replace_strict({"inter": 1, "intra": 2}).to_numpy()[kept]
    metrics = metrics_lib.egomcq_accuracy(similarity, answers["answer"].to_numpy()[kept], types)
    return {"questions": int(keep.sum()), "questions_missing": int((~keep).sum()),
            "inter_video_questions": int((types == 1).sum()), "intra_video_questions": int((types == 2).sum()),
            "metrics": metrics, "notes": list(EGOMCQ_NOTES)}


def class_prompt_ids(stream: Stream) -> list[str]:
    """Rows of a class-prompt text stream in class order: ids ``<task>:<class index>``, as
    ``egofeat extract`` writes them, covering 0 .. C-1."""
    ids = sorted(ok_segment_ids(stream))
    indices = []
    for segment in ids:
        _, _, index = segment.rpartition(":")
        if not index.isdigit():
            raise ValueError(f"stream {stream.name!r} row {segment!r} is not a class prompt "
                             "'<task>:<class index>'; pass a class-prompt text stream")
        indices.append(int(index))
    if sorted(indices) != list(range(len(indices))):
        raise ValueError(f"stream {stream.name!r}: class indices must run 0..{len(indices) - 1} "
                         f"without gaps or repeats, got {sorted(indices)[:10]}...")
    return [segment for _, segment in sorted(zip(indices, ids, strict=True))]


def _charades_ego(embedder: Embedder, store: FeatureStore, streams: tuple[str, str],
                  inputs: ProtocolInputs) -> dict[str, Any]:
    """Charades-Ego from a store holding the videos of a ``CharadesEgo_v1_*.csv`` as segments
    (:func:`egofeat.sources.load_charades_ego`) and a class-prompt text stream (``--text-stream``)."""
    annotations = _needed(inputs.annotations, "--annotations FILE (CharadesEgo_v1_test_only1st.csv)")
    if embedder.head is not None and inputs.text_stream is None:
        raise ValueError("charades-ego scores videos against class prompts: pass --text-stream NAME, "
                         "a class-prompt text stream of the run's text encoder")
    table = load_charades_ego(annotations)
    prompts = class_prompt_ids(store.stream(streams[1]))
    video_ok = ok_segment_ids(store.stream(streams[0]))
    table = table.with_columns(pl.col("segment_id").is_in(list(video_ok)).alias("present"))
    present = table.filter("present")
    if present.height == 0:
        raise ValueError(f"no video of {annotations} is in stream {streams[0]!r}")
    labels = np.zeros((present.height, len(prompts)), dtype=np.int8)
    for row, classes in enumerate(present["action_classes"].to_list()):
        if classes and max(classes) >= len(prompts):
            raise ValueError(f"{annotations}: video {present['segment_id'][row]!r} has class "
                             f"c{max(classes):03d}, but {streams[1]!r} holds {len(prompts)} classes")
        labels[row, classes] = 1
    videos = embedder.embed(embedder.features(store, streams[0], present["segment_id"].to_list(),
                                              side="video"), side="video")
    texts = embedder.embed(embedder.features(store, streams[1], prompts, side="text"), side="text")
    scores = embedder.similarity(videos, texts)
    reference, per_class = metrics_lib.charades_map(scores, labels)
    present_mean, _ = metrics_lib.charades_map_nanmean(scores, labels)
    return {"videos": present.height, "videos_missing": table.height - present.height,
            "classes": len(prompts), "videos_without_labels": int((labels.sum(axis=1) == 0).sum()),
            "classes_without_positives": np.flatnonzero(np.isnan(per_class)).tolist(),
            "metrics": {"map": reference, "map_nanmean": present_mean},
            "per_class_ap": per_class.tolist(), "notes": list(CHARADES_NOTES)}
