"""Named recipes: the published settings of a method, each setting with the file it comes from.

A recipe is data: for one command (``train``, ``distill``, ``run xmic``, ``neighbors``) it
lists settings in that command's config-file layout (``trainer.lr``, ``head.dropout``,
``selection``), each with the value, its source (repository and file, or egofeat's own reason)
and, where egofeat cannot do exactly what the original does, a note saying what differs and
why. Applying a recipe lays its settings under the user's ``--config`` file and ``--set``
overrides, so those still win::

    recipe = get_recipe("trn-c1", command="train")
    config = load_config(path, overrides, layers=[recipe.layer()])

Recipes register themselves from the modules of this package (one module per method family);
``egofeat recipes [--json]`` lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from egofeat._util.settings import set_path

__all__ = ["Command", "Recipe", "Setting", "get_recipe", "list_recipes", "register_recipe"]

#: the commands a recipe can configure
Command = Literal["train", "distill", "run xmic", "neighbors"]


@dataclass(frozen=True)
class Setting:
    """One parameter of a recipe: ``key`` (dotted path in the command's config layout),
    ``value``, ``source`` (``"owner/repo path/to/file (KEY)"``, or ``"egofeat: path/to/file (KEY)"``
    for egofeat's own choices) and
    ``note``: how egofeat's value or mechanism differs from the original, and why (empty when
    it is the same)."""

    key: str
    value: Any
    source: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": _plain(self.value), "source": self.source, "note": self.note}


@dataclass(frozen=True)
class Recipe:
    """A named set of settings for one command (see the module docstring)."""

    name: str
    command: Command
    summary: str
    reference: str
    settings: tuple[Setting, ...] = field(default_factory=tuple)

    def layer(self) -> dict[str, Any]:
        """The settings as a nested dict in the command's config-file layout."""
        raw: dict[str, Any] = {}
        for setting in self.settings:
            set_path(raw, setting.key, _plain(setting.value))
        return raw

    def value(self, key: str, default: Any = None) -> Any:
        """The value the recipe sets for ``key`` (``default`` when it sets none)."""
        return next((s.value for s in self.settings if s.key == key), default)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "command": self.command, "summary": self.summary,
                "reference": self.reference, "settings": [s.to_json() for s in self.settings]}

    def record(self) -> dict[str, Any]:
        """What a run applying the recipe keeps (``run.json``): its name and its settings, each
        with its value, source and note (``--config`` / ``--set`` may have overridden some: the
        run's ``config`` says what ran)."""
        return {"recipe": self.name, "recipe_settings": [s.to_json() for s in self.settings]}


_RECIPES: dict[str, Recipe] = {}
_LOADED = False


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the registry (names are unique; keys within a recipe too)."""
    if recipe.name in _RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    keys = [s.key for s in recipe.settings]
    if len(keys) != len(set(keys)):
        raise ValueError(f"recipe {recipe.name!r} sets {sorted({k for k in keys if keys.count(k) > 1})} twice")
    _RECIPES[recipe.name] = recipe
    return recipe


def list_recipes(command: Command | None = None) -> list[Recipe]:
    """Registered recipes (of ``command`` only, when given), by name."""
    _load_all()
    return [r for _, r in sorted(_RECIPES.items()) if command is None or r.command == command]


def get_recipe(name: str, command: Command | None = None) -> Recipe:
    """The recipe ``name``; a ``KeyError`` naming the valid ones when there is none (of
    ``command``, when given)."""
    _load_all()
    recipe = _RECIPES.get(name)
    if recipe is None or (command is not None and recipe.command != command):
        valid = [r.name for r in list_recipes(command)]
        why = (f"recipe {name!r} is for `egofeat {recipe.command}`" if recipe is not None
               else f"no recipe {name!r}")
        raise KeyError(f"{why}; recipes{f' for `egofeat {command}`' if command else ''}: "
                       f"{', '.join(valid) or 'none'} (see `egofeat recipes`)")
    return recipe


def _load_all() -> None:
    """Import every module of this package: each registers its recipes."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings as dicts: the value as the config layout holds it."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
