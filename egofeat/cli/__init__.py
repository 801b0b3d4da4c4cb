"""The `egofeat` command line: thin typer commands over `egofeat.pipelines`.

Commands live by concern: :mod:`.store_commands` (segments, info, query, export),
:mod:`.extract_command`, :mod:`.head_commands` (train, eval, predict, fuse, submit, distill,
neighbors, heads, encoders, demo) and :mod:`.run_commands` (``egofeat run xmic``). Their options
come from the config models (:mod:`egofeat.config`); they hold no logic.
"""

from __future__ import annotations

# The order of these imports is the order of the commands in `egofeat --help`.
from egofeat.cli import (
    extract_command,  # noqa: F401
    head_commands,  # noqa: F401
    run_commands,  # noqa: F401
    store_commands,  # noqa: F401, I001
)
from egofeat.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="egofeat")
