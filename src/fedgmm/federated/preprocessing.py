"""Federated preprocessing: standardisation and PCA from summed client moments, in one round."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fedgmm.federated.client import MOMENTS
from fedgmm.federated.messages import decode_moments, encode_request
from fedgmm.federated.robust import RobustSettings, combine_moments
from fedgmm.federated.screening import no_survivors, record_decisions
from fedgmm.federated.transport import ClientRecord, Transport, require_clients, triage_replies


@dataclass(frozen=True)
class Transform:
    """An affine map ``x ↦ (x − mean) @ matrix`` fitted on the federation's data.

    Attributes
    ----------
    mean : ndarray of shape (d,)
    matrix : ndarray of shape (d, p)
        ``diag(1/σ)`` for standardisation, times the top-``p`` principal axes for PCA.
    explained_variance_ratio : ndarray of shape (p,) or None
        Share of the (standardised) variance each kept axis explains (PCA only).
    n_samples : int
        Rows the moments came from.
    variances : ndarray of shape (p,) or None
        The pooled data's variance along each output axis (DP clipping scale; None: unknown).
    """

    mean: np.ndarray
    matrix: np.ndarray
    explained_variance_ratio: np.ndarray | None
    n_samples: int
    variances: np.ndarray | None = None

    @property
    def n_features_in(self) -> int:
        """d."""
        return int(self.mean.shape[0])

    @property
    def n_features_out(self) -> int:
        """p."""
        return int(self.matrix.shape[1])

    @property
    def transform_id(self) -> str:
        """Content hash that names the transform in requests after the first."""
        digest = hashlib.sha256(self.mean.astype("<f8").tobytes() + self.matrix.astype("<f8").tobytes())
        return digest.hexdigest()[:16]

    def arrays(self) -> dict[str, np.ndarray]:
        """The request arrays that ship the transform to clients."""
        return {"transform-mean": self.mean, "transform-matrix": self.matrix}

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Transform rows, ``(n, d) → (n, p)``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in:
            raise ValueError(f"expected rows of {self.n_features_in} features, got shape {X.shape}.")
        return np.asarray((X - self.mean) @ self.matrix)


def transform_from_moments(
    count: int, total: np.ndarray, outer: np.ndarray, *, standardize: bool = True, n_components: int | None = None
) -> Transform:
    """Standardisation and/or PCA from ``(n, Σx, Σxxᵀ)`` of the pooled data.

    Parameters
    ----------
    count : int
    total : ndarray of shape (d,)
        ``Σ x``.
    outer : ndarray of shape (d, d)
        ``Σ x xᵀ``.
    standardize : bool
        Divide every feature by its standard deviation (constant features are left
        unscaled, and PCA drops them as they carry no variance).
    n_components : int, optional
        Keep the top principal axes of the (standardised) covariance.

    Returns
    -------
    Transform
    """
    if count < 2:
        raise ValueError(f"preprocessing needs at least 2 rows in all, got {count}.")
    d = total.shape[0]
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    cov = 0.5 * (cov + cov.T) * count / (count - 1)
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    scale = np.where(std > 1e-12 * max(1.0, float(std.max(initial=0.0))), std, 1.0) if standardize else np.ones(d)
    if n_components is None:
        return Transform(mean, np.diag(1.0 / scale), None, count, np.diag(cov) / scale**2)
    if not 1 <= n_components <= d:
        raise ValueError(f"n_components for PCA must be in [1, {d}], got {n_components}.")
    corr = cov / np.outer(scale, scale)
    eigval, eigvec = np.linalg.eigh(corr)
    order = np.argsort(eigval)[::-1][:n_components]
    eigvec = eigvec[:, order]
    # Sign convention (largest |loading| positive) so the transform is deterministic.
    signs = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), np.arange(n_components)])
    eigvec = eigvec * np.where(signs == 0, 1.0, signs)
    ratio = np.clip(eigval[order], 0.0, None) / max(float(np.clip(eigval, 0.0, None).sum()), 1e-300)
    return Transform(mean, eigvec / scale[:, None], ratio, count, np.clip(eigval[order], 0.0, None))


def run_preprocessing(
    transport: Transport,
    *,
    standardize: bool = True,
    n_components: int | None = None,
    min_clients: int = 1,
    n_features: int | None = None,
    robust: RobustSettings | None = None,
) -> tuple[Transform, dict[str, ClientRecord]]:
    """One round: clients send ``(n_c, Σx, Σxxᵀ)``; the server sums them and fits the transform.

    No raw row reaches the server; the round is counted in the transport's communication.
    By default (``robust`` defended) each client's moments are checked against the others'
    and counts are capped before the sum (:func:`~fedgmm.federated.robust.combine_moments`;
    the plain sum when nothing is flagged); ``RobustSettings(enabled=False)`` sums as sent.

    Raises
    ------
    FederationError
        Fewer than ``min_clients`` usable uploads (or surviving the robust checks).
    """
    robust = robust or RobustSettings()
    replies = transport.exchange(MOMENTS, encode_request(MOMENTS, {}))
    records: dict[str, ClientRecord] = {}
    usable = [
        (reply.source, moments)
        for reply, moments in triage_replies(replies, lambda c: decode_moments(c, n_features=n_features), records)
    ]
    if n_features is None and usable:
        dims = [m.total.shape[0] for _, m in usable if m.total is not None]
        n_features = max(sorted(set(dims)), key=dims.count)
        for source, m in usable:
            if m.total is not None and m.total.shape[0] != n_features:
                records[source] = ClientRecord(source, m.client_id, "rejected", "feature count differs from the majority.")
        usable = [(s, m) for s, m in usable if m.total is not None and m.total.shape[0] == n_features]
    for source, m in usable:
        records[source] = ClientRecord(source, m.client_id, "ok", "", m.count)
    require_clients(len(usable), min_clients, "federated preprocessing", records)
    if robust.enabled:
        combined = combine_moments(
            [m.count for _, m in usable], [_array(m.total) for _, m in usable], [_array(m.outer) for _, m in usable],
            [m.client_id for _, m in usable], max_count_ratio=robust.max_count_ratio,
            max_client_weight=robust.max_client_weight,
        )
        record_decisions(records, combined.decisions)
        if combined.total is None or combined.outer is None:
            raise no_survivors("federated preprocessing", combined.decisions)
        require_clients(len(combined.kept), min_clients, "federated preprocessing", records)
        count, total, outer = combined.count, combined.total, combined.outer
    else:
        count = sum(m.count for _, m in usable)
        total = np.sum([m.total for _, m in usable if m.total is not None], axis=0)
        outer = np.sum([m.outer for _, m in usable if m.outer is not None], axis=0)
    return transform_from_moments(count, total, outer, standardize=standardize, n_components=n_components), records


def _array(value: np.ndarray | None) -> np.ndarray:
    """A decoded moment (present in every ``ok`` reply)."""
    if value is None:
        raise ValueError("an ok moments reply without its sums.")
    return value
