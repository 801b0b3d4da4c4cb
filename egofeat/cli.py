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
    split: Annotated[str | None, typer.Option(help="Split name (default: from the file name; ego4d: required).")] = None,
    mapping: Annotated[str | None, typer.Option(help="generic: JSON canonical->file column map.")] = None,
    executor: Annotated[str, typer.Option(help="serial | dask | torchrun (launch: torchrun --nproc_per_node=N -m egofeat extract ...).")] = "serial",
    dask_workers: Annotated[int | None, typer.Option(help="dask: LocalCluster worker processes (default: one per GPU, else half the CPU cores).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="dask: address of a running scheduler (e.g. tcp://10.0.0.1:8786) instead of a LocalCluster.")] = None,
    retries: Annotated[int, typer.Option(help="dask: times a part task that raised is retried.")] = 2,
    sharding: Annotated[str, typer.Option(help="torchrun: balanced (by frames to decode) | strided.")] = "balanced",
    json_output: JsonOption = False,
) -> None:
    """Decode, crop and encode the frames of annotated segments into a feature store.

    Re-running the same command resumes: only parts not yet committed are done.
    Exit status: 0 when every segment is ok, 1 when some ended as error rows or parts failed,
    2 on bad usage.
    """
    from egofeat.pipelines.executors import execute
    from egofeat.pipelines.extract import ExtractOptions

    options = ExtractOptions(
        annotations=annotations, videos=videos, store=store, dataset=dataset, layout=layout,
        encoders=encoder, crop=crop, boxes=boxes, frames=frames, sampling=sampling, per_bin=per_bin,
        fps=fps, clip_len=clip_len, device=device, batch_size=batch_size, workers=workers,
        decode_timeout=decode_timeout, videos_per_part=videos_per_part, hand_threshold=hand_threshold,
        object_threshold=object_threshold, box_margin=box_margin, box_fallback=box_fallback, tag=tag,
        text=text, templates=template, limit=limit, allow_pickle=allow_pickle, progress=not json_output,
        split=split, mapping=mapping,
    )
    summary = execute(options, executor, scheduler=scheduler, dask_workers=dask_workers,
                      retries=retries, sharding=sharding)  # type: ignore[arg-type]
    if summary is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    out.print_json(summary.to_dict()) if json_output else out.print_extract_summary(summary.to_dict())
    if summary.failed:
        raise typer.Exit(1)


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


SubsetOptions = {
    "unseen": typer.Option(help="EPIC unseen-participant ids file (e.g. ..._unseen_participant_ids_validation.csv)."),
    "tail_verbs": typer.Option(help="EPIC tail verb classes file."),
    "tail_nouns": typer.Option(help="EPIC tail noun classes file."),
}


@app.command()
@_user_errors
def train(
    store: Annotated[Path, typer.Option(help="The feature store.")],
    stream: Annotated[list[str], typer.Option(help="Stream name(s): NAME[,NAME]; repeatable.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, metrics, plots).")],
    head: Annotated[str | None, typer.Option(help="Head name (see `egofeat heads`); default: config or linear.")] = None,
    task: Annotated[list[str] | None, typer.Option(help="Task(s): verb,noun.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML/YAML config (head, trainer, data tables).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key=value, e.g. trainer.lr=3e-4.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
    unseen: Annotated[Path | None, SubsetOptions["unseen"]] = None,
    tail_verbs: Annotated[Path | None, SubsetOptions["tail_verbs"]] = None,
    tail_nouns: Annotated[Path | None, SubsetOptions["tail_nouns"]] = None,
    json_output: JsonOption = False,
) -> None:
    """Train a head on store streams (never touching video), then evaluate it on the val split."""
    from egofeat.pipelines.runs import SubsetFiles, resolve_config, train_run

    run_config = resolve_config(config, set_ or [], streams=_split_list(stream), head=head,
                                tasks=_split_list(task) or None, epochs=epochs, device=device,
                                progress=not json_output)
    summary = train_run(store, out_dir, run_config, resume=resume,
                        subsets=SubsetFiles(unseen, tail_verbs, tail_nouns))
    out.print_json(summary) if json_output else out.print_run_summary(summary)


@app.command(name="eval")
@_user_errors
def evaluate(
    run: Annotated[Path | None, typer.Argument(help="A run folder from `egofeat train`.")] = None,
    split: Annotated[str, typer.Option(help="Split of the run's store to score.")] = "val",
    store: Annotated[Path | None, typer.Option(help="Score on this store instead of the run's.")] = None,
    results: Annotated[Path | None, typer.Option(help="Score this results file (.npz, or EPIC .pkl/.pt) instead of a run.")] = None,
    annotations: Annotated[Path | None, typer.Option(help="With --results: the annotation CSV.")] = None,
    unseen: Annotated[Path | None, SubsetOptions["unseen"]] = None,
    tail_verbs: Annotated[Path | None, SubsetOptions["tail_verbs"]] = None,
    tail_nouns: Annotated[Path | None, SubsetOptions["tail_nouns"]] = None,
    json_output: JsonOption = False,
) -> None:
    """Score a trained run on a split, or a given results file against an annotations file."""
    from egofeat.pipelines.runs import SubsetFiles, evaluate_results_file, evaluate_run

    subsets = SubsetFiles(unseen, tail_verbs, tail_nouns)
    if results is not None:
        if annotations is None:
            raise ValueError("--results needs --annotations (the CSV the results are scored against)")
        summary = evaluate_results_file(results, annotations, subsets=subsets)
    elif run is not None:
        summary = evaluate_run(run, split, store_path=store, subsets=subsets)
    else:
        raise ValueError("give a run folder, or --results FILE --annotations FILE")
    out.print_json(summary) if json_output else out.print_metrics(summary)


@app.command(name="predict")
@_user_errors
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    out_path: Annotated[Path, typer.Option("--out", help="Results file: .npz (egofeat) or .pkl (EPIC layout).")],
    split: Annotated[str, typer.Option()] = "val",
    store: Annotated[Path | None, typer.Option(help="Predict on this store instead of the run's.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Write a run's verb/noun logits on a split as a results file (for fuse/submit/eval)."""
    from egofeat.pipelines.runs import predict_run

    summary = predict_run(run, split, out_path, store_path=store)
    out.print_json(summary) if json_output else out.print_summary(summary)


@app.command()
@_user_errors
def fuse(
    results: Annotated[list[Path], typer.Argument(help="Results files to fuse (same segments).")],
    out_path: Annotated[Path, typer.Option("--out", help="Fused results file.")],
    json_output: JsonOption = False,
) -> None:
    """Average pre-softmax logits of several results files, aligned by segment id."""
    from egofeat.pipelines.runs import fuse_files

    summary = fuse_files(results, out_path)
    out.print_json(summary) if json_output else out.print_summary(summary)


@app.command()
@_user_errors
def submit(
    results: Annotated[Path, typer.Argument(help="Results file of the test split.")],
    out_path: Annotated[Path, typer.Option("--out", help="Submission zip (holds test.json).")],
    sls_pt: Annotated[int, typer.Option(help="Supervision level: pretraining (0-5).")] = 2,
    sls_tl: Annotated[int, typer.Option(help="Supervision level: training labels (0-5).")] = 3,
    sls_td: Annotated[int, typer.Option(help="Supervision level: training data (0-5).")] = 4,
    json_output: JsonOption = False,
) -> None:
    """The EPIC-KITCHENS-100 action recognition challenge submission of a results file."""
    from egofeat.pipelines.runs import submit_file

    summary = submit_file(results, out_path, sls_pt=sls_pt, sls_tl=sls_tl, sls_td=sls_td)
    out.print_json(summary) if json_output else out.print_summary(summary)


@app.command()
def heads() -> None:
    """Registered heads and their options."""
    from egofeat.heads import list_heads
    from egofeat.heads.registry import head_kwargs

    for name in list_heads():
        options = ", ".join(f"{k}={v.default!r}" if hasattr(v, "default") else k for k, v in head_kwargs(name).items())
        out.console.print(f"[bold]{name}[/bold]  {options}")


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
