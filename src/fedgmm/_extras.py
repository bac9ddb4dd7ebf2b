"""Optional dependencies: import one, or fail with the ``pip install 'fedgmm[extra]'`` that provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

#: The extra that provides each optional top-level package.
EXTRAS = {"matplotlib": "studies", "aeon": "studies", "pyreadr": "studies", "ray": "simulation", "dp_accounting": "privacy"}


def install_hint(module: str) -> str:
    """The command that installs the extra providing ``module``."""
    return f"pip install 'fedgmm[{EXTRAS[module.split('.')[0]]}]'"


def require(module: str, what: str) -> ModuleType:
    """Import ``module``; an ImportError names the extra to install.

    Parameters
    ----------
    module : str
        A key of :data:`EXTRAS`, or a submodule of one.
    what : str
        What needs it, for the message (e.g. "plots").
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} need(s) the optional package {module.split('.')[0]!r}, which is not installed: "
            f"{install_hint(module)}"
        ) from exc
