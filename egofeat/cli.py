"""The `egofeat` command line: thin typer commands over `egofeat.pipelines`."""

import typer

app = typer.Typer(help="egofeat: an offline feature store for egocentric video.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """egofeat: extract features once, train heads in minutes."""
