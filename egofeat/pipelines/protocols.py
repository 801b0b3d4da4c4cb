"""Retrieval protocols on stored features: EK-100 MIR, EgoMCQ and Charades-Ego.

Scored with a retrieval run's projections (``egofeat train --head retrieval``) or zero-shot,
straight from stored features whose video and text sides share one space (CLIP image and text
features), through the one loader (frame-pooled features):

- ``ek100-mir``: videos × captions cosine similarity, mAP and nDCG in both directions
  (:mod:`egofeat.eval.mir`). The captions are the rows of a sentence file (``--annotations``
  retrieval CSV with ``--sentences``), or the split's distinct narrations. A similarity matrix
  computed elsewhere (``.npy``) is scored against the files directly, like the official script.
- ``egomcq``: each text query against its five candidate clips; accuracy per question type.
- ``charades-ego``: video × class-prompt scores; video-level mAP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from egofeat import eval as metrics_lib
from egofeat.config import ProtocolConfig
from egofeat.eval.mir import score_mir
from egofeat.heads import check_provenance, load_head_data
from egofeat.heads.contrastive import ClipLabels, distinct_captions, dual_softmax, verbs_and_nouns
from egofeat.heads.retrieval import RetrievalHead
from egofeat.pipelines.rundir import RunFolder
from egofeat.sources import MirItems, load_charades_ego, load_egomcq, load_epic_mir
from egofeat.store import STATUS_OK, FeatureStore, Stream

PROTOCOLS = ("ek100-mir", "egomcq", "charades-ego")

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


# ---- embedding stored features -----------------------------------------------------------------


def ok_segment_ids(stream: Stream) -> set[str]:
    """Segment ids with an ``ok`` row in ``stream``."""
    ok = stream.manifest().filter(pl.col("status") == STATUS_OK).select("segment_id").collect()
    return set(ok["segment_id"].to_list())


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
        folder = RunFolder.open(run)
        checkpoint = folder.checkpoint()
        head = checkpoint.build_model()
        if not isinstance(head, RetrievalHead):
            raise ValueError(
                f"{run} is a {folder.info.get('head')!r} run; retrieval protocols need a run trained "
                "with --head retrieval (or zero-shot: --store S --video-stream V --text-stream T)"
            )
        embedder = cls(head.video_stream, head.text_stream, head, checkpoint.provenance, f"run {run}")
        return embedder, folder.store

    def features(self, store: FeatureStore, stream: str, ids: Sequence[str], *, side: str) -> np.ndarray:
        """Pooled features of ``ids`` from ``stream``, checked against the head's training
        features (a text stream of other items, e.g. class prompts, only by its encoder)."""
        trained_as = self.video_stream if side == "video" else self.text_stream
        handle = store.stream(stream)
        if trained_as in self.provenance:
            ignore = TEXT_ITEM_KEYS if side == "text" and stream != trained_as else ()
            check_provenance({trained_as: self.provenance[trained_as]},
                             {trained_as: handle.info.provenance}, ignore=ignore)
        if not len(ids):
            return np.zeros((0, handle.info.dim), dtype=np.float32)
        pooled = load_head_data(store, [stream], tasks=(), segment_ids=ids, pool=True)
        return pooled.features[stream][:, 0].numpy()

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


def evaluate_protocol(protocol: str, inputs: ProtocolConfig) -> dict[str, Any]:
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
    return metrics_lib.mir_relevancy(*verbs_and_nouns(items.videos, "the retrieval CSV"),
                                     *verbs_and_nouns(captions, "the sentence file"))


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
    labels = ClipLabels.from_frame(table)
    return MirGallery(f"split {split!r}, distinct narrations", video_ids, [texts[i] for i in distinct],
                      features[distinct], labels.relevancy(np.arange(len(labels)), caption_rows))


def _ek100_mir(embedder: Embedder, store: FeatureStore, streams: tuple[str, str],
               inputs: ProtocolConfig) -> dict[str, Any]:
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
            inputs: ProtocolConfig) -> dict[str, Any]:
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
                  inputs: ProtocolConfig) -> dict[str, Any]:
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
