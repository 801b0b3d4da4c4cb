"""Head commands: train, eval, predict, fuse, submit, distill, neighbors, heads, recipes, encoders, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from egofeat.cli._app import app
from egofeat.cli._options import (
    ConfigOption,
    JsonOption,
    RecipeOption,
    SetOption,
    model_flags,
    model_options,
    recipe_layers,
    split_list,
    user_errors,
)
from egofeat.config import ProtocolConfig, load
from egofeat.pipelines import console as out
from egofeat.pipelines.neighbors import NeighborOptions

UnseenOption = Annotated[Path | None, typer.Option(help="EPIC unseen-participant ids file (e.g. ..._unseen_participant_ids_validation.csv).")]
TailVerbsOption = Annotated[Path | None, typer.Option(help="EPIC tail verb classes file.")]
TailNounsOption = Annotated[Path | None, typer.Option(help="EPIC tail noun classes file.")]
StreamsOption = Annotated[list[str], typer.Option(help="Stream name(s): NAME[,NAME]; repeatable.")]
HeadOption = Annotated[str | None, typer.Option(help="Head name (see `egofeat heads`); default: config or linear.")]
TaskOption = Annotated[list[str] | None, typer.Option(help="Task(s): verb,noun.")]
EpochsOption = Annotated[int | None, typer.Option(help="Epochs (trainer.epochs).")]
DeviceOption = Annotated[str | None, typer.Option(help="cpu, cuda, auto (trainer.device).")]


def _run_values(stream: list[str] | None, head: str | None, task: list[str] | None, epochs: int | None,
                device: str | None, json_output: bool, **extra: Any) -> dict[str, Any]:
    """Typed run-config values of the common train options (unset ones left out)."""
    values = {"data.streams": split_list(stream), "head.name": head, "trainer.tasks": split_list(task),
              "trainer.epochs": epochs, "trainer.device": device, "trainer.progress": not json_output,
              **extra}
    return {key: value for key, value in values.items() if value is not None and value != []}


@app.command()
@user_errors
def train(
    store: Annotated[str, typer.Option(help="The feature store.")],
    stream: StreamsOption,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, metrics, plots).")],
    head: HeadOption = None,
    loss: Annotated[str | None, typer.Option(help="--head retrieval: infonce | egonce | mimm (sets head.loss).")] = None,
    task: TaskOption = None,
    recipe: RecipeOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    epochs: EpochsOption = None,
    device: DeviceOption = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
    unseen: UnseenOption = None,
    tail_verbs: TailVerbsOption = None,
    tail_nouns: TailNounsOption = None,
    json_output: JsonOption = False,
) -> None:
    """Train a head on store streams (never touching video), then evaluate it on the val split."""
    from egofeat.config import load_config
    from egofeat.pipelines.evaluate import SubsetFiles
    from egofeat.pipelines.train import train_run

    layers, record = recipe_layers(recipe, "train")
    values = _run_values(stream, head, task, epochs, device, json_output, **{"head.loss": loss})
    run_config = load_config(config, set_ or [], values, layers=layers)
    summary = train_run(store, out_dir, run_config, resume=resume,
                        subsets=SubsetFiles(unseen, tail_verbs, tail_nouns).load(), run_info=record)
    out.print_json(summary) if json_output else out.print_run_summary(summary)


@app.command(name="eval")
@user_errors
@model_options(ProtocolConfig, exclude=("run",))
def evaluate(
    run: Annotated[Path | None, typer.Argument(help="A run folder from `egofeat train`.")] = None,
    results: Annotated[Path | None, typer.Option(help="Score this predictions file (.parquet, or EPIC .pkl/.pt) instead of a run.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Retrieval protocol: ek100-mir | egomcq | charades-ego.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, auto.")] = "auto",
    unseen: UnseenOption = None,
    tail_verbs: TailVerbsOption = None,
    tail_nouns: TailNounsOption = None,
    json_output: JsonOption = False,
    values: dict[str, Any] | None = None,
) -> None:
    """Score a trained run on a split, a predictions file against annotations, or a retrieval
    protocol.

    Retrieval protocols score a run trained with --head retrieval, or stored
    features zero-shot (--store, --video-stream, --text-stream):

    ek100-mir: mAP and nDCG, video-to-text, text-to-video and their average.
    egomcq: accuracy on inter_video (types 1) and intra_video (types 2).
    charades-ego: video-level mAP; videos without labels rank last; a class
    without positive videos has AP NaN, which makes `map` NaN as in the
    reference code (`map_nanmean` skips such classes).
    """
    from egofeat.pipelines.evaluate import SubsetFiles, evaluate_predictions_file, evaluate_run

    inputs = load(ProtocolConfig, values={**(values or {}), "run": run}, flags=model_flags(ProtocolConfig))
    if protocol is not None:
        from egofeat.pipelines.protocols import evaluate_protocol

        summary = evaluate_protocol(protocol, inputs)
        out.print_json(summary) if json_output else out.print_protocol_summary(summary)
        return
    subsets = SubsetFiles(unseen, tail_verbs, tail_nouns)
    if results is not None:
        if inputs.annotations is None:
            raise ValueError("--results needs --annotations (the CSV the predictions are scored against)")
        summary = evaluate_predictions_file(results, inputs.annotations, subsets=subsets)
    elif run is not None:
        summary = evaluate_run(run, inputs.split, store_path=inputs.store, subsets=subsets, device=device)
    else:
        raise ValueError("give a run folder, --results FILE --annotations FILE, or --protocol NAME")
    out.print_json(summary) if json_output else out.print_metrics(summary)


@app.command()
@user_errors
@model_options(NeighborOptions, renames={"splits": "--split"})
def neighbors(
    store: Annotated[str, typer.Option(help="The feature store.")],
    stream: Annotated[str, typer.Option(help="Stream whose (frame-averaged) features are compared.")],
    query: Annotated[list[str], typer.Option(help="Query segment id; repeatable.")],
    recipe: RecipeOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_output: JsonOption = False,
    values: dict[str, Any] | None = None,
) -> None:
    """In-context examples of segments with EILEV's verb/noun buckets and quotas, no exact (verb,
    noun) duplicates; drawn at random as EILEV does (--sampler eilev-random, recipe
    eilev-incontext) or ranked by feature similarity; each with its video id and frame times."""
    from egofeat.pipelines.neighbors import in_context_examples

    layers, record = recipe_layers(recipe, "neighbors")
    options = load(NeighborOptions, config, set_ or [], values, layers=layers,
                   flags=model_flags(NeighborOptions, {"splits": "--split"}))
    summary = in_context_examples(store, stream, split_list(query), options, record=record)
    out.print_json(summary) if json_output else out.print_neighbors(summary)


@app.command(name="predict")
@user_errors
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder.")],
    out_path: Annotated[Path, typer.Option("--out", help="Predictions file: .parquet (egofeat), or .pkl / .npz (EPIC layout).")],
    split: Annotated[str, typer.Option(help="Split of the run's store to predict.")] = "val",
    store: Annotated[str | None, typer.Option(help="Predict on this store instead of the run's.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, auto.")] = "auto",
    json_output: JsonOption = False,
) -> None:
    """Write a run's predictions on a split (for fuse / submit / eval --results)."""
    from egofeat.pipelines.evaluate import predict_run

    summary = predict_run(run, split, out_path, store_path=store, device=device)
    out.print_json(summary) if json_output else out.print_summary(summary)


