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
