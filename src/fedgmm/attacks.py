"""Attack kit: hostile clients that tamper with their encoded replies, for tests and robustness studies.

An attack wraps a client's data (or another attack) and is placed in the clients list in
place of the array, e.g. ``clients[3] = InflatedCount(X3, 1e4)``. The transport answers
each request from ``attack.data`` as an honest client would, then passes the *encoded*
reply through ``attack.tamper(kind, reply)`` before counting and decoding it, so the
server sees exactly what a hostile client could put on the wire. Attacks compose:
``InflatedCount(ShiftedComponents(X, 50.0), 100)`` shifts first, then inflates.

Forgeries are built at the record level (config fields and ``numpy.save`` arrays, as the
encoders in :mod:`fedgmm.federated.messages` lay them out) rather than through the
encoders, so a forgery the encoders would refuse still reaches the server's decoder.
Every attack keeps the reply decodable: it forges what passes the wire checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedgmm.federated.client import DOWNLOAD, EM_STATISTICS, FIT_LOCAL, MOMENTS
from fedgmm.federated.messages import (
    CONFIG,
    MAX_CLIENT_SAMPLES,
    MODEL,
    STATS,
    STATUS_OK,
)
from fedgmm.federated.messages import (
    MOMENTS as MOMENTS_RECORD,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackPlan",
    "ForgedMoments",
    "ForgedStatistics",
    "InflatedCount",
    "ScaledCovariances",
    "ScaledMeans",
    "ScaledStatistics",
    "ShiftedComponents",
    "attack_layers",
    "innermost_data",
    "parse_attack",
]


# ---------------------------------------------------------------------------- record access
def _config(reply: RecordDict) -> dict[str, Any]:
    return dict(reply.config_records[CONFIG].items()) if CONFIG in reply.config_records else {}


def _arrays(reply: RecordDict, record: str) -> dict[str, np.ndarray]:
    if record not in reply.array_records:
        return {}
    return {k: np.array(v.numpy(), dtype=np.float64) for k, v in reply.array_records[record].items()}


def _rebuilt(
    reply: RecordDict, cfg: dict[str, Any] | None = None, arrays: tuple[str, dict[str, np.ndarray]] | None = None
) -> RecordDict:
    """A copy of ``reply`` with its config and/or one array record replaced."""
    out = RecordDict()
    for name, rec in reply.array_records.items():
        out[name] = rec
    for name, crec in reply.config_records.items():
        out[name] = crec
    if arrays is not None:
        name, values = arrays
        out[name] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})
    if cfg is not None:
        out[CONFIG] = ConfigRecord(cfg)
    return out


def _is_ok(reply: RecordDict) -> bool:
    return _config(reply).get("status") == STATUS_OK


def _claim(n: int, factor: float) -> int:
    """``n × factor`` rounded, kept in the decoder's accepted range ``[1, MAX_CLIENT_SAMPLES]``."""
    return int(min(max(round(n * factor), 1), MAX_CLIENT_SAMPLES))


