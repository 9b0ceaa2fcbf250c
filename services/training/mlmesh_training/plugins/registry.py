"""The plugin registry: every model plugin by key (`ml.xgboost`) and by model type (`xgboost`)."""

from __future__ import annotations

from mlmesh_common.errors import InvalidArgument
from mlmesh_training.plugins.base import Family, FittedModel, ModelPlugin, unpack_artifact
from mlmesh_training.plugins.ensemble import MeanEnsemblePlugin, StackingEnsemblePlugin
from mlmesh_training.plugins.lstm import LstmPlugin
from mlmesh_training.plugins.ml import (
    CatBoostPlugin,
    LightGBMPlugin,
    RandomForestPlugin,
    XGBoostPlugin,
)
from mlmesh_training.plugins.statistical import ArimaPlugin, GarchPlugin

_PLUGINS: dict[str, ModelPlugin] = {
    plugin.key: plugin
    for plugin in sorted(
        (
            ArimaPlugin(),
            GarchPlugin(),
            XGBoostPlugin(),
            LightGBMPlugin(),
            CatBoostPlugin(),
            RandomForestPlugin(),
            LstmPlugin(),
            MeanEnsemblePlugin(),
            StackingEnsemblePlugin(),
        ),
        key=lambda plugin: plugin.key,
    )
}
_BY_NAME: dict[str, ModelPlugin] = {
    **{plugin.model_type: plugin for plugin in _PLUGINS.values()},
    **_PLUGINS,
}


def get_plugin(name_or_model_type: str) -> ModelPlugin:
    """The plugin named by its key (`ml.xgboost`) or model type (`xgboost`), case-insensitive."""
    name = name_or_model_type.strip().lower() if isinstance(name_or_model_type, str) else None
    plugin = _BY_NAME.get(name) if name else None
    if plugin is None:
        raise InvalidArgument(
            f"unknown model plugin {name_or_model_type!r}; valid: {', '.join(_PLUGINS)}",
            reason="UNKNOWN_PLUGIN",
            metadata={"valid": ",".join(_PLUGINS)},
        )
    return plugin


def plugins() -> list[ModelPlugin]:
    """Every plugin, sorted by key."""
    return list(_PLUGINS.values())


def plugins_of_family(family: Family | str) -> list[ModelPlugin]:
    try:
        wanted = Family(family)
    except ValueError:
        valid = ",".join(member.value for member in Family)
        raise InvalidArgument(
            f"unknown model family {family!r}; valid: {valid}",
            reason="UNKNOWN_FAMILY",
            metadata={"valid": valid},
        ) from None
    return [plugin for plugin in _PLUGINS.values() if plugin.family is wanted]


def load_model(data: bytes) -> FittedModel:
    """A saved model, loaded by the plugin its header names."""
    header, _ = unpack_artifact(data)
    return get_plugin(str(header["plugin"])).load(data)
