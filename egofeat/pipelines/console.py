"""Rendering results for people (rich) and machines (JSON)."""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (NaN becomes null, numpy/polars values become plain)."""
    print(json.dumps(_plain(data), indent=1))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return _plain(value.item())
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


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


def print_summary(summary: dict[str, Any], title: str | None = None) -> None:
    """Render a flat summary dict as a two-column table."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


def print_extract_summary(summary: dict[str, Any]) -> None:
    """Render the end-of-run summary of `egofeat extract`."""
    if summary["nothing_to_do"]:
        console.print(f"nothing to do: all {summary['segments']:,} segments are already in "
                      f"{', '.join(summary['streams'])} ({summary['store']})")
        return
    table = Table(title=f"extracted into {summary['store']}")
    for column in ("stream", "ok", "errors"):
        table.add_column(column)
    for name in summary["streams"]:
        errors = summary["errors"][name]
        table.add_row(name, f"{summary['ok'][name]:,}", f"[red]{errors:,}[/red]" if errors else "0")
    console.print(table)
    seconds = summary["seconds"]
    console.print(
        f"parts: {summary['done_parts']} done, {summary['skipped_parts']} skipped of {summary['planned_parts']}; "
        f"frames: {summary['unique_frames']:,} decoded for {summary['requested_frames']:,} requested "
        f"(dedup ratio {summary['dedup_ratio']})"
    )
    console.print(
        f"seconds: decode {seconds['decode_worker']} (worker time), encode {seconds['encode']}, "
        f"write {seconds['write']}, wall {seconds['wall']}"
    )
    if summary["text_streams"]:
        console.print(f"text streams: {', '.join(summary['text_streams'])}")
    if summary.get("run_log"):
        console.print(f"run log: {summary['run_log']}")
    if summary.get("failed_parts"):
        shown = ", ".join(summary["failed_parts"][:5]) + (", ..." if len(summary["failed_parts"]) > 5 else "")
        console.print(f"[red]{len(summary['failed_parts'])} parts failed[/red] ({shown}): their errors are "
                      "in the run log; rerun the same command to retry them")
    if any(summary["errors"].values()):
        console.print("[red]some segments failed[/red]: see their error rows with "
                      f"`egofeat query {summary['store']} \"SELECT stream, segment_id, error FROM manifest WHERE status = 'error'\"`")


def print_demo_summary(summary: dict[str, Any]) -> None:
    """Render what `egofeat demo` built."""
    print_extract_summary(summary["extract"])
    console.print(f"dataset: {summary['dataset']['path']} (verbs: {', '.join(summary['dataset']['verbs'])}; "
                  f"nouns: {', '.join(summary['dataset']['nouns'])})")
    console.print(f"streams: {', '.join(summary['streams'])}")
    for run in summary.get("runs", []):
        console.print(f"run [bold]{run['name']}[/bold]: {run['path']}  " + "  ".join(
            f"{k} {v:.1f}" for k, v in run["metrics"].items()))
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
