"""fedgmm: federated Gaussian mixture models (FedGenGMM, federated EM) on a fast EM engine."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fedgmm._version import __version__

__all__ = ["FedGenGMM", "FederatedEM", "GaussianMixture", "MixtureState", "__version__"]

_LAZY = {
    "GaussianMixture": "fedgmm.gaussian_mixture",
    "MixtureState": "fedgmm.mixture",
    "FedGenGMM": "fedgmm.inprocess",
    "FederatedEM": "fedgmm.inprocess",
}

if TYPE_CHECKING:  # pragma: no cover
    from fedgmm.gaussian_mixture import GaussianMixture
    from fedgmm.inprocess import FederatedEM, FedGenGMM
    from fedgmm.mixture import MixtureState


def __getattr__(name: str) -> Any:
    # Lazy so that `import fedgmm` stays cheap for the Flower client process.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedgmm' has no attribute {name!r}")
