"""Where the Debian-packaged data files live, and the commands that install them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fedgmm.datasets.errors import DatasetNotAvailableError

__all__ = [
    "DATA_HOME_ENV",
    "FASHION_MNIST_ENV",
    "MLBENCH_ENV",
    "REQUIRE_DATA_ENV",
    "data_home",
    "fashion_mnist_dirs",
    "fashion_mnist_install_hint",
    "find_dir",
    "mlbench_dirs",
    "mlbench_install_hint",
    "not_available",
]

FASHION_MNIST_ENV = "FEDGMM_FASHION_MNIST_DIR"
MLBENCH_ENV = "FEDGMM_MLBENCH_DIR"
DATA_HOME_ENV = "FEDGMM_DATA_HOME"
# Read by the tests: when "1", a test whose data is missing fails instead of skipping (CI).
REQUIRE_DATA_ENV = "FEDGMM_REQUIRE_DATA"

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
MLBENCH_SUFFIX = Path("usr/lib/R/site-library/mlbench/data")


def data_home() -> Path:
    """``$FEDGMM_DATA_HOME``, else ``~/.cache/fedgmm`` (where ``./dev data`` unpacks .deb files)."""
    env = os.environ.get(DATA_HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedgmm"


def _override(env: str) -> list[Path] | None:
    value = os.environ.get(env)
    return [Path(value).expanduser()] if value else None


def mlbench_dirs() -> list[Path]:
    """Directories searched for mlbench ``.rda`` files, in order.

    ``$FEDGMM_MLBENCH_DIR`` when set (and then only it), else the system R library, then the
    ``.deb`` unpacked by ``./dev data`` under :func:`data_home`.
    """
    return _override(MLBENCH_ENV) or [
        Path("/") / MLBENCH_SUFFIX,
        data_home() / "debian" / MLBENCH_SUFFIX,
    ]


def fashion_mnist_dirs() -> list[Path]:
    """Directories searched for the Fashion-MNIST IDX files: ``$FEDGMM_FASHION_MNIST_DIR``
    when set (and then only it), else ``/usr/share/datasets/fashion-mnist``."""
    return _override(FASHION_MNIST_ENV) or [FASHION_MNIST_SYSTEM_DIR]


def find_dir(dirs: Sequence[Path], names: Sequence[str]) -> Path | None:
    """The first of ``dirs`` that holds every file of ``names`` (non-empty), or None."""
    for directory in dirs:
        if all(_nonempty(directory / name) for name in names):
            return directory
    return None


def _nonempty(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def mlbench_install_hint() -> str:
    """The command that installs the mlbench ``.rda`` files (no R needed)."""
    target = data_home() / "debian"
    return (
        "./dev data  # runs scripts/install-data.sh: cd $(mktemp -d) && "
        f"apt-get download r-cran-mlbench && dpkg -x r-cran-mlbench_*.deb {target}"
    )


def fashion_mnist_install_hint() -> str:
    """The command that installs the Fashion-MNIST IDX files."""
    return (
        "./dev data  # runs scripts/install-data.sh: "
        "apt-get update && apt-get install -y dataset-fashion-mnist (as root)"
    )


def not_available(
    what: str, names: Sequence[str], dirs: Sequence[Path], env: str, hint: str
) -> DatasetNotAvailableError:
    """Build the error for data files found in none of ``dirs``.

    Parameters
    ----------
    what : str
        The data set, e.g. ``"shuttle (mlbench Shuttle.rda)"``.
    names : sequence of str
        The files that were looked for.
    dirs : sequence of Path
        Where they were looked for.
    env : str
        The environment variable that overrides ``dirs``.
    hint : str
        The install command, as returned by the ``*_install_hint`` functions.
    """
    where = " or ".join(str(d) for d in dirs)
    if os.environ.get(env):
        where = f"${env}={where}"
    command, _, underlying = hint.partition("  # ")
    return DatasetNotAvailableError(
        f"{what} is not installed: {', '.join(names)} not found in {where}. "
        f"Install it with `{command}` from the fedgmm checkout ({underlying}), "
        f"or set {env} to a directory holding {', '.join(names)}."
    )
