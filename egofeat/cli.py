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
    decode_device: Annotated[str, typer.Option(help="cpu | cuda[:N]: decode with NVDEC (torchcodec); a video NVDEC can't read falls back to the CPU, counted in the summary.")] = "cpu",
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
    window: Annotated[str, typer.Option(help="ego4d: action | xmic (central 4 s) | eilev (8 s) window.")] = "action",
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
        decode_timeout=decode_timeout, decode_device=decode_device, videos_per_part=videos_per_part, hand_threshold=hand_threshold,
        object_threshold=object_threshold, box_margin=box_margin, box_fallback=box_fallback, tag=tag,
        text=text, templates=template, limit=limit, allow_pickle=allow_pickle, progress=not json_output,
        split=split, mapping=mapping, window=window,
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
    loss: Annotated[str | None, typer.Option(help="--head retrieval: infonce | egonce | mimm (sets head.loss).")] = None,
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
    from egofeat.pipelines.xmic import recipe_overrides

    overrides = recipe_overrides(head, config, [*(set_ or []), *([f"head.loss={loss}"] if loss else [])])
    run_config = resolve_config(config, overrides, streams=_split_list(stream), head=head,
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
    annotations: Annotated[Path | None, typer.Option(help="With --results: the annotation CSV; with --protocol: the retrieval CSV, egomcq.json or Charades-Ego CSV.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Retrieval protocol: ek100-mir | egomcq | charades-ego.")] = None,
    sentences: Annotated[Path | None, typer.Option(help="ek100-mir: the sentence CSV (the captions, in its row order).")] = None,
    similarity: Annotated[Path | None, typer.Option(help="ek100-mir: score this .npy (videos x captions in file order) against --annotations and --sentences.")] = None,
    video_stream: Annotated[str | None, typer.Option(help="Zero-shot (no run): the video stream of --store.")] = None,
    text_stream: Annotated[str | None, typer.Option(help="Zero-shot: the text stream; charades-ego: the class-prompt stream.")] = None,
    dual_softmax: Annotated[bool, typer.Option(help="Re-score similarities with EgoVLP's dual softmax.")] = False,
    save_similarity: Annotated[Path | None, typer.Option(help="ek100-mir: write the similarity matrix (.npy, with row and column id files).")] = None,
    unseen: Annotated[Path | None, SubsetOptions["unseen"]] = None,
    tail_verbs: Annotated[Path | None, SubsetOptions["tail_verbs"]] = None,
    tail_nouns: Annotated[Path | None, SubsetOptions["tail_nouns"]] = None,
    json_output: JsonOption = False,
) -> None:
    """Score a trained run on a split, a results file against annotations, or a retrieval protocol.

    Retrieval protocols score a run trained with --head retrieval, or stored
    features zero-shot (--store, --video-stream, --text-stream):

    ek100-mir: mAP and nDCG, video-to-text, text-to-video and their average.
    egomcq: accuracy on inter_video (types 1) and intra_video (types 2).
    charades-ego: video-level mAP; videos without labels rank last; a class
    without positive videos has AP NaN, which makes `map` NaN as in the
    reference code (`map_nanmean` skips such classes).
    """
    from egofeat.pipelines.runs import SubsetFiles, evaluate_results_file, evaluate_run

    if protocol is not None:
        from egofeat.pipelines.retrieval import ProtocolInputs, evaluate_protocol

        inputs = ProtocolInputs(run, store, split, annotations, sentences, similarity, video_stream,
                                text_stream, dual_softmax, save_similarity)
        summary = evaluate_protocol(protocol, inputs)
        out.print_json(summary) if json_output else out.print_protocol_summary(summary)
        return
    subsets = SubsetFiles(unseen, tail_verbs, tail_nouns)
    if results is not None:
        if annotations is None:
            raise ValueError("--results needs --annotations (the CSV the results are scored against)")
        summary = evaluate_results_file(results, annotations, subsets=subsets)
    elif run is not None:
        summary = evaluate_run(run, split, store_path=store, subsets=subsets)
    else:
        raise ValueError("give a run folder, --results FILE --annotations FILE, or --protocol NAME")
    printer = out.print_protocol_summary if "protocol" in summary else out.print_metrics
    out.print_json(summary) if json_output else printer(summary)


