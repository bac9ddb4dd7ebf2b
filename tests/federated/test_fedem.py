"""Federated EM equals centralized EM from the same start; its rounds, history and bytes."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fedgmm import FederatedEM, GaussianMixture
from fedgmm.em.init import initial_state
from fedgmm.federated.messages import payload_nbytes
from fedgmm.mixture import MixtureState
from fedgmm.types import COVARIANCE_TYPES


def start_state(X: np.ndarray, k: int, ctype: str) -> MixtureState:
    return initial_state(X, k, ctype, init_params="kmeans", random_state=np.random.RandomState(3))  # type: ignore[arg-type]


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_federated_em_equals_centralized_em(ctype: str, blob_data, iid_clients) -> None:
    X = np.vstack(iid_clients)
    init = start_state(X, 4, ctype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        central = GaussianMixture(
            4, covariance_type=ctype, tol=1e-6, max_iter=30,
            weights_init=init.weights, means_init=init.means, precisions_init=init.precisions,
        ).fit(X)
    fed = FederatedEM(4, covariance_type=ctype, init=init, round_tol=1e-6, fit_tol=1e-6, max_rounds=30, random_state=0).fit(iid_clients)
    assert fed.n_rounds_ == central.n_iter_
    assert fed.communication_.rounds == fed.n_rounds_  # no initialisation round for a given init
    g = fed.global_model_
    np.testing.assert_allclose(g.weights_, central.weights_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(g.means_, central.means_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g.covariances_, central.covariances_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fed.history_[-1].log_likelihood, central.lower_bound_, rtol=1e-9)


def test_history_is_monotone_and_bytes_accumulate(iid_clients) -> None:
    fed = FederatedEM(4, random_state=1, round_tol=1e-5, fit_tol=1e-5).fit(iid_clients)
    ll = [h.log_likelihood for h in fed.history_]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(ll)), "EM never lowers the likelihood"
    ups = [h.bytes_up for h in fed.history_]
    assert ups == sorted(ups) and ups[0] > 0
    comm = fed.communication_
    assert comm.rounds == fed.n_rounds_ + 1  # one local-model upload for the k-means++ seeding
    assert comm.bytes_up == fed.history_[-1].bytes_up
    assert comm.bytes_down == fed.history_[-1].bytes_down
    assert set(comm.per_client) == {f"client {i}" for i in range(4)}
    assert sum(c.bytes_up for c in comm.per_client.values()) == comm.bytes_up


def test_round_bytes_are_the_serialised_messages(iid_clients) -> None:
    """Each EM round sends the mixture down and statistics up: bytes match the message sizes."""
    fed = FederatedEM(4, init="kmeans++", random_state=0, max_rounds=3, round_tol=0, fit_tol=0).fit(iid_clients)
    per_round = fed.communication_.per_round
    assert [r.kind for r in per_round] == ["fit-local", "em-statistics", "em-statistics", "em-statistics"]
    d, k = 3, 4
    raw_down = (k + k * d + k * d * d + d) * 8  # weights, means, covariances, shift (float64)
    raw_up = (k + k * d + k * d * d + d) * 8  # nk, sx, sxx, shift
    for r in per_round[1:]:
        assert r.n_requests == r.n_replies == 4
        assert raw_down < r.bytes_down / 4 < raw_down + 3000
        assert raw_up < r.bytes_up / 4 < raw_up + 3000


@pytest.mark.parametrize("init", ["kmeans++", "fedgengmm"])
def test_initialisations_reach_centralized_quality(init: str, blob_data, iid_clients) -> None:
    _, _, X_test = blob_data
    central = GaussianMixture(4, random_state=0).fit(np.vstack(iid_clients))
    fed = FederatedEM(4, init=init, random_state=0).fit(iid_clients)
    assert fed.score(X_test) > central.score(X_test) - 0.05


def test_hybrid_with_zero_rounds_is_fedgengmm(iid_clients) -> None:
    from fedgmm import FedGenGMM

    hybrid = FederatedEM(4, init="fedgengmm", max_rounds=0, random_state=5).fit(iid_clients)
    one_shot = FedGenGMM(4, random_state=5).fit(iid_clients)
    np.testing.assert_array_equal(hybrid.global_model_.means_, one_shot.global_model_.means_)
    assert hybrid.communication_.rounds == 1


def test_same_seed_same_model_and_parallel_clients_agree(iid_clients) -> None:
    a = FederatedEM(4, random_state=11, max_rounds=5).fit(iid_clients)
    b = FederatedEM(4, random_state=11, max_rounds=5).fit(iid_clients)
    c = FederatedEM(4, random_state=11, max_rounds=5, n_jobs=2).fit(iid_clients)
    np.testing.assert_array_equal(a.global_model_.means_, b.global_model_.means_)
    np.testing.assert_allclose(a.global_model_.means_, c.global_model_.means_, rtol=1e-12)
    assert a.communication_.summary() == c.communication_.summary()


def test_payload_nbytes_grows_with_content() -> None:
    from fedgmm.federated.messages import encode_request

    small = encode_request("x", {}, {"a": np.zeros(10)})
    big = encode_request("x", {}, {"a": np.zeros(10_000)})
    assert payload_nbytes(big) - payload_nbytes(small) >= 8 * (10_000 - 10)


def test_bad_init_is_rejected(iid_clients) -> None:
    with pytest.raises(ValueError, match="init must be one of"):
        FederatedEM(4, init="kmeans").fit(iid_clients)
    other = start_state(np.random.default_rng(0).normal(size=(50, 5)), 4, "full")
    with pytest.raises(ValueError, match="features"):
        FederatedEM(4, init=other).fit(iid_clients)
