"""Initial mixture parameters: from k-means, k-means++, random responsibilities or given arrays."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from fedgmm.em.mstep import m_step
from fedgmm.em.stats import (
    SufficientStatistics,
    block_size_for,
    iter_blocks,
    linear_algebra_threads,
    statistics_from_responsibilities,
)
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.mixture import (
    MixtureState,
    check_covariance_type,
    covariance_shape,
    covariances_from_precisions,
)
from fedgmm.types import INIT_PARAMS, CovarianceType


def _one_hot_statistics(
    X: np.ndarray,
    labels: np.ndarray,
    n_components: int,
    covariance_type: CovarianceType,
    shift: np.ndarray | None,
    block_size: int | None,
    sample_weight: np.ndarray | None = None,
) -> SufficientStatistics:
    """Statistics of hard assignments; ``labels[i] == -1`` marks a row that belongs nowhere."""
    n, d = X.shape
    stats = SufficientStatistics.zeros(n_components, d, covariance_type, shift)
    total = stats
    for rows in iter_blocks(n, block_size_for(n_components * d, block_size)):
        lab = labels[rows]
        keep = lab >= 0
        if not np.any(keep):
            continue
        resp = np.zeros((lab.shape[0], n_components), dtype=X.dtype)
        resp[np.nonzero(keep)[0], lab[keep]] = 1.0
        total = total + statistics_from_responsibilities(
            X[rows], resp, covariance_type, shift=stats.shift, block_size=block_size,
            sample_weight=None if sample_weight is None else sample_weight[rows],
        )
    return SufficientStatistics(
        total.nk, total.sx, total.sxx, n, 0.0, total.shift, covariance_type
    )


def _squared_distances(rows: np.ndarray, row_norms: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``‖x − c‖²`` of a block against centres, ``(C, B)``, by scikit-learn's formula."""
    dist = -2.0 * (centers @ rows.T)
    dist += np.einsum("ij,ij->i", centers, centers)[:, None]
    dist += row_norms[None, :]
    return np.maximum(dist, 0.0, out=dist)


def kmeans_plusplus_indices(
    X: np.ndarray,
    n_clusters: int,
    random_state: np.random.RandomState,
    sample_weight: np.ndarray | None = None,
    block_size: int | None = None,
) -> np.ndarray:
    """Rows chosen by greedy k-means++ seeding, ``(n_clusters,)``, streaming ``X`` in blocks.

    The algorithm and the random draws are scikit-learn's ``kmeans_plusplus`` (``2 + ln K``
    local trials, the one lowering the weighted potential most kept), so an int seed picks
    the same rows; but where scikit-learn holds a ``(trials, n)`` distance array this keeps
    only the ``(n,)`` closest distances and their cumulative sum, reading ``X`` twice per centre.
    That is what lets a memory-mapped ``X`` be seeded without ``O(n · trials)`` memory.
    """
    n = X.shape[0]
    trials = 2 + int(np.log(n_clusters))
    block = block_size_for(X.shape[1] + trials, block_size)
    blocks = list(iter_blocks(n, block))

    def rows_of(sl: slice) -> tuple[np.ndarray, np.ndarray]:
        # Row norms recomputed per block (same blocks, same values every pass) instead of
        # an (n,) array kept: O(n) memory is the closest distances and one cumulative sum.
        r = np.asarray(X[sl], dtype=np.float64)
        return r, np.einsum("ij,ij->i", r, r)

    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    indices = np.full(n_clusters, -1, dtype=np.intp)
    indices[0] = random_state.choice(n, p=np.full(n, 1.0 / n) if w is None else w / w.sum())
    closest = np.empty(n)
    first = np.asarray(X[indices[0] : indices[0] + 1], dtype=np.float64)
    for sl in blocks:
        closest[sl] = _squared_distances(*rows_of(sl), first)[0]
    potential = float(closest.sum() if w is None else closest @ w)
    cumulative = np.empty(n)
    for c in range(1, n_clusters):
        rand_vals = random_state.uniform(size=trials) * potential
        np.cumsum(closest if w is None else np.multiply(w, closest, out=cumulative), out=cumulative)
        candidates = np.searchsorted(cumulative, rand_vals)
        np.clip(candidates, None, n - 1, out=candidates)
        centers = np.stack([np.asarray(X[i], dtype=np.float64) for i in candidates])
        potentials = np.zeros(trials)
        for sl in blocks:
            dist = _squared_distances(*rows_of(sl), centers)
            np.minimum(closest[sl], dist, out=dist)
            potentials += dist.sum(axis=1) if w is None else dist @ w[sl]
        best = int(np.argmin(potentials))
        potential = float(potentials[best])
        for sl in blocks:
            dist = _squared_distances(*rows_of(sl), centers[best : best + 1])[0]
            np.minimum(closest[sl], dist, out=closest[sl])
        indices[c] = candidates[best]
    return indices


