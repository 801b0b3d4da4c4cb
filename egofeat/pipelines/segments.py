"""Loading annotation files into the canonical segment table, and summarizing it."""

from __future__ import annotations

import json
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
) -> pl.DataFrame:
    """Load one annotation file as a validated segment table.

    ``epic100``: EPIC-KITCHENS-100 CSVs (or their ``.pkl`` twins with ``allow_pickle``);
    class ids are checked against the class files next to the CSV when present.
    ``ego4d``: ``fho_main.json`` (``split`` required; ``window`` = action | xmic | eilev).
    ``generic``: any CSV/TSV/parquet with ``mapping`` (a dict or a JSON string) from canonical
    column names to the file's columns.
    """
    path = Path(path)
    if dataset == "epic100":
        verbs, nouns = _epic_vocabularies(path.parent)
        return sources.load_epic100(path, split=split, allow_pickle=allow_pickle,
                                    verb_classes=verbs, noun_classes=nouns)
    if dataset == "ego4d":
        if split is None:
            raise ValueError("ego4d segments need --split (fho_main.json holds all splits' actions)")
        windows = {"action": "action", "xmic": sources.XMIC_WINDOW, "eilev": sources.EILEV_WINDOW}
        if window not in windows:
            raise ValueError(f"unknown window {window!r}; choose one of {sorted(windows)}")
        return sources.load_ego4d_fho(path, split=split, window=windows[window])
    if dataset == "generic":
        if mapping is None:
            raise ValueError("generic segments need --mapping '{\"segment_id\": \"id\", ...}'")
        parsed = json.loads(mapping) if isinstance(mapping, str) else mapping
        return sources.load_segments(path, parsed, dataset=path.stem, split=split)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def _epic_vocabularies(folder: Path) -> tuple[Any, Any]:
    verbs, nouns = folder / "EPIC_100_verb_classes.csv", folder / "EPIC_100_noun_classes.csv"
    if verbs.exists() and nouns.exists():
        return sources.Vocabulary.from_epic_csv(verbs), sources.Vocabulary.from_epic_csv(nouns)
    return None, None


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
    summary = {"file": str(path), **segment_summary(table)}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.write_parquet(out)
        summary["out"] = str(out)
    if store is not None:
        summary["added_to_store"] = FeatureStore.open(store, create=True).add_segments(table)
    return summary
