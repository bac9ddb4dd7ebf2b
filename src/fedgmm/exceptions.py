"""Errors and warnings raised by fedgmm; each message says what to do."""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning


class FedGMMError(Exception):
    """Base class of fedgmm's own errors."""


class DegenerateCovarianceError(FedGMMError, ValueError):
    """A covariance matrix is singular, not positive definite or not finite."""


class ModelFileError(FedGMMError, ValueError):
    """A model file is truncated, tampered with, of another version or not ours."""


class PayloadError(FedGMMError, ValueError):
    """A client or server message is malformed or hostile and was not merged."""


class ClientExclusionWarning(UserWarning):
    """A client was left out of a federated fit; the reason is recorded on the estimator."""


class FederationError(FedGMMError, RuntimeError):
    """Too few clients answered (or were usable) for a federated step to go on."""


class EmptyComponentWarning(ConvergenceWarning):
    """A fitted mixture has components holding (almost) no weight: fewer components would do.

    A subclass of scikit-learn's ``ConvergenceWarning``, so filters on that catch it too.
    """
