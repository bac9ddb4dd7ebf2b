"""The library agrees with itself and its messages say what happened: feature names, 1-row clients, ranges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedgmm.exceptions import ClientExclusionWarning, FederationError
from fedgmm.federated.local import fit_local_model
from fedgmm.federated.messages import CONFIG, decode_local_model, encode_local_model
from fedgmm.federated.spec import MethodSpec
from fedgmm.federated.transport import ClientRecord, require_clients
from fedgmm.inprocess import FederatedEM, FedGenGMM, run_inprocess

pd = pytest.importorskip("pandas")


def blobs(seed: int, n: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(size=(n // 2, 3)), rng.normal(size=(n // 2, 3)) + 6]


@pytest.mark.parametrize("make", [lambda: FedGenGMM(n_components=2, local_components=2, random_state=0),
                                  lambda: FederatedEM(n_components=2, max_rounds=2, random_state=0)])  # fmt: skip
def test_dataframes_with_different_columns_are_refused(make: object) -> None:
    a = pd.DataFrame(blobs(0), columns=["a", "b", "c"])
    b = pd.DataFrame(blobs(1), columns=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"client 1's columns differ.*another order"):
        make().fit([a, b[["c", "b", "a"]]])  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['x'\]"):
        make().fit([a, b.rename(columns={"c": "x"})])  # type: ignore[operator]
    model = make().fit([a, b])  # type: ignore[operator]
    assert list(model.feature_names_in_) == ["a", "b", "c"]


def test_federated_em_excludes_a_one_row_client_like_fedgengmm() -> None:
    clients = [blobs(0), blobs(1), blobs(2)[:1]]
    with pytest.warns(ClientExclusionWarning, match="client 2 excluded: client has 1 sample"):
        em = FederatedEM(n_components=2, max_rounds=3, random_state=0).fit(clients)
    record = em.client_records_[2]
    assert record is not None and record.status == "excluded" and "1 sample" in record.reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClientExclusionWarning)
        gen = FedGenGMM(n_components=2, local_components=2, random_state=0).fit(clients)
    assert gen.client_records_[2].status == "excluded"


def test_federated_em_says_a_range_of_k_is_fedgengmm_only() -> None:
    with pytest.raises(ValueError, match="FedGenGMM only"):
        FederatedEM(n_components=(2, 8)).fit([blobs(0), blobs(1)])  # type: ignore[arg-type]


def test_min_clients_not_met_says_how_many_answered() -> None:
    records = {f"client {i}": ClientRecord(f"client {i}", i, "ok", "", 100, 2) for i in range(3)}
    with pytest.raises(FederationError) as info:
        require_clients(3, 5, "FedGenGMM upload", records)
    message = str(info.value)
    assert "no client answered" not in message
    assert "only 3 usable client(s), at least 5 required" in message and "3 client(s) answered" in message
    with pytest.raises(FederationError, match="no client answered"):
        require_clients(0, 1, "FedGenGMM upload", {})


def test_federated_em_errors_do_not_blame_fedgengmm() -> None:
    spec = MethodSpec("fedem", n_components=2, local_components=2, max_rounds=2, min_clients=5)
    with pytest.raises(FederationError) as info:
        run_inprocess(spec, [blobs(0), blobs(1)], seed=0)
    assert "FedGenGMM" not in str(info.value) and "federated EM" in str(info.value)


def test_capped_bic_list_says_it_is_too_long_not_unequal() -> None:
    settings = MethodSpec("fedgengmm", n_components=2, local_components=2).local_settings()
    reply = fit_local_model(blobs(0), settings, client_id=0, seed=0)
    content = encode_local_model(reply)
    cfg = content[CONFIG]
    cfg["bic-k"] = list(range(1, 1202))
    cfg["bic-value"] = [1.0] * 1201
    with pytest.raises(ValueError) as info:
        decode_local_model(content, covariance_type="full")
    assert "equal length" not in str(info.value) and "1201" in str(info.value)
