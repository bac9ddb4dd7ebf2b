"""Issue 9's one-shot settings: per-client local K, scale-aware local reg_covar, reduce aggregation, the paper baseline."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm import FedGenGMM, GaussianMixture
from fedgmm.federated.local import LocalFitSettings, fit_local_model
from fedgmm.federated.spec import (
    DEFAULT_LOCAL_FACTOR,
    MethodSpec,
    baseline_spec,
    parse_local_components,
    resolve_local_components,
)
from fedgmm.inprocess.runner import run_inprocess


def _standardised(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(0)) / X.std(0)


def test_defaults_are_the_measured_ones() -> None:
    spec = MethodSpec("fedgengmm", n_components=5)
    assert DEFAULT_LOCAL_FACTOR == 4 and resolve_local_components(None, 5) == (20, 20)
    assert spec.local_reg_covar == "auto" and spec.n_init == 10 and spec.aggregation == "sample"
    assert spec.local_settings().reg_covar_mode == "auto" and spec.global_settings().n_init == 10


def test_local_components_per_client_parsing() -> None:
    assert parse_local_components([2, 20]) == (2, 20)  # a pair of ints stays a BIC range
    assert parse_local_components([2, 2, 20]) == ((2, 2), (2, 2), (20, 20))
    assert parse_local_components([[2, 2], [1, 5]]) == ((2, 2), (1, 5))
    assert resolve_local_components([2, 2, 20], 4) == (2, 20)
    with pytest.raises(ValueError, match="local_components"):
        MethodSpec("fedgengmm", local_components=[2, 0, 3])


def test_each_client_uploads_its_own_k(iid_clients) -> None:
    ks = [1, 2, 3, 6]
    fg = FedGenGMM(3, local_components=ks, robust=False, random_state=0).fit(iid_clients)
    assert fg.local_client_ids_ == [0, 1, 2, 3]
    assert [m.n_components for m in fg.local_models_] == ks
    assert fg.union_model_.n_components == sum(ks)


def test_a_client_without_an_entry_excludes_itself(iid_clients) -> None:
    with pytest.warns(UserWarning, match="no entry"):
        fg = FedGenGMM(3, local_components=[2, 2, 3], robust=False, random_state=0).fit(iid_clients)
    assert fg.local_client_ids_ == [0, 1, 2]
    assert [r.status for r in fg.client_records_] == ["ok", "ok", "ok", "excluded"]


def test_auto_local_reg_is_005_on_standardised_data_and_scales(blob_data) -> None:
    X = _standardised(blob_data[0])
    settings = LocalFitSettings(k_min=3, k_max=3, reg_covar_mode="auto")
    assert settings.client_reg_covar(X) == pytest.approx(0.05, rel=1e-12)
    assert settings.client_reg_covar(10.0 * X) == pytest.approx(5.0, rel=1e-12)
    reply = fit_local_model(X, settings, client_id=0, seed=0)
    assert reply.reg_covar == pytest.approx(0.05)
    # an absolute float stays absolute whatever the scale
    fixed = LocalFitSettings(k_min=3, k_max=3, reg_covar=0.05)
    assert fixed.client_reg_covar(10.0 * X) == 0.05


def test_auto_local_reg_makes_fedgengmm_scale_equivariant(blob_data) -> None:
    X, _, X_test = blob_data
    clients = [X[i::4] for i in range(4)]
    c = 1000.0
    a = FedGenGMM(4, random_state=0).fit(clients)
    b = FedGenGMM(4, random_state=0).fit([c * Xc for Xc in clients])
    # log-density of c·x is that of x minus d·log c
    assert b.score(c * X_test) == pytest.approx(a.score(X_test) - X.shape[1] * np.log(c), abs=1e-6)


def test_heldout_selection_is_recorded(iid_clients) -> None:
    fg = FedGenGMM(3, local_reg_covar="heldout", random_state=0).fit(iid_clients)
    assert all(r.reason.startswith("held-out selection: K=") for r in fg.client_records_)
    assert np.isfinite(fg.score(np.vstack(iid_clients)))


def test_reduce_aggregation_end_to_end(blob_data, iid_clients) -> None:
    _, _, X_test = blob_data
    a = FedGenGMM(4, aggregation="reduce", random_state=0).fit(iid_clients)
    b = FedGenGMM(4, aggregation="reduce", random_state=0).fit(iid_clients)
    assert a.n_components_ == 4 and a.synthetic_size_ == 0
    np.testing.assert_array_equal(a.global_model_.means_, b.global_model_.means_)  # deterministic
    central = GaussianMixture(4, random_state=0).fit(np.vstack(iid_clients))
    assert a.score(X_test) > central.score(X_test) - 0.5
    with pytest.raises(ValueError, match="fixed n_components"):
        MethodSpec("fedgengmm", n_components=(2, 4), aggregation="reduce")


def test_paper_baseline_runs(iid_clients) -> None:
    spec = baseline_spec("fedgengmm-paper", MethodSpec("fedgengmm", n_components=4))
    assert spec.method == "fedgengmm" and spec.local_components == (1, 10)
    assert spec.local_reg_covar is None and spec.n_init == 1 and spec.aggregation == "sample"
    run = run_inprocess(spec, iid_clients, seed=0)
    assert run.model is not None and run.model.n_components == 4
    assert all(1 <= m.n_components <= 10 for m in run.local_models)
    assert all(r.status == "ok" for r in run.records)


def test_reduce_on_a_union_of_k_components_returns_it(blob_data) -> None:
    """Two clients of 2 local components and K = 4: the reduction has nothing to merge."""
    X, y, _ = blob_data
    clients = [X[y < 2], X[y >= 2]]
    fg = FedGenGMM(4, local_components=2, aggregation="reduce", robust=False, random_state=0).fit(clients)
    union, glob = fg.union_model_, fg.global_model_
    np.testing.assert_allclose(glob.weights_, union.weights_, atol=1e-12)
    np.testing.assert_allclose(glob.means_, union.means_, atol=1e-9)
    # each client's "auto" reg (0.05 × its mean variance) taken off once, the global reg_covar put on once
    regs = np.repeat([0.05 * np.mean(np.var(c, axis=0)) for c in clients], 2)
    expected = union.covariances_ - (regs[:, None, None] - 1e-6) * np.eye(3)
    np.testing.assert_allclose(glob.covariances_, expected, rtol=1e-8, atol=1e-9)


def test_heldout_selection_on_a_tiny_client_degrades_with_a_clear_record(blob_data) -> None:
    X = _standardised(blob_data[0])
    fg = FedGenGMM(3, local_reg_covar="heldout", robust=False, random_state=0).fit([X[:800], X[800:815]])
    tiny = fg.client_records_[1]
    assert tiny.status == "ok"
    assert "only 15 rows" in tiny.reason and "no held-out choice" in tiny.reason
    assert fg.local_models_[1].n_components == 3  # K capped at 15 // 5
    assert fg.client_records_[0].reason.startswith("held-out selection: K=")


def test_the_best_global_start_runs_on_to_server_tol(iid_clients) -> None:
    spec = MethodSpec("fedgengmm", n_components=3)
    assert (spec.server_tol, spec.server_max_iter) == (1e-5, 500)
    assert spec.global_settings().server_tol == 1e-5 and spec.centralized_fit() == (1e-5, 600)
    loose = FedGenGMM(3, random_state=0, server_max_iter=0).fit(iid_clients)
    tight = FedGenGMM(3, random_state=0).fit(iid_clients)
    assert loose.synthetic_size_ == tight.synthetic_size_  # the same synthetic set, one more EM run on it
    # Running on from the chosen start is EM: the bound on the synthetic set never drops.
    assert tight.global_model_.lower_bound_ >= loose.global_model_.lower_bound_ - 1e-12
    assert tight.global_model_.n_iter_ >= 1
    with pytest.raises(ValueError, match="server_max_iter"):
        MethodSpec("fedgengmm", server_max_iter=-1)
    with pytest.raises(ValueError, match="server_tol"):
        MethodSpec("fedgengmm", server_tol=-1.0)
