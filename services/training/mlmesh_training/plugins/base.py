"""The model-plugin interface: search-space specs, parameter checks, plugins, fitted models and
the byte format of a saved model."""

from __future__ import annotations

import abc
import copy
import json
import math
import numbers
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mlmesh_common.errors import InvalidArgument

MAX_SEED = 2**31 - 1  # LightGBM and XGBoost take a 32-bit signed seed.
# Payload format of saved models; a plugin that changes its payload overrides `format_version` on
# both its plugin and fitted-model classes, so that old blobs are refused, not misread.
ARTIFACT_FORMAT = 1


class Family(StrEnum):
    STATISTICAL = "statistical"
    MACHINE_LEARNING = "machine_learning"
    DEEP_LEARNING = "deep_learning"
    ENSEMBLE = "ensemble"


# --- search-space specs --------------------------------------------------------------------------

SPEC_TYPES = ("int", "float", "categorical")


def _spec_error(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_PARAM_SPEC")


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_json_scalar(value: object) -> bool:
    if value is None or isinstance(value, bool | str | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of a search space; the tuner maps it onto Optuna's `suggest_*`."""

    type: str  # "int" | "float" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def __post_init__(self) -> None:
        # JSON gives lists; a tuple keeps the frozen spec hashable.
        if isinstance(self.choices, list):
            object.__setattr__(self, "choices", tuple(self.choices))
        self.validate()

    def validate(self) -> None:
        if self.type not in SPEC_TYPES:
            raise _spec_error(f"type must be one of {', '.join(SPEC_TYPES)}, got {self.type!r}")
        if self.type == "categorical":
            self._validate_categorical()
        else:
            self._validate_numeric()

    def _validate_categorical(self) -> None:
        if self.low is not None or self.high is not None or self.step is not None or self.log:
            raise _spec_error("a categorical spec takes only choices")
        if not isinstance(self.choices, tuple) or not self.choices:
            raise _spec_error("a categorical spec needs a non-empty list of choices")
        if not all(_is_json_scalar(choice) for choice in self.choices):
            raise _spec_error("choices must be JSON scalars (string, number, boolean or null)")
        if len({json.dumps(choice) for choice in self.choices}) != len(self.choices):
            raise _spec_error("choices must be distinct")

    def _validate_numeric(self) -> None:
        if self.choices:
            raise _spec_error(f"an {self.type} spec takes no choices")
        if not isinstance(self.log, bool):
            raise _spec_error("log must be a boolean")
        for name, value in (("low", self.low), ("high", self.high)):
            if not _is_number(value) or not math.isfinite(value):
                raise _spec_error(f"{name} must be a finite number, got {value!r}")
            if self.type == "int" and not float(value).is_integer():
                raise _spec_error(f"{name} of an int spec must be integral, got {value!r}")
        if self.low > self.high:
            raise _spec_error(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise _spec_error("a log-scaled spec needs low > 0")
        self._validate_step()

    def _validate_step(self) -> None:
        if self.step is None:
            return
        if not _is_number(self.step) or not math.isfinite(self.step) or self.step <= 0:
            raise _spec_error(f"step must be a positive number, got {self.step!r}")
        if self.type == "int" and not float(self.step).is_integer():
            raise _spec_error("step of an int spec must be integral")
        # Optuna cannot combine a log scale with a step (except the int default of 1).
        if self.log and not (self.type == "int" and self.step == 1):
            raise _spec_error("log and step cannot be combined")

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        cast = int if self.type == "int" else float
        data: dict[str, Any] = {
            "type": self.type,
            "low": cast(self.low),
            "high": cast(self.high),
            "log": self.log,
        }
        if self.step is not None:
            data["step"] = cast(self.step)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamSpec:
        if not isinstance(data, Mapping):
            raise _spec_error("a parameter spec must be an object")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise _spec_error(f"unknown spec field(s): {', '.join(unknown)}")
        if "type" not in data:
            raise _spec_error("a parameter spec needs a type")
        return cls(**dict(data))

    def sample(self, rng: np.random.Generator) -> Any:
        """A value drawn from the spec: uniform, or log-uniform when `log`, on the step grid."""
        if self.type == "categorical":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.type == "int":
            return self._sample_int(rng)
        return self._sample_float(rng)

    def _sample_int(self, rng: np.random.Generator) -> int:
        low, high = int(self.low), int(self.high)
        if self.log:
            # Log-uniform over [low, high + 1), floored, so every integer can be drawn.
            value = math.exp(rng.uniform(math.log(low), math.log(high + 1)))
            return min(int(value), high)
        step = int(self.step or 1)
        return low + step * int(rng.integers((high - low) // step + 1))

    def _sample_float(self, rng: np.random.Generator) -> float:
        low, high = float(self.low), float(self.high)
        if self.log:
            return min(max(math.exp(rng.uniform(math.log(low), math.log(high))), low), high)
        if self.step is not None:
            count = math.floor((high - low) / self.step + 1e-9)
            return low + self.step * int(rng.integers(count + 1))
        return float(rng.uniform(low, high))


# --- parameter definitions and checks ------------------------------------------------------------

PARAM_KINDS = ("int", "float", "bool", "str", "dict")


@dataclass(frozen=True)
class Param:
    """One plugin parameter: its default and the cheap checks a user's value must pass."""

    default: Any
    kind: str  # one of PARAM_KINDS
    low: float | None = None  # inclusive bounds
    high: float | None = None
    positive: bool = False  # strictly greater than zero
    choices: tuple = ()
    nullable: bool = False

    def coerce(self, value: Any) -> Any:
        """The value in its canonical type, or a `ValueError` saying what was expected."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"must be {self._expected()}, not null")
        converted = _CONVERTERS[self.kind](value)
        if converted is _INVALID:
            raise ValueError(f"must be {self._expected()}, got {value!r}")
        self._check_range(converted)
        return converted

    def _check_range(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.positive and value <= 0:
            raise ValueError(f"must be > 0, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"must be >= {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"must be <= {self.high}, got {value!r}")

    def _expected(self) -> str:
        names = {"int": "an integer", "float": "a number", "bool": "a boolean"}
        expected = names.get(self.kind, "a string" if self.kind == "str" else "an object")
        return f"{expected} or null" if self.nullable else expected


_INVALID = object()


def _to_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _INVALID
    # JSON and protobuf Struct carry every number as a double: 100.0 is a valid 100.
    if isinstance(value, numbers.Integral) or float(value).is_integer():
        return int(value)
    return _INVALID


def _to_float(value: Any) -> Any:
    if not _is_number(value) or not math.isfinite(value):
        return _INVALID
    return float(value)


_CONVERTERS = {
    "int": _to_int,
    "float": _to_float,
    "bool": lambda value: value if isinstance(value, bool) else _INVALID,
    "str": lambda value: value if isinstance(value, str) else _INVALID,
    "dict": lambda value: dict(value) if isinstance(value, Mapping) else _INVALID,
}


def library_value(value: Any, default: Any) -> Any:
    """A value for a library parameter the plugin does not type itself, typed after the
    library's default. JSON carries every number as a double: 4.0 becomes the integer 4 where
    the library's default is an integer or unknown, and stays a float where it is a float."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"must be a boolean, got {value!r}")
        return value
    if isinstance(default, float) and _is_number(value):
        return float(value)
    if isinstance(value, list | tuple):
        return [library_value(item, None) for item in value]
    if _is_number(value) and not isinstance(default, float) and float(value).is_integer():
        return int(value)
    return value


# Synthetic rows for the libraries' own checks of a parameter set (see `_probe`).
def probe_data(rows: int = 32, columns: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, columns))
    return x, x @ np.linspace(0.5, 1.0, columns) + 0.1 * rng.standard_normal(rows)


def invalid_parameter(plugin_key: str, name: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"parameter {name!r} of {plugin_key} {problem}",
        reason="INVALID_PARAMETER",
        metadata={"plugin": plugin_key, "parameter": name},
    )


def check_seed(seed: Any) -> int:
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        raise InvalidArgument(
            f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}", reason="INVALID_SEED"
        )
    return int(seed)


def derive_seed(seed: int, offset: int) -> int:
    """A distinct, reproducible seed for the `offset`-th sub-model of one fit."""
    return (seed + offset) % (MAX_SEED + 1)


# --- training data -------------------------------------------------------------------------------


def check_training_data(X: pd.DataFrame, y: pd.Series) -> None:
    """Reject what every plugin would choke on, with a 400 rather than a library traceback."""

    def invalid(message: str) -> InvalidArgument:
        return InvalidArgument(message, reason="INVALID_TRAINING_DATA")

    if not isinstance(X, pd.DataFrame) or not isinstance(y, pd.Series):
        raise invalid("X must be a pandas DataFrame and y a pandas Series")
    if X.shape[1] == 0 or len(X) == 0:
        raise invalid("X needs at least one row and one feature column")
    if not X.index.equals(y.index):
        raise invalid("X and y must share the same index")
    if not X.index.is_unique or not X.index.is_monotonic_increasing:
        raise invalid("the index must be unique and increasing in time")
    non_numeric = [str(c) for c, t in X.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if non_numeric:
        raise invalid(f"feature columns must be numeric: {', '.join(non_numeric)}")
    if not np.isfinite(X.to_numpy(dtype=np.float64)).all():
        raise invalid("features must be finite (no NaN or infinity)")
    if not np.isfinite(y.to_numpy(dtype=np.float64)).all():
        raise invalid("the target must be finite (no NaN or infinity)")


def feature_matrix(X: pd.DataFrame, features: list[str]) -> np.ndarray:
    """X's columns in training order, as float64; a missing column is the caller's error."""
    if not isinstance(X, pd.DataFrame):
        raise InvalidArgument("X must be a pandas DataFrame", reason="INVALID_FEATURES")
    missing = [name for name in features if name not in X.columns]
    if missing:
        raise InvalidArgument(
            f"X lacks feature column(s) the model was trained on: {', '.join(missing)}",
            reason="MISSING_FEATURES",
            metadata={"missing": ",".join(missing)},
        )
    return X.loc[:, features].to_numpy(dtype=np.float64)


# --- saved-model format --------------------------------------------------------------------------

_MAGIC = b"MLMESH-MODEL\n"
_HEADER_LENGTH_BYTES = 4


def invalid_artifact(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_MODEL_ARTIFACT")


def pack_artifact(plugin_key: str, format_version: int, payload: bytes) -> bytes:
    """Magic, then a length-prefixed JSON header naming the plugin and format, then the payload."""
    header = json.dumps({"plugin": plugin_key, "format": format_version}, sort_keys=True).encode()
    return _MAGIC + len(header).to_bytes(_HEADER_LENGTH_BYTES, "big") + header + payload


def unpickle(plugin_key: str, payload: bytes) -> Any:
    # Artifacts are written by this service into its own store; pickle is trusted there.
    try:
        return pickle.loads(payload)
    except Exception as error:  # unpickling a damaged blob raises almost anything
        raise invalid_artifact(f"unreadable {plugin_key} artifact: {error}") from error


def unpack_artifact(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a saved model; anything else is rejected before unpickling."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise invalid_artifact("a saved model must be bytes")
    data = bytes(data)
    if not data.startswith(_MAGIC):
        raise invalid_artifact("not an mlmesh model artifact (bad magic)")
    start = len(_MAGIC) + _HEADER_LENGTH_BYTES
    length = int.from_bytes(data[len(_MAGIC) : start], "big")
    try:
        header = json.loads(data[start : start + length])
    except ValueError as error:
        raise invalid_artifact(f"corrupt model artifact header: {error}") from error
    if not isinstance(header, dict) or not {"plugin", "format"} <= set(header):
        raise invalid_artifact("model artifact header lacks plugin or format")
    return header, data[start + length :]


# --- plugins and fitted models -------------------------------------------------------------------


class FittedModel(abc.ABC):
    """A trained model: predicts, and saves itself to bytes that its plugin's `load` reads."""

    plugin_key: str
    features: list[str]
    format_version: ClassVar[int] = ARTIFACT_FORMAT

    @abc.abstractmethod
    def predict(self, X: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
        """float64 predictions, one per row of X; NaN only where the model cannot predict.

        `history` is optional feature rows that precede X in time; sequence models use them as
        context for X's first rows, other models ignore them.
        """

    @abc.abstractmethod
    def save(self) -> bytes: ...


class PickledModel(FittedModel):
    """A fitted model whose whole state pickles (scikit-learn-style estimators, results)."""

    def save(self) -> bytes:
        return pack_artifact(self.plugin_key, self.format_version, pickle.dumps(self, protocol=5))


class ModelPlugin(abc.ABC):
    """One kind of model: its parameters, search space, training and loading.

    `parameters` are the plugin's defaults, each with a cheap check; they are not the limit.
    Any other keyword argument that the model's library itself accepts (`library_defaults`)
    reaches the estimator too; names the library does not know are a 400.
    """

    key: ClassVar[str]
    family: ClassVar[Family]
    model_type: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Param]]
    format_version: ClassVar[int] = ARTIFACT_FORMAT
    # What the parameters are passed to, named in the answer for a name it does not accept.
    library: ClassVar[str] = ""
    # Names the plugin sets itself and a user may not, with the reason.
    reserved: ClassVar[dict[str, str]] = {}
    # The library's seed argument: a user's value wins over the request's seed.
    seed_parameter: ClassVar[str | None] = None

    def default_params(self) -> dict[str, Any]:
        return {name: copy.deepcopy(param.default) for name, param in self.parameters.items()}

    def search_space(self) -> dict[str, ParamSpec]:
        return {}

    def library_defaults(self) -> Mapping[str, Any]:
        """Every keyword argument the library accepts, with its default (None when unknown).
        Read from the library itself; only called when a user passes a name beyond
        `parameters`, so that listing or checking the defaults imports no ML library."""
        return {}

    def alias_groups(self) -> list[frozenset[str]]:
        """Sets of names the library takes for one parameter (LightGBM's `eta` and
        `learning_rate`)."""
        return []

    def seed_used(self, params: Mapping[str, Any], seed: int) -> int:
        """The seed a fit with these checked parameters uses: the user's library-level seed
        parameter when given, else the request's."""
        if self.seed_parameter and params.get(self.seed_parameter) is not None:
            return int(params[self.seed_parameter])
        return seed

    def check_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults merged with the user's parameters, each checked; unknown names are a 400."""
        if params is not None and not isinstance(params, Mapping):
            raise InvalidArgument(f"parameters of {self.key} must be an object")
        params = dict(params or {})
        extra = set(params) - set(self.parameters)
        if extra:
            params = self._canonical_names(params)
            extra = set(params) - set(self.parameters)
        reserved = sorted(extra & set(self.reserved))
        if reserved:
            name = reserved[0]
            raise InvalidArgument(
                f"parameter {name!r} of {self.key} is set by mlmesh: {self.reserved[name]}",
                reason="RESERVED_PARAMETER",
                metadata={"plugin": self.key, "parameter": name},
            )
        library = self.library_defaults() if extra else {}
        unknown = sorted(extra - set(library))
        if unknown:
            raise self._unknown(unknown)
        merged = self.default_params()
        for name, value in params.items():
            try:
                if name in self.parameters:
                    merged[name] = self.parameters[name].coerce(value)
                elif name == self.seed_parameter:
                    merged[name] = check_seed(_to_int(value) if _is_number(value) else value)
                else:
                    merged[name] = library_value(value, library[name])
            except ValueError as error:
                raise invalid_parameter(self.key, name, str(error)) from error
        merged = self._check_combination(merged)
        if extra:
            self._check_with_library(merged)
        return merged

    def _canonical_names(self, params: dict[str, Any]) -> dict[str, Any]:
        """Aliases renamed to the name the plugin uses for that parameter; two names for one
        parameter are a 400, since the library would silently keep one of them."""
        used = {*self.parameters, *self.reserved, self.seed_parameter} - {None}
        renamed: dict[str, Any] = {}
        for name, value in params.items():
            group = next((g for g in self.alias_groups() if name in g), frozenset({name}))
            canonical = next(iter(sorted(group & used)), name)
            clash = [other for other in params if other != name and other in group]
            if clash:
                raise InvalidArgument(
                    f"parameters {name!r} and {clash[0]!r} of {self.key} name the same "
                    f"{self.library} parameter; give one",
                    reason="DUPLICATE_PARAMETER",
                    metadata={"plugin": self.key, "parameter": name},
                )
            renamed[canonical] = value
        return renamed

    def _unknown(self, unknown: list[str]) -> InvalidArgument:
        checked_against = self.library or self.key
        return InvalidArgument(
            f"unknown parameter(s) for {self.key}: {', '.join(unknown)} "
            f"(not accepted by {checked_against}); defaults: {', '.join(sorted(self.parameters))}",
            reason="UNKNOWN_PARAMETER",
            metadata={
                "plugin": self.key,
                "unknown": ",".join(unknown),
                "checked_against": checked_against,
            },
        )

    def _check_with_library(self, params: dict[str, Any]) -> None:
        """The library's own check of the values (a constructor, its validation, or a one-round
        fit on a few synthetic rows); its error becomes a 400 carrying its message."""
        try:
            self._probe(params)
        except InvalidArgument:
            raise
        except Exception as error:  # each library raises its own types for a bad value
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise InvalidArgument(
                f"{self.library} rejected the parameters of {self.key}: {message}",
                reason="INVALID_PARAMETER_VALUE",
                metadata={"plugin": self.key},
            ) from error

    def _probe(self, params: dict[str, Any]) -> None:
        """Raise the library's error for parameters it refuses; plugins with library
        parameters override it (a plugin without them has nothing more to check)."""
        return None

    def _check_combination(self, params: dict[str, Any]) -> dict[str, Any]:
        """Rules across parameters; plugins override it. Must be idempotent."""
        return params

    def fit(
        self, X: pd.DataFrame, y: pd.Series, params: Mapping[str, Any] | None, seed: int
    ) -> FittedModel:
        checked = self.check_params(params)
        seed = check_seed(seed)
        check_training_data(X, y)
        return self._fit(X, y, checked, seed)

    @abc.abstractmethod
    def _fit(self, X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int) -> FittedModel:
        """Train on checked inputs."""

    def load(self, data: bytes) -> FittedModel:
        header, payload = unpack_artifact(data)
        if header["plugin"] != self.key:
            raise invalid_artifact(f"artifact is a {header['plugin']} model, not {self.key}")
        if header["format"] != self.format_version:
            raise invalid_artifact(
                f"{self.key} artifact format {header['format']} is not supported "
                f"(expected {self.format_version})"
            )
        return self._load(payload)

    def _load(self, payload: bytes) -> FittedModel:
        model = unpickle(self.key, payload)
        if not isinstance(model, FittedModel) or model.plugin_key != self.key:
            raise invalid_artifact(f"artifact payload is not a {self.key} model")
        return model
