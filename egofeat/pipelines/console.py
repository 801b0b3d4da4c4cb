"""Rendering results for people (rich) and machines (JSON)."""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from egofeat._util.jsonsafe import jsonable

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (NaN becomes null, numpy/polars values become plain)."""
    print(json.dumps(jsonable(data), indent=1))


def frame_table(frame: pl.DataFrame, title: str | None = None, max_rows: int = 50) -> Table:
    """A rich table of a polars frame (first ``max_rows`` rows)."""
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(column)
    for row in frame.head(max_rows).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    if frame.height > max_rows:
        table.caption = f"{max_rows} of {frame.height} rows shown"
    return table


def print_store_info(info: dict[str, Any]) -> None:
    """Render `egofeat info` output."""
    console.print(f"[bold]{info['path']}[/bold]  (format v{info['format_version']}, {info['segments']:,} segments)")
    if info["splits"]:
        console.print(frame_table(pl.DataFrame(info["splits"]), title="segments"))
    table = Table(title="streams")
    table.add_column("stream", no_wrap=True)
    for column in ("kind", "rows", "ok", "errors", "frames/row", "dim", "dtype", "parts", "encoder"):
        table.add_column(column, overflow="fold")
    for s in info["streams"]:
        parts = str(s["committed_parts"])
        if s.get("planned_parts"):
            parts = f"{s['committed_parts']}/{s['planned_parts']}"
        table.add_row(
            s["name"], s["kind"], f"{s['rows']:,}", f"{s['ok']:,}", f"{s['errors']:,}",
            str(s["frames_per_row"] or "var"), str(s["dim"]), s["dtype"], parts,
            str(s["provenance"].get("encoder", "")),
        )
    console.print(table)
    for s in info["streams"]:
        if s.get("error_reasons"):
            console.print(f"{s['name']} errors by reason: " + ", ".join(
                f"{reason} {n['rows']:,}" + (" (retryable)" if n["retryable"] == n["rows"] else
                                            f" ({n['retryable']:,} retryable)" if n["retryable"] else "")
                for reason, n in s["error_reasons"].items()))


def print_summary(summary: dict[str, Any], title: str | None = None) -> None:
    """Render a flat summary dict as a two-column table."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


def print_extract_summary(summary: dict[str, Any]) -> None:
    """Render the end-of-run summary of `egofeat extract`: this run's work, then the error
    rows the requested segments have in the streams (also those of earlier runs)."""
    if summary["nothing_to_do"]:
        console.print(f"nothing to do: all {summary['segments']:,} segments are already in "
                      f"{', '.join(summary['streams'])} ({summary['store']})")
        _print_error_rows(summary)
        return
    table = Table(title=f"extracted into {summary['store']} (this run)")
    for column in ("stream", "ok", "errors", "error rows in the stream"):
        table.add_column(column)
    for name in summary["streams"]:
        errors, rows = summary["errors"][name], summary.get("error_rows", {}).get(name, 0)
        table.add_row(name, f"{summary['ok'][name]:,}", f"[red]{errors:,}[/red]" if errors else "0",
                      f"[red]{rows:,}[/red]" if rows else "0")
    console.print(table)
    seconds = summary["seconds"]
    retried = f" ({summary['retried_parts']} retried)" if summary.get("retried_parts") else ""
    console.print(
        f"parts: {summary['done_parts']} done{retried}, {summary['skipped_parts']} skipped of "
        f"{summary['planned_parts']}; frames: {summary['unique_frames']:,} decoded for "
        f"{summary['requested_frames']:,} requested (dedup ratio {summary['dedup_ratio']})"
    )
    console.print(
        f"seconds: decode {seconds['decode_worker']} (worker time), encode {seconds['encode']}, "
        f"write {seconds['write']}, wall {seconds['wall']}"
    )
    for reason, count in summary.get("decode_fallbacks", {}).items():
        console.print(f"[yellow]decode fallback[/yellow] ({count} video{'s' * (count != 1)}): {reason}")
    if summary["text_streams"]:
        console.print(f"text streams: {', '.join(summary['text_streams'])}")
    if summary.get("run_log"):
        console.print(f"run log: {summary['run_log']}")
    if summary.get("failed_parts"):
        shown = ", ".join(summary["failed_parts"][:5]) + (", ..." if len(summary["failed_parts"]) > 5 else "")
        console.print(f"[red]{len(summary['failed_parts'])} parts failed[/red] ({shown}): their errors are "
                      "in the run log; rerun the same command to retry them")
    _print_error_rows(summary)


