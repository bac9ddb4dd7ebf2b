"""The Flower app's run configuration, read once into checked, typed settings."""

from __future__ import annotations

import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgmm.datasets.partition import PARTITIONERS
from fedgmm.federated.spec import (
    AGGREGATIONS,
    DP_NOISE_MODES,
    INITS,
    LOCAL_REG_MODES,
    MethodSpec,
    default_max_rounds,
)
from fedgmm.types import COVARIANCE_TYPES

ALGORITHMS = ("fedgengmm", "fedem", "hybrid")
PREPROCESSING = ("none", "standardize", "pca")

#: The spec's defaults are the run config's (never re-typed here).
_SPEC = MethodSpec("fedgengmm")

#: Every run-config key with its default; ``[tool.flwr.app.config]`` in pyproject.toml
#: holds the same keys and values (Flower rejects overrides of undeclared keys).
DEFAULTS: dict[str, Any] = {
    # algorithm
    "algorithm": _SPEC.method,
    "n-components": _SPEC.n_components,
    "n-components-max": 0,
    "covariance-type": _SPEC.covariance_type,
    "local-components-min": 0,
    "local-components-max": 0,
    "local-components-list": "",
    "synthetic-size": _SPEC.synthetic_size,
    "max-iter": _SPEC.max_iter,
    "fit-tol": _SPEC.fit_tol,
    "max-rounds": 0,  # 0: default_max_rounds(epsilon), 40 or 10 with epsilon
    "round-tol": _SPEC.round_tol,
    "tol": -1.0,
    "reg-covar": _SPEC.reg_covar,
    "local-reg-covar": _SPEC.local_reg_covar,
    "n-init": _SPEC.n_init,
    "server-tol": _SPEC.server_tol,
    "server-max-iter": _SPEC.server_max_iter,
    "aggregation": _SPEC.aggregation,
    "init": _SPEC.init,
    "min-samples-per-component": _SPEC.min_samples_per_component,
    "robust": _SPEC.robust,
    "max-client-weight": _SPEC.max_client_weight,
    "epsilon": 0.0,
    "delta": _SPEC.delta,
    "clip-bound": 0.0,
    "dp-noise": _SPEC.dp_noise,
    "dp-noise-seed": -1,
    "seed": 0,
    "preprocessing": "none",
    "pca-components": 0,
    "download-model": False,
    "secure-aggregation": False,
    "secure-row-bound": 0.0,
    "secure-max-samples": 10000,
    "secure-limbs": 2,
    # federation
    "min-nodes": 3,
    "min-replies": 2,
    "round-timeout": 120.0,
    "wait-timeout": 60.0,
    "output-dir": "flower-output",
    # node data (a node's --node-config overrides these; simulated nodes use them)
    "dataset": "digits",
    "dataset-args": "",
    "partitioner": "dirichlet",
    "partitioner-args": "",
    "alpha": 1.0,
    "min-partition-size": 10,
    "regimes": "auto",
    "test-fraction": 0.25,
    # server-side evaluation
    "eval-dataset": "",
    "eval-path": "",
    "eval-label-column": "",
}

#: Keys a node may set in its node config to choose its data (besides partition-id/num-partitions).
DATA_KEYS = (
    "dataset", "dataset-args", "partitioner", "partitioner-args", "alpha", "min-partition-size", "regimes",
    "test-fraction", "seed",
)  # fmt: skip


class SettingsError(ValueError):
    """A run-config or node-config value is missing or invalid; the message names the key."""


