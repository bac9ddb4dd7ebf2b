"""A fit whose components outnumber what the data support warns, naming the empty components."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fedgmm import GaussianMixture
from fedgmm.em.fit import empty_components
from fedgmm.exceptions import EmptyComponentWarning

THREE_POINTS = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]] * 4)


def _empty_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, EmptyComponentWarning)]


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_five_components_on_three_distinct_points_warn_naming_the_empty_ones(covariance_type: str) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = GaussianMixture(5, covariance_type=covariance_type, random_state=0).fit(THREE_POINTS)
    empty = [k for k in range(5) if model.weights_[k] < 1e-10]
    assert len(empty) == 2  # what the warning is about: weights of about 1e-16, silently returned before
    (message,) = _empty_warnings(record)
    assert re.search(r"component\(s\) " + r".*, ".join(f"{k} \\(weight" for k in empty), message), message
    assert "n_components <= 3" in message and "n_components=5 on 12 rows" in message
    assert issubclass(EmptyComponentWarning, ConvergenceWarning)  # sklearn-style filters catch it


def test_no_warning_when_every_component_holds_a_row() -> None:
    X = np.random.default_rng(0).normal(size=(200, 2))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        GaussianMixture(3, random_state=0).fit(THREE_POINTS)
        single_rows = GaussianMixture(60, random_state=0).fit(X)  # some components hold one row each: not empty
    assert min(single_rows.weights_) * 200 < 1.5
    assert _empty_warnings(record) == []


def test_empty_components_threshold_is_a_share_of_one_row() -> None:
    assert empty_components(np.array([0.5, 0.5 - 1e-3, 1e-3]), 100) == []  # 0.1 row
    assert empty_components(np.array([0.5, 0.5 - 5e-5, 5e-5]), 100) == [2]  # 0.005 row


def _tight_clients() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [np.r_[rng.normal(size=(60, 2)) * 0.01, rng.normal(size=(60, 2)) * 0.01 + 5] for _ in range(3)]


def test_fedgengmm_warns_when_its_global_fit_has_empty_components() -> None:
    from fedgmm.inprocess import FedGenGMM

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = FedGenGMM(n_components=20, local_components=2, random_state=0).fit(_tight_clients())
    empty = [k for k in range(20) if model.global_model_.weights_[k] * model.synthetic_size_ < 0.01]
    assert empty  # two tight clusters cannot feed 20 components
    (message,) = _empty_warnings(record)
    assert message.startswith("FedGenGMM's global fit on the synthetic set with n_components=20 on 1800 rows")
    assert f"n_components <= {20 - len(empty)}" in message
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        FedGenGMM(n_components=2, local_components=2, random_state=0).fit(_tight_clients())
    assert _empty_warnings(record) == []


def test_fedgengmm_on_clients_with_identical_local_models_does_not_fail() -> None:
    """Three clients with the same 3 distinct points give 9 union components at 3 places: K=5 used to fail
    with "group 3 has no component" (k-means++ over the union means picked one place twice)."""
    from fedgmm.inprocess import FedGenGMM

    clients = [np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]] * 20) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FedGenGMM(n_components=5, local_components=3, random_state=0).fit(clients)
    assert model.global_model_.n_components == 5 and np.isclose(model.global_model_.weights_.sum(), 1.0)
