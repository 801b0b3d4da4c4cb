"""Loading annotation files into the canonical segment table, and summarizing it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from egofeat import sources
from egofeat.store import FeatureStore

#: Datasets `egofeat segments` / `egofeat extract` can read by name.
DATASETS = ("epic100", "ego4d", "generic")


def load_segment_file(
    path: str | Path,
    dataset: str,
    *,
    split: str | None = None,
    allow_pickle: bool = False,
    mapping: dict[str, str] | str | None = None,
    window: str = "action",
    classes: str | Path | None = None,
) -> pl.DataFrame:
    """Load one annotation file as a validated segment table.

    ``epic100``: EPIC-KITCHENS-100 CSVs (or their ``.pkl`` twins with ``allow_pickle``);
    class ids are checked against the class files (beside the CSV, or in ``classes``).
    ``ego4d``: an LTA file ``fho_lta_{train,val}.json`` (or its ``_w_narrations`` variant;
    the split from the file) or ``fho_main.json`` (``split`` required); ``window`` = action |
    xmic | xmic-original | eilev (:data:`egofeat.sources.WINDOWS`); class ids from the taxonomy
    in ``classes`` when given.
    ``generic``: any CSV/TSV/parquet with ``mapping`` (a dict or a JSON string) from canonical
    column names to the file's columns.
    """
    path = Path(path)
    found = {task: r.vocabulary for task, r in
             sources.class_list_vocabularies(dataset, path, classes).items()}
    if dataset == "epic100":
        return sources.load_epic100(path, split=split, allow_pickle=allow_pickle,
                                    verb_classes=found.get("verb"), noun_classes=found.get("noun"))
    if dataset == "ego4d":
        if window not in sources.WINDOWS:
            raise ValueError(f"unknown --window {window!r}; choose one of {', '.join(sources.WINDOWS)}")
        return sources.load_ego4d(path, split=split, window=window,  # type: ignore[arg-type]
                                  verb_vocab=found.get("verb"), noun_vocab=found.get("noun"))
    if dataset == "generic":
        if mapping is None:
            raise ValueError("generic segments need --mapping '{\"segment_id\": \"id\", ...}'")
        parsed = json.loads(mapping) if isinstance(mapping, str) else mapping
        return sources.load_segments(path, parsed, dataset=path.stem, split=split)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def segment_vocabularies(files: Sequence[str | Path], dataset: str, table: pl.DataFrame,
                         classes: str | Path | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The vocabularies the segments of ``files`` are labelled in (their class lists, else
    their own names: :mod:`egofeat.sources.vocabularies`), and the table labelled by them."""
    found = sources.class_list_vocabularies(dataset, files[0], classes)
    missing = [task for task in ("verb", "noun") if task not in found]
    if missing:
        what = ", ".join(Path(f).name for f in files)
        table, named = sources.table_vocabularies(table, what, missing)
        found.update(named)
    return table, found


def store_vocabularies(store: FeatureStore, dataset: str, vocabularies: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the vocabularies in ``store`` (another one for the same dataset and task is refused);
    returns task -> ``{"classes": n, "source": ...}``."""
    for task, resolved in vocabularies.items():
        store.add_vocabulary(sources.vocabulary_frame(dataset, task, resolved))
    return {task: {"classes": len(r.vocabulary), "source": r.source} for task, r in vocabularies.items()}


def segment_summary(table: pl.DataFrame) -> dict[str, Any]:
    """Rows, videos, participants, duration and the verb/noun classes present."""
    durations = table["end_sec"] - table["start_sec"]
    return {
        "rows": table.height,
        "datasets": sorted(table["dataset"].unique().to_list()),
        "splits": {s: n for s, n in table.group_by("split").len().sort("split").iter_rows()},
        "videos": table["video_id"].n_unique(),
        "participants": table["participant_id"].drop_nulls().n_unique(),
        "hours": round(float(durations.sum()) / 3600, 2),
        "mean_segment_sec": round(float(durations.mean() or 0.0), 2),
        "verb_classes_present": table["verb_class"].drop_nulls().n_unique(),
        "noun_classes_present": table["noun_class"].drop_nulls().n_unique(),
        "labelled_rows": table.filter(pl.col("verb_class").is_not_null()).height,
    }


def segments_command(
    path: str | Path,
    dataset: str,
    *,
    out: str | Path | None = None,
    store: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Load, validate and summarize a segment file; optionally save it to parquet or a store."""
    table = load_segment_file(path, dataset, **options)
    table, vocabularies = segment_vocabularies([path], dataset, table, options.get("classes"))
    summary = {"file": str(path), **segment_summary(table),
               "vocabularies": {t: {"classes": len(r.vocabulary), "source": r.source}
                                for t, r in vocabularies.items()}}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.write_parquet(out)
        summary["out"] = str(out)
    if store is not None:
        opened = FeatureStore.open(store, create=True)
        store_vocabularies(opened, table["dataset"][0] if table.height else dataset, vocabularies)
        summary["added_to_store"] = opened.add_segments(table)
    return summary
