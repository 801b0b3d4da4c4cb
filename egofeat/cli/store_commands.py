"""Store commands: segments, info, query, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from egofeat.cli._app import app
from egofeat.cli._options import JsonOption, user_errors
from egofeat.pipelines import console as out

StorePath = Annotated[str, typer.Argument(help="The feature store (a folder or fsspec URL).")]


@app.command()
@user_errors
def segments(
    file: Annotated[Path, typer.Argument(help="Annotation file (EPIC CSV/PKL, Ego4D fho_lta_*.json or fho_main.json, CSV/parquet).")],
    dataset: Annotated[str, typer.Option(help="epic100 | ego4d | generic.")] = "epic100",
    split: Annotated[str | None, typer.Option(help="Split name (default: from the file name).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the table to parquet.")] = None,
    store: Annotated[str | None, typer.Option(help="Also add the segments to this store (a folder or fsspec URL).")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Allow .pkl files (pickles can run code).")] = False,
    mapping: Annotated[str | None, typer.Option(help="generic: JSON canonical->file column map.")] = None,
    window: Annotated[str, typer.Option(help="ego4d: action | xmic | xmic-original | eilev time window.")] = "action",
    classes: Annotated[Path | None, typer.Option(help="Class lists (EPIC: the folder of EPIC_100_*_classes.csv, default beside FILE; Ego4D: a taxonomy JSON).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Load and validate annotations into the canonical segment table; print a summary."""
    from egofeat.pipelines.segments import segments_command

    summary = segments_command(file, dataset, out=out_path, store=store, split=split,
                               allow_pickle=allow_pickle, mapping=mapping, window=window,
                               classes=classes)
    out.print_json(summary) if json_output else out.print_summary(summary, title=str(file))


@app.command()
@user_errors
def info(store: StorePath, json_output: JsonOption = False) -> None:
    """Streams of a store: rows, ok/error counts, frames per row, dim, dtype, provenance."""
    from egofeat.pipelines.inspect import store_info

    summary = store_info(store)
    out.print_json(summary) if json_output else out.print_store_info(summary)


@app.command()
@user_errors
def query(
    store: StorePath,
    sql: Annotated[str, typer.Argument(help="polars SQL over the tables `segments` and `manifest`.")],
    json_output: JsonOption = False,
) -> None:
    """Polars SQL over a store's segment table (`segments`) and manifests of all streams (`manifest`)."""
    from egofeat.pipelines.inspect import query_store

    result = query_store(store, sql)
    out.print_json(result.to_dicts()) if json_output else out.console.print(out.frame_table(result))


@app.command()
@user_errors
def export(
    store: StorePath,
    stream: Annotated[str, typer.Option(help="Stream name, e.g. clip-vit-b16/full.")],
    out_path: Annotated[Path, typer.Option("--out", help="Output .npy (+ .segment_ids.txt) or .parquet.")],
    json_output: JsonOption = False,
) -> None:
    """Features of a stream in segment order, with their ids, as plain .npy or parquet."""
    from egofeat.pipelines.inspect import export_stream

    result = export_stream(store, stream, out_path)
    if json_output:
        out.print_json(result)
    else:
        out.console.print(
            f"wrote {result['rows']:,} rows of {stream} to {', '.join(result['files'])}"
            f" ({result['skipped_error_rows']} error rows skipped)"
        )
