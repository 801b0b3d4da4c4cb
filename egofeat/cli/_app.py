"""The typer applications the command modules register on."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="egofeat: an offline feature store for egocentric video, and lightweight heads on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
run_app = typer.Typer(help="Named pipelines: extract -> train -> evaluate -> report.", no_args_is_help=True)
app.add_typer(run_app, name="run")