def _local_reg_covar(cfg: Mapping[str, Any]) -> float | str | None:
    """``local-reg-covar``: "auto" / "heldout", a number > 0 (absolute), or 0 / "reg-covar" for reg-covar."""
    value = _get(cfg, "local-reg-covar", "run config")
    if isinstance(value, str):
        if value in LOCAL_REG_MODES:
            return value
        if value == "reg-covar":
            return None
        try:
            value = float(value)
        except ValueError:
            raise SettingsError(
                f"run config 'local-reg-covar' must be one of {[*LOCAL_REG_MODES, 'reg-covar']} or a number >= 0, "
                f"got {value!r}."
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise SettingsError(
            f"run config 'local-reg-covar' must be > 0, or 0 for reg-covar, or 'auto' / 'heldout', got {value!r}."
        )
    return float(value) or None


def _noise_seed(cfg: Mapping[str, Any]) -> int | None:
    """``dp-noise-seed``: -1 (each client's secret seeds its DP noise) or a reproducible seed >= 0.

    A seed makes the noise known to whoever knows it, the server included: tests and
    reproducible measurements only.
    """
    value = get_int(cfg, "dp-noise-seed", low=-1)
    return None if value == -1 else value


def _per_node_components(text: str) -> list[Any]:
    """``local-components-list``: comma-separated ``K`` or ``min-max`` entries, the i-th for client id i."""
    out: list[Any] = []
    for item in text.split(","):
        try:
            lo, _, hi = item.strip().partition("-")
            out.append((int(lo), int(hi)) if hi else (int(lo), int(lo)))
        except ValueError:
            raise SettingsError(
                f"run config 'local-components-list' must be comma-separated K or min-max entries, got {text!r}."
            ) from None
    return out


def _get(cfg: Mapping[str, Any], key: str, where: str) -> Any:
    if key in cfg:
        return cfg[key]
    if key in DEFAULTS:
        return DEFAULTS[key]
    raise SettingsError(f"{where} lacks the key {key!r}.")


def get_int(cfg: Mapping[str, Any], key: str, where: str = "run config", low: int | None = None) -> int:
    """An integer setting (a float with an integral value is accepted)."""
    value = _get(cfg, key, where)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(f"{where} {key!r} must be an integer, got {value!r}.")
    if low is not None and value < low:
        raise SettingsError(f"{where} {key!r} must be >= {low}, got {value}.")
    return value


def get_float(cfg: Mapping[str, Any], key: str, where: str = "run config", positive: bool = False) -> float:
    """A float setting (an int is accepted)."""
    value = _get(cfg, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{where} {key!r} must be a number, got {value!r}.")
    if positive and not value > 0:
        raise SettingsError(f"{where} {key!r} must be > 0, got {value!r}.")
    return float(value)


def get_str(cfg: Mapping[str, Any], key: str, where: str = "run config", choices: tuple[str, ...] = ()) -> str:
    """A string setting, optionally one of ``choices``."""
    value = _get(cfg, key, where)
    if not isinstance(value, str):
        raise SettingsError(f"{where} {key!r} must be a string (quote it: {key}='...'), got {value!r}.")
    if choices and value not in choices:
        raise SettingsError(f"{where} {key!r} must be one of {list(choices)}, got {value!r}.")
    return value


def get_bool(cfg: Mapping[str, Any], key: str, where: str = "run config") -> bool:
    """A boolean setting (``true``/``false``)."""
    value = _get(cfg, key, where)
    if not isinstance(value, bool):
        raise SettingsError(f"{where} {key!r} must be true or false, got {value!r}.")
    return value


def parse_pairs(text: str, where: str = "setting") -> tuple[tuple[str, Any], ...]:
    """Keyword arguments from ``"n_samples=600 n_features=2"`` (spaces or commas between pairs).

    Values are read as TOML literals (``600`` an int, ``0.5`` a float, ``true`` a bool);
    anything else is kept as a string. Hyphens in keys become underscores.
    """
    pairs: list[tuple[str, Any]] = []
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise SettingsError(f"{where}: {item!r} is not of the form name=value.")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip("'\"")
        if isinstance(value, list):
            value = tuple(value)
        pairs.append((key, value))
    return tuple(pairs)


@dataclass(frozen=True)
class DataSettings:
    """Where a node's rows come from when it takes a partition of a named dataset.

    The split is the study runner's (:func:`fedgmm.datasets.split.split_dataset`, :func:`~fedgmm.datasets.split.partition_labels`, then
    the partitioner), so partition ``i`` equals the in-process client ``i`` for the same
    settings and seed.
    """

    dataset: str = "digits"
    dataset_args: tuple[tuple[str, Any], ...] = ()
    partitioner: str = "dirichlet"
    partitioner_args: tuple[tuple[str, Any], ...] = ()
    alpha: float = 1.0
    min_partition_size: int = 10
    regimes: int | str = "auto"
    test_fraction: float = 0.25
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "run config") -> DataSettings:
        """Read the data keys (:data:`DATA_KEYS`) from a run or merged node config."""
        test_fraction = get_float(cfg, "test-fraction", where)
        if not 0.0 <= test_fraction < 1.0:
            raise SettingsError(f"{where} 'test-fraction' must be in [0, 1), got {test_fraction}.")
        return cls(
            dataset=get_str(cfg, "dataset", where),
            dataset_args=parse_pairs(get_str(cfg, "dataset-args", where), f"{where} 'dataset-args'"),
            partitioner=get_str(cfg, "partitioner", where, tuple(PARTITIONERS)),
            partitioner_args=parse_pairs(get_str(cfg, "partitioner-args", where), f"{where} 'partitioner-args'"),
            alpha=get_float(cfg, "alpha", where, positive=True),
            min_partition_size=get_int(cfg, "min-partition-size", where, low=0),
            regimes=_regimes(cfg, where),
            test_fraction=test_fraction,
            seed=get_int(cfg, "seed", where, low=0),
        )


def _regimes(cfg: Mapping[str, Any], where: str) -> int | str:
    value = _get(cfg, "regimes", where)
    if value in ("auto", "classes") or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    raise SettingsError(f"{where} 'regimes' must be 'auto', 'classes' or an int >= 1, got {value!r}.")


@dataclass(frozen=True)
class RunSettings:
    """Everything the ServerApp reads from the run config.

    Attributes
    ----------
    spec : MethodSpec
        The algorithm and its settings, exactly as the in-process runner takes them.
    seed : int
    preprocessing : {"none", "standardize", "pca"}
        Federated preprocessing before the algorithm (``pca`` standardises, then keeps
        ``pca_components`` axes).
    min_nodes : int
        SuperNodes to wait for before starting.
    min_replies : int
        Fewest usable replies per round (the algorithms' ``min_clients``).
    round_timeout, wait_timeout : float
        Seconds to wait for one round's replies, and for ``min_nodes`` to connect.
    output_dir : Path
        Where the model and ``summary.json`` go (relative: against the ServerApp's cwd).
    download_model : bool
        Send the global model to the nodes after training (one extra, separately counted round).
    data : DataSettings
        The default node data, also the evaluation split's settings.
    eval_dataset, eval_path, eval_label_column
        Optional server-side evaluation set: a dataset's held-out test split, or a file.
    """

    spec: MethodSpec
    seed: int
    preprocessing: str
    pca_components: int
    min_nodes: int
    min_replies: int
    round_timeout: float
    wait_timeout: float
    output_dir: Path
    download_model: bool
    data: DataSettings
    eval_dataset: str = ""
    eval_path: str = ""
    eval_label_column: int | str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    secure_aggregation: bool = False
    secure_row_bound: float = 0.0
    secure_max_samples: int = 10000
    secure_limbs: int = 2

    @classmethod
    def from_run_config(cls, cfg: Mapping[str, Any]) -> RunSettings:
        """Check and type the run config; unknown values raise :class:`SettingsError` naming the key."""
        algorithm = get_str(cfg, "algorithm", choices=ALGORITHMS)
        n_components = get_int(cfg, "n-components", low=1)
        n_max = get_int(cfg, "n-components-max", low=0)
        if n_max and n_max < n_components:
            raise SettingsError(f"run config 'n-components-max' ({n_max}) must be 0 or >= 'n-components' ({n_components}).")
        if n_max > n_components and algorithm != "fedgengmm":
            raise SettingsError("a range of global components (n-components-max) is for algorithm 'fedgengmm' only.")
        local_min = get_int(cfg, "local-components-min", low=0)
        local_max = get_int(cfg, "local-components-max", low=0)
        if (local_min == 0) != (local_max == 0) or local_max < local_min:
            raise SettingsError(
                "run config needs 1 <= local-components-min <= local-components-max, or both 0 for the default "
                f"(4 x n-components); got {local_min} and {local_max}."
            )
        local: Any = (local_min, local_max) if local_max else None
        per_node = get_str(cfg, "local-components-list").strip()
        if per_node:
            if local is not None:
                raise SettingsError("set either local-components-min/-max or local-components-list, not both.")
            local = _per_node_components(per_node)
        synthetic = _get(cfg, "synthetic-size", "run config")
        if isinstance(synthetic, bool) or not isinstance(synthetic, int | float) or synthetic <= 0:
            raise SettingsError(
                f"run config 'synthetic-size' must be a positive float (multiple of the clients' rows) or int (rows), got {synthetic!r}."
            )
        round_tol = get_float(cfg, "round-tol", positive=True)
        if get_float(cfg, "tol") >= 0:
            warnings.warn(
                "run config 'tol' is deprecated and will be removed in the next release; it is federated EM's "
                "round tolerance: set 'round-tol' instead.", FutureWarning, stacklevel=2,
            )
            round_tol = get_float(cfg, "tol", positive=True)
        local_reg_covar = _local_reg_covar(cfg)
        spec = MethodSpec(
            method=algorithm,
            n_components=(n_components, n_max) if n_max > n_components else n_components,
            covariance_type=get_str(cfg, "covariance-type", choices=tuple(COVARIANCE_TYPES)),  # type: ignore[arg-type]
            local_components=local,
            synthetic_size=synthetic,
            reg_covar=get_float(cfg, "reg-covar", positive=True),
            local_reg_covar=local_reg_covar,
            n_init=get_int(cfg, "n-init", low=1),
            server_tol=get_float(cfg, "server-tol", positive=True),
            server_max_iter=get_int(cfg, "server-max-iter", low=0),
            aggregation=get_str(cfg, "aggregation", choices=AGGREGATIONS),
            max_iter=get_int(cfg, "max-iter", low=1),
            fit_tol=get_float(cfg, "fit-tol", positive=True),
            max_rounds=_max_rounds(cfg),
            round_tol=round_tol,
            init=get_str(cfg, "init", choices=INITS),
            min_samples_per_component=get_int(cfg, "min-samples-per-component", low=1),
            min_clients=get_int(cfg, "min-replies", low=1),
            robust=get_bool(cfg, "robust"),
            max_client_weight=_max_client_weight(cfg),
            epsilon=_off_if_zero(cfg, "epsilon"),
            delta=_delta(cfg),
            clip_bound=_off_if_zero(cfg, "clip-bound"),
            dp_noise=get_str(cfg, "dp-noise", choices=DP_NOISE_MODES),
            dp_noise_seed=_noise_seed(cfg),
        )
        preprocessing = get_str(cfg, "preprocessing", choices=PREPROCESSING)
        pca = get_int(cfg, "pca-components", low=0)
        if preprocessing == "pca" and pca < 1:
            raise SettingsError("preprocessing='pca' needs pca-components >= 1.")
        label: Any = _get(cfg, "eval-label-column", "run config")
        if isinstance(label, bool) or not isinstance(label, int | str):
            raise SettingsError(f"run config 'eval-label-column' must be a column index or name, got {label!r}.")
        eval_dataset = get_str(cfg, "eval-dataset")
        eval_path = get_str(cfg, "eval-path")
        if eval_dataset and eval_path:
            raise SettingsError("set at most one of run config 'eval-dataset' and 'eval-path'.")
        return cls(
            spec=spec,
            seed=get_int(cfg, "seed", low=0),
            preprocessing=preprocessing,
            pca_components=pca,
            min_nodes=get_int(cfg, "min-nodes", low=1),
            min_replies=spec.min_clients,
            round_timeout=get_float(cfg, "round-timeout", positive=True),
            wait_timeout=max(0.0, get_float(cfg, "wait-timeout")),
            output_dir=Path(get_str(cfg, "output-dir")).expanduser(),
            download_model=get_bool(cfg, "download-model"),
            data=DataSettings.from_config(cfg),
            eval_dataset=eval_dataset,
            eval_path=eval_path,
            eval_label_column=None if label == "" else label,
            raw={k: cfg[k] for k in cfg},
            **_secure(cfg, algorithm),
        )


def _secure(cfg: Mapping[str, Any], algorithm: str) -> dict[str, Any]:
    """``secure-aggregation`` and the public bounds its quantisation needs (see :mod:`fedgmm.flower.secure`)."""
    on = get_bool(cfg, "secure-aggregation")
    bound = get_float(cfg, "secure-row-bound")
    max_samples = get_int(cfg, "secure-max-samples", low=1)
    limbs = get_int(cfg, "secure-limbs", low=1)
    if limbs > 2:
        raise SettingsError(f"run config 'secure-limbs' must be 1 or 2, got {limbs}.")
    if on and algorithm not in ("fedem", "hybrid"):
        raise SettingsError(f"secure-aggregation sums federated EM's statistics: use algorithm 'fedem' or 'hybrid', not {algorithm!r}.")
    if on and not (bound > 0 and bound < float("inf")):
        raise SettingsError(
            "secure-aggregation needs 'secure-row-bound' > 0: a public bound on every row's norm in the model's "
            f"feature space (after preprocessing), got {bound!r}."
        )
    return {"secure_aggregation": on, "secure_row_bound": bound, "secure_max_samples": max_samples, "secure_limbs": limbs}


def _delta(cfg: Mapping[str, Any]) -> float:
    """Run config ``delta`` in ``(0, 1)``."""
    delta = get_float(cfg, "delta")
    if not 0 < delta < 1:
        raise SettingsError(f"run config 'delta' must be in (0, 1), got {delta}.")
    return delta


def _max_rounds(cfg: Mapping[str, Any]) -> int:
    """``max-rounds``; 0 (the default) is the library's: 40, or 10 with ``epsilon``
    (:func:`~fedgmm.federated.spec.default_max_rounds`)."""
    rounds = get_int(cfg, "max-rounds", low=0)
    return rounds or default_max_rounds(_off_if_zero(cfg, "epsilon"))


def _off_if_zero(cfg: Mapping[str, Any], key: str) -> float | None:
    """A run-config number >= 0 where 0 means off (None)."""
    value = get_float(cfg, key)
    if not value >= 0:
        raise SettingsError(f"run config {key!r} must be >= 0 (0: off), got {value}.")
    return value or None


def _max_client_weight(cfg: Mapping[str, Any]) -> float:
    """Run config ``max-client-weight`` in ``(0, 1]`` (1: no cap)."""
    weight = get_float(cfg, "max-client-weight")
    if not 0 < weight <= 1:
        raise SettingsError(f"run config 'max-client-weight' must be in (0, 1] (1: no cap), got {weight}.")
    return weight
