"""``fedgmm.GaussianMixture``: a drop-in for scikit-learn's, on the blocked sufficient-statistics EM engine."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import check_is_fitted, validate_data

from fedgmm._random import SeedLike, as_generator, as_random_state
from fedgmm.em.criteria import aic as _aic
from fedgmm.em.criteria import bic as _bic
from fedgmm.em.fit import data_mean, fit_em
from fedgmm.em.init import initial_state
from fedgmm.em.mstep import m_step
from fedgmm.em.online import blend, step_size
from fedgmm.em.stats import (
    SufficientStatistics,
    e_step,
    iter_blocks,
    linear_algebra_threads,
    log_responsibilities,
    score_samples,
)
from fedgmm.exceptions import DegenerateCovarianceError
from fedgmm.mixture import MixtureState, validate_parameters
from fedgmm.types import COVARIANCE_TYPES, INIT_PARAMS, PRECISIONS

#: Elements per block of the finiteness / constant-feature scans over ``X`` (8 MiB float64).
SCAN_BLOCK_ELEMENTS = 1 << 20


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
    learning_decay : float, default=0.7
        κ in (0.5, 1] of :meth:`partial_fit`'s step sizes ``η_t = (learning_offset + t)^(−κ)``
        (named as in scikit-learn's ``LatentDirichletAllocation``).
    learning_offset : float, default=10.0
        t0 >= 0 of those step sizes; larger values damp the early chunks.

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
    n_steps_ : int
        Chunks absorbed by :meth:`partial_fit` since the last ``fit`` (0 after ``fit``).

    Notes
    -----
    ``X`` may be a memory-mapped array (``np.load(path, mmap_mode="r")``): validation scans
    it block by block and the E-step reads one block at a time, so ``fit`` needs the
    model and a few block-sized temporaries, not a copy of the data. The ``"kmeans"``
    initialisation runs scikit-learn's ``KMeans``, which does copy ``X``: for data larger
    than memory use ``init_params="k-means++"`` or ``"random_from_data"``, or give
    ``means_init`` (and the other ``*_init``).
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
        learning_decay: float = 0.7,
        learning_offset: float = 10.0,
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
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

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
        _real("learning_offset")
        decay = self.learning_decay
        if not isinstance(decay, numbers.Real) or isinstance(decay, bool) or not 0.5 < float(decay) <= 1.0:
            raise ValueError(
                f"The 'learning_decay' parameter of GaussianMixture must be a float in (0.5, 1], got {decay!r} "
                "(stepwise EM converges only for such decays)."
            )

    def _validate_fit_data(
        self, X: Any, sample_weight: Any = None, *, reset: bool = True, min_samples: int = 2
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Validated ``X`` (never copied when already float, e.g. a memmap) and float64 weights."""
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], ensure_min_samples=min_samples, ensure_all_finite=False,
            reset=reset,
        )
        X = np.asarray(X)
        _check_finite(X)
        weights = _check_sample_weight(sample_weight, X.shape[0])
        n_samples = X.shape[0] if weights is None else int(np.count_nonzero(weights))
        if n_samples < self.n_components and min_samples > 1:
            counted = "n_samples" if weights is None else "rows with non-zero sample_weight"
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"{counted} = {n_samples}. Decrease n_components or provide more samples."
            )
        if self.reg_covar == 0:
            constant = np.flatnonzero(_column_ranges(X, weights) == 0)
            if constant.size:
                raise DegenerateCovarianceError(
                    f"Feature(s) {constant.tolist()} are constant (zero variance) and reg_covar=0, "
                    "so every covariance would be singular. Drop those features, or set reg_covar > 0 "
                    "(the default 1e-6 works)."
                )
        return X, weights

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> GaussianMixture:
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            May be a memory-mapped array; it is streamed block by block, never copied.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights. Every sufficient statistic is weighted
            (``Σ_n w_n r_nk …``), the initialisation is weighted (k-means / k-means++ with
            weights, ``"random_from_data"`` draws ∝ weight) and ``lower_bound_`` is
            ``Σ w log p / Σ w``. From the same initial parameters, integer weights give the
            model of the repeated rows and zero weights that of the remaining rows.

        Returns
        -------
        self : GaussianMixture
        """
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Estimate the parameters with EM and return the component of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            As in :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Labels from a final E-step with the fitted parameters, so
            ``fit_predict(X)`` equals ``fit(X).predict(X)``.
        """
        X = self._fit(X, sample_weight)
        log_resp, _ = log_responsibilities(X, self.state_, block_size=self.block_size, dtype=np.dtype(self.dtype))
        return np.asarray(log_resp.argmax(axis=1))

    def _fit(self, X: Any, sample_weight: Any = None) -> np.ndarray:
        """Validate, run EM, store the fitted attributes; return the validated ``X``."""
        self._check_hyperparameters()
        warm = self.warm_start and hasattr(self, "converged_")
        X, weights = self._validate_fit_data(X, sample_weight)
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
            sample_weight=weights,
        )
        self._set_state(result.state)
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.lower_bounds_ = list(result.lower_bounds)
        self.n_steps_ = 0
        self._online: tuple[SufficientStatistics, np.ndarray] | None = None
        if not hasattr(self, "_sample_rng") or not warm:
            self._sample_rng = as_generator(_sample_seed(self.random_state))
        return X

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> GaussianMixture:
        """One step of stepwise (online) EM on a chunk of rows.

        Keeps running sufficient statistics ``s`` (per unit of weight) and, for each chunk,
        runs one E-step under the current parameters, blends ``s ← (1 − η_t) s + η_t ŝ``
        with ``η_t = (learning_offset + t)^(−learning_decay)`` (``t`` the chunks already
        absorbed) and runs the M-step on ``s`` (Cappé & Moulines 2009; Liang & Klein 2009).
        Repeated passes over a stream approach the batch maximum-likelihood fit.

        First call: on an unfitted estimator the initial parameters come from this chunk
        exactly as in :meth:`fit` (``init_params`` with ``random_state``, or the given
        ``*_init`` arrays; ``n_init`` is not used) and the chunk's statistics under them
        replace the empty running statistics (``η = 1``); the chunk must then have at
        least ``n_components`` rows. On an estimator fitted by :meth:`fit` the first call
        starts from the fitted parameters instead (the fit's statistics are not kept).
        A later :meth:`fit` discards the running statistics.

        Parameters
        ----------
        X : array-like of shape (n_chunk, n_features)
        y : ignored
        sample_weight : array-like of shape (n_chunk,), default=None
            Non-negative row weights of the chunk, as in :meth:`fit`.

        Returns
        -------
        self : GaussianMixture
            With ``n_steps_`` chunks absorbed and ``lower_bound_`` the chunk's mean
            log-likelihood under the parameters before this step.
        """
        self._check_hyperparameters()
        fitted = hasattr(self, "state_")
        online = getattr(self, "_online", None) if fitted else None
        X, weights = self._validate_fit_data(X, sample_weight, reset=not fitted, min_samples=1 if fitted else 2)
        if not fitted:
            shift = data_mean(X, weights)
            state = initial_state(
                X, self.n_components, self.covariance_type,  # type: ignore[arg-type]
                init_params=self.init_params, random_state=as_random_state(self.random_state),
                reg_covar=self.reg_covar, weights_init=self.weights_init, means_init=self.means_init,
                precisions_init=self.precisions_init, shift=shift, block_size=self.block_size,
                sample_weight=weights,
            )
            self._sample_rng = as_generator(_sample_seed(self.random_state))
        else:
            state = self.state_
            shift = online[1] if online is not None else data_mean(X, weights)
        chunk = e_step(X, state, shift=shift, block_size=self.block_size, dtype=np.dtype(self.dtype), sample_weight=weights)
        chunk_weight = float(X.shape[0]) if weights is None else float(weights.sum())
        n_steps = self.n_steps_ if online is not None else 0
        running = blend(
            None if online is None else online[0], chunk, chunk_weight,
            step_size(n_steps, float(self.learning_offset), float(self.learning_decay)),
        )
        self._set_state(m_step(running, self.reg_covar))
        self._online = (running, shift)
        self.n_steps_ = n_steps + 1
        self.converged_ = False
        self.n_iter_ = self.n_steps_
        self.lower_bound_ = chunk.log_likelihood / chunk_weight
        self.lower_bounds_ = [*getattr(self, "lower_bounds_", []), self.lower_bound_] if online is not None else [self.lower_bound_]
        return self

    def _set_state(self, state: MixtureState) -> None:
        self.state_ = state
        self.weights_ = np.array(state.weights)
        self.means_ = np.array(state.means)
        # The (K, d, d) arrays are the state's own, read-only (not copies: memory at large d).
        self.covariances_ = state.covariances
        self.precisions_cholesky_ = state.precisions_cholesky
        with linear_algebra_threads(state.n_features):
            self.precisions_ = state.precisions

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
        est.n_steps_ = 0
        est._online = None
        est._sample_rng = as_generator(_sample_seed(est.random_state))
        return est

    @classmethod
    def from_sklearn(cls, model: Any, **params: Any) -> GaussianMixture:
        """A fitted estimator holding the parameters of a fitted ``sklearn.mixture.GaussianMixture``.

        The fitted attributes (weights, means, covariances, precision factors, convergence
        record, feature names) are copied, the shared hyper-parameters too, so
        ``score_samples`` agrees with the scikit-learn model's to round-off.

        Parameters
        ----------
        model : sklearn.mixture.GaussianMixture
            Fitted.
        **params
            Extra constructor parameters of this class (e.g. ``dtype="float32"``).
        """
        check_is_fitted(model)
        ctype = model.covariance_type
        names = set(cls._get_param_names())
        kwargs = {k: v for k, v in model.get_params(deep=False).items() if k in names}
        kwargs.update(params)
        weights = np.asarray(model.weights_, dtype=np.float64)
        means = np.asarray(model.means_, dtype=np.float64)
        covariances = np.asarray(model.covariances_, dtype=np.float64)
        validate_parameters(weights, means, covariances, ctype)
        state = MixtureState(
            _frozen_copy(weights), _frozen_copy(means), _frozen_copy(covariances),
            _frozen_copy(model.precisions_cholesky_), ctype,
        )
        est = cls.from_state(state, **{k: v for k, v in kwargs.items() if k not in ("n_components", "covariance_type")})
        for name in ("converged_", "n_iter_", "lower_bound_", "n_features_in_", "feature_names_in_"):
            if hasattr(model, name):
                setattr(est, name, getattr(model, name))
        est.lower_bounds_ = list(getattr(model, "lower_bounds_", []))
        return est

    def to_sklearn(self) -> Any:
        """This fitted model as a fitted ``sklearn.mixture.GaussianMixture``.

        Shared hyper-parameters and every fitted attribute are copied (a Generator
        ``random_state``, which scikit-learn does not take, becomes None).

        Returns
        -------
        sklearn.mixture.GaussianMixture
        """
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        check_is_fitted(self)
        names = set(SkGaussianMixture._get_param_names())
        kwargs = {k: v for k, v in self.get_params(deep=False).items() if k in names}
        if isinstance(kwargs.get("random_state"), np.random.Generator):
            kwargs["random_state"] = None
        model = SkGaussianMixture(**kwargs)
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
            setattr(model, name, np.array(getattr(self, name)))
        model.converged_ = bool(self.converged_)
        model.n_iter_ = int(self.n_iter_)
        model.lower_bound_ = float(self.lower_bound_)
        model.lower_bounds_ = list(self.lower_bounds_)
        model.n_features_in_ = self.n_features_in_
        if hasattr(self, "feature_names_in_"):
            model.feature_names_in_ = self.feature_names_in_
        return model

    # ------------------------------------------------------------------ inference
    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = np.asarray(validate_data(self, X, reset=False, dtype=[np.float64, np.float32], ensure_all_finite=False))
        _check_finite(X)
        return X

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

    def _weighted_log_likelihood(self, X: Any, sample_weight: Any) -> tuple[float, float]:
        X = self._check_X(X)
        logp = self.score_samples(X)
        weights = _check_sample_weight(sample_weight, X.shape[0])
        if weights is None:
            return float(np.sum(logp)), float(X.shape[0])
        keep = weights > 0
        return float(np.dot(weights[keep], logp[keep])), float(weights.sum())

    def bic(self, X: Any, sample_weight: Any = None) -> float:
        """Bayesian information criterion on ``X`` (lower is better).

        With ``sample_weight``, ``−2 Σ w log p + p log Σ w``: the effective count is the
        sum of the weights, so integer weights give the BIC of the repeated rows.
        """
        total, count = self._weighted_log_likelihood(X, sample_weight)
        return _bic(self.state_, total, count)

    def aic(self, X: Any, sample_weight: Any = None) -> float:
        """Akaike information criterion on ``X`` (lower is better), ``−2 Σ w log p + 2p``."""
        total, _ = self._weighted_log_likelihood(X, sample_weight)
        return _aic(self.state_, total)

    def _n_parameters(self) -> int:
        """Number of free parameters of the fitted model."""
        check_is_fitted(self)
        return self.state_.n_parameters()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write the fitted parameters (and ``feature_names_in_``, when fitted on a DataFrame) to a
        model file (plain arrays + JSON metadata, no pickle)."""
        from fedgmm.model_io import save_mixture

        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        names = None if names is None else [str(n) for n in names]
        return save_mixture(path, self.state_, extra=extra, feature_names=names)

    @classmethod
    def load(cls, path: str | Path) -> GaussianMixture:
        """Read a model file written by :meth:`save` (or any fedgmm model file)."""
        from fedgmm.model_io import load_model

        model = load_model(path)
        est = cls.from_state(model.state)
        if model.feature_names is not None:  # DataFrames are then checked by column name
            est.feature_names_in_ = np.asarray(model.feature_names, dtype=object)
        return est

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def _frozen_copy(a: Any) -> np.ndarray:
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def _scan_rows(X: np.ndarray) -> int:
    return max(1, SCAN_BLOCK_ELEMENTS // max(1, X.shape[1]))


def _check_finite(X: np.ndarray) -> None:
    """Reject NaN/infinity block by block (a memory-mapped ``X`` is never copied whole)."""
    for rows in iter_blocks(X.shape[0], _scan_rows(X)):
        assert_all_finite(X[rows], allow_nan=False, estimator_name="GaussianMixture", input_name="X")


def _column_ranges(X: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Per-feature ``max − min`` over the rows with non-zero weight, ``(d,)``, block by block."""
    lo = np.full(X.shape[1], np.inf)
    hi = np.full(X.shape[1], -np.inf)
    for rows in iter_blocks(X.shape[0], _scan_rows(X)):
        block = X[rows] if weights is None else X[rows][weights[rows] > 0]
        if block.shape[0]:
            np.minimum(lo, block.min(axis=0), out=lo)
            np.maximum(hi, block.max(axis=0), out=hi)
    return np.asarray(hi - lo)


def _check_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray | None:
    """Float64 copy of the row weights, ``(n_samples,)``, or None; clear errors otherwise."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.ndim == 0:
        w = np.full(n_samples, w)
    if w.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight must be numeric, got dtype {w.dtype}.")
    w = np.array(w, dtype=np.float64, copy=True)
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n_samples},): one weight per row of X.")
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity.")
    if np.any(w < 0):
        raise ValueError("sample_weight must be non-negative (negative values were given).")
    if not np.any(w > 0):
        raise ValueError("Sample weights must contain at least one non-zero number: all sample_weight are zero.")
    return w


def _sample_seed(random_state: SeedLike) -> SeedLike:
    """Seed of the default sampling stream: distinct from the initialisation stream."""
    if isinstance(random_state, numbers.Integral):
        return np.random.SeedSequence([int(random_state), 0x5A3D]).generate_state(1)[0].item()
    return random_state
