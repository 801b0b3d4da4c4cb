"""Video-text retrieval sources: EK-100 multi-instance retrieval, EgoClip and EgoMCQ."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from egofeat.sources.epic100 import load_epic100
from egofeat.sources.errors import SegmentTableError
from egofeat.sources.parsing import cast_column, parse_int_lists, read_table, require_columns
from egofeat.sources.schema import validate_loaded, validate_segments

EGOCLIP_COLUMNS = (
    "clip_idx",
    "video_uid",
    "video_dur",
    "narration_source",
    "narration_ind",
    "narration_time",
    "clip_start",
    "clip_end",
    "clip_text",
    "tag_verb",
    "tag_noun",
)
EGOMCQ_TYPES = {1: "inter", 2: "intra"}
EGOMCQ_CHOICES = 5


@dataclass(frozen=True)
class MirItems:
    """The two galleries of EK-100 multi-instance retrieval.

    ``videos`` is the segment table of the retrieval CSV (one row per video item, file order).
    ``captions`` has one row per sentence-file row, in file order (= relevance-matrix columns):
    ``caption_index`` (0-based row), ``narration_id`` (the segment the caption stands for),
    ``text`` (that segment's narration: the text to embed), ``sentence_text`` (the sentence
    file's own text, which differs for a few appended rows), ``video_index`` (row of the
    segment in ``videos``), and that segment's ``verb_class`` and ``all_noun_classes``, from
    which the relevance matrix is built.
    """

    videos: pl.DataFrame
    captions: pl.DataFrame


def load_epic_mir(videos_path: str | Path, sentences_path: str | Path) -> MirItems:
    """Load ``EPIC_100_retrieval_{test,train}.csv`` and its ``..._sentence.csv``.

    Caption text is the narration of the segment whose ``narration_id`` the sentence row
    carries, not the sentence file's text: for 6 of the 7 rows appended to the test sentence
    file, that text is shifted by one row (formats.md §1.3), and EgoVLP/LaViLa embed the
    referenced segment's narration.
    """
    videos = load_epic100(videos_path)
    sentences_path = Path(sentences_path)
    sentences = read_table(sentences_path)
    require_columns(
        sentences, ("narration_id", "narration"), file=sentences_path, what="a sentence file"
    )
    referenced = videos.select(
        pl.col("segment_id").alias("narration_id"),
        pl.col("narration").alias("text"),
        "verb_class",
        "all_noun_classes",
    ).with_row_index("video_index")
    captions = (
        sentences.select("narration_id", pl.col("narration").alias("sentence_text"))
        .with_row_index("caption_index")
        .join(referenced, on="narration_id", how="left", maintain_order="left")
    )
    unknown = captions["video_index"].is_null()
    if unknown.any():
        row = int(unknown.arg_true()[0]) + 1
        raise SegmentTableError(
            f"narration_id {captions['narration_id'][row - 1]!r} is not a segment of "
            f"{Path(videos_path).name}",
            file=sentences_path,
            row=row,
            column="narration_id",
            fix="pair the sentence file with its own retrieval CSV (test with test)",
        )
    captions = captions.select(
        pl.col("caption_index").cast(pl.Int64),
        "narration_id",
        "text",
        "sentence_text",
        pl.col("video_index").cast(pl.Int64),
        "verb_class",
        "all_noun_classes",
    )
    return MirItems(videos, captions)


def load_egoclip(path: str | Path, *, split: str = "train") -> pl.DataFrame:
    """Load EgoVLP's ``egoclip.csv`` (tab-separated) as a segment table.

    ``segment_id`` is ``clip_idx``; times are ``clip_start``/``clip_end``; ``narration`` is
    ``clip_text``; ``all_noun_classes`` is ``tag_noun`` (EgoClip's 582-noun taxonomy). Extras:
    ``tag_verb`` (ids of the 118-verb taxonomy), ``narration_sec``, ``video_dur``,
    ``narration_source``, ``narration_ind``.
    """
    path = Path(path)
    raw = read_table(path, separator="\t")
    require_columns(raw, EGOCLIP_COLUMNS, file=path, what="egoclip.csv (tab-separated)")
    table = raw.select(
        pl.lit("egoclip").alias("dataset"),
        pl.lit(split).alias("split"),
        pl.col("clip_idx").alias("segment_id"),
        pl.col("video_uid").alias("video_id"),
        pl.col("clip_start").alias("start_sec"),
        pl.col("clip_end").alias("end_sec"),
        pl.col("clip_text").alias("narration"),
    ).with_columns(
        all_noun_classes=parse_int_lists(raw["tag_noun"], file=path, column="tag_noun"),
        tag_verb=parse_int_lists(raw["tag_verb"], file=path, column="tag_verb"),
        narration_sec=cast_column(
            raw["narration_time"], pl.Float64(), file=path, column="narration_time"
        ),
        video_dur=cast_column(raw["video_dur"], pl.Float64(), file=path, column="video_dur"),
        narration_source=raw["narration_source"],
        narration_ind=cast_column(
            raw["narration_ind"], pl.Int64(), file=path, column="narration_ind"
        ),
    )
    return validate_loaded(
        table,
        source=path,
        source_columns={
            "segment_id": "clip_idx",
            "video_id": "video_uid",
            "start_sec": "clip_start",
            "end_sec": "clip_end",
            "all_noun_classes": "tag_noun",
        },
    )


@dataclass(frozen=True)
class EgoMcq:
    """EgoMCQ: one text query and five candidate clips per question.

    ``questions``: ``question_id`` (the JSON key), ``query_text``, ``query_video_uid``,
    ``query_start_sec``, ``query_end_sec``, ``answer`` (0-4, the correct choice) and
    ``type`` (``"inter"``: candidates from different videos, code 1; ``"intra"``: from the
    same video, code 2; EgoVLP's printout swaps these two labels).
    ``choices``: a segment table of the candidate clips, ``segment_id`` ``"{question_id}_{k}"``,
    with extras ``question_id`` and ``choice`` (k, 0-4).
    """

    questions: pl.DataFrame
    choices: pl.DataFrame


def load_egomcq(path: str | Path, *, split: str = "val") -> EgoMcq:
    """Load EgoVLP's ``egomcq.json`` (a dict of questions keyed ``"0"``..``"N-1"``)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SegmentTableError(f"not valid JSON ({error})", file=path) from error
    if not isinstance(document, dict):
        raise SegmentTableError(
            "expected a JSON object of questions keyed by index", file=path, fix="use egomcq.json"
        )
    questions, choices = [], []
    for question_id, question in document.items():
        questions.append(_mcq_question(question_id, question, path))
        for k in range(EGOMCQ_CHOICES):
            clip = _mcq_clip(question["choices"], str(k), path, question_id)
            choices.append(
                {
                    "segment_id": f"{question_id}_{k}",
                    "question_id": question_id,
                    "choice": k,
                    **clip,
                }
            )
    question_table = pl.DataFrame(
        questions,
        schema={
            "question_id": pl.Utf8,
            "query_text": pl.Utf8,
            "query_video_uid": pl.Utf8,
            "query_start_sec": pl.Float64,
            "query_end_sec": pl.Float64,
            "answer": pl.Int64,
            "type": pl.Utf8,
        },
    )
    choice_table = pl.DataFrame(
        choices,
        schema={
            "segment_id": pl.Utf8,
            "question_id": pl.Utf8,
            "choice": pl.Int64,
            "video_id": pl.Utf8,
            "start_sec": pl.Float64,
            "end_sec": pl.Float64,
            "narration": pl.Utf8,
        },
    ).with_columns(pl.lit("egomcq").alias("dataset"), pl.lit(split).alias("split"))
    return EgoMcq(question_table, validate_segments(choice_table, source=path))


def _mcq_question(question_id: str, question: Any, path: Path) -> dict:
    where = f"question {question_id!r}"
    if not isinstance(question, dict):
        raise SegmentTableError(f"{where} is not an object", file=path, column=question_id)
    for key in ("query", "choices", "answer", "types"):
        if key not in question:
            raise SegmentTableError(
                f"{where} has no {key!r}", file=path, column=key, fix="use egomcq.json as released"
            )
    if question["types"] not in EGOMCQ_TYPES:
        raise SegmentTableError(
            f"{where} has types {question['types']!r}",
            file=path,
            column="types",
            fix="types is 1 (inter-video) or 2 (intra-video)",
        )
    if question["answer"] not in range(EGOMCQ_CHOICES) or isinstance(question["answer"], bool):
        raise SegmentTableError(
            f"{where} has answer {question['answer']!r}",
            file=path,
            column="answer",
            fix=f"answer is the index of the correct choice, 0..{EGOMCQ_CHOICES - 1}",
        )
    query = _mcq_clip({"query": question["query"]}, "query", path, question_id)
    return {
        "question_id": question_id,
        "query_text": query["narration"],
        "query_video_uid": query["video_id"],
        "query_start_sec": query["start_sec"],
        "query_end_sec": query["end_sec"],
        "answer": question["answer"],
        "type": EGOMCQ_TYPES[question["types"]],
    }


def _mcq_clip(container: Any, key: str, path: Path, question_id: str) -> dict:
    clip = container.get(key) if isinstance(container, dict) else None
    where = f"question {question_id!r} {'query' if key == 'query' else f'choice {key}'}"
    if not isinstance(clip, dict):
        raise SegmentTableError(
            f"{where} is missing",
            file=path,
            column=key,
            fix=f"each question has a query clip and choices '0'..'{EGOMCQ_CHOICES - 1}'",
        )
    for field in ("video_uid", "clip_start", "clip_end", "clip_text"):
        if field not in clip:
            raise SegmentTableError(
                f"{where} has no {field!r}", file=path, column=field, fix="use egomcq.json"
            )
    try:
        start, end = float(clip["clip_start"]), float(clip["clip_end"])
    except (TypeError, ValueError) as error:
        raise SegmentTableError(
            f"{where} has non-numeric clip times ({error})", file=path, column="clip_start"
        ) from error
    return {
        "video_id": clip["video_uid"],
        "start_sec": start,
        "end_sec": end,
        "narration": clip["clip_text"],
    }
