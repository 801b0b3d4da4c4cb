"""egofeat: an offline feature store for egocentric video, and lightweight heads on it.

A notebook needs this one import::

    import egofeat

    store = egofeat.open_store("epic.egofeat")
    full = store.stream("clip-vit-b-16-openai/full").to_torch()       # (N, T, D) fp16
    store.manifest().filter(pl.col("status") == "error").collect()     # polars, lazy
    train = egofeat.load_head_data(store, ["clip-vit-b-16-openai/full"], splits=["train"])
    head = egofeat.create_head("trn", in_dims=train.in_dims, num_frames=train.num_frames,
                               num_classes=train.num_classes)
    egofeat.Trainer(egofeat.TrainConfig(epochs=10)).fit(head, train)

The names below load their subpackage on first use, so ``import egofeat`` stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
_API = {
    "open_store": ("egofeat.store", "FeatureStore.open"),
    "FeatureStore": ("egofeat.store", "FeatureStore"),
    "create_encoder": ("egofeat.extract.encoders", "create_encoder"),
    "create_head": ("egofeat.heads", "create_head"),
    "create_task": ("egofeat.heads", "create_task"),
    "load_head_data": ("egofeat.heads", "load_head_data"),
    "load_config": ("egofeat.heads", "load_config"),
    "predict": ("egofeat.heads", "predict"),
    "Trainer": ("egofeat.heads", "Trainer"),
    "TrainConfig": ("egofeat.heads", "TrainConfig"),
    "Predictions": ("egofeat.eval", "Predictions"),
    "load_predictions": ("egofeat.eval", "load_predictions"),
    "score": ("egofeat.eval", "score"),
}

__all__ = [
    "FeatureStore",
    "Predictions",
    "TrainConfig",
    "Trainer",
    "__version__",
    "create_encoder",
    "create_head",
    "create_task",
    "load_config",
    "load_head_data",
    "load_predictions",
    "open_store",
    "predict",
    "score",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from egofeat.eval import Predictions, load_predictions, score
    from egofeat.extract.encoders import create_encoder
    from egofeat.heads import (
        TrainConfig,
        Trainer,
        create_head,
        create_task,
        load_config,
        load_head_data,
        predict,
    )
    from egofeat.store import FeatureStore

    open_store = FeatureStore.open


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'egofeat' has no attribute {name!r}")
    module, attribute = _API[name]
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
