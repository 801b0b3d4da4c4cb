"""The typer applications the command modules register on, and the options of `egofeat` itself."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="egofeat: an offline feature store for egocentric video, and lightweight heads on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
run_app = typer.Typer(help="Named pipelines: extract -> train -> evaluate -> report.", no_args_is_help=True)
app.add_typer(run_app, name="run")

#: set by ``egofeat --debug``: errors show their traceback (see ``_options.user_errors``)
_state = {"debug": False}


def debug_mode() -> bool:
    """Whether this invocation asked for tracebacks (``egofeat --debug ...``)."""
    return _state["debug"]


def _print_version(value: bool) -> None:
    if value:
        import egofeat

        typer.echo(f"egofeat {egofeat.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the Python traceback of an error "
                                        "(also as an option of each command).")] = False,
) -> None:
    """egofeat: an offline feature store for egocentric video, and lightweight heads on it."""
    _state["debug"] = debug
