"""DP wired through the spec, the client step, the wire format and the facades (small data)."""

from __future__ import annotations

import numpy as np
import pytest

from fedgmm.federated.local import LocalFitSettings
from fedgmm.federated.messages import LocalModelReply, decode_local_model, encode_local_model
from fedgmm.federated.preprocessing import transform_from_moments
from fedgmm.federated.private import (
    DP_LOCAL_COMPONENTS,
    INIT_LOCAL_COMPONENTS,
    INIT_SECOND_FRACTION,
    dp_local_settings,
    fit_private_local_model,
)
from fedgmm.federated.spec import MethodSpec
from fedgmm.inprocess.estimators import FedGenGMM
from fedgmm.inprocess.runner import run_inprocess
from fedgmm.model_io import read_metadata

pytest.importorskip("dp_accounting")


def _clients(seed: int = 0, n: int = 200, d: int = 3, m: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.vstack([rng.normal(-2, 1, (n // 2, d)), rng.normal(2, 1, (n // 2, d))]) for _ in range(m)]


@pytest.mark.parametrize(
    "kwargs", [{"epsilon": 0.0}, {"epsilon": -1.0}, {"epsilon": float("inf")}, {"delta": 0.0}, {"delta": 1.0},
               {"clip_bound": 0.0}, {"epsilon": True}],
)
def test_spec_rejects_bad_privacy(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"epsilon|delta|clip_bound"):
        MethodSpec("fedgengmm", **kwargs)


def test_spec_carries_privacy_to_local_settings() -> None:
    local = MethodSpec("fedgengmm", epsilon=2.0, delta=1e-6, clip_bound=5.0).local_settings()
    assert (local.epsilon, local.delta, local.clip_bound) == (2.0, 1e-6, 5.0)
    assert MethodSpec("fedgengmm").local_settings().epsilon is None


@pytest.mark.parametrize("epsilon", [1.0, 4.0])
def test_fedgengmm_spent_never_above_target(epsilon: float) -> None:
    clients = _clients()
    model = FedGenGMM(2, epsilon=epsilon, delta=1e-5, clip_bound=6.0, random_state=0).fit(clients)
    assert len(model.privacy_spent_) == len(model.local_client_ids_) == len(clients)
    for eps, delta in model.privacy_spent_:
        assert 0 < eps <= epsilon
        assert delta == 1e-5
    assert model.privacy_ is not None and model.privacy_["neighbours"] == "add/remove one row"
    assert np.isfinite(model.score(clients[0]))
    # The uploads' counts are the clients' noisy counts, not the true 200.
    counts = [r.n_samples for r in model.client_records_]
    assert all(c >= 1 for c in counts) and counts != [200] * len(clients)


def test_fedgengmm_without_a_bound_says_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"standardize or pca.*clip_bound"):
        FedGenGMM(2, epsilon=1.0, random_state=0).fit(_clients())


def test_non_private_run_reports_nothing() -> None:
    model = FedGenGMM(2, random_state=0).fit(_clients())
    assert model.privacy_spent_ == [] and model.privacy_ is None


def test_model_file_records_the_guarantee(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = FedGenGMM(2, epsilon=2.0, clip_bound=6.0, random_state=0).fit(_clients())
    path = model.save(tmp_path / "m.npz")
    priv = read_metadata(path)["extra"]["privacy"]
    assert priv["epsilon"] == 2.0 and priv["delta"] == 1e-5 and priv["mechanism"] == "gaussian"
    assert priv["scope"] == "per client" and len(priv["spent"]) == 4
    assert all(e <= 2.0 for e, _ in priv["spent"])


def test_upload_round_trips_the_spent_budget() -> None:
    X = _clients(m=1)[0]
    reply = fit_private_local_model(X, LocalFitSettings(k_min=2, k_max=2, epsilon=1.0, clip_bound=6.0), client_id=3, seed=0)
    assert reply.status == "ok" and reply.privacy is not None and reply.privacy[0] <= 1.0
    back = decode_local_model(encode_local_model(reply), covariance_type="full", n_features=3)
    assert back.privacy == reply.privacy and back.n_samples == reply.n_samples
    plain = LocalModelReply(0, "ok", 5, reply.state)
    assert decode_local_model(encode_local_model(plain), covariance_type="full").privacy is None


def test_clipping_scale_comes_from_the_transform() -> None:
    X = np.vstack(_clients(m=2))
    X[:, 0] *= 10.0
    std = transform_from_moments(X.shape[0], X.sum(0), X.T @ X, standardize=True)
    local = dp_local_settings(LocalFitSettings(epsilon=1.0), std.variances)
    np.testing.assert_allclose(local.feature_scale, np.sqrt(std.apply(X).var(axis=0, ddof=1)), rtol=1e-8)
    pca = transform_from_moments(X.shape[0], X.sum(0), X.T @ X, standardize=True, n_components=2)
    local = dp_local_settings(LocalFitSettings(epsilon=1.0), pca.variances)
    np.testing.assert_allclose(local.feature_scale, np.sqrt(pca.apply(X).var(axis=0, ddof=1)), rtol=1e-6)
    assert dp_local_settings(LocalFitSettings(), None).feature_scale == ()


def test_runner_with_preprocessing_needs_no_clip_bound() -> None:
    clients = _clients()
    X = np.vstack(clients)
    tf = transform_from_moments(X.shape[0], X.sum(0), X.T @ X, standardize=True)
    run = run_inprocess(MethodSpec("fedgengmm", n_components=2, epsilon=4.0), clients, seed=0, transform=tf)
    assert run.model is not None and np.isfinite(run.model.score(tf.apply(X)))
    assert len(run.local_models) == len(clients)
    assert all(m.n_components == DP_LOCAL_COMPONENTS for m in run.local_models)  # min(4 x 2, 8)


def test_private_local_fit_takes_the_callers_local_k_and_second_radius() -> None:
    # FedGenGMM's defaults and federated EM's initialisation constants reach the DP-EM fit;
    # the privacy spent does not depend on them (same releases, same calibration).
    X = _clients(n=400, m=1)[0]
    settings = LocalFitSettings(k_min=1, k_max=80, epsilon=2.0, clip_bound=6.0, dp_noise_seed=0)
    default = fit_private_local_model(X, settings, client_id=0, seed=0)
    init = fit_private_local_model(X, settings, client_id=0, seed=0, local_components=INIT_LOCAL_COMPONENTS,
                                   second_fraction=INIT_SECOND_FRACTION)
    assert default.state is not None and default.state.n_components == DP_LOCAL_COMPONENTS
    assert init.state is not None and init.state.n_components == INIT_LOCAL_COMPONENTS
    assert default.privacy is not None and init.privacy is not None
    assert default.privacy[0] == pytest.approx(init.privacy[0]) and default.privacy[0] <= 2.0


def test_study_model_table_takes_the_privacy_keys() -> None:
    from fedgmm.experiments.config import SPEC_KEYS, _model_config

    assert {"epsilon", "delta", "clip_bound"} <= set(SPEC_KEYS)
    spec = _model_config({"epsilon": 2, "delta": 1e-6, "clip_bound": 5.0}, "<test>").spec
    assert (spec.epsilon, spec.delta, spec.clip_bound) == (2, 1e-6, 5.0)
    with pytest.raises(ValueError, match="epsilon"):
        _model_config({"epsilon": -1.0}, "<test>")


def test_federated_em_with_epsilon_runs_and_the_hybrid_is_refused() -> None:
    from fedgmm.inprocess import FederatedEM

    rng = np.random.default_rng(0)
    clients = [rng.normal(size=(60, 2)) for _ in range(3)]
    model = FederatedEM(n_components=2, epsilon=8.0, clip_bound=3.0, max_rounds=3, random_state=0).fit(clients)
    assert len(model.privacy_spent_) == 3 and all(e <= 8.0 for e, _ in model.privacy_spent_)
    with pytest.raises(ValueError, match="hybrid"):
        FederatedEM(n_components=2, init="fedgengmm", epsilon=1.0, clip_bound=3.0, max_rounds=2).fit(clients)
