"""Named pipelines: `egofeat run xmic`, its options the fields of :class:`~egofeat.config.XMICRunConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from egofeat.cli._app import run_app
from egofeat.cli._options import (
    ConfigOption,
    JsonOption,
    SetOption,
    model_flags,
    model_options,
    recipe_layers,
    user_errors,
)
from egofeat.config import XMICRunConfig, load
from egofeat.pipelines import console as out

RENAMES = {"selection": "--select", "tasks": "--task"}


@run_app.command("xmic")
@user_errors
@model_options(XMICRunConfig, exclude=("extract", "trainer", "zero_shot_templates", "progress"),
               renames=RENAMES)
def run_xmic(
    extract_jobs: Annotated[Path | None, typer.Option("--extract", help="TOML of \\[\\[extract]] jobs run first (egofeat extract options).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: X-MIC's 15).")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    json_output: JsonOption = False,
    values: dict[str, Any] | None = None,
) -> None:
    """X-MIC cross-dataset run, one direction: text streams, train on source, score on target.

    --recipe NAME starts from a named recipe (`egofeat recipes`), e.g. xmic-cvpr24 (the paper's
    protocol); --config and --set override it."""
    from egofeat.pipelines.xmic import load_extract_jobs
    from egofeat.pipelines.xmic import run_xmic as run

    settings = {**(values or {}), "progress": not json_output}
    if extract_jobs is not None:
        settings["extract"] = load_extract_jobs(extract_jobs)
    if epochs is not None:
        settings["trainer.epochs"] = epochs
    layers, _ = recipe_layers(settings.get("recipe"), "run xmic", config, set_ or [])
    options = load(XMICRunConfig, config, set_ or [], settings, flags=model_flags(XMICRunConfig, RENAMES),
                   layers=layers)
    report = run(options)
    out.print_json(report) if json_output else out.print_xmic_report(report)
