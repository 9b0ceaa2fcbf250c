"""Model plugins: one interface (fit, predict, defaults, search space, save/load) over statistical,
machine-learning, deep-learning and ensemble models."""

from mlmesh_training.plugins.base import (
    Family,
    FittedModel,
    ModelPlugin,
    Param,
    ParamSpec,
)
from mlmesh_training.plugins.registry import get_plugin, load_model, plugins, plugins_of_family

__all__ = [
    "Family",
    "FittedModel",
    "ModelPlugin",
    "Param",
    "ParamSpec",
    "get_plugin",
    "load_model",
    "plugins",
    "plugins_of_family",
]
