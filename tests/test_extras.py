"""The base install: the library imports and fits without the optional extras, and says which to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent('''
    import importlib.abc, importlib.util, sys

    BLOCKED = {"matplotlib", "aeon", "pyreadr", "ray"}

    class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """Behaves as if the blocked packages were not installed."""

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                return importlib.util.spec_from_loader(name, self)
            return None

        def create_module(self, spec):
            raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked by the test)", name=spec.name)

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Block())
''')


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_library_fits_without_the_extras() -> None:
    result = run_blocked("""
        import numpy as np
        from fedgmm import FederatedEM, FedGenGMM, GaussianMixture

        rng = np.random.default_rng(0)
        clients = [rng.normal(size=(60, 2)) + i for i in range(3)]
        GaussianMixture(2, random_state=0).fit(np.vstack(clients))
        FedGenGMM(2, local_components=2, random_state=0).fit(clients)
        FederatedEM(2, max_rounds=2, random_state=0).fit(clients)
        loaded = sorted(m for m in {"matplotlib", "aeon", "pyreadr", "ray"} if m in sys.modules)
        print("loaded:", loaded)
    """)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


def test_a_loader_that_needs_aeon_names_the_extra() -> None:
    result = run_blocked("""
        from fedgmm.datasets import load_dataset
        try:
            load_dataset("gunpoint")
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "DatasetNotAvailableError" in result.stdout and "pip install 'fedgmm[studies]'" in result.stdout


def test_plots_name_the_extra() -> None:
    result = run_blocked("""
        try:
            import fedgmm.experiments.plots
        except ImportError as exc:
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install 'fedgmm[studies]'" in result.stdout