def initial_statistics(
    X: np.ndarray,
    n_components: int,
    covariance_type: CovarianceType,
    init_params: str,
    random_state: np.random.RandomState,
    *,
    shift: np.ndarray | None = None,
    block_size: int | None = None,
    sample_weight: np.ndarray | None = None,
) -> SufficientStatistics:
    """Statistics of the initial responsibilities, drawn exactly as scikit-learn draws them.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_components : int
    covariance_type : {"full", "tied", "diag", "spherical"}
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}
        ``"kmeans"``: labels of one k-means run; ``"k-means++"``: one-hot at the k-means++
        seeds; ``"random"``: uniform responsibilities, normalised per row;
        ``"random_from_data"``: one-hot at K rows drawn without replacement.
    random_state : numpy.random.RandomState
        Consumed in the same order as scikit-learn consumes it, so an int seed gives
        scikit-learn's initialisation.
    shift, block_size
        As in :func:`fedgmm.em.e_step`.
    sample_weight : ndarray of shape (n,), optional
        Row weights: k-means and k-means++ run weighted (scikit-learn's ``sample_weight``),
        ``"random_from_data"`` draws rows with probability ∝ weight, and every initial
        responsibility is multiplied by its row's weight. Without weights the draws are
        scikit-learn's; with them they are not those of the repeated rows (a different
        random stream), so equality with repeated rows holds from given initial arrays.

    Returns
    -------
    SufficientStatistics
        Never materialises an ``(n, K)`` array: the responsibilities are built block by block.
        ``"kmeans"`` runs scikit-learn's ``KMeans``, which copies ``X``; for memory-mapped
        data prefer ``"k-means++"`` or ``"random_from_data"``.
    """
    n, d = X.shape
    sw = sample_weight
    if init_params == "kmeans":
        labels = (
            KMeans(n_clusters=n_components, n_init=1, random_state=random_state).fit(X, sample_weight=sw).labels_
        )
        return _one_hot_statistics(X, labels, n_components, covariance_type, shift, block_size, sw)
    if init_params in ("k-means++", "random_from_data"):
        labels = np.full(n, -1, dtype=np.intp)
        if init_params == "k-means++":
            indices = kmeans_plusplus_indices(X, n_components, random_state, sw, block_size)
        elif sw is None:
            indices = random_state.choice(n, size=n_components, replace=False)
        else:
            indices = random_state.choice(n, size=n_components, replace=False, p=sw / sw.sum())
        labels[indices] = np.arange(n_components)
        return _one_hot_statistics(X, labels, n_components, covariance_type, shift, block_size, sw)
    if init_params == "random":
        stats = SufficientStatistics.zeros(n_components, d, covariance_type, shift)
        total = stats
        # Row blocks consume the RandomState stream in the same order as one (n, K) draw.
        for rows in iter_blocks(n, block_size_for(n_components * d, block_size)):
            resp = random_state.uniform(size=(rows.stop - rows.start, n_components)).astype(X.dtype)
            resp /= resp.sum(axis=1)[:, None]
            total = total + statistics_from_responsibilities(
                X[rows], resp, covariance_type, shift=stats.shift, block_size=block_size,
                sample_weight=None if sw is None else sw[rows],
            )
        return SufficientStatistics(total.nk, total.sx, total.sxx, n, 0.0, total.shift, covariance_type)
    raise ValueError(f"Invalid init_params {init_params!r}: expected one of {list(INIT_PARAMS)}.")


