"""The one dispatch and the method spec: each method name runs its algorithm, bad specs fail early."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from fedgmm import FederatedEM, FedGenGMM
from fedgmm.federated.dispatch import run_method
from fedgmm.federated.spec import METHODS, MethodSpec
from fedgmm.inprocess import InProcessTransport, run_inprocess


@pytest.fixture(scope="module")
def clients(iid_clients: list[np.ndarray]) -> list[np.ndarray]:
    return [X[:200] for X in iid_clients[:3]]


def run(spec: MethodSpec, clients: list[np.ndarray], **kwargs):  # type: ignore[no-untyped-def]
    with InProcessTransport(clients) as transport:
        return run_method(transport, spec, 0, **kwargs)


def kinds(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.kind for r in result.communication.per_round]


def test_union_uploads_once_and_keeps_every_component(clients) -> None:
    res = run(MethodSpec("union", n_components=2, local_components=3), clients)
    assert kinds(res) == ["fit-local"]
    assert res.fedgengmm is None and res.fedem is None
    assert res.state.n_components == 9 and sorted(res.local_models) == [0, 1, 2]


def test_fedgengmm_is_one_upload_then_the_server_fit(clients) -> None:
    res = run(MethodSpec("fedgengmm", n_components=3, local_components=3), clients)
    assert kinds(res) == ["fit-local"]
    assert res.fedgengmm is not None and res.fedem is None
    assert res.state is res.fedgengmm.global_model.state_ and res.state.n_components == 3


def test_fedem_initialises_by_kmeans_pp_then_runs_rounds(clients) -> None:
    res = run(MethodSpec("fedem", n_components=3, max_rounds=4, round_tol=0.0), clients)
    assert kinds(res) == ["fit-local"] + ["em-statistics"] * 4
    assert res.fedgengmm is None and res.fedem is not None and res.fedem.n_rounds == 4


def test_hybrid_starts_federated_em_from_fedgengmm(clients) -> None:
    spec = MethodSpec("hybrid", n_components=3, max_rounds=2, round_tol=0.0)
    res = run(spec, clients)
    assert kinds(res) == ["fit-local", "em-statistics", "em-statistics"]
    assert res.fedgengmm is not None and res.fedem is not None
    np.testing.assert_array_equal(res.fedem.init_state.means, res.fedgengmm.global_model.means_)
    # fedem with init="fedgengmm" is the same run.
    same = run(dataclasses.replace(spec, method="fedem", init="fedgengmm"), clients)
    np.testing.assert_array_equal(same.state.means, res.state.means)


def test_fedem_from_a_given_state_needs_no_initialisation_round(clients) -> None:
    start = run(MethodSpec("fedgengmm", n_components=3), clients).state
    res = run(MethodSpec("fedem", n_components=3, max_rounds=1), clients, init_state=start)
    assert kinds(res) == ["em-statistics"]
    assert res.fedem is not None and res.fedem.init_state is start


@pytest.mark.parametrize("method", ["centralized", "local"])
def test_raw_data_methods_do_not_run_over_a_transport(clients, method: str) -> None:
    with pytest.raises(ValueError, match="does not run over a transport"):
        run(MethodSpec(method, n_components=2), clients)
    assert run_inprocess(MethodSpec(method, n_components=2), clients, seed=0).wall_seconds > 0


def test_every_method_runs_in_process(clients) -> None:
    for method in METHODS:
        out = run_inprocess(MethodSpec(method, n_components=2, local_components=2, max_rounds=2), clients, seed=0)
        assert (out.model is None) == (method == "local"), method


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "fedavg"}, "unknown method 'fedavg'"),
        ({"method": "fedem", "init": "random"}, "init must be one of"),
        ({"method": "fedgengmm", "n_components": 0}, "n_components must be >= 1"),
        ({"method": "fedgengmm", "n_components": (5, 2)}, "1 <= min <= max"),
        ({"method": "fedgengmm", "local_components": 0}, "local_components must be >= 1"),
        ({"method": "fedgengmm", "synthetic_size": 0}, "synthetic_size must be a positive"),
        ({"method": "fedgengmm", "covariance_type": "ful"}, "covariance_type must be one of"),
        ({"method": "fedgengmm", "fit_tol": -1.0}, "fit_tol must be a number >= 0"),
        ({"method": "fedem", "max_rounds": -1}, "max_rounds must be an int >= 0"),
        ({"method": "fedgengmm", "local_reg_covar": -0.1}, "local_reg_covar must be a number >= 0"),
    ],
)
def test_spec_checks_every_field_once(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MethodSpec(**kwargs)


def test_a_range_of_k_is_for_fedgengmm_only(clients) -> None:
    with pytest.raises(ValueError, match="needs a fixed n_components"):
        run(MethodSpec("fedem", n_components=(2, 3)), clients)


def test_local_reg_covar_goes_to_the_clients_only() -> None:
    spec = MethodSpec("fedgengmm", n_components=3, reg_covar=0.05, local_reg_covar=None)  # None: reg_covar
    assert spec.local_settings().reg_covar == spec.global_settings().reg_covar == 0.05
    spec = dataclasses.replace(spec, local_reg_covar=1e-4)
    assert spec.local_settings().reg_covar == 1e-4 and spec.global_settings().reg_covar == 0.05


def test_local_reg_covar_changes_the_local_models_not_the_seeding(clients) -> None:
    a = FedGenGMM(3, local_components=3, reg_covar=0.05, local_reg_covar=None, random_state=0).fit(clients)
    b = FedGenGMM(3, local_components=3, reg_covar=0.05, local_reg_covar=0.05, random_state=0).fit(clients)
    c = FedGenGMM(3, local_components=3, reg_covar=0.05, local_reg_covar=1e-3, random_state=0).fit(clients)
    np.testing.assert_array_equal(a.global_model_.means_, b.global_model_.means_)
    assert not np.allclose(a.local_models_[0].covariances_, c.local_models_[0].covariances_)


def test_deprecated_tol_maps_to_the_names_it_stood_for(clients) -> None:
    with pytest.warns(FutureWarning, match="round_tol= .* fit_tol="):
        old = FederatedEM(3, tol=0.05, max_rounds=5, random_state=0).fit(clients)
    new = FederatedEM(3, round_tol=0.05, fit_tol=0.05, max_rounds=5, random_state=0).fit(clients)
    np.testing.assert_array_equal(old.global_model_.means_, new.global_model_.means_)
    with pytest.warns(FutureWarning, match="use fit_tol="):
        old_fg = FedGenGMM(3, tol=0.05, random_state=0).fit(clients)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        new_fg = FedGenGMM(3, fit_tol=0.05, random_state=0).fit(clients)
    np.testing.assert_array_equal(old_fg.global_model_.means_, new_fg.global_model_.means_)
