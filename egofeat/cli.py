"""The `egofeat` command line: thin typer commands over `egofeat.pipelines`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from egofeat.pipelines import console as out

app = typer.Typer(
    help="egofeat: an offline feature store for egocentric video, and lightweight heads on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
StorePath = Annotated[Path, typer.Argument(help="The feature store (a folder or fsspec URL).")]
F = TypeVar("F", bound=Callable[..., Any])

#: Errors that are the user's input, reported as one line without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, FileExistsError)


def _user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from egofeat.store import StoreError

        try:
            return fn(*args, **kwargs)
        except (StoreError, *USER_ERRORS) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            out.err_console.print(f"[red]error:[/red] {message}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@_user_errors
def segments(
    file: Annotated[Path, typer.Argument(help="Annotation file (EPIC CSV/PKL, fho_main.json, CSV/parquet).")],
    dataset: Annotated[str, typer.Option(help="epic100 | ego4d | generic.")] = "epic100",
    split: Annotated[str | None, typer.Option(help="Split name (default: from the file name).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the table to parquet.")] = None,
    store: Annotated[Path | None, typer.Option(help="Also add the segments to this store.")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Allow .pkl files (pickles can run code).")] = False,
    mapping: Annotated[str | None, typer.Option(help="generic: JSON canonical->file column map.")] = None,
    window: Annotated[str, typer.Option(help="ego4d: action | xmic | eilev time window.")] = "action",
    json_output: JsonOption = False,
) -> None:
    """Load and validate annotations into the canonical segment table; print a summary."""
    from egofeat.pipelines.segments import segments_command

    summary = segments_command(file, dataset, out=out_path, store=store, split=split,
                               allow_pickle=allow_pickle, mapping=mapping, window=window)
    out.print_json(summary) if json_output else out.print_summary(summary, title=str(file))


@app.command()
@_user_errors
def info(store: StorePath, json_output: JsonOption = False) -> None:
    """Streams of a store: rows, ok/error counts, frames per row, dim, dtype, provenance."""
    from egofeat.pipelines.inspect import store_info

    summary = store_info(store)
    out.print_json(summary) if json_output else out.print_store_info(summary)


@app.command()
@_user_errors
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
@_user_errors
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


@app.command()
@_user_errors
def extract(
    annotations: Annotated[list[Path], typer.Option(help="Annotation file(s); repeatable.")],
    videos: Annotated[Path, typer.Option(help="Root of the videos or frame folders.")],
    store: Annotated[Path, typer.Option(help="The feature store to write (created if missing).")],
    dataset: Annotated[str, typer.Option(help="epic100 | ego4d | generic.")] = "epic100",
    layout: Annotated[str, typer.Option(help="epic-mp4 | epic-frames | flat | a template like '{video_id}.mp4'.")] = "epic-mp4",
    encoder: Annotated[list[str], typer.Option(help="Encoder name; repeatable (see `egofeat encoders`).")] = ["tiny"],  # noqa: B006
    crop: Annotated[str, typer.Option(help="full | hand | both.")] = "full",
    boxes: Annotated[Path | None, typer.Option(help="Hand-object pickles folder (EPIC layout) or a parquet of boxes.")] = None,
    frames: Annotated[int, typer.Option(help="Frames (bins) per segment.")] = 8,
    sampling: Annotated[str, typer.Option(help="uniform | random | oversampled | dense | clip.")] = "uniform",
    per_bin: Annotated[int, typer.Option(help="oversampled: frames per bin (odd: the middle one is the bin centre).")] = 3,
    fps: Annotated[float | None, typer.Option(help="dense: frames per second.")] = None,
    clip_len: Annotated[int, typer.Option(help="clip: frames per clip (LaViLa: 4 or 16).")] = 4,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size (default: automatic).")] = None,
    workers: Annotated[int, typer.Option(help="Decoder worker processes (0: decode in-process).")] = 2,
    decode_timeout: Annotated[float, typer.Option(help="Seconds before a hanging decode is killed.")] = 300.0,
    videos_per_part: Annotated[int, typer.Option(help="Videos per committed part.")] = 1,
    hand_threshold: Annotated[float, typer.Option()] = 0.8,
    object_threshold: Annotated[float, typer.Option()] = 0.01,
    box_margin: Annotated[float, typer.Option(help="Grow boxes by this fraction.")] = 0.0,
    box_fallback: Annotated[str, typer.Option(help="full | nearest: frames without a qualifying box.")] = "full",
    tag: Annotated[str, typer.Option(help="Suffix for stream names (a new configuration -> a new stream).")] = "",
    text: Annotated[bool, typer.Option(help="Also write class-prompt and narration text streams.")] = True,
    template: Annotated[list[str], typer.Option(help="Class-prompt template(s), e.g. 'a photo of a {}'.")] = ["{}"],  # noqa: B006
    limit: Annotated[int | None, typer.Option(help="Only the first N segments (a trial run).")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Allow .pkl annotation files.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Decode, crop and encode the frames of annotated segments into a feature store.

    Exit status: 0 when every segment is ok, 1 when some ended as error rows, 2 on bad usage.
    """
    from egofeat.pipelines.extract import ExtractOptions, run_extract

    options = ExtractOptions(
        annotations=annotations, videos=videos, store=store, dataset=dataset, layout=layout,
        encoders=encoder, crop=crop, boxes=boxes, frames=frames, sampling=sampling, per_bin=per_bin,
        fps=fps, clip_len=clip_len, device=device, batch_size=batch_size, workers=workers,
        decode_timeout=decode_timeout, videos_per_part=videos_per_part, hand_threshold=hand_threshold,
        object_threshold=object_threshold, box_margin=box_margin, box_fallback=box_fallback, tag=tag,
        text=text, templates=template, limit=limit, allow_pickle=allow_pickle, progress=not json_output,
    )
    summary = run_extract(options)
    out.print_json(summary.to_dict()) if json_output else out.print_extract_summary(summary.to_dict())
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@_user_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the synthetic dataset, store and runs.")] = Path("egofeat-demo"),
    json_output: JsonOption = False,
) -> None:
    """Run the whole flow on a small synthetic egocentric dataset (about a minute on a laptop CPU)."""
    from egofeat.pipelines.demo import run_demo

    summary = run_demo(out_dir, progress=not json_output)
    out.print_json(summary) if json_output else out.print_demo_summary(summary)


@app.command()
def encoders() -> None:
    """Encoder families and how to name them."""
    from egofeat.extract.encoders import describe_encoders

    for family, usage in describe_encoders().items():
        out.console.print(f"[bold]{family}[/bold]  {usage}")


def main() -> None:
    app(prog_name="egofeat")