@app.command()
@_user_errors
def neighbors(
    store: Annotated[Path, typer.Option(help="The feature store.")],
    stream: Annotated[str, typer.Option(help="Stream whose (frame-averaged) features are compared.")],
    query: Annotated[list[str], typer.Option(help="Query segment id; repeatable.")],
    k: Annotated[int, typer.Option(help="In-context examples per query.")] = 16,
    verb_ratio: Annotated[float, typer.Option(help="Share of same-verb / other-noun examples in each draw (EILEV: 0.5).")] = 0.5,
    split: Annotated[list[str] | None, typer.Option(help="Draw examples from these splits only (a query may come from any).")] = None,
    order: Annotated[str, typer.Option(help="shuffle (EILEV's order) | similarity.")] = "shuffle",
    seed: Annotated[int, typer.Option(help="Seed of the shuffle.")] = 0,
    backend: Annotated[str, typer.Option(help="auto | numpy | faiss (exact either way).")] = "auto",
    json_output: JsonOption = False,
) -> None:
    """EILEV-style in-context examples of segments: verb/noun bucket quotas, no exact (verb, noun)
    duplicates, ranked by feature similarity; each with its video id and frame times."""
    from egofeat.pipelines.neighbors import NeighborOptions, in_context_examples

    options = NeighborOptions(k=k, verb_ratio=verb_ratio, splits=_split_list(split) or None,
                              order=order, seed=seed, backend=backend)  # type: ignore[arg-type]
    summary = in_context_examples(store, stream, _split_list(query), options)
    out.print_json(summary) if json_output else out.print_neighbors(summary)


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
def distill(
    teachers: Annotated[list[str], typer.Option(help="Teacher run folders: RUN[,RUN]; repeatable.")],
    stream: Annotated[list[str], typer.Option(help="The student's stream(s): NAME[,NAME].")],
    out_dir: Annotated[Path, typer.Option("--out", help="The student's run folder (report; CE-only head in baseline/).")],
    head: Annotated[str | None, typer.Option(help="Student head (see `egofeat heads`); default: config or linear.")] = None,
    store: Annotated[Path | None, typer.Option(help="The feature store (default: the first teacher's).")] = None,
    weighting: Annotated[str, typer.Option(help="Teacher ensemble: mean | per-sample | dataset.")] = "mean",
    tau_w: Annotated[float, typer.Option(help="Softmin temperature of per-sample / dataset weights.")] = 1.0,
    temperature: Annotated[float, typer.Option(help="Distillation temperature T.")] = 1.0,
    w_distill: Annotated[float, typer.Option(help="Weight of T²·KL(teacher ‖ student).")] = 1.0,
    w_gt: Annotated[float, typer.Option(help="Weight of the cross-entropy with the labels.")] = 0.0,
    baseline: Annotated[bool, typer.Option(help="Also train the head with CE only, for the report.")] = True,
    teacher_stream: Annotated[str | None, typer.Option(help="Name of the cached teacher-logit stream.")] = None,
    task: Annotated[list[str] | None, typer.Option(help="Task(s): verb,noun.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML/YAML config of the student run.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key=value, e.g. trainer.lr=3e-4.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Distil teacher runs (cached logits) into a student head on one stream; report vs CE-only."""
    from egofeat.pipelines.distill import DistillSettings, run_distill
    from egofeat.pipelines.runs import resolve_config

    run_config = resolve_config(config, set_ or [], streams=_split_list(stream), head=head,
                                tasks=_split_list(task) or None, epochs=epochs, device=device,
                                progress=not json_output)
    settings = DistillSettings(weighting=weighting, temperature=temperature, w_distill=w_distill,
                               w_gt=w_gt, tau_w=tau_w)
    summary = run_distill(_split_list(teachers), out_dir, run_config, settings, store_path=store,
                          baseline=baseline, teacher_stream=teacher_stream)
    out.print_json(summary) if json_output else out.print_distill_summary(summary)


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


run_app = typer.Typer(help="Named pipelines: extract -> train -> evaluate -> report.", no_args_is_help=True)
app.add_typer(run_app, name="run")


@run_app.command("xmic")
@_user_errors
def run_xmic(
    store: Annotated[Path, typer.Option(help="The feature store holding both datasets (created by --extract jobs).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the runs, report.json/.md and plots.")],
    source: Annotated[str, typer.Option(help="Dataset trained on (epic100 | ego4d | a store dataset).")] = "epic100",
    target: Annotated[str, typer.Option(help="Dataset evaluated on, over its own classes.")] = "ego4d",
    encoder: Annotated[str | None, typer.Option(help="Dual encoder: streams <slug>/hand,full; its text side writes the class texts.")] = None,
    classified: Annotated[str | None, typer.Option(help="Stream compared with the class texts (default <encoder>/hand).")] = None,
    context: Annotated[str | None, typer.Option(help="Conditioning streams NAME[,NAME] (default <encoder>/hand,<encoder>/full).")] = None,
    task: Annotated[list[str] | None, typer.Option(help="Task(s): noun,verb.")] = None,
    splits_dir: Annotated[Path | None, typer.Option(help="X-MIC's split lists (Ego4D vocabulary, exact/semantic shared classes).")] = None,
    epic_classes: Annotated[Path | None, typer.Option(help="Folder of EPIC_100_{verb,noun}_classes.csv.")] = None,
    extract_jobs: Annotated[Path | None, typer.Option("--extract", help="TOML of \\[\\[extract]] jobs run first (egofeat extract options).")] = None,
    select: Annotated[str, typer.Option(help="source-holdout | target-val (optimistic: selects on the reported split).")] = "source-holdout",
    epochs: Annotated[int, typer.Option()] = 15,
    bins: Annotated[int, typer.Option(help="Temporal bins (extraction --frames).")] = 16,
    per_bin: Annotated[int, typer.Option(help="Frames per bin for --extract jobs (temporal jitter).")] = 3,
    device: Annotated[str, typer.Option(help="cpu, cuda, auto.")] = "auto",
    text_only: Annotated[bool, typer.Option(help="Only write the class text streams.")] = False,
    json_output: JsonOption = False,
) -> None:
    """X-MIC cross-dataset run, one direction: text streams, train on source, score on target."""
    from egofeat.pipelines.xmic import XMICRunOptions, load_extract_jobs, run_xmic

    report = run_xmic(XMICRunOptions(
        store=store, out=out_dir, source=source, target=target, tasks=_split_list(task) or ("noun", "verb"),
        encoder=encoder, classified=classified, context=_split_list([context]) if context else None,
        splits_dir=splits_dir, epic_classes=epic_classes, selection=select, epochs=epochs, bins=bins,
        per_bin=per_bin, extract=load_extract_jobs(extract_jobs) if extract_jobs else [], device=device,
        text_only=text_only, progress=not json_output,
    ))
    out.print_json(report) if json_output else out.print_xmic_report(report)


@app.command()
def encoders() -> None:
    """Encoder families and how to name them."""
    from egofeat.extract.encoders import describe_encoders

    for family, usage in describe_encoders().items():
        out.console.print(f"[bold]{family}[/bold]  {usage}")


def main() -> None:
    app(prog_name="egofeat")