def _print_error_rows(summary: dict[str, Any]) -> None:
    """The requested segments' error rows (whoever wrote them), by reason, and what to do."""
    rows = sum(summary.get("error_rows", {}).values())
    if not rows:
        return
    earlier = summary.get("errors_from_other_runs", 0)
    reasons = summary.get("error_reasons", {})
    shown = ", ".join(f"{reason} {n['rows']:,}" for reason, n in reasons.items())
    console.print(f"[red]{rows:,} error rows[/red] for the requested segments ({shown})"
                  + (f", {earlier:,} of them from earlier or concurrent runs" if earlier else ""))
    if any(n["retryable"] for n in reasons.values()):
        console.print("retryable ones (missing or unreadable videos, timeouts) are done again by "
                      "the same command with --retry-errors, once their cause is fixed")
    console.print("see them with "
                  f"`egofeat query {summary['store']} \"SELECT stream, segment_id, error_reason, error FROM manifest WHERE status = 'error'\"`")


def print_extract_plan(plan: dict[str, Any]) -> None:
    """Render `egofeat extract --dry-run`."""
    videos = plan["videos"]
    console.print(f"videos: {videos['found']:,} found, {videos['missing']:,} missing"
                  + (f", {videos['unusable']:,} unusable" if videos["unusable"] else "")
                  + f" of {videos['videos']:,} (under {videos['root']}, layout {videos['layout']})")
    for video_id, path in {**videos["missing_examples"], **videos["unusable_examples"]}.items():
        console.print(f"  {video_id}: {path}", highlight=False)
    console.print(f"segments: {plan['segments']:,}; parts: {plan['parts_todo']:,} to do of "
                  f"{plan['parts_planned']:,}" + (f" ({plan['retried_parts']} to retry)" if plan["retried_parts"] else "")
                  + f"; frames to decode: {plan['unique_frames']:,} ({plan['requested_frames']:,} requested)")
    table = Table(title=f"plan for {plan['store']}" + ("" if plan["store_exists"] else " (a new store)"))
    for column in ("stream", "dim", "segments done", "segments to do", "estimated size"):
        table.add_column(column)
    for name, s in plan["streams"].items():
        table.add_row(name + ("" if s["exists"] else " (new)"), str(s["dim"]), f"{s['segments_done']:,}",
                      f"{s['segments_todo']:,}", human_bytes(s["estimated_bytes"]))
    console.print(table)
    console.print(f"estimated store growth: {human_bytes(plan['estimated_bytes'])}; nothing was written (--dry-run)")
    for problem in plan["problems"]:
        console.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)


def human_bytes(n: float) -> str:
    """``1.5 GB``, ``320 KB``, ``12 B``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def print_demo_summary(summary: dict[str, Any]) -> None:
    """Render what `egofeat demo` built."""
    print_extract_summary(summary["extract"])
    console.print(f"dataset: {summary['dataset']['path']} (verbs: {', '.join(summary['dataset']['verbs'])}; "
                  f"nouns: {', '.join(summary['dataset']['nouns'])})")
    console.print(f"streams: {', '.join(summary['streams'])}")
    for run in summary.get("runs", []):
        console.print(f"run [bold]{run['name']}[/bold]: {run['path']}  " + "  ".join(
            f"{k} {v:.1f}" for k, v in run["metrics"].items()))
    if "xmic" in summary:
        xmic = summary["xmic"]
        for task, methods in xmic["tasks"].items():
            console.print(f"X-MIC {xmic['source']} -> {xmic['target']} {task}: " + ";  ".join(
                f"{method} shared {m['shared']:.1f} novel {m['novel']:.1f}" for method, m in methods.items()))
        console.print(f"X-MIC report: {xmic['report']}")
    if "distill_gain" in summary:
        gain = summary["distill_gain"]
        console.print(f"distillation ({gain['recipe']}, {gain['student_stream']} student from "
                      f"{len(gain['teachers'])} teachers): " + ";  ".join(
                          f"{t} top-1 {gain[t]['distilled']:.1f} vs CE-only {gain[t]['ce_only']:.1f} "
                          f"({gain[t]['gain']:+.1f})" for t in ("verb", "noun", "action")))
        console.print(f"distillation report: {gain['report']}")
    console.print(f"done in {summary['seconds']} s; explore with `egofeat info {summary['store']}`")


def print_metrics(summary: dict[str, Any]) -> None:
    """Render a scoring result: its context, then the metrics as a table."""
    metrics = summary.get("metrics", {})
    for key, value in summary.items():
        if key != "metrics":
            console.print(f"{key}: {value}")
    table = Table(title="metrics (x100)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, "n/a" if value is None or (isinstance(value, float) and math.isnan(value))
                      else (f"{value:.2f}" if isinstance(value, float) else str(value)))
    console.print(table)


def print_run_summary(summary: dict[str, Any]) -> None:
    """Render `egofeat train`'s result."""
    console.print(f"run [bold]{summary['run']}[/bold]: head {summary['head']} on {', '.join(summary['streams'])}, "
                  f"{summary['epochs']} epochs (best {summary['best_epoch']}), "
                  f"{summary['trainable_parameters']:,} trainable parameters, {summary['seconds']} s")
    if "metrics" in summary:
        print_metrics({"metrics": summary["metrics"]})
    console.print(f"plots: {summary['run']}/plots/")


