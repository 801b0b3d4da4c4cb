"""What egofeat knows by name: heads (their task and options), training tasks, recipes, encoder
families."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["describe_encoders", "describe_heads", "describe_recipes"]


def describe_heads() -> dict[str, Any]:
    """``{"heads": {name: {"task": ..., "options": {option: default}}}, "tasks": [...]}``."""
    from egofeat.heads import head_task, list_heads, list_tasks
    from egofeat.heads.registry import head_kwargs

    heads = {}
    for name in list_heads():
        options = {key: None if value is inspect.Parameter.empty else value
                   for key, value in head_kwargs(name).items()}
        heads[name] = {"task": head_task(name), "options": options}
    return {"heads": heads, "tasks": list_tasks()}


def describe_encoders() -> dict[str, str]:
    """``{family: how to name it}`` for every encoder family."""
    from egofeat.extract.encoders import describe_encoders as families

    return families()


def describe_recipes(name: str | None = None) -> dict[str, Any]:
    """``{"recipes": [recipe as JSON, ...]}``: every named recipe (or the one ``name``), each with
    its command, summary, reference and settings (key, value, source, note)."""
    from egofeat.recipes import get_recipe, list_recipes

    chosen = [get_recipe(name)] if name is not None else list_recipes()
    return {"recipes": [recipe.to_json() for recipe in chosen]}
