"""`egofeat extract`: its options are the fields of :class:`egofeat.config.ExtractConfig`."""

from __future__ import annotations

from typing import Any

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
@model_options(ExtractConfig, exclude=("progress",), renames=RENAMES)
def extract(
    config: ConfigOption = None,
    set_: SetOption = None,
    json_output: JsonOption = False,
    values: dict[str, Any] | None = None,
) -> None:
    """Decode, crop and encode the frames of annotated segments into a feature store.

    Re-running the same command resumes: only parts not yet committed are done.
    Exit status: 0 when every segment is ok, 1 when some ended as error rows or parts failed,
    2 on bad usage.
    """
    from egofeat.pipelines.executors import execute

    options = load(ExtractConfig, config, set_ or [], {**(values or {}), "progress": not json_output},
                   flags=model_flags(ExtractConfig, RENAMES))
    summary = execute(options)
    if summary is None:  # a torchrun rank other than 0: rank 0 reports for all
        return
    out.print_json(summary.to_dict()) if json_output else out.print_extract_summary(summary.to_dict())
    if summary.failed:
        raise typer.Exit(1)
