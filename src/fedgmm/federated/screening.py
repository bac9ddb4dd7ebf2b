"""The robust server steps' decisions as client records, and server-step failures that name the clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from fedgmm.exceptions import FederationError
from fedgmm.federated.robust import ClientDecision
from fedgmm.federated.transport import ClientRecord
from fedgmm.mixture import MixtureState


def sources_by_id(records: Mapping[str, ClientRecord]) -> dict[int, str]:
    """The transport's name of each usable (``ok``) client, by client id."""
    return {rec.client_id: src for src, rec in records.items() if rec.status == "ok" and rec.client_id is not None}


def record_decisions(
    records: dict[str, ClientRecord], decisions: Iterable[ClientDecision], *, prefix: str = ""
) -> list[ClientDecision]:
    """Write the robust step's verdicts into ``records`` (in place); return the non-``kept`` ones.

    ``rejected`` → a ``rejected`` record with the reason; ``capped`` / ``down-weighted``
    → the record stays ``ok`` and gains the reason (the client still counts, with less
    weight). ``prefix`` (e.g. ``"round 3: "``) says in which step it happened.
    """
    source = sources_by_id(records)
    flagged = []
    for dec in decisions:
        if dec.action == "kept" or dec.client_id not in source:
            continue
        flagged.append(dec)
        src = source[dec.client_id]
        old = records[src]
        if dec.action == "rejected":
            reason = f"{prefix}{dec.reason}"
            records[src] = ClientRecord(src, old.client_id, "rejected", reason, old.n_samples, old.n_components)
        else:
            reason = f"{prefix}{dec.action}: {dec.reason}"
            joined = f"{old.reason}; {reason}" if old.reason else reason
            records[src] = ClientRecord(src, old.client_id, "ok", joined, old.n_samples, old.n_components)
    return flagged


def describe_decisions(decisions: Iterable[ClientDecision]) -> str:
    """``"client 3 rejected (…); client 7 capped (…)"`` for the decisions that did something."""
    parts = [f"client {d.client_id} {d.action} ({d.reason})" for d in decisions if d.action != "kept"]
    return "; ".join(parts) if parts else "no client was flagged"


def no_survivors(what: str, decisions: Sequence[ClientDecision]) -> FederationError:
    """The error when a robust step keeps no client: every decision, so the operator sees why."""
    return FederationError(
        f"{what}: the robust checks kept no client. {describe_decisions(decisions)}. "
        "Check those clients, or run with robust=False to merge contributions as sent."
    )


def atypical_clients(states: Sequence[MixtureState], client_ids: Sequence[int], top: int = 3) -> list[tuple[int, float]]:
    """The clients whose component means lie furthest from the federation's, ``[(client id, z)]``.

    ``z`` is the largest ``|μ − median| / MAD`` (per feature, over every uploaded
    component) among a client's components; non-finite means give ``inf``.
    """
    if not states:
        return []
    means = np.concatenate([np.asarray(s.means, dtype=np.float64) for s in states])
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(means), means, np.nan)
        center = np.nanmedian(finite, axis=0)
        spread = 1.4826 * np.nanmedian(np.abs(finite - center), axis=0)
        spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
        scores = []
        for cid, s in zip(client_ids, states, strict=True):
            z = np.abs(np.asarray(s.means, dtype=np.float64) - np.nan_to_num(center)) / spread
            scores.append((int(cid), float(np.max(np.where(np.isfinite(z), z, np.inf)))))
    return sorted(scores, key=lambda cs: -cs[1])[:top]


def global_step_error(
    what: str,
    exc: Exception,
    states: Sequence[MixtureState],
    client_ids: Sequence[int],
    counts: Sequence[float],
    flagged: Sequence[ClientDecision],
) -> FederationError:
    """A server-step failure that names the clients merged into it, the most atypical first."""
    suspects = ", ".join(f"client {c} (means {z:.3g} robust scales out)" for c, z in atypical_clients(states, client_ids))
    merged = ", ".join(f"{c} (n={n:.6g})" for c, n in zip(client_ids, counts, strict=True))
    return FederationError(
        f"{what} failed: {type(exc).__name__}: {str(exc).rstrip('.')}. Most atypical clients merged: {suspects}. "
        f"Clients merged: {merged}. Robust decisions: {describe_decisions(flagged)}. "
        "Exclude or check the named clients (robust=True screens uploads before merging)."
    )