def _centred_means(nk: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """``sx / nk`` where ``nk > 0`` (else 0): each component's mean relative to the shift."""
    safe = np.where(nk > 0, nk, 1.0)
    return np.where((nk > 0)[:, None], sx / safe[:, None], 0.0)


def _outer_term(nk: np.ndarray, m: np.ndarray, covariance_type: str) -> np.ndarray:
    """``N_k m_k m_kᵀ`` in the layout of ``sxx`` for ``covariance_type``."""
    if covariance_type == "full":
        return nk[:, None, None] * m[:, :, None] * m[:, None, :]
    if covariance_type == "tied":
        return (nk[:, None] * m).T @ m
    if covariance_type == "diag":
        return nk[:, None] * m**2
    return nk * np.sum(m**2, axis=1)


def _statistics_type(stats: dict[str, np.ndarray]) -> str:
    k, d = stats["sx"].shape
    shape = stats["sxx"].shape
    if shape == (k, d, d):
        return "full"
    if shape == (d, d):
        return "tied"
    if shape == (k, d):
        return "diag"
    return "spherical"


def _with_means(stats: dict[str, np.ndarray], new_means: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Statistics whose implied component means are ``new_means(means)`` (absolute coordinates).

    The implied covariances ``sxx/N_k − m mᵀ`` are kept, so the forgery stays consistent
    (positive semi-definite) as a careful liar would make it.
    """
    out = dict(stats)
    nk, shift = stats["nk"], stats["shift"]
    ctype = _statistics_type(stats)
    m = _centred_means(nk, stats["sx"])
    live = nk > 0
    m_new = np.where(live[:, None], new_means(m + shift) - shift, 0.0)
    out["sx"] = nk[:, None] * m_new
    out["sxx"] = stats["sxx"] - _outer_term(nk, m, ctype) + _outer_term(nk, m_new, ctype)
    return out


def _scaled_counts(reply: RecordDict, factor: float) -> RecordDict:
    """A statistics reply that claims ``factor ×`` the rows, every statistic scaled to match."""
    cfg = _config(reply)
    n = int(cfg["n-samples"])
    claimed = _claim(n, factor)
    ratio = claimed / n
    stats = _arrays(reply, STATS)
    for key in ("nk", "sx", "sxx"):
        stats[key] = stats[key] * ratio
    cfg["n-samples"] = claimed
    cfg["log-likelihood"] = float(cfg["log-likelihood"]) * ratio
    return _rebuilt(reply, cfg, (STATS, stats))


def _moments_affine(reply: RecordDict, mean_map: Callable[[np.ndarray], np.ndarray], cov_scale: float = 1.0) -> RecordDict:
    """A moments reply whose implied mean is ``mean_map(mean)`` and covariance ``cov_scale ×`` the true one."""
    cfg = _config(reply)
    n = float(cfg["n-samples"])
    mom = _arrays(reply, MOMENTS_RECORD)
    mean = mom["sum"] / n
    scatter = mom["outer"] - n * np.outer(mean, mean)
    new_mean = mean_map(mean)
    mom["sum"] = n * new_mean
    mom["outer"] = cov_scale * scatter + n * np.outer(new_mean, new_mean)
    mom["outer"] = 0.5 * (mom["outer"] + mom["outer"].T)
    return _rebuilt(reply, None, (MOMENTS_RECORD, mom))


def attack_layers(client: Any) -> list[Attack]:
    """The attacks of a stack, outermost first (empty for plain data)."""
    layers = []
    while isinstance(client, Attack):
        layers.append(client)
        client = client.inner
    return layers


def innermost_data(client: Any) -> Any:
    """The data behind any stack of attacks (``client`` itself when it is not an attack)."""
    while isinstance(client, Attack):
        client = client.inner
    return client


# ---------------------------------------------------------------------------- attacks
class Attack:
    """Base class: wraps data (array-like ``(n_c, d)``) or another attack.

    Subclasses override :meth:`forge_model`, :meth:`forge_statistics` and/or
    :meth:`forge_moments`; each receives an encoded ``"ok"`` reply and returns the forged
    one. Replies of excluded clients and download acknowledgements pass unchanged.

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
        The honest client's rows, or an attack to apply first.
    """

    #: Name in :func:`parse_attack` strings.
    name = "attack"

    def __init__(self, data: Any) -> None:
        self.inner = data

    @property
    def data(self) -> Any:
        """The client's rows (those of the innermost wrapped array)."""
        return innermost_data(self.inner)

    def tamper(self, kind: str, reply: RecordDict) -> RecordDict:
        """Forge the encoded ``reply`` to a request of ``kind`` (the inner attack's forgery first)."""
        if isinstance(self.inner, Attack):
            reply = self.inner.tamper(kind, reply)
        if kind == DOWNLOAD or not _is_ok(reply):
            return reply
        if kind == FIT_LOCAL:
            return self.forge_model(reply)
        if kind == EM_STATISTICS:
            return self.forge_statistics(reply)
        if kind == MOMENTS:
            return self.forge_moments(reply)
        return reply

    def forge_model(self, reply: RecordDict) -> RecordDict:
        """Forge a local-model upload (identity unless overridden)."""
        return reply

    def forge_statistics(self, reply: RecordDict) -> RecordDict:
        """Forge an E-step statistics reply (identity unless overridden)."""
        return reply

    def forge_moments(self, reply: RecordDict) -> RecordDict:
        """Forge a preprocessing moments reply (identity unless overridden)."""
        return reply

    def _params(self) -> dict[str, Any]:
        return {}

    def get_state(self) -> dict[str, int]:
        """This layer's counters between replies (a process serving one message at a time keeps them outside)."""
        return {}

    def set_state(self, state: dict[str, int]) -> None:
        """Restore what :meth:`get_state` returned."""

    def __repr__(self) -> str:
        inner = repr(self.inner) if isinstance(self.inner, Attack) else f"<{type(self.inner).__name__} {np.shape(self.inner)}>"
        params = "".join(f", {k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({inner}{params})"

    @property
    def spec(self) -> str:
        """The :func:`parse_attack` string of this stack (innermost first)."""
        own = self.name + "".join(f":{v}" for v in self._params().values())
        return f"{self.inner.spec}+{own}" if isinstance(self.inner, Attack) else own


class InflatedCount(Attack):
    """Claims ``factor ×`` its rows, consistently, in every reply.

    - local-model upload: ``n-samples`` × factor (the model itself is honest);
    - E-step statistics: ``n-samples``, ``N_k``, ``Σ r x̃``, ``Σ r x̃ x̃ᵀ`` and the
      log-likelihood × the same ratio, so the statistics look like factor× the rows;
    - moments: count, ``Σx`` and ``Σxxᵀ`` × the same ratio.

    The claim is rounded and clipped to the decoder's cap
    (:data:`~fedgmm.federated.messages.MAX_CLIENT_SAMPLES`) so that it passes the wire
    checks: ``InflatedCount(X, 1e12)`` claims the largest count a server accepts.

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
    factor : float
        Positive.
    """

    name = "inflated-count"

    def __init__(self, data: Any, factor: float) -> None:
        super().__init__(data)
        if not factor > 0:
            raise ValueError(f"InflatedCount needs factor > 0, got {factor!r}.")
        self.factor = factor

    def _params(self) -> dict[str, Any]:
        return {"factor": self.factor}

    def forge_model(self, reply: RecordDict) -> RecordDict:
        cfg = _config(reply)
        cfg["n-samples"] = _claim(int(cfg["n-samples"]), self.factor)
        return _rebuilt(reply, cfg)

    def forge_statistics(self, reply: RecordDict) -> RecordDict:
        return _scaled_counts(reply, self.factor)

    def forge_moments(self, reply: RecordDict) -> RecordDict:
        cfg = _config(reply)
        n = int(cfg["n-samples"])
        claimed = _claim(n, self.factor)
        mom = _arrays(reply, MOMENTS_RECORD)
        mom = {k: v * (claimed / n) for k, v in mom.items()}
        cfg["n-samples"] = claimed
        return _rebuilt(reply, cfg, (MOMENTS_RECORD, mom))


class ShiftedComponents(Attack):
    """Moves its whole distribution by ``shift``: local means, implied statistic means, data mean.

    Covariances are kept (in the statistics and moments, the implied ones), so the
    forgery is a plausible-looking model of data that is not there.

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
    shift : float or array-like of shape (d,)
        Added to every mean (a float to every coordinate).
    """

    name = "shifted-components"

    def __init__(self, data: Any, shift: float | np.ndarray) -> None:
        super().__init__(data)
        self.shift = shift

    def _params(self) -> dict[str, Any]:
        return {"shift": self.shift}

    def _map(self, means: np.ndarray) -> np.ndarray:
        return means + np.asarray(self.shift, dtype=np.float64)

    def forge_model(self, reply: RecordDict) -> RecordDict:
        model = _arrays(reply, MODEL)
        model["means"] = self._map(model["means"])
        return _rebuilt(reply, None, (MODEL, model))

    def forge_statistics(self, reply: RecordDict) -> RecordDict:
        return _rebuilt(reply, None, (STATS, _with_means(_arrays(reply, STATS), self._map)))

    def forge_moments(self, reply: RecordDict) -> RecordDict:
        return _moments_affine(reply, self._map)


class ScaledMeans(Attack):
    """Multiplies every mean by ``scale`` (about the origin); covariances kept.

    ``ScaledMeans(X, 1e15)`` (or 1e200) is the table's "means × 1e15" upload. Applies to
    local means, the means implied by E-step statistics, and the moments' mean.

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
    scale : float
    """

    name = "scaled-means"

    def __init__(self, data: Any, scale: float) -> None:
        super().__init__(data)
        self.scale = scale

    def _params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def _map(self, means: np.ndarray) -> np.ndarray:
        return means * float(self.scale)

    def forge_model(self, reply: RecordDict) -> RecordDict:
        model = _arrays(reply, MODEL)
        model["means"] = self._map(model["means"])
        return _rebuilt(reply, None, (MODEL, model))

    def forge_statistics(self, reply: RecordDict) -> RecordDict:
        return _rebuilt(reply, None, (STATS, _with_means(_arrays(reply, STATS), self._map)))

    def forge_moments(self, reply: RecordDict) -> RecordDict:
        return _moments_affine(reply, self._map)


class ScaledCovariances(Attack):
    """Multiplies every covariance by ``scale`` (1e300 and 1e-300 are the table's rows).

    Applies to local covariances (any covariance type), the covariances implied by E-step
    statistics (``Σ r x̃ x̃ᵀ`` rebuilt about the same means), and the moments' covariance.

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
    scale : float
        Positive.
    """

    name = "scaled-covariances"

    def __init__(self, data: Any, scale: float) -> None:
        super().__init__(data)
        if not scale > 0:
            raise ValueError(f"ScaledCovariances needs scale > 0, got {scale!r}.")
        self.scale = scale

    def _params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def forge_model(self, reply: RecordDict) -> RecordDict:
        model = _arrays(reply, MODEL)
        model["covariances"] = model["covariances"] * float(self.scale)
        return _rebuilt(reply, None, (MODEL, model))

    def forge_statistics(self, reply: RecordDict) -> RecordDict:
        stats = _arrays(reply, STATS)
        ctype = _statistics_type(stats)
        outer = _outer_term(stats["nk"], _centred_means(stats["nk"], stats["sx"]), ctype)
        stats["sxx"] = float(self.scale) * (stats["sxx"] - outer) + outer
        if ctype in ("full", "tied"):
            stats["sxx"] = 0.5 * (stats["sxx"] + np.swapaxes(stats["sxx"], -1, -2))
        return _rebuilt(reply, None, (STATS, stats))

    def forge_moments(self, reply: RecordDict) -> RecordDict:
        return _moments_affine(reply, lambda m: m, float(self.scale))


class ScaledStatistics(Attack):
    """Federated EM only: multiplies its E-step statistics by ``factor`` (the table's "× 1e6").

    ``N_k``, ``Σ r x̃``, ``Σ r x̃ x̃ᵀ``, the log-likelihood and the claimed row count all
    scale together (the count clipped to the decoder's cap), so the reply stays
    self-consistent; local-model and moments replies are left alone.

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
    factor : float
        Positive.
    """

    name = "scaled-statistics"

    def __init__(self, data: Any, factor: float) -> None:
        super().__init__(data)
        if not factor > 0:
            raise ValueError(f"ScaledStatistics needs factor > 0, got {factor!r}.")
        self.factor = factor

    def _params(self) -> dict[str, Any]:
        return {"factor": self.factor}

    def forge_statistics(self, reply: RecordDict) -> RecordDict:
        return _scaled_counts(reply, self.factor)


#: The forgeries of :class:`ForgedStatistics`.
STATISTIC_FORGERIES = ("sxx-offdiag", "sx", "log-likelihood", "alternating")


class ForgedStatistics(Attack):
    """Federated EM only: E-step statistics that pass the wire checks but are not real.

    Forgeries (``target``):

    - ``"sxx-offdiag"``: ``value`` added to every off-diagonal entry of ``Σ r x̃ x̃ᵀ``
      (the diagonal, which the decoder checks, is kept); full and tied statistics only —
      diag and spherical ones carry no off-diagonal entries and pass unchanged;
    - ``"sx"``: every entry of ``Σ r x̃`` set to ``value`` (e.g. 1e200);
    - ``"log-likelihood"``: the log-likelihood sum set to ``value`` (e.g. 1e308);
    - ``"alternating"``: the log-likelihood set to ``+value``, ``−value``, ``+value``, …
      on successive replies (one per round), which keeps the federated mean from
      settling. The round counter lives in this object (one per client).

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
    target : {"sxx-offdiag", "sx", "log-likelihood", "alternating"}
    value : float
    """

    name = "forged-statistics"

    def __init__(self, data: Any, target: str = "sxx-offdiag", value: float = 1e6) -> None:
        super().__init__(data)
        if target not in STATISTIC_FORGERIES:
            raise ValueError(f"ForgedStatistics target must be one of {list(STATISTIC_FORGERIES)}, got {target!r}.")
        self.target = target
        self.value = value
        self._calls = 0

    def _params(self) -> dict[str, Any]:
        return {"target": self.target, "value": self.value}

    def get_state(self) -> dict[str, int]:
        return {"calls": self._calls}

    def set_state(self, state: dict[str, int]) -> None:
        self._calls = int(state.get("calls", 0))

    def forge_statistics(self, reply: RecordDict) -> RecordDict:
        value = float(self.value)
        cfg = _config(reply)
        stats = _arrays(reply, STATS)
        if self.target == "sxx-offdiag":
            sxx = stats["sxx"]
            if sxx.ndim >= 2 and sxx.shape[-1] == sxx.shape[-2] == stats["sx"].shape[1]:
                d = sxx.shape[-1]
                stats["sxx"] = sxx + value * (1.0 - np.eye(d))
            return _rebuilt(reply, None, (STATS, stats))
        if self.target == "sx":
            stats["sx"] = np.full_like(stats["sx"], value)
            return _rebuilt(reply, None, (STATS, stats))
        if self.target == "log-likelihood":
            cfg["log-likelihood"] = value
        else:
            cfg["log-likelihood"] = value if self._calls % 2 == 0 else -value
            self._calls += 1
        return _rebuilt(reply, cfg)


class ForgedMoments(Attack):
    """Preprocessing only: a moments reply with a forged row count (sums kept).

    With ``count = 1e12`` and honest ``Σx``, the pooled mean ``Σx / Σn`` collapses towards
    0 for everyone (the table's last row). The count is clipped to the decoder's cap.

    Parameters
    ----------
    data : array-like of shape (n_c, d) or Attack
    count : float
        Claimed number of rows.
    """

    name = "forged-moments"

    def __init__(self, data: Any, count: float = 1e12) -> None:
        super().__init__(data)
        if not count >= 1:
            raise ValueError(f"ForgedMoments needs count >= 1, got {count!r}.")
        self.count = count

    def _params(self) -> dict[str, Any]:
        return {"count": self.count}

    def forge_moments(self, reply: RecordDict) -> RecordDict:
        cfg = _config(reply)
        cfg["n-samples"] = _claim(1, float(self.count))
        return _rebuilt(reply, cfg)


#: Attack classes by their :func:`parse_attack` name.
ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (
        InflatedCount, ShiftedComponents, ScaledMeans, ScaledCovariances, ScaledStatistics, ForgedStatistics, ForgedMoments,
    )
}

_NONE = ("", "none", "honest")


def _value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class AttackPlan:
    """A parsed attack string: call it on a client's data to get the wrapped client.

    Attributes
    ----------
    steps : tuple of (str, tuple, dict)
        ``(name, positional args, keyword args)`` per attack, innermost first.
    """

    steps: tuple[tuple[str, tuple[Any, ...], tuple[tuple[str, Any], ...]], ...]

    def __call__(self, data: Any) -> Any:
        """Wrap ``data`` in the attacks (``data`` itself for an empty plan)."""
        client = data
        for name, args, kwargs in self.steps:
            client = ATTACKS[name](client, *args, **dict(kwargs))
        return client

    def __bool__(self) -> bool:
        return bool(self.steps)


def parse_attack(spec: str) -> AttackPlan:
    """Parse ``"name[:arg[:arg…]][+name…]"`` into an :class:`AttackPlan` (innermost first).

    Arguments are positional or ``key=value``; numbers are parsed as floats. Examples:
    ``"inflated-count:1e4"``, ``"shifted-components:50+inflated-count:100"`` (=
    ``InflatedCount(ShiftedComponents(X, 50.0), 100.0)``),
    ``"forged-statistics:log-likelihood:1e308"``, ``"forged-moments:count=1e12"``.
    ``""``, ``"none"`` and ``"honest"`` give the empty plan (the data unchanged).

    Raises
    ------
    ValueError
        An unknown attack name or arguments the attack does not take; the message lists
        the known names.
    """
    if not isinstance(spec, str):
        raise TypeError(f"an attack spec must be a string, got {type(spec).__name__}.")
    text = spec.strip()
    if text.lower() in _NONE:
        return AttackPlan(())
    steps = []
    for part in text.split("+"):
        name, *raw = (p.strip() for p in part.strip().split(":"))
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r} in {spec!r}; known attacks: {sorted(ATTACKS)} (or 'none').")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for item in raw:
            if "=" in item:
                key, val = item.split("=", 1)
                kwargs[key.strip()] = _value(val.strip())
            elif kwargs:
                raise ValueError(f"positional argument {item!r} after a keyword one in {part!r}.")
            else:
                args.append(_value(item))
        try:
            ATTACKS[name](np.zeros((1, 1)), *args, **kwargs)
        except TypeError as exc:
            raise ValueError(f"bad arguments for attack {name!r} in {spec!r}: {exc}") from exc
        steps.append((name, tuple(args), tuple(sorted(kwargs.items()))))
    return AttackPlan(tuple(steps))
