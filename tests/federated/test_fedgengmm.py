"""FedGenGMM: one round, quality against centralized and the client's own model, bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedgmm import FedGenGMM, GaussianMixture
from fedgmm.exceptions import ClientExclusionWarning, FederationError
from fedgmm.federated.union import union_mixture
from fedgmm.mixture import MixtureState
from fedgmm.partition import DirichletPartitioner


def test_one_round_and_bytes(iid_clients) -> None:
    fg = FedGenGMM(4, local_components=4, random_state=0).fit(iid_clients)
    comm = fg.communication_
    assert comm.rounds == 1
    assert [r.kind for r in comm.per_round] == ["fit-local"]
    # Upload: one local model per client (4 components, 3-D, full): a few hundred bytes of
    # floats plus Flower's record overhead; the request down is a small config record.
    assert 4 * (4 + 12 + 36) * 8 < comm.bytes_up < 4 * ((4 + 12 + 36) * 8 + 3000)
    assert comm.bytes_down < 4 * 1000
    assert len(fg.local_models_) == 4 and all(m.n_components == 4 for m in fg.local_models_)
    assert fg.union_model_.n_components == 16


def test_iid_clients_close_to_centralized(blob_data, iid_clients) -> None:
    _, _, X_test = blob_data
    central = GaussianMixture(4, random_state=0).fit(np.vstack(iid_clients))
    # The BIC local range with the global reg_covar (the paper's local fits). With the default
    # local_reg_covar="auto" (0.05 × the mean per-feature variance, here 13.8: these raw-scale
    # blobs are far apart) the gap is 0.09 nats — reported in issue 9, not loosened here.
    fg = FedGenGMM(4, local_components=(1, 8), local_reg_covar=None, random_state=0).fit(iid_clients)
    assert fg.score(X_test) > central.score(X_test) - 0.05


def test_one_client_with_a_huge_synthetic_set_recovers_its_model(blob_data) -> None:
    """With one client the union is its model; a large synthetic set makes the global fit match it."""
    X, _, X_test = blob_data
    # local_reg_covar=None: the local fit adds the global reg_covar, so the global fit can match
    # the local model itself (with "auto" the server takes the local 0.69 off on purpose).
    fg = FedGenGMM(4, local_components=4, local_reg_covar=None, synthetic_size=100_000, random_state=0).fit([X])
    local = fg.local_models_[0]
    gap = np.abs(fg.score_samples(X_test) - local.score_samples(X_test))
    assert np.mean(gap) < 0.02
    order = np.argsort(fg.global_model_.means_[:, 0])
    ref = np.argsort(local.means_[:, 0])
    np.testing.assert_allclose(fg.global_model_.means_[order], local.means_[ref], atol=0.1)


def test_clients_with_different_local_k(blob_data, blobs) -> None:
    """Local models of 2 … 20 components merge into one union and one global model."""
    X, _, X_test = blob_data
    states, counts = [], []
    for i, k in enumerate((2, 5, 11, 20)):
        part = X[i::4]
        gm = GaussianMixture(k, random_state=i, reg_covar=1e-3).fit(part)
        states.append(gm.state_)
        counts.append(part.shape[0])
    union = union_mixture(states, counts)
    assert union.n_components == 38
    np.testing.assert_allclose(union.weights.sum(), 1.0)
    np.testing.assert_allclose(union.weights[:2].sum(), counts[0] / sum(counts))
    # One client holds a single blob, the other six: BIC gives them different local K.
    one, _ = blobs(600, 3, 1, seed=1)
    six, _ = blobs(600, 3, 6, seed=2, spread=8.0)
    fg = FedGenGMM(4, local_components=(2, 20), random_state=0).fit([one, six])
    ks = [m.n_components for m in fg.local_models_]
    assert len(set(ks)) > 1, f"the clients should have chosen different local K: {ks}"
    assert fg.union_model_.n_components == sum(ks)
    assert np.isfinite(fg.score(X_test))


def test_bic_choices_are_per_client_and_recorded(blobs) -> None:
    X1, _ = blobs(600, 2, 1, seed=1)
    X3, _ = blobs(600, 2, 3, seed=2, spread=8.0)
    fg = FedGenGMM(3, local_components=(1, 6), random_state=0).fit([X1, X3])
    ks = [m.n_components for m in fg.local_models_]
    assert ks[0] < ks[1], f"a 1-blob client should choose fewer components than a 3-blob one: {ks}"
    assert [r.n_components for r in fg.client_records_] == ks


def test_same_seed_same_model_serial_or_parallel(iid_clients) -> None:
    a = FedGenGMM(4, random_state=3).fit(iid_clients)
    b = FedGenGMM(4, random_state=3, n_jobs=2).fit(iid_clients)
    np.testing.assert_array_equal(a.global_model_.means_, b.global_model_.means_)
    c = FedGenGMM(4, random_state=4).fit(iid_clients)
    assert not np.array_equal(a.global_model_.means_, c.global_model_.means_)


def test_bic_range_for_the_global_model(iid_clients) -> None:
    fg = FedGenGMM((2, 6), local_components=4, random_state=0).fit(iid_clients)
    assert set(fg.bic_) == {2, 3, 4, 5, 6}
    assert fg.n_components_ == min(fg.bic_, key=fg.bic_.get)


def test_dirichlet_clients_close_to_centralized(blob_data) -> None:
    X, y, X_test = blob_data
    central = GaussianMixture(4, random_state=0).fit(X)
    for alpha in (0.1, 100.0):
        parts = DirichletPartitioner(num_partitions=8, alpha=alpha, min_partition_size=30, seed=0).split(y)
        fg = FedGenGMM(4, random_state=0).fit([X[p] for p in parts])
        assert fg.score(X_test) > central.score(X_test) - 0.1, alpha


# ------------------------------------------------------------------------- bad inputs
def test_clients_with_different_feature_counts(iid_clients) -> None:
    bad = [*iid_clients[:2], iid_clients[2][:, :2]]
    with pytest.raises(ValueError, match=r"different feature counts: client 0 has 3, clients \[2\] have \[2\]"):
        FedGenGMM(4).fit(bad)


def test_nan_client_is_excluded_and_recorded(iid_clients) -> None:
    bad = iid_clients[1].copy()
    bad[5, 0] = np.nan
    with pytest.warns(ClientExclusionWarning, match=r"client 1 excluded: .*NaN"):
        fg = FedGenGMM(4, random_state=0).fit([iid_clients[0], bad, iid_clients[2]])
    rec = fg.client_records_[1]
    assert rec.status == "excluded" and "1 row(s) with NaN" in rec.reason
    assert fg.local_client_ids_ == [0, 2]
    assert np.all(np.isfinite(fg.global_model_.means_))


@pytest.mark.parametrize(("rows", "reason"), [(0, "no samples"), (1, "1 sample")])
def test_empty_and_single_sample_clients_are_excluded(iid_clients, rows: int, reason: str) -> None:
    tiny = iid_clients[0][:rows]
    with pytest.warns(ClientExclusionWarning, match=reason):
        fg = FedGenGMM(4, random_state=0).fit([tiny, *iid_clients[1:]])
    assert fg.client_records_[0].status == "excluded"
    assert fg.local_client_ids_ == [1, 2, 3]


def test_small_client_gets_fewer_components(iid_clients) -> None:
    small = iid_clients[0][:12]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClientExclusionWarning)
        fg = FedGenGMM(4, local_components=6, random_state=0).fit([small, *iid_clients[1:]])
    assert fg.local_models_[0].n_components == 2  # 12 rows // 5 per component
    assert "K reduced from 6 to 2" in fg.client_records_[0].reason


def test_too_few_usable_clients(iid_clients) -> None:
    with pytest.raises(FederationError, match=r"only 1 usable client\(s\), at least 2 required"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClientExclusionWarning)
            FedGenGMM(4, min_clients=2).fit([iid_clients[0], iid_clients[0][:0]])


def test_n_components_larger_than_the_synthetic_set_supports(iid_clients) -> None:
    with pytest.raises(ValueError, match=r"n_components=500 needs a synthetic set of at least 5000 rows"):
        FedGenGMM(500, local_components=2, synthetic_size=1000).fit(iid_clients)


@pytest.mark.parametrize(
    ("param", "value", "match"),
    [
        ("local_components", (5, 2), "1 <= min <= max"),
        ("local_components", "many", "int or a \\(min, max\\) pair"),
        ("covariance_type", "ful", "covariance_type must be one of"),
        ("synthetic_size", -1.0, "synthetic_size must be a positive"),
    ],
)
def test_bad_settings(iid_clients, param: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FedGenGMM(4, **{param: value}).fit(iid_clients)


def test_not_a_list_of_clients() -> None:
    with pytest.raises(ValueError, match="non-empty list of 2-D arrays"):
        FedGenGMM(2).fit(np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"client 0 must be a 2-D array"):
        FedGenGMM(2).fit([np.zeros(10)])


def test_union_rejects_mismatched_models() -> None:
    a = MixtureState.from_covariances(np.ones(1), np.zeros((1, 2)), np.ones((1, 2)), "diag")
    b = MixtureState.from_covariances(np.ones(1), np.zeros((1, 3)), np.ones((1, 3)), "diag")
    with pytest.raises(ValueError, match="disagree"):
        union_mixture([a, b], [1, 1])
