"""Study configs: a TOML file, checked strictly (a typo'd key is an error that names it)."""

from __future__ import annotations

import copy
import difflib
import math
import tomllib
import warnings
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fedgmm.datasets.partition import PARTITIONERS
from fedgmm.federated.spec import (
    BASELINES,
    DP_MAX_ROUNDS,
    LOCAL_REG_MODES,
    METHODS,
    MethodSpec,
    parse_local_components,
)
from fedgmm.types import COVARIANCE_TYPES

PREPROCESSING_MODES = ("federated", "public", "none")
SWEEPABLE = (
    "local_components", "synthetic_size", "hybrid_rounds", "contamination", "n_components", "attack", "attack_fraction",
    "robust", "local_reg_covar", "aggregation", "n_init", "epsilon",
)  # fmt: skip


class ConfigError(ValueError):
    """A study config is malformed; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class PartitionConfig:
    """How the training rows are split over clients (names as Flower Datasets')."""

    name: str = "dirichlet"
    num_partitions: int = 10
    alpha: tuple[float, ...] = (1.0,)
    min_partition_size: int = 10
    regimes: int | str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreprocessingConfig:
    """Standardisation and PCA: federated (one counted round), public (free) or none."""

    mode: str = "federated"
    standardize: bool = True
    pca: int = 0


#: :class:`MethodSpec` fields a study's ``[model]`` table sets (the method comes from
#: ``methods``; ``min_clients`` and ``local_n_init`` keep the spec's defaults). Every other
#: spec field is a ``[model]`` key with the spec's default, so a new hyper-parameter needs
#: no change here.
SPEC_KEYS = tuple(f.name for f in fields(MethodSpec) if f.name not in ("method", "min_clients", "local_n_init"))
#: Old ``[model]`` keys still accepted for one release (with a FutureWarning).
RENAMED_KEYS = {"tol": "fit_tol", "em_tol": "round_tol"}
_SPEC_DEFAULTS = {f.name: f.default for f in fields(MethodSpec) if f.default is not MISSING}


@dataclass(frozen=True)
class ModelConfig:
    """Model settings shared by every method of the study.

    Attributes
    ----------
    spec : MethodSpec
        The template every method's spec is made from (its ``method`` is replaced).
    hybrid_rounds : int
        Federated EM rounds of the hybrid (FedGenGMM followed by EM).
    """

    spec: MethodSpec = field(default_factory=lambda: MethodSpec("fedgengmm"))
    hybrid_rounds: int = 3


@dataclass(frozen=True)
class ContaminationConfig:
    """Robustness: what a contaminated client's data looks like.

    A fraction ``contamination`` (swept) of the clients gets ``share`` of its rows
    replaced by points drawn uniformly from the training data's bounding box widened by
    ``margin`` times its extent on every side. With ``clean_preprocessing`` (default) the
    standardisation/PCA is fitted on the clean rows, so all contamination levels are scored
    in one coordinate system (log-likelihoods under different transforms do not compare).
    """

    share: float = 0.5
    margin: float = 0.5
    clean_preprocessing: bool = True


@dataclass(frozen=True)
class AttackConfig:
    """Adversarial clients: ``round(fraction · C)`` clients (seeded per data cell) play ``kind``.

    ``kind`` is a :func:`fedgmm.attacks.parse_attack` string (``"none"``: every client is
    honest). The attack acts on the federated methods' replies; centralized and local-only
    baselines see the honest rows, so they are the reference on the same data. Both can
    be swept (``[sweep] attack``, ``attack_fraction``), and ``[sweep] robust = [true,
    false]`` sets the defended and the plain recipe side by side.
    """

    kind: str = "none"
    fraction: float = 0.0


@dataclass(frozen=True)
class StudyConfig:
    """A whole study: data, partition, preprocessing, methods, model settings, sweeps, seeds.

    ``audit_holdout`` > 0 keeps that share of each client's rows out of every fit: the
    membership audit attacks each upload with its client's rows against these held-out rows
    of the same distribution (0: against the pooled test rows).
    """

    name: str
    description: str = ""
    datasets: tuple[str, ...] = ("digits",)
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: tuple[str, ...] = ("centralized", "local", "union", "fedgengmm", "fedem")
    seeds: tuple[int, ...] = (0,)
    test_fraction: float = 0.25
    ood_classes: tuple[int, ...] = ()
    n_jobs: int = 1
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    audit_holdout: float = 0.0
    source: str = ""


_TOP_KEYS = {
    "name", "description", "datasets", "dataset_options", "methods", "seeds", "test_fraction", "ood",
    "n_jobs", "partition", "preprocessing", "model", "sweep", "contamination", "attack", "profiles",
    "audit_holdout",
}  # fmt: skip
_SECTION_KEYS = {
    "partition": {"name", "num_partitions", "alpha", "min_partition_size", "num_shards_per_partition",
                  "num_classes_per_partition", "class_assignment_mode", "self_balancing", "max_attempts",
                  "regimes"},
    "preprocessing": {"mode", "standardize", "pca"},
    "model": {*SPEC_KEYS, *RENAMED_KEYS, "hybrid_rounds"},
    "sweep": set(SWEEPABLE),
    "contamination": {"share", "margin", "clean_preprocessing"},
    "attack": {"kind", "fraction"},
    "ood": {"classes"},
}  # fmt: skip


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _check_keys(where: str, section: str, data: dict[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {sorted(allowed)}."
            label = f"[{section}] " if section else ""
            raise _fail(where, f"unknown key {label}{key!r}.{hint}")


def _apply_profile(data: dict[str, Any], profile: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for dotted, value in profile.items():
        parts = dotted.split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise _fail(where, f"profile key {dotted!r} does not name a table entry.")
        if isinstance(value, dict) and isinstance(target.get(parts[-1]), dict):
            target[parts[-1]].update(value)
        else:
            target[parts[-1]] = value
    return out


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _local_components(value: Any, where: str) -> Any:
    """An int, a ``[min, max]`` range, or one int / range per client (see :func:`parse_local_components`)."""
    try:
        parsed = parse_local_components(value) if value is not None else None
    except (ValueError, TypeError):
        parsed = None
    if parsed is None:
        raise _fail(
            where, f"local_components must be an int >= 1, a [min, max] pair or one per client, got {value!r}."
        )
    return parsed


def _model_config(model_data: dict[str, Any], where: str) -> ModelConfig:
    """The ``[model]`` table as a :class:`ModelConfig`; types checked against the spec's defaults."""
    model_data = dict(model_data)
    for old, new in RENAMED_KEYS.items():
        if old in model_data:
            if new in model_data:
                raise _fail(where, f"[model] sets both {old!r} and its new name {new!r}; keep {new!r}.")
            warnings.warn(f"{where}: [model] {old!r} is deprecated and will be removed in the next release; "
                          f"call it {new!r}.", FutureWarning, stacklevel=4)  # fmt: skip
            model_data[new] = model_data.pop(old)
    if "local_components" in model_data:
        model_data["local_components"] = _local_components(model_data["local_components"], where)
    for key, value in model_data.items():
        default = 3 if key == "hybrid_rounds" else _SPEC_DEFAULTS[key]
        if key == "local_components":
            continue
        if key == "local_reg_covar":
            ok = (isinstance(value, int | float) and not isinstance(value, bool)) or value in LOCAL_REG_MODES
        elif key == "synthetic_size":
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        elif key == "n_components" or (isinstance(default, int) and not isinstance(default, bool)):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float) or default is None:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            expected = "float" if default is None else type(default).__name__
            if key == "local_reg_covar":
                expected = f"float or one of {list(LOCAL_REG_MODES)}"
            raise _fail(where, f"[model] {key} = {value!r} has the wrong type; expected {expected}.")
    covariance_type = model_data.get("covariance_type", "full")
    if covariance_type not in COVARIANCE_TYPES:
        raise _fail(where, f"[model] covariance_type must be one of {list(COVARIANCE_TYPES)}, got {covariance_type!r}.")
    hybrid_rounds = model_data.pop("hybrid_rounds", 3)
    try:
        return ModelConfig(MethodSpec("fedgengmm", **model_data), hybrid_rounds)
    except ValueError as exc:
        raise _fail(where, f"[model] {exc}") from exc


def parse_config(data: dict[str, Any], *, where: str = "<config>", profile: str | None = None) -> StudyConfig:
    """Build a :class:`StudyConfig` from parsed TOML, applying a profile's overrides.

    Raises
    ------
    ConfigError
        Unknown keys (with the closest valid one), wrong types, unknown datasets,
        methods, partitioners or covariance types, or an unknown profile.
    """
    from fedgmm.datasets import list_datasets

    _check_keys(where, "", data, _TOP_KEYS)
    profiles = data.get("profiles", {})
    if profile is not None:
        if profile not in profiles:
            raise _fail(where, f"no profile {profile!r}; the config has {sorted(profiles) or 'none'}.")
        data = _apply_profile({k: v for k, v in data.items() if k != "profiles"}, profiles[profile], where)
    for section, allowed in _SECTION_KEYS.items():
        if section in data:
            if not isinstance(data[section], dict):
                raise _fail(where, f"[{section}] must be a table.")
            _check_keys(where, section, data[section], allowed)
    if "name" not in data or not isinstance(data["name"], str) or not data["name"].strip():
        raise _fail(where, "a study needs a 'name'.")
    known = {info.name for info in list_datasets()}
    datasets = _as_tuple(data.get("datasets", ["digits"]))
    for ds in datasets:
        if ds not in known:
            close = difflib.get_close_matches(str(ds), sorted(known), n=1)
            raise _fail(where, f"unknown dataset {ds!r}." + (f" Did you mean {close[0]!r}?" if close else f" Known: {sorted(known)}."))
    methods = _as_tuple(data.get("methods", list(StudyConfig.methods)))
    for m in methods:
        if m not in METHODS and m not in BASELINES:
            raise _fail(where, f"unknown method {m!r}; expected some of {[*METHODS, *BASELINES]}.")
    part = dict(data.get("partition", {}))
    pname = part.pop("name", "dirichlet")
    if pname not in PARTITIONERS:
        raise _fail(where, f"unknown partitioner {pname!r}; expected one of {list(PARTITIONERS)}.")
    partition = PartitionConfig(
        name=pname,
        num_partitions=int(part.pop("num_partitions", 10)),
        alpha=tuple(float(a) for a in _as_tuple(part.pop("alpha", 1.0))),
        min_partition_size=int(part.pop("min_partition_size", 10)),
        regimes=part.pop("regimes", "auto"),
        extra=part,
    )
    if not (partition.regimes in ("auto", "classes") or (isinstance(partition.regimes, int) and partition.regimes >= 1)):
        raise _fail(where, f"[partition] regimes must be 'auto', 'classes' or an int >= 1, got {partition.regimes!r}.")
    pre = data.get("preprocessing", {})
    preprocessing = PreprocessingConfig(
        mode=pre.get("mode", "federated"), standardize=bool(pre.get("standardize", True)), pca=int(pre.get("pca", 0))
    )
    if preprocessing.mode not in PREPROCESSING_MODES:
        raise _fail(where, f"[preprocessing] mode must be one of {list(PREPROCESSING_MODES)}, got {preprocessing.mode!r}.")
    model = _model_config(dict(data.get("model", {})), where)
    sweep: dict[str, tuple[Any, ...]] = {}
    for key, values in data.get("sweep", {}).items():
        if not isinstance(values, list) or not values:
            raise _fail(where, f"[sweep] {key} must be a non-empty list of values.")
        if key == "local_components":
            sweep[key] = tuple(_local_components(v, where) for v in values)
        else:
            sweep[key] = tuple(values)
    private = model.spec.epsilon is not None or any(not math.isinf(float(e)) for e in sweep.get("epsilon", ())
                                                   if isinstance(e, int | float) and not isinstance(e, bool))
    if private and "max_rounds" not in data.get("model", {}):
        # The library's default with ε (FederatedEM, Flower: default_max_rounds), for every
        # run of the study, ε = ∞ included, so its private and plain runs stay comparable.
        model = replace(model, spec=replace(model.spec, max_rounds=DP_MAX_ROUNDS))
    contamination = ContaminationConfig(**data.get("contamination", {}))
    attack = AttackConfig(**data.get("attack", {}))
    _check_attacks(where, (attack.kind, *sweep.get("attack", ())), (attack.fraction, *sweep.get("attack_fraction", ())),
                   sweep.get("robust", ()))
    seeds = tuple(int(s) for s in _as_tuple(data.get("seeds", [0])))
    test_fraction = float(data.get("test_fraction", 0.25))
    if not 0 < test_fraction < 1:
        raise _fail(where, f"test_fraction must be in (0, 1), got {test_fraction}.")
    _check_ranges(where, partition, preprocessing, sweep, seeds, contamination)
    audit_holdout = data.get("audit_holdout", 0.0)
    if isinstance(audit_holdout, bool) or not isinstance(audit_holdout, int | float) or not 0 <= audit_holdout < 1:
        raise _fail(where, f"audit_holdout = {audit_holdout!r} is out of range; allowed: numbers in [0, 1) (0: off).")
    options = data.get("dataset_options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise _fail(where, "[dataset_options] must map dataset names to tables of loader arguments.")
    return StudyConfig(
        name=data["name"].strip(),
        description=str(data.get("description", "")),
        datasets=tuple(str(d) for d in datasets),
        dataset_options={str(k): dict(v) for k, v in options.items()},
        methods=tuple(str(m) for m in methods),
        seeds=seeds,
        test_fraction=test_fraction,
        ood_classes=tuple(int(c) for c in data.get("ood", {}).get("classes", [])),
        n_jobs=int(data.get("n_jobs", 1)),
        partition=partition,
        preprocessing=preprocessing,
        model=model,
        sweep=sweep,
        contamination=contamination,
        attack=attack,
        audit_holdout=float(audit_holdout),
        source=where,
    )


def _check_attacks(where: str, kinds: tuple[Any, ...], fractions: tuple[Any, ...], robust: tuple[Any, ...]) -> None:
    from fedgmm.attacks import parse_attack

    for kind in kinds:
        if not isinstance(kind, str):
            raise _fail(where, f"attack kinds are strings such as 'scaled-means:1e15', got {kind!r}.")
        try:
            parse_attack(kind)
        except ValueError as exc:
            raise _fail(where, f"[attack] {exc}") from exc
    for fraction in fractions:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise _fail(where, f"attack fractions must be numbers in [0, 1], got {fraction!r}.")
    for value in robust:
        if not isinstance(value, bool):
            raise _fail(where, f"[sweep] robust takes true/false, got {value!r}.")


def _check_ranges(
    where: str, partition: PartitionConfig, preprocessing: PreprocessingConfig, sweep: dict[str, tuple[Any, ...]],
    seeds: tuple[int, ...], contamination: ContaminationConfig,
) -> None:
    """Values whose range is known when the config is read: each error names the key, the value and the range."""

    def bad(key: str, value: Any, allowed: str) -> ConfigError:
        return _fail(where, f"{key} = {value!r} is out of range; allowed: {allowed}.")

    def number(value: Any) -> bool:
        return not isinstance(value, bool) and isinstance(value, int | float) and value == value

    for a in partition.alpha:
        if not (a > 0 and a != float("inf")):
            raise bad("[partition] alpha", a, "finite numbers > 0")
    if partition.num_partitions < 1:
        raise bad("[partition] num_partitions", partition.num_partitions, "integers >= 1")
    if partition.min_partition_size < 0:
        raise bad("[partition] min_partition_size", partition.min_partition_size, "integers >= 0")
    if preprocessing.pca < 0:
        raise bad("[preprocessing] pca", preprocessing.pca, "integers >= 0 (0: no PCA)")
    for s in seeds:
        if s < 0:
            raise bad("seeds", s, "integers >= 0")
    if not 0 <= contamination.share <= 1:
        raise bad("[contamination] share", contamination.share, "numbers in [0, 1]")
    for key, low, allowed in (("n_components", 1, "integers >= 1"), ("hybrid_rounds", 1, "integers >= 1"),
                              ("synthetic_size", 0, "numbers > 0")):
        for value in sweep.get(key, ()):
            if not number(value) or value < low or (low == 0 and value <= 0):
                raise bad(f"[sweep] {key}", value, allowed)
    for value in sweep.get("epsilon", ()):
        if not number(value) or not value > 0:
            raise bad("[sweep] epsilon", value, "numbers > 0 (inf: no differential privacy)")
    for value in sweep.get("contamination", ()):
        if not number(value) or not 0 <= value <= 1:
            raise bad("[sweep] contamination", value, "numbers in [0, 1]")


def load_config(path: str | Path, *, profile: str | None = None) -> StudyConfig:
    """Read and check a study config file (TOML).

    Raises
    ------
    ConfigError
        The file is missing, not TOML, or not a valid study (the message says where).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such study config file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from exc
    try:
        return parse_config(data, where=str(path), profile=profile)
    except TypeError as exc:  # e.g. an unexpected keyword in a section dataclass
        raise ConfigError(f"{path}: {exc}") from exc


def shipped_studies() -> dict[str, Path]:
    """The study configs shipped inside the package, by name."""
    root = Path(__file__).resolve().parent.parent / "studies"
    return {p.stem: p for p in sorted(root.glob("*.toml"))}