def print_distill_summary(summary: dict[str, Any]) -> None:
    """Render `egofeat distill`'s result: the cached teacher logits, then the comparison."""
    cache = summary["teacher_stream"]
    done = [f"{', '.join(cache[key])} {key}" for key in ("written", "reused") if cache[key]]
    console.print(f"teacher logits: stream [bold]{cache['stream']}[/bold] ({'; '.join(done)})")
    report = summary.get("report")
    if report:
        table = Table(title=f"{summary['run']}: distilled student vs teachers vs CE-only")
        for column in ("model", "verb@1", "noun@1", "action@1", "ECE verb %", "ECE noun %"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for entry in report["models"]:
            metrics, ece = entry["metrics"], entry["ece"]
            cells = [metrics.get(f"all_{t}_accuracy_at_1") for t in ("verb", "noun", "action")]
            cells += [100 * ece[t] if ece.get(t) is not None else None for t in ("verb", "noun")]
            table.add_row(entry["model"], *("n/a" if v is None else f"{v:.1f}" for v in cells))
        console.print(table)
        console.print(f"report: {report['markdown']} (and .json); plots: {summary['run']}/plots/")
    console.print(f"done in {summary['seconds']} s")


def print_protocol_summary(summary: dict[str, Any]) -> None:
    """Render a retrieval protocol's scores: context, metrics (x100), then the rules applied."""
    print_metrics({k: v for k, v in summary.items() if k not in ("notes", "per_class_ap")})
    for note in summary.get("notes", []):
        console.print(f"note: {note}", style="dim")


def print_recipes(catalog: dict[str, Any]) -> None:
    """Render `egofeat recipes`: one line per recipe, or the settings of the one asked for."""
    recipes = catalog["recipes"]
    if len(recipes) != 1:
        table = Table(title="recipes (egofeat recipes NAME: its settings and their sources)")
        for column in ("name", "command", "settings", "summary"):
            table.add_column(column, justify="right" if column == "settings" else "left")
        for recipe in recipes:
            table.add_row(recipe["name"], f"egofeat {recipe['command']}", str(len(recipe["settings"])),
                          recipe["summary"])
        console.print(table)
        return
    recipe = recipes[0]
    console.print(f"[bold]{recipe['name']}[/bold] (egofeat {recipe['command']} --recipe {recipe['name']}): "
                  f"{recipe['summary']}\nreference: {recipe['reference']}")
    table = Table()
    for column in ("setting", "value", "source", "note"):
        table.add_column(column)
    for setting in recipe["settings"]:
        table.add_row(setting["key"], json.dumps(setting["value"]), setting["source"], setting["note"])
    console.print(table)


def print_neighbors(summary: dict[str, Any]) -> None:
    """Render `egofeat neighbors`: one table of in-context examples per query (query last)."""
    recipe = f", recipe {summary['recipe']}" if summary.get("recipe") else ""
    console.print(f"{summary['stream']}: pool of {summary['pool']:,} segments ({summary['backend']} "
                  f"exact search), sampler {summary['sampler']}{recipe}, {summary['seconds_selecting']} s to select")
    for result in summary["results"]:
        table = Table(title=f"in-context examples of {result['query']}")
        for column in ("#", "segment", "video", "verb", "noun", "similarity", "bucket", "frame times (s)"):
            table.add_column(column, justify="right" if column in ("#", "similarity") else "left")
        for i, example in enumerate(result["examples"], start=1):
            times = example["frame_times"]
            span = f"{times[0]:.2f}-{times[-1]:.2f} ({len(times)})" if times else ""
            table.add_row(str(i), example["segment_id"], example["video_id"], example["verb"], example["noun"],
                          f"{example['similarity']:.3f}", example["bucket"], span)
        console.print(table)


def print_xmic_report(report: dict[str, Any]) -> None:
    """Render `egofeat run xmic`: top-1 over all / shared / novel target classes per method."""
    if "tasks" not in report:
        console.print("text streams: " + ", ".join(report["text_streams"].values()))
        return
    console.print(f"checkpoint selection: {report['selection']}")
    for task, result in report["tasks"].items():
        for kind, counts in result["splits"].items():
            table = Table(title=f"{report['source']} -> {report['target']}: {task}, {kind} split "
                                f"({counts['shared']} shared / {counts['novel']} novel classes), top-1 %")
            for column in ("method", "all", "shared", "novel", "HM", "class-mean novel", "within"):
                table.add_column(column, justify="left" if column == "method" else "right")
            for method, scores in result["methods"].items():
                m = scores["cross"][kind]
                cells = [m["all_accuracy"], m["shared_accuracy"], m["novel_accuracy"], m["harmonic_mean_accuracy"],
                         m["novel_class_mean_accuracy"], (scores["within"] or {}).get("accuracy")]
                table.add_row(method.replace("_", " "), *("n/a" if v is None or v != v else f"{v:.1f}" for v in cells))
            console.print(table)
        console.print(f"X-MIC {task}: {result['trainable_parameters']:,} trainable parameters")
    console.print(f"report: {report['plots'][0].rsplit('/plots/', 1)[0]}/report.md; done in {report['seconds']} s")


def print_runs(comparison: dict[str, Any]) -> None:
    """Render `egofeat runs`: one row per run, the settings in which the runs really differ,
    headline metrics (fewer on a narrow terminal; everything is in ``--json``)."""
    from egofeat.pipelines.compare import short_labels

    runs = comparison["runs"]
    metrics = comparison["metrics"][: 4 if console.width >= 120 else 3]
    shown = [key for key in comparison["differences"]  # set in two runs to different values
             if not key.startswith(("data.streams", "head.name", "task.name"))
             and len({repr(r["differs"].get(key)) for r in runs if r["differs"].get(key) is not None}) > 1]
    text = {
        "run": short_labels([r["run"] for r in runs]),
        "head": [r["head"] if r["task"] == "classification" else f"{r['task']}/{r['head']}" for r in runs],
        "streams": [", ".join(r["streams"]) for r in runs],
        "recipe": [r["recipe"] or "" for r in runs],
        "differs": ["\n".join(f"{k.rsplit('.', 1)[-1]}={r['differs'][k]}" for k in shown
                               if r["differs"].get(k) is not None) for r in runs],
    }
    text = {column: cells for column, cells in text.items() if any(cells)}  # no empty columns
    numbers = {
        **{_metric_header(m): ["" if (v := r["metrics"].get(m)) is None else f"{v:.1f}" for r in runs]
           for m in metrics},
        "params": ["" if r["trainable_parameters"] is None else f"{r['trainable_parameters']:,}" for r in runs],
        "s": ["" if r["seconds"] is None else str(r["seconds"]) for r in runs],
    }
    table = Table(title=f"{len(runs)} runs" + (
        f", best {comparison['sorted_by']} first" if comparison.get("sorted_by") else ""))
    for column in text:
        table.add_column(column, overflow="fold", min_width={"head": 4, "differs": 18}.get(column, 8))
    for column in numbers:
        table.add_column(column, justify="right", overflow="fold", min_width=5)
    for i in range(len(runs)):
        table.add_row(*(cells[i] for cells in text.values()), *(cells[i] for cells in numbers.values()))
    console.print(table)


def _metric_header(metric: str) -> str:
    """``all_verb_accuracy_at_1`` -> ``verb@1``: a column header that fits a terminal."""
    return metric.removeprefix("all_").replace("_accuracy_at_", "@")


def print_heads(catalog: dict[str, Any]) -> None:
    """Render `egofeat heads`: each head with its task and options, then the tasks."""
    for name, head in catalog["heads"].items():
        options = ", ".join(f"{k}={v!r}" for k, v in head["options"].items())
        console.print(f"[bold]{name}[/bold]  (task {head['task']})  {options}")
    console.print(f"tasks: {', '.join(catalog['tasks'])}")


def print_encoders(families: dict[str, str]) -> None:
    """Render `egofeat encoders`: each family and how to name it."""
    for family, usage in families.items():
        console.print(f"[bold]{family}[/bold]  {usage}")
