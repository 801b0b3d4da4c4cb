"""`egofeat extract`: its options are the fields of :class:`egofeat.config.ExtractConfig`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from egofeat.cli._app import app
from egofeat.cli._options import (
    ConfigOption,
    JsonOption,
    SetOption,
    model_flags,
    model_options,
    user_errors,
)
from egofeat.config import ExtractConfig, load
from egofeat.pipelines import console as out

#: fields whose flag is not the field's name (repeatable options in the singular)
RENAMES = {"encoders": "--encoder", "templates": "--template"}


@app.command()
@user_errors
@model_options(ExtractConfig, exclude=("progress", "progress_json"), renames=RENAMES)
def extract(
    config: ConfigOption = None,
    set_: SetOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the videos and print the plan (videos found/missing, segments, frames, parts, store size); write nothing.")] = False,
    json_output: JsonOption = False,
    values: dict[str, Any] | None = None,
) -> None:
    """Decode, crop and encode the frames of annotated segments into a feature store.

    Before writing anything it checks the devices and finds the annotated videos: a wrong
    --videos or --layout stops it (exit 2) naming a path it expected and the layout that
    would find them. Re-running the same command resumes: only parts not yet committed are
    done; --retry-errors also redoes the parts holding retryable error rows. Progress goes to
    stderr: a bar on a terminal, else a line every --log-interval seconds (JSON lines with
    --json). Exit status: 0 when every requested segment is ok in every stream, 1 when some
    have error rows (from this run or earlier ones) or parts failed, 2 on bad usage.
    """
    flags = model_flags(ExtractConfig, RENAMES)
    options = load(ExtractConfig, config, set_ or [], {**(values or {}), "progress_json": json_output},
                   flags=flags)
    if dry_run:
        from egofeat.pipelines.dryrun import dry_run as plan_run

        plan = plan_run(options)
        out.print_json(plan) if json_output else out.print_extract_plan(plan)
        return
    from egofeat.pipelines.executors import execute

    summary = execute(options)
    if summary is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    out.print_json(summary.to_dict()) if json_output else out.print_extract_summary(summary.to_dict())
    if summary.failed:
        raise typer.Exit(1)
