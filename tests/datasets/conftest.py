"""Fixtures of the dataset tests: skip-or-fail on missing Debian data, and offline guards."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fedgmm.datasets import Dataset, list_datasets, load_dataset
from fedgmm.datasets.locate import (
    DATA_HOME_ENV,
    FASHION_MNIST_ENV,
    MLBENCH_ENV,
    REQUIRE_DATA_ENV,
)


def data_required() -> bool:
    """True when ``FEDGMM_REQUIRE_DATA`` is set (CI): missing data then fails the test."""
    return os.environ.get(REQUIRE_DATA_ENV, "").strip().lower() in {"1", "true", "yes"}


def require_data(name: str) -> None:
    """Skip the calling test when the data set ``name`` is not installed, or fail under CI."""
    info = {info.name: info for info in list_datasets()}[name]
    if info.available:
        return
    message = f"dataset {name!r} is not installed; install it with: {info.install_hint}"
    if data_required():
        pytest.fail(f"{message} ({REQUIRE_DATA_ENV}=1 requires it)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def require() -> Callable[[str], None]:
    """The :func:`require_data` helper, for tests that call it with a name."""
    return require_data


@pytest.fixture(scope="session")
def fashion_mnist() -> Dataset:
    """The full Fashion-MNIST (70,000 × 784), loaded once per session (about 2 s, 440 MB)."""
    require_data("fashion-mnist")
    return load_dataset("fashion-mnist")


@pytest.fixture
def no_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Any]:
    """Point every data location at empty temporary directories; yields that directory."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for env in (FASHION_MNIST_ENV, MLBENCH_ENV, DATA_HOME_ENV):
        monkeypatch.setenv(env, str(empty))
    yield empty


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection raise."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
