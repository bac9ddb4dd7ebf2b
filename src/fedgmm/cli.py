"""The ``fedgmm`` command."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Federated Gaussian mixture models: FedGenGMM, federated EM, studies and a Flower app.", no_args_is_help=True)
console = Console()


@app.callback()
def _root() -> None:
    """Federated Gaussian mixture models."""


@app.command()
def run(
    n_components: int = typer.Option(10, help="Mixture components."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Main job: fit a GMM to the bundled digits data (PCA to 16 dims) and print what it found."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split

    from fedgmm import GaussianMixture

    X, y = load_digits(return_X_y=True)
    X = PCA(16, random_state=seed).fit_transform(X)
    X_train, X_test = train_test_split(X, test_size=0.25, random_state=seed, stratify=y)
    start = time.perf_counter()
    gm = GaussianMixture(n_components, covariance_type="full", random_state=seed, reg_covar=1e-3).fit(X_train)
    took = time.perf_counter() - start
    table = Table(title=f"GaussianMixture on digits (PCA 16), {X_train.shape[0]} train / {X_test.shape[0]} test rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("components", str(n_components))
    table.add_row("EM iterations", f"{gm.n_iter_} ({'converged' if gm.converged_ else 'not converged'})")
    table.add_row("train log-likelihood (nats/sample)", f"{gm.score(X_train):.3f}")
    table.add_row("test log-likelihood (nats/sample)", f"{gm.score(X_test):.3f}")
    table.add_row("BIC (train)", f"{gm.bic(X_train):.1f}")
    table.add_row("fit time", f"{took:.2f} s")
    console.print(table)


def main() -> None:
    app()
