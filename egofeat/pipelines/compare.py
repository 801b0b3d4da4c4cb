"""`egofeat runs`: which run won — a table of run folders, their differences and metrics.

Each row is a run folder (``run.json``): its task, head, streams, recipe, the settings in which
it differs from the other runs listed, its validation metrics (``metrics.json``), trainable
parameters and training time. Runs are found by walking the given folders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from egofeat.pipelines.rundir import RUN_FILE, RunFolder

__all__ = ["compare_runs", "find_runs", "plot_runs", "short_labels"]

#: settings that say where or how fast a run ran, not what it learned
_IGNORED = ("trainer.progress", "trainer.device", "trainer.num_threads", "trainer.features_on_device",
            "trainer.eval_batch_size", "data.cache_dir")
#: metrics shown first when runs have them
_HEADLINE = ("all_action_accuracy_at_1", "all_verb_accuracy_at_1", "all_noun_accuracy_at_1",
             "map_avg", "ndcg_avg")


def find_runs(paths: Iterable[str | Path]) -> list[RunFolder]:
    """Run folders at or below ``paths`` (sorted by path)."""
    found: dict[Path, RunFolder] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: give run folders or folders holding them")
        files = [path / RUN_FILE] if (path / RUN_FILE).is_file() else sorted(path.rglob(RUN_FILE))
        for file in files:
            found.setdefault(file.parent.resolve(), RunFolder.open(file.parent))
    if not found:
        raise FileNotFoundError(f"no run folder (with {RUN_FILE}) in {', '.join(map(str, paths))}")
    return [found[key] for key in sorted(found)]


def compare_runs(paths: Iterable[str | Path], *, sort: str | None = None) -> dict[str, Any]:
    """The comparison of the runs at or below ``paths``, best first when ``sort`` names a metric."""
    runs = find_runs(paths)
    configs = [_flat(run.info.get("config", {})) for run in runs]
    keys = sorted({key for config in configs for key in config} - set(_IGNORED))
    differing = [key for key in keys if len({repr(c.get(key)) for c in configs}) > 1]
    rows = []
    for run, config in zip(runs, configs, strict=True):
        summary = run.info.get("summary", {})
        metrics = run.metrics().get(run.info.get("val_split", ""), summary.get("metrics") or {})
        rows.append({
            "run": str(run.path), "task": run.info.get("task"), "head": run.info.get("head"),
            "streams": run.info.get("streams", []), "recipe": run.info.get("recipe"),
            "differs": {key: config.get(key) for key in differing},
            "metrics": metrics, "val_split": run.info.get("val_split"),
            "trainable_parameters": summary.get("trainable_parameters"),
            "epochs": summary.get("epochs"), "best_epoch": summary.get("best_epoch"),
            "seconds": summary.get("seconds"),
        })
    names = _metric_names(rows)
    if sort is not None:
        metric = _resolve_metric(sort, names)
        sign = 1 if metric.endswith("loss") else -1
        rows.sort(key=lambda row: (row["metrics"].get(metric) is None, sign * (row["metrics"].get(metric) or 0)))
    return {"runs": rows, "differences": differing, "metrics": names,
            "sorted_by": _resolve_metric(sort, names) if sort else None}


def plot_runs(comparison: Mapping[str, Any], metric: str, out: str | Path) -> str:
    """A bar chart of ``metric`` per run (``egofeat runs --plot METRIC --out FILE.png``)."""
    from egofeat.eval.plots import plot_run_comparison

    metric = _resolve_metric(metric, comparison["metrics"])
    labels = short_labels([row["run"] for row in comparison["runs"]])
    values = [row["metrics"].get(metric) for row in comparison["runs"]]
    return str(plot_run_comparison(labels, values, out, metric=metric))


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _metric_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names = list(dict.fromkeys(k for row in rows for k, v in row["metrics"].items() if isinstance(v, (int, float))))
    return [*[m for m in _HEADLINE if m in names], *[m for m in names if m not in _HEADLINE]]


def _resolve_metric(name: str, names: Sequence[str]) -> str:
    """A metric by its name, or by a part of it that only one metric has (``action_accuracy_at_1``)."""
    if name in names:
        return name
    if f"all_{name}" in names:  # "action_accuracy_at_1": over all segments, not a subset
        return f"all_{name}"
    matches = [m for m in names if name in m]
    if len(matches) == 1:
        return matches[0]
    hint = f"it matches {matches[:6]}" if matches else f"the runs have {list(names)[:12]}"
    raise ValueError(f"--sort/--plot {name!r} names no one metric of these runs; {hint}")


def short_labels(paths: Sequence[str]) -> list[str]:
    """Run paths without their common prefix: short bar labels."""
    parts = [Path(p).parts for p in paths]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return ["/".join(p[common:]) for p in parts]
