"""StateStore: the client's store kept in a Flower ``context.state`` RecordDict."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict
from wire_testing import roundtrip

from fedgmm.flower.store import StateStore
from fedgmm.mixture import MixtureState


def test_values_survive_the_wire_format_bit_exactly() -> None:
    state = RecordDict()
    store = StateStore(state)
    mean, matrix = np.array([0.1, -0.0, 1e-308]), np.asfortranarray(np.arange(6.0).reshape(3, 2) / 7)
    mixture = MixtureState.from_covariances(np.array([0.25, 0.75]), np.arange(4.0).reshape(2, 2), np.array([1.0, 2.0]), "spherical")
    store["transform:x"] = (mean, matrix)
    store["global-model"] = mixture
    store["array"] = np.arange(3)
    store["note"] = "hello"
    again = StateStore(roundtrip(state))  # what the SuperNode keeps and hands to the next ClientApp
    assert sorted(again) == ["array", "global-model", "note", "transform:x"] and len(again) == 4
    got_mean, got_matrix = again["transform:x"]
    assert got_mean.tobytes() == mean.tobytes() and np.array_equal(got_matrix, matrix)
    assert again["global-model"].covariance_type == "spherical"
    np.testing.assert_array_equal(again["global-model"].means, mixture.means)
    np.testing.assert_array_equal(again["array"], np.arange(3))
    assert again["note"] == "hello"


def test_overwrite_delete_and_errors() -> None:
    store = StateStore(RecordDict())
    store["k"] = np.zeros(2)
    store["k"] = (np.ones(1),)
    assert isinstance(store["k"], tuple)
    del store["k"]
    assert "k" not in store and len(store) == 0
    with pytest.raises(KeyError):
        store["missing"]
    with pytest.raises(KeyError):
        del store["missing"]
    with pytest.raises(TypeError, match="cannot keep a dict"):
        store["bad"] = {"a": 1}


def test_other_state_records_are_left_alone() -> None:
    from flwr.app import ConfigRecord

    state = RecordDict({"mine": ConfigRecord({"x": 1})})
    StateStore(state)["t"] = np.ones(2)
    assert state.config_records["mine"]["x"] == 1
