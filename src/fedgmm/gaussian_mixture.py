"""``fedgmm.GaussianMixture``: a drop-in for scikit-learn's, on the blocked sufficient-statistics EM engine."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from fedgmm._random import SeedLike, as_generator
from fedgmm.em.criteria import aic as _aic
from fedgmm.em.criteria import bic as _bic
from fedgmm.em.fit import fit_em
from fedgmm.em.stats import log_responsibilities, score_samples
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.mixture import MixtureState
from fedgmm.types import COVARIANCE_TYPES, INIT_PARAMS, PRECISIONS


class GaussianMixture(DensityMixin, BaseEstimator):  # type: ignore[misc]
    """Gaussian mixture model fitted by EM; a drop-in for ``sklearn.mixture.GaussianMixture``.

    The E-step is computed block by block and reduced to additive sufficient statistics
    (see :mod:`fedgmm.em`), so memory stays bounded by ``block_size × K × d`` and the same
    statistics serve centralized and federated EM. For an int ``random_state`` the
    initialisation draws are scikit-learn's, so both estimators reach the same parameters.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        ``"full"``: each component its own ``(d, d)`` covariance; ``"tied"``: one shared
        ``(d, d)``; ``"diag"``: each component a ``(d,)`` diagonal; ``"spherical"``: each
        component one variance.
    tol : float, default=1e-3
        Stop when the mean log-likelihood per sample changes by less than this.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance; keeps them positive definite.
    max_iter : int, default=100
        EM iterations per initialisation.
    n_init : int, default=1
        Initialisations; the one with the highest final log-likelihood is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How the initial responsibilities are drawn.
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        ``(K, d, d)`` full, ``(d, d)`` tied, ``(K, d)`` diag, ``(K,)`` spherical.
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation and the default stream of :meth:`sample`.
    warm_start : bool, default=False
        If true, a second ``fit`` starts from the previous solution (``n_init`` ignored).
    verbose : int, default=0
    verbose_interval : int, default=10
    dtype : {"float64", "float32"}, default="float64"
        Arithmetic of the E-step blocks. ``"float32"`` roughly halves the time of the
        matrix products; statistics are still accumulated in float64.
    block_size : int, default=None
        Rows per E-step block; chosen from K and d when None.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        ``(K, d, d)`` full, ``(d, d)`` tied, ``(K, d)`` diag, ``(K,)`` spherical.
    precisions_ : ndarray, same shape as ``covariances_``
    precisions_cholesky_ : ndarray, same shape as ``covariances_``
        Upper-triangular factors for full/tied, as scikit-learn.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per sample at the last E-step of the best run.
    lower_bounds_ : list of float
    n_features_in_ : int
    state_ : MixtureState
        The fitted parameters as an immutable record (what the federated code exchanges).
    """

    lower_bound_: float
    state_: MixtureState

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: SeedLike = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        dtype: str = "float64",
        block_size: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.dtype = dtype
        self.block_size = block_size

    # ------------------------------------------------------------------ validation
    def _check_hyperparameters(self) -> None:
        def _int(name: str, low: int) -> None:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"The '{name}' parameter of GaussianMixture must be an int >= {low}, got {value!r}.")

        def _real(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(float(value)) or value < 0:
                raise ValueError(f"The '{name}' parameter of GaussianMixture must be a finite float >= 0, got {value!r}.")

        _int("n_components", 1)
        _int("max_iter", 0)
        _int("n_init", 1)
        _int("verbose", 0)
        _int("verbose_interval", 1)
        _real("tol")
        _real("reg_covar")
        for name, valid in (
            ("covariance_type", COVARIANCE_TYPES),
            ("init_params", INIT_PARAMS),
            ("dtype", PRECISIONS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"The '{name}' parameter of GaussianMixture must be one of {list(valid)}, got {getattr(self, name)!r}."
                )
        if not isinstance(self.warm_start, bool | np.bool_):
            raise ValueError(f"The 'warm_start' parameter of GaussianMixture must be a bool, got {self.warm_start!r}.")
        if self.block_size is not None:
            _int("block_size", 1)

    def _validate_fit_data(self, X: Any) -> np.ndarray:
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        n_samples = X.shape[0]
        if n_samples < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got "
                f"n_components = {self.n_components}, n_samples = {n_samples}. "
                "Decrease n_components or provide more samples."
            )
        if self.reg_covar == 0:
            constant = np.flatnonzero(np.ptp(X, axis=0) == 0)
            if constant.size:
                raise DegenerateCovarianceError(
                    f"Feature(s) {constant.tolist()} are constant (zero variance) and reg_covar=0, "
                    "so every covariance would be singular. Drop those features, or set reg_covar > 0 "
                    "(the default 1e-6 works)."
                )
        return np.asarray(X)

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Estimate the parameters with EM and return the component of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Labels from a final E-step with the fitted parameters, so
            ``fit_predict(X)`` equals ``fit(X).predict(X)``.
        """
        X = self._fit(X)
        log_resp, _ = log_responsibilities(X, self.state_, block_size=self.block_size, dtype=np.dtype(self.dtype))
        return np.asarray(log_resp.argmax(axis=1))

    def _fit(self, X: Any) -> np.ndarray:
        """Validate, run EM, store the fitted attributes; return the validated ``X``."""
        self._check_hyperparameters()
        warm = self.warm_start and hasattr(self, "converged_")
        X = self._validate_fit_data(X)
        n_features = X.shape[1]
        warm_state = None
        if warm:
            if self.state_.n_features != n_features or self.state_.n_components != self.n_components:
                raise ValueError(
                    "warm_start=True needs the same n_components and n_features as the previous fit; "
                    "set warm_start=False to start afresh."
                )
            warm_state = (self.state_, float(self.lower_bound_))
        result = fit_em(
            X,
            n_components=self.n_components,
            covariance_type=self.covariance_type,  # type: ignore[arg-type]
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_init,
            init_params=self.init_params,
            weights_init=self.weights_init,
            means_init=self.means_init,
            precisions_init=self.precisions_init,
            random_state=self.random_state,
            warm_start=warm_state,
            dtype=np.dtype(self.dtype),
            block_size=self.block_size,
            verbose=self.verbose,
            verbose_interval=self.verbose_interval,
        )
        self._set_state(result.state)
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.lower_bounds_ = list(result.lower_bounds)
        if not hasattr(self, "_sample_rng") or not warm:
            self._sample_rng = as_generator(_sample_seed(self.random_state))
        return X

    def _set_state(self, state: MixtureState) -> None:
        self.state_ = state
        self.weights_ = np.array(state.weights)
        self.means_ = np.array(state.means)
        self.covariances_ = np.array(state.covariances)
        self.precisions_cholesky_ = np.array(state.precisions_cholesky)
        self.precisions_ = np.array(state.precisions)

    @classmethod
    def from_state(cls, state: MixtureState, **params: Any) -> GaussianMixture:
        """A fitted estimator holding ``state`` (e.g. a federated global model).

        Parameters
        ----------
        state : MixtureState
        **params
            Constructor parameters; ``n_components`` and ``covariance_type`` come from ``state``.
        """
        est = cls(n_components=state.n_components, covariance_type=state.covariance_type, **params)
        est._set_state(state)
        est.n_features_in_ = state.n_features
        est.converged_ = True
        est.n_iter_ = 0
        est.lower_bound_ = -np.inf
        est.lower_bounds_ = []
        est._sample_rng = as_generator(_sample_seed(est.random_state))
        return est

    # ------------------------------------------------------------------ inference
    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray(validate_data(self, X, reset=False, dtype=[np.float64, np.float32]))

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        X = self._check_X(X)
        return score_samples(X, self.state_, block_size=self.block_size, dtype=np.dtype(self.dtype))

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per row (nats).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        """
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior probability of each component for each row.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
        """
        X = self._check_X(X)
        log_resp, _ = log_responsibilities(X, self.state_, block_size=self.block_size, dtype=np.dtype(self.dtype))
        return np.exp(log_resp)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable component of each row.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        X = self._check_X(X)
        log_resp, _ = log_responsibilities(X, self.state_, block_size=self.block_size, dtype=np.dtype(self.dtype))
        return np.asarray(log_resp.argmax(axis=1))

    def sample(self, n_samples: int = 1, *, rng: SeedLike = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw rows from the fitted mixture.

        Parameters
        ----------
        n_samples : int, default=1
        rng : int, Generator or None
            Source of randomness. When None, the estimator's own Generator (seeded from
            ``random_state`` at fit time) is used and advanced, so two calls return
            different draws while a fixed ``random_state`` keeps the sequence reproducible.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Grouped by component, in component order.
        y : ndarray of shape (n_samples,)
            Component of each row.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample."
            )
        gen = self._sample_rng if rng is None else as_generator(rng)
        return self.state_.sample(int(n_samples), gen)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        X = self._check_X(X)
        return _bic(self.state_, float(np.sum(self.score_samples(X))), X.shape[0])

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        X = self._check_X(X)
        return _aic(self.state_, float(np.sum(self.score_samples(X))))

    def _n_parameters(self) -> int:
        """Number of free parameters of the fitted model."""
        check_is_fitted(self)
        return self.state_.n_parameters()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write the fitted parameters to a model file (plain arrays + JSON metadata, no pickle)."""
        from fedgmm.model_io import save_mixture

        check_is_fitted(self)
        return save_mixture(path, self.state_, extra=extra)

    @classmethod
    def load(cls, path: str | Path) -> GaussianMixture:
        """Read a model file written by :meth:`save` (or any fedgmm model file)."""
        from fedgmm.model_io import load_mixture

        state, _ = load_mixture(path)
        return cls.from_state(state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def _sample_seed(random_state: SeedLike) -> SeedLike:
    """Seed of the default sampling stream: distinct from the initialisation stream."""
    if isinstance(random_state, numbers.Integral):
        return np.random.SeedSequence([int(random_state), 0x5A3D]).generate_state(1)[0].item()
    return random_state