@app.command()
@user_errors
def fuse(
    results: Annotated[list[Path], typer.Argument(help="Predictions files to fuse (same segments).")],
    out_path: Annotated[Path, typer.Option("--out", help="Fused predictions file (.parquet, or .pkl/.npz).")],
    json_output: JsonOption = False,
) -> None:
    """Average pre-softmax scores of several predictions files, aligned by segment id."""
    from egofeat.pipelines.evaluate import fuse_files

    summary = fuse_files(results, out_path)
    out.print_json(summary) if json_output else out.print_summary(summary)


@app.command()
@user_errors
def distill(
    teachers: Annotated[list[str], typer.Option(help="Teacher run folders: RUN[,RUN]; repeatable.")],
    stream: StreamsOption,
    out_dir: Annotated[Path, typer.Option("--out", help="The student's run folder (report; CE-only head in baseline/).")],
    head: HeadOption = None,
    store: Annotated[str | None, typer.Option(help="The feature store (default: the first teacher's).")] = None,
    weighting: Annotated[str | None, typer.Option(help="Teacher ensemble: mean | per-sample | dataset (task.weighting).")] = None,
    tau_w: Annotated[float | None, typer.Option(help="Softmin temperature of per-sample / dataset weights (task.tau_w).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Distillation temperature T (task.temperature).")] = None,
    w_distill: Annotated[float | None, typer.Option(help="Weight of T²·KL(teacher ‖ student) (task.w_distill).")] = None,
    w_gt: Annotated[float | None, typer.Option(help="Weight of the cross-entropy with the labels (task.w_gt).")] = None,
    baseline: Annotated[bool, typer.Option(help="Also train the head with CE only, for the report.")] = True,
    teacher_stream: Annotated[str | None, typer.Option(help="Name of the cached teacher-logit stream.")] = None,
    task: TaskOption = None,
    recipe: RecipeOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    epochs: EpochsOption = None,
    device: DeviceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Distil teacher runs (cached logits) into a student head on one stream; report vs CE-only.

    --config / --set / --recipe configure the student run (and its CE-only twin)."""
    from egofeat.config import DistillConfig, load_config
    from egofeat.pipelines.distill import run_distill

    layers, record = recipe_layers(recipe, "distill")
    distilling = {"task.name": "distill", "task.weighting": weighting, "task.tau_w": tau_w,
                  "task.temperature": temperature, "task.w_distill": w_distill, "task.w_gt": w_gt}
    student = load_config(config, set_ or [], _run_values(stream, head, task, epochs, device,
                                                           json_output, **distilling), layers=layers)
    run = load(DistillConfig, values={"teachers": split_list(teachers), "out": out_dir, "store": store,
                                      "baseline": baseline, "teacher_stream": teacher_stream,
                                      "student": student.to_dict()},
               flags=model_flags(DistillConfig))
    summary = run_distill(run, run_info=record)
    out.print_json(summary) if json_output else out.print_distill_summary(summary)


@app.command()
@user_errors
def submit(
    results: Annotated[Path, typer.Argument(help="Predictions file of the test split.")],
    out_path: Annotated[Path, typer.Option("--out", help="Submission zip (holds test.json).")],
    sls_pt: Annotated[int, typer.Option(help="Supervision level: pretraining (0-5).")] = 2,
    sls_tl: Annotated[int, typer.Option(help="Supervision level: training labels (0-5).")] = 3,
    sls_td: Annotated[int, typer.Option(help="Supervision level: training data (0-5).")] = 4,
    json_output: JsonOption = False,
) -> None:
    """The EPIC-KITCHENS-100 action recognition challenge submission of a predictions file."""
    from egofeat.pipelines.evaluate import submit_file

    summary = submit_file(results, out_path, sls_pt=sls_pt, sls_tl=sls_tl, sls_td=sls_td)
    out.print_json(summary) if json_output else out.print_summary(summary)


@app.command()
@user_errors
def runs(
    folders: Annotated[list[Path] | None, typer.Argument(help="Run folders, or folders holding them (default: .).")] = None,
    sort: Annotated[str | None, typer.Option(help="Order by this metric, best first (e.g. all_action_accuracy_at_1).")] = None,
    plot: Annotated[str | None, typer.Option(help="Bar chart of this metric per run (with --out).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="The chart's .png (with --plot).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Compare runs: task, head, streams, recipe, the settings that differ, val metrics, size, time."""
    from egofeat.pipelines.compare import compare_runs, plot_runs

    if (plot is None) != (out_path is None):
        raise ValueError("--plot METRIC and --out FILE.png go together")
    comparison = compare_runs(folders or [Path(".")], sort=sort)
    if plot is not None:
        comparison["plot"] = plot_runs(comparison, plot, out_path)
    out.print_json(comparison) if json_output else out.print_runs(comparison)
    if plot is not None and not json_output:
        out.console.print(f"plot: {comparison['plot']}")


@app.command()
def heads(json_output: JsonOption = False) -> None:
    """Registered heads (their training task and options) and training tasks."""
    from egofeat.pipelines.catalog import describe_heads

    catalog = describe_heads()
    out.print_json(catalog) if json_output else out.print_heads(catalog)


@app.command()
@user_errors
def recipes(
    name: Annotated[str | None, typer.Argument(help="Show this recipe's settings.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Named recipes: published settings (each with the file it comes from) and egofeat's own
    defaults. Apply one with `egofeat train|distill|neighbors --recipe NAME`; --config and --set
    still override its settings."""
    from egofeat.pipelines.catalog import describe_recipes

    catalog = describe_recipes(name)
    out.print_json(catalog) if json_output else out.print_recipes(catalog)


@app.command()
def encoders(json_output: JsonOption = False) -> None:
    """Encoder families and how to name them."""
    from egofeat.pipelines.catalog import describe_encoders

    families = describe_encoders()
    out.print_json(families) if json_output else out.print_encoders(families)


@app.command()
@user_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the synthetic dataset, store and runs.")] = Path("egofeat-demo"),
    json_output: JsonOption = False,
) -> None:
    """Run the whole flow on a small synthetic egocentric dataset (about a minute on a laptop CPU)."""
    from egofeat.pipelines.demo import run_demo

    summary = run_demo(out_dir, progress=not json_output)
    out.print_json(summary) if json_output else out.print_demo_summary(summary)
