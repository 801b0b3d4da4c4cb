"""What every command shares: one-line user errors, and options derived from config models.

:func:`model_options` turns the fields of a pydantic config model (:mod:`egofeat.config`) into
typer options, with the field's description as help and its default shown, so that a command's
options are never re-declared by hand. Options the user did not give stay unset (``None``), so
the model's defaults, then a ``--config`` file and ``--set`` overrides, decide them.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import BaseModel

from egofeat.cli._app import debug_mode
from egofeat.config import chosen_recipe
from egofeat.pipelines import console as out
from egofeat.pipelines.errors import USER_ERRORS
from egofeat.recipes import Command

F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
RecipeOption = Annotated[str | None, typer.Option("--recipe", help="A named recipe (see `egofeat recipes`), "
                                                  "under --config and --set.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML/YAML settings file.")]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeatable).")]


def split_list(values: Iterable[str] | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: repeatable options that also take lists."""
    return [v.strip() for value in values or [] for v in str(value).split(",") if v.strip()]


def recipe_layers(name: str | None, command: Command, config: Path | None = None,
                  overrides: Iterable[str] = ()) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(layers, record)`` of the recipe chosen for ``command`` (``--recipe NAME``, or, for
    commands whose settings name one, ``recipe=NAME`` in ``--set`` or the ``--config`` file):
    the config layers to lay under the user's settings, and what the run records (nothing
    without a recipe). A name that is no recipe of ``command`` is a KeyError naming the valid ones."""
    recipe = chosen_recipe(command, name, config, overrides)
    return ([recipe.layer()], recipe.record()) if recipe is not None else ([], {})


DebugOption = Annotated[bool, typer.Option("--debug", help="Show the Python traceback of an error.")]


def user_errors(fn: F) -> F:
    """Report errors that are the user's input as one line (exit status 2), not a traceback.

    Adds ``--debug`` to the command: with it (or ``egofeat --debug``) the error propagates
    with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            if debug or debug_mode():
                raise
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            out.err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    hints = typing.get_type_hints(fn, include_extras=True)
    own = inspect.signature(fn)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) if isinstance(p.annotation, str) else p
              for p in own.parameters.values()]
    params.append(inspect.Parameter("debug", inspect.Parameter.KEYWORD_ONLY, default=False,
                                    annotation=DebugOption))
    wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def flag(field: str, renames: Mapping[str, str] | None = None) -> str:
    """The CLI flag of a config field: ``videos_per_part`` -> ``--videos-per-part``."""
    return (renames or {}).get(field) or "--" + field.replace("_", "-")


def model_options(
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    renames: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Add the fields of ``model`` as options of a command.

    The decorated function takes its own parameters plus ``values``: a dict of the model
    fields the user gave (typed by typer, lists split on commas), ready for
    :func:`egofeat.config.load`. ``renames`` maps a field to its flag (``encoders`` ->
    ``--encoder``, repeatable).
    """
    fields = {name: field for name, field in model.model_fields.items() if name not in set(exclude)}

    def decorate(fn: F) -> F:
        hints = typing.get_type_hints(fn, include_extras=True)  # the commands' string annotations
        own = inspect.signature(fn)
        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in own.parameters.values() if p.name != "values"]
        taken = {p.name for p in params}
        derived = [_parameter(name, field, flag(name, renames)) for name, field in fields.items()
                   if name not in taken]

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            values = {}
            for name, field in fields.items():
                if name in taken:
                    continue
                value = kwargs.pop(name, None)
                if value is None:
                    continue
                values[name] = split_list(value) if _is_list_of_str(field.annotation) else value
            return fn(**kwargs, values=values)

        wrapper.__signature__ = inspect.Signature([*params, *derived])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def model_flags(model: type[BaseModel], renames: Mapping[str, str] | None = None) -> dict[str, str]:
    """Field -> CLI flag of every field of ``model`` (for error messages)."""
    return {name: flag(name, renames) for name in model.model_fields}


def _parameter(name: str, field: Any, option: str) -> inspect.Parameter:
    annotation = _cli_type(field.annotation)
    default = field.get_default(call_default_factory=True)
    shown = "" if default is None or default == [] else f" [default: {_show(default)}]"
    help_text = (field.description or name.replace("_", " ")) + shown
    if annotation is bool:
        names = (f"{option}/--no-{option.removeprefix('--')}",)
        annotation = bool | None
    else:
        names = (option,)
        annotation = annotation | None
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[annotation, typer.Option(*names, help=help_text)])


def _cli_type(annotation: Any) -> Any:
    """What typer parses an option as: optional and Literal types become their plain type, dicts
    a JSON string (the model parses it), lists a repeatable option."""
    members = [m for m in _members(annotation) if m is not type(None)]
    first = members[0] if members else str
    origin = typing.get_origin(first)
    if origin is Literal:
        return type(typing.get_args(first)[0])
    if origin in (list, tuple):
        inner = typing.get_args(first)[0] if typing.get_args(first) else str
        return list[_cli_type(inner)]
    if origin is dict or first is dict:
        return str
    return first


def _members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _is_list_of_str(annotation: Any) -> bool:
    cli = _cli_type(annotation)
    return typing.get_origin(cli) is list and typing.get_args(cli)[0] is str


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
