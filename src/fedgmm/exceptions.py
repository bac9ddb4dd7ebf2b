"""Errors and warnings raised by fedgmm; each message says what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedgmm._convergence import EmptyComponentWarning as EmptyComponentWarning


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


def __getattr__(name: str) -> Any:
    # EmptyComponentWarning subclasses scikit-learn's ConvergenceWarning; it is loaded on first
    # use so that importing fedgmm.exceptions (and fedgmm.datasets) does not import scikit-learn.
    if name == "EmptyComponentWarning":
        from fedgmm._convergence import EmptyComponentWarning

        return EmptyComponentWarning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
