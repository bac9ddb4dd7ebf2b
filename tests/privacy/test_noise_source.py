"""Where DP noise comes from: each client's secret (the server cannot regenerate it), or an opt-in known seed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import RecordDict

from fedgmm.federated.private import (
    CLIENT_SECRET,
    REPRODUCIBLE_SEED,
    STORE_NOISE_SECRET,
    noise_generator,
)
from fedgmm.federated.spec import MethodSpec
from fedgmm.flower.store import StateStore
from fedgmm.inprocess import FederatedEM
from fedgmm.inprocess.estimators import FedGenGMM
from fedgmm.model_io import read_metadata

pytest.importorskip("dp_accounting")


def _clients(seed: int = 0, n: int = 200, d: int = 3, m: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.vstack([rng.normal(-2, 1, (n // 2, d)), rng.normal(2, 1, (n // 2, d))]) for _ in range(m)]


def _same(a: Any, b: Any) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("weights_", "means_", "covariances_"))


def test_fedgengmm_noise_is_secret_by_default(tmp_path: Any) -> None:
    clients = _clients()
    one = FedGenGMM(2, epsilon=1.0, clip_bound=6.0, random_state=0).fit(clients)
    two = FedGenGMM(2, epsilon=1.0, clip_bound=6.0, random_state=0).fit(clients)
    # Same data, same server seed: the noise differs, because the server's values do not fix it.
    assert not _same(one.global_model_, two.global_model_)
    assert not np.array_equal(one.local_models_[0].means_, two.local_models_[0].means_)
    assert one.privacy_ is not None and one.privacy_["noise_source"] == CLIENT_SECRET
    assert read_metadata(one.save(tmp_path / "m.npz"))["extra"]["privacy"]["noise_source"] == CLIENT_SECRET


def test_fedgengmm_with_a_noise_seed_is_reproducible_and_says_so(tmp_path: Any) -> None:
    clients = _clients()
    one = FedGenGMM(2, epsilon=1.0, clip_bound=6.0, random_state=0, dp_noise_seed=11).fit(clients)
    two = FedGenGMM(2, epsilon=1.0, clip_bound=6.0, random_state=0, dp_noise_seed=11).fit(clients)
    other = FedGenGMM(2, epsilon=1.0, clip_bound=6.0, random_state=0, dp_noise_seed=12).fit(clients)
    assert _same(one.global_model_, two.global_model_)
    assert not _same(one.global_model_, other.global_model_)
    assert one.privacy_ is not None and one.privacy_["noise_source"] == REPRODUCIBLE_SEED
    assert "known to the server" in REPRODUCIBLE_SEED
    assert read_metadata(one.save(tmp_path / "m.npz"))["extra"]["privacy"]["noise_source"] == REPRODUCIBLE_SEED


def test_federated_em_noise_is_secret_unless_seeded() -> None:
    rng = np.random.default_rng(0)
    clients = [rng.normal(size=(60, 2)) for _ in range(3)]
    kw: dict[str, Any] = {"n_components": 2, "epsilon": 8.0, "clip_bound": 3.0, "max_rounds": 2, "random_state": 0}
    one, two = FederatedEM(**kw).fit(clients), FederatedEM(**kw).fit(clients)
    assert not _same(one.global_model_, two.global_model_)
    assert one.privacy_ is not None and one.privacy_["noise_source"] == CLIENT_SECRET
    one, two = FederatedEM(**kw, dp_noise_seed=3).fit(clients), FederatedEM(**kw, dp_noise_seed=3).fit(clients)
    assert _same(one.global_model_, two.global_model_) and _same(one.init_model_, two.init_model_)
    assert one.privacy_ is not None and one.privacy_["noise_source"] == REPRODUCIBLE_SEED


@pytest.mark.parametrize("make_store", [dict, lambda: StateStore(RecordDict())], ids=["inprocess", "flower"])
def test_the_secret_is_drawn_once_and_kept_in_the_store(make_store: Any) -> None:
    store = make_store()
    first = noise_generator(store, None, 0, 1, 1, 7).normal(size=4)
    secret = store[STORE_NOISE_SECRET]
    assert isinstance(secret, str) and len(secret) == 32  # 128 bits, hex
    np.testing.assert_array_equal(noise_generator(store, None, 0, 1, 1, 7).normal(size=4), first)
    assert store[STORE_NOISE_SECRET] == secret
    # Another client (store) with the same server-known values draws other noise.
    assert not np.array_equal(noise_generator(make_store(), None, 0, 1, 1, 7).normal(size=4), first)
    # A known seed replaces the secret: the same noise in any store.
    seeded = noise_generator(store, 5, 0, 1, 1, 7).normal(size=4)
    np.testing.assert_array_equal(noise_generator(make_store(), 5, 0, 1, 1, 7).normal(size=4), seeded)


@pytest.mark.parametrize("bad", [-1, 1.5, True, 2**63])
def test_spec_rejects_a_bad_noise_seed(bad: Any) -> None:
    with pytest.raises(ValueError, match="dp_noise_seed"):
        MethodSpec("fedgengmm", epsilon=1.0, clip_bound=1.0, dp_noise_seed=bad)