def check_initial_arrays(
    n_components: int,
    n_features: int,
    covariance_type: CovarianceType,
    weights_init: np.ndarray | None,
    means_init: np.ndarray | None,
    precisions_init: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate user-given initial weights, means and precisions; return float64 copies.

    Raises
    ------
    ValueError
        Naming the parameter, the expected shape and what was given.
    """
    return _initial_arrays(n_components, n_features, covariance_type, weights_init, means_init, precisions_init)[:3]


def _initial_arrays(
    n_components: int,
    n_features: int,
    covariance_type: CovarianceType,
    weights_init: np.ndarray | None,
    means_init: np.ndarray | None,
    precisions_init: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """:func:`check_initial_arrays` plus the covariances of the given precisions (inverted once)."""
    check_covariance_type(covariance_type)
    out: list[np.ndarray | None] = []
    expected = {
        "weights_init": (n_components,),
        "means_init": (n_components, n_features),
        "precisions_init": covariance_shape(covariance_type, n_components, n_features),
    }
    for name, value in (
        ("weights_init", weights_init),
        ("means_init", means_init),
        ("precisions_init", precisions_init),
    ):
        if value is None:
            out.append(None)
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64, copy=False)  # read, never written: no (K, d, d) copy
        if arr.shape != expected[name]:
            raise ValueError(
                f"The parameter '{name}' should have the shape of {expected[name]} "
                f"(n_components={n_components}, n_features={n_features}, "
                f"covariance_type={covariance_type!r}), but got {arr.shape}."
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinity.")
        out.append(arr)
    weights, means, precisions = out
    covariances = _check_weights_and_precisions(weights, precisions, covariance_type)
    if weights is not None:
        weights = weights / weights.sum()
    return weights, means, precisions, covariances


def _check_weights_and_precisions(
    weights: np.ndarray | None, precisions: np.ndarray | None, covariance_type: CovarianceType
) -> np.ndarray | None:
    """Range-check the weights; invert the precisions (validating them); return the covariances."""
    if weights is not None:
        if np.any(weights < 0.0) or np.any(weights > 1.0):
            raise ValueError(
                "The parameter 'weights_init' should be in the range [0, 1], but got "
                f"min value {weights.min():.5f}, max value {weights.max():.5f}."
            )
        if not np.isclose(weights.sum(), 1.0, rtol=0.0, atol=1e-6):
            raise ValueError(
                f"The parameter 'weights_init' should be normalized, but got sum(weights) = {weights.sum():.5f}."
            )
    if precisions is None:
        return None
    try:
        return covariances_from_precisions(precisions, covariance_type)
    except DegenerateCovarianceError as exc:
        raise ValueError(
            f"'precisions_init' is invalid for covariance_type={covariance_type!r}: {exc} "
            "Give symmetric positive-definite precision matrices (positive values for diag/spherical)."
        ) from exc


def initial_state(
    X: np.ndarray,
    n_components: int,
    covariance_type: CovarianceType,
    *,
    init_params: str = "kmeans",
    random_state: np.random.RandomState,
    reg_covar: float = 1e-6,
    weights_init: np.ndarray | None = None,
    means_init: np.ndarray | None = None,
    precisions_init: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    block_size: int | None = None,
    sample_weight: np.ndarray | None = None,
) -> MixtureState:
    """Initial parameters, as scikit-learn's ``GaussianMixture._initialize_parameters``.

    Whatever of weights/means/precisions is given is used as is; the rest comes from the
    M-step of the initial responsibilities chosen by ``init_params``. When all three are
    given no responsibilities are drawn (and ``random_state`` is not consumed).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    weights_init : ndarray of shape (K,), optional
    means_init : ndarray of shape (K, d), optional
    precisions_init : ndarray, optional
        ``(K, d, d)`` full, ``(d, d)`` tied, ``(K, d)`` diag, ``(K,)`` spherical.
    sample_weight : ndarray of shape (n,), optional
        Row weights, see :func:`initial_statistics`.

    Returns
    -------
    MixtureState
        Weights are normalised to sum to one (scikit-learn leaves the k-means++ and
        random_from_data weights unnormalised, which only shifts the first log-likelihood).
    """
    d = X.shape[1]
    with linear_algebra_threads(d):  # inverts precisions_init, if given
        arrays = _initial_arrays(n_components, d, covariance_type, weights_init, means_init, precisions_init)
    weights, means, covariances = arrays[0], arrays[1], arrays[3]
    del arrays  # the precisions are not needed past here: one (K, d, d) array less at large d
    if weights is None or means is None or covariances is None:
        stats = initial_statistics(
            X, n_components, covariance_type, init_params, random_state, shift=shift, block_size=block_size,
            sample_weight=sample_weight,
        )
        drawn = m_step(stats, reg_covar)
        weights = drawn.weights if weights is None else weights
        if means is None:
            means = drawn.means
        if covariances is None:
            covariances = drawn.covariances
    # The covariances are this function's own (derived from precisions_init or drawn and
    # frozen): the state keeps them without a copy; weights and means may be the caller's.
    with linear_algebra_threads(d):
        return MixtureState.from_covariances(
            np.array(weights, dtype=np.float64), np.array(means, dtype=np.float64), covariances, covariance_type,
            owned=True,
        )
