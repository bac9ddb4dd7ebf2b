"""Tests of fedgmm.model_io: round trips, the documented format, and every load error."""

from __future__ import annotations

import hashlib
import json
import pathlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgmm.exceptions import ModelFileError
from fedgmm.mixture import MixtureState
from fedgmm.model_io import FORMAT_VERSION, load_mixture, load_model, read_metadata, save_mixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def make_state(covariance_type: str, k: int = 3, d: int = 4, seed: int = 0) -> MixtureState:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, d))
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d))
        cov = a @ np.swapaxes(a, 1, 2) + d * np.eye(d)
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d))
        cov = a @ a.T + d * np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.5, 2.0, size=k)
    return MixtureState.from_covariances(weights, means, cov, covariance_type)  # type: ignore[arg-type]


def documented_checksum(*arrays: np.ndarray) -> str:
    """The recipe from the module docstring, independent of fedgmm."""
    return hashlib.sha256(
        b"".join(np.asarray(a).astype("<f8").tobytes() for a in arrays)
    ).hexdigest()


def metadata_for(arrays: dict[str, np.ndarray], covariance_type: str, /, **overrides: Any) -> dict:
    meta = {
        "format": "fedgmm-gmm",
        "format_version": FORMAT_VERSION,
        "covariance_type": covariance_type,
        "n_components": int(arrays["weights"].shape[0]),
        "n_features": int(arrays["means"].shape[1]),
        "dtype": "float64",
        "fedgmm_version": "test",
        "sha256": documented_checksum(arrays["weights"], arrays["means"], arrays["covariances"]),
        "extra": {},
    }
    meta.update(overrides)
    return meta


def write_raw(
    path: Path, arrays: dict[str, Any], meta: Any = None, *, metadata: Any = None
) -> Path:
    """Write an .npz by hand, as a third party (or an attacker) could."""
    entries = dict(arrays)
    if metadata is not None:
        entries["metadata"] = metadata
    elif meta is not None:
        entries["metadata"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **entries)
    return path


def good_arrays(covariance_type: str = "full") -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in make_state(covariance_type).to_arrays().items()}


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_bit_identical(tmp_path: Path, covariance_type: str) -> None:
    state = make_state(covariance_type)
    extra = {"algorithm": "fedgengmm", "rounds": 1, "loglik": -3.25, "clients": [10, 20]}
    out = save_mixture(tmp_path / "model.npz", state, extra=extra)
    assert out == tmp_path / "model.npz"
    loaded, meta = load_mixture(out)
    assert loaded.covariance_type == covariance_type
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        a, b = getattr(state, name), getattr(loaded, name)
        assert a.dtype == b.dtype == np.float64
        assert a.shape == b.shape
        assert a.tobytes() == b.tobytes(), name
    assert meta["format"] == "fedgmm-gmm"
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["covariance_type"] == covariance_type
    assert (meta["n_components"], meta["n_features"]) == (3, 4)
    assert meta["dtype"] == "float64"
    assert isinstance(meta["fedgmm_version"], str)
    assert meta["extra"] == extra
    assert read_metadata(out) == meta


def test_readable_with_plain_numpy_and_json(tmp_path: Path) -> None:
    state = make_state("diag")
    path = save_mixture(tmp_path / "m.npz", state)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["covariances", "means", "metadata", "weights"]
        meta = json.loads(z["metadata"].tobytes().decode("utf-8"))
        w, mu, cov = z["weights"], z["means"], z["covariances"]
    assert meta["sha256"] == documented_checksum(w, mu, cov)
    np.testing.assert_array_equal(cov, state.covariances)
    with zipfile.ZipFile(path) as zf:  # uncompressed, as np.savez writes
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())


def test_extra_numpy_values_and_defaults(tmp_path: Path) -> None:
    path = save_mixture(
        tmp_path / "m.npz",
        make_state("spherical"),
        extra={"n": np.int64(5), "x": np.float32(0.5), "v": np.arange(3)},
    )
    assert read_metadata(path)["extra"] == {"n": 5, "x": 0.5, "v": [0, 1, 2]}
    path2 = save_mixture(tmp_path / "m2.npz", make_state("spherical"))
    assert read_metadata(path2)["extra"] == {}


def test_save_is_atomic_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    save_mixture(path, make_state("full", seed=1))
    save_mixture(str(path), make_state("tied", seed=2))
    assert load_mixture(path)[0].covariance_type == "tied"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"], "no temporary file left behind"


def test_save_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_mixture(tmp_path / "m.npz", make_state("diag"), extra={"bad": float("nan")})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_mixture(tmp_path / "m.npz", make_state("diag"), extra={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_save_type_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="MixtureState"):
        save_mixture(tmp_path / "m.npz", good_arrays())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="extra"):
        save_mixture(tmp_path / "m.npz", make_state("diag"), extra=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        save_mixture(tmp_path / "no-such-dir" / "m.npz", make_state("diag"))


def test_hand_written_file_loads(tmp_path: Path) -> None:
    arrays = good_arrays("tied")
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "tied"))
    state, meta = load_mixture(path)
    np.testing.assert_array_equal(state.covariances, arrays["covariances"])
    assert meta["extra"] == {}


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_mixture(tmp_path / "nope.npz")
    with pytest.raises(ModelFileError, match="does not exist"):
        read_metadata(tmp_path / "nope.npz")
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_mixture(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"a,b,c\n1,2,3\n", bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)), b""],
    ids=["csv", "random-bytes", "empty"],
)
def test_not_an_npz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(
        ModelFileError, match=r"is not a fedgmm model file \(not an \.npz archive\)"
    ):
        load_mixture(path)


def test_plain_npy_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "model.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ModelFileError, match=r"not an .npz archive"):
        load_mixture(path)


def test_raw_pickle_file_never_unpickled(tmp_path: Path) -> None:
    import pickle

    canary = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(_Evil(canary)))
    with pytest.raises(ModelFileError, match=r"not an .npz archive"):
        load_mixture(path)
    assert not canary.exists()


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.1])
def test_truncated(tmp_path: Path, fraction: float) -> None:
    path = save_mixture(tmp_path / "m.npz", make_state("full"))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        load_mixture(path)


def test_corrupted_member_bytes(tmp_path: Path) -> None:
    # Flip bytes inside the stored data (not the zip directory): the zip CRC catches it.
    path = save_mixture(tmp_path / "m.npz", make_state("full"))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("means.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"truncated or corrupted|checksum"):
        load_mixture(path)


class _Evil:
    """Unpickling this creates the canary file: proof that a load executed code."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.canary,))


@pytest.mark.parametrize("entry", ["weights", "metadata"])
def test_pickled_object_array_refused_without_unpickling(tmp_path: Path, entry: str) -> None:
    canary = tmp_path / "pwned"
    arrays: dict[str, Any] = good_arrays()
    meta = metadata_for(arrays, "full")
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(canary)
    if entry == "metadata":
        path = write_raw(tmp_path / "m.npz", arrays, metadata=evil)
    else:
        arrays["weights"] = evil
        path = write_raw(tmp_path / "m.npz", arrays, meta)
    with pytest.raises(ModelFileError, match="pickled object array; refused without unpickling"):
        load_mixture(path)
    assert not canary.exists()


def test_non_npy_member_refused(tmp_path: Path) -> None:
    arrays = good_arrays()
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "full"))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("covariances", b"\x80\x04not an npy")
    with zipfile.ZipFile(path) as zf:  # rebuild without the real covariances.npy
        members = {i.filename: zf.read(i) for i in zf.infolist() if i.filename != "covariances.npy"}
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(ModelFileError, match=r"is not a .npy array"):
        load_mixture(path)


@pytest.mark.parametrize("missing", ["weights", "means", "covariances"])
def test_missing_array(tmp_path: Path, missing: str) -> None:
    arrays = good_arrays()
    meta = metadata_for(arrays, "full")
    del arrays[missing]
    path = write_raw(tmp_path / "m.npz", arrays, meta)
    with pytest.raises(ModelFileError, match=f"has no '{missing}' entry"):
        load_mixture(path)


def test_metadata_missing(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.npz", good_arrays())
    with pytest.raises(ModelFileError, match="has no 'metadata' entry"):
        load_mixture(path)
    with pytest.raises(ModelFileError, match="has no 'metadata' entry"):
        read_metadata(path)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (np.frombuffer(b"{not json", dtype=np.uint8), "not valid UTF-8 JSON"),
        (np.frombuffer(b"\xff\xfe\x00", dtype=np.uint8), "not valid UTF-8 JSON"),
        (np.frombuffer(b"[1, 2]", dtype=np.uint8), "must be a JSON object"),
        (np.array('{"format": "fedgmm-gmm"}'), "1-D uint8 array"),
        (np.zeros(3), "1-D uint8 array"),
    ],
    ids=["bad-json", "bad-utf8", "json-list", "unicode-0d", "float"],
)
def test_metadata_not_json(tmp_path: Path, metadata: np.ndarray, message: str) -> None:
    path = write_raw(tmp_path / "m.npz", good_arrays(), metadata=metadata)
    with pytest.raises(ModelFileError, match=message):
        load_mixture(path)


def test_wrong_format(tmp_path: Path) -> None:
    arrays = good_arrays()
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "full", format="other-gmm"))
    with pytest.raises(ModelFileError, match=r"is not a fedgmm model file .*'other-gmm'"):
        load_mixture(path)


def test_zip_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "doc.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("word/document.xml", "<xml/>")
    with pytest.raises(ModelFileError, match="no 'metadata' entry"):
        load_mixture(path)


def test_newer_format_version(tmp_path: Path) -> None:
    arrays = good_arrays()
    path = write_raw(
        tmp_path / "m.npz", arrays, metadata_for(arrays, "full", format_version=FORMAT_VERSION + 1)
    )
    with pytest.raises(ModelFileError, match=r"written by a newer fedgmm.*Upgrade fedgmm"):
        load_mixture(path)
    with pytest.raises(ModelFileError, match="newer fedgmm"):
        read_metadata(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"format_version": 0}, "format_version must be a positive integer"),
        ({"format_version": "1"}, "format_version must be a positive integer"),
        ({"covariance_type": "banded"}, "covariance_type 'banded' is not one of"),
        ({"n_components": -1}, "n_components must be a positive integer"),
        ({"n_features": 2.5}, "n_features must be a positive integer"),
        ({"dtype": "float32"}, "dtype 'float32' is not supported"),
        ({"extra": [1]}, "extra must be a JSON object"),
    ],
)
def test_bad_metadata_values(tmp_path: Path, overrides: dict, message: str) -> None:
    arrays = good_arrays()
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "full", **overrides))
    with pytest.raises(ModelFileError, match=message):
        load_mixture(path)


def test_metadata_missing_keys(tmp_path: Path) -> None:
    arrays = good_arrays()
    meta = metadata_for(arrays, "full")
    del meta["sha256"], meta["n_features"]
    path = write_raw(tmp_path / "m.npz", arrays, meta)
    with pytest.raises(ModelFileError, match=r"lacks the keys \['n_features', 'sha256'\]"):
        load_mixture(path)


def test_checksum_mismatch(tmp_path: Path) -> None:
    path = save_mixture(tmp_path / "m.npz", make_state("full"))
    with np.load(path, allow_pickle=False) as z:
        entries = {name: z[name] for name in z.files}
    entries["means"] = entries["means"].copy()
    entries["means"][0, 0] += 1e-12  # a tiny, plausible-looking edit
    with open(path, "wb") as fh:
        np.savez(fh, **entries)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_mixture(path)
    read_metadata(path)  # metadata alone is still readable


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_features": 5}, r"means has shape \(3, 4\) but the metadata"),
        ({"n_components": 2}, r"weights has shape \(3,\) but the metadata"),
        ({"covariance_type": "diag"}, r"covariances has shape \(3, 4, 4\) but the metadata"),
    ],
)
def test_shapes_inconsistent_with_metadata(tmp_path: Path, overrides: dict, message: str) -> None:
    arrays = good_arrays()
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "full", **overrides))
    with pytest.raises(ModelFileError, match=message):
        load_mixture(path)


def test_wrong_array_dtype(tmp_path: Path) -> None:
    arrays = good_arrays("spherical")
    arrays["weights"] = arrays["weights"].astype(np.float32)
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "spherical"))
    with pytest.raises(ModelFileError, match="weights has dtype float32, expected float64"):
        load_mixture(path)


def test_oversized_entry_refused_before_reading(tmp_path: Path) -> None:
    arrays = good_arrays("spherical")
    meta = metadata_for(arrays, "spherical")
    arrays["means"] = np.zeros((3, 100_000))
    path = write_raw(tmp_path / "m.npz", arrays, meta)
    with pytest.raises(ModelFileError, match="far more than the shape"):
        load_mixture(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.__setitem__("weights", a["weights"] * 2.0), "weights must sum to one"),
        (lambda a: a.__setitem__("weights", np.array([1.5, -0.25, -0.25])), "non-negative"),
        (lambda a: a["covariances"].__setitem__((0, 0, 0), -50.0), "ill-defined covariance"),
        (lambda a: a["covariances"].__setitem__((1, 0, 1), 99.0), "symmetric"),
        (lambda a: a["means"].__setitem__((0, 0), np.nan), "NaN"),
    ],
    ids=["weights-sum", "negative-weight", "not-pd", "asymmetric", "nan-mean"],
)
def test_invalid_parameters_with_valid_checksum(tmp_path: Path, mutate: Any, message: str) -> None:
    arrays = good_arrays("full")
    mutate(arrays)
    path = write_raw(tmp_path / "bad-model.npz", arrays, metadata_for(arrays, "full"))
    with pytest.raises(
        ModelFileError, match=rf"bad-model\.npz holds invalid mixture parameters: .*{message}"
    ):
        load_mixture(path)
    assert read_metadata(path)["format"] == "fedgmm-gmm"


def test_model_file_error_is_value_error() -> None:
    assert issubclass(ModelFileError, ValueError)


# --------------------------------------------------------------------------- limits (issue 12)


def test_declared_components_capped(tmp_path: Path) -> None:
    arrays = good_arrays("spherical")
    meta = metadata_for(arrays, "spherical", n_components=25_000_000)
    path = write_raw(tmp_path / "m.npz", arrays, meta)
    with pytest.raises(
        ModelFileError, match=r"n_components = 25000000 exceeds the limit of 100000"
    ):
        load_mixture(path)
    with pytest.raises(ModelFileError, match="exceeds the limit"):
        read_metadata(path)


def test_declared_total_bytes_capped_before_reading(tmp_path: Path) -> None:
    arrays = good_arrays("full")
    path = write_raw(
        tmp_path / "m.npz", arrays, metadata_for(arrays, "full", n_components=2000, n_features=2000)
    )
    with pytest.raises(
        ModelFileError, match=r"declares 64,032,016,000 bytes of arrays .*max_bytes"
    ):
        load_mixture(path)
    ok = save_mixture(tmp_path / "ok.npz", make_state("full"))
    with pytest.raises(ModelFileError, match="more than the limit of 100"):
        load_mixture(ok, max_bytes=100)
    assert load_mixture(ok, max_bytes=10_000)[0].n_components == 3


def _npy_with_header(shape: tuple[int, ...], data: bytes, descr: str = "<f8") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + data


def test_npy_header_shape_checked_before_allocating(tmp_path: Path) -> None:
    import tracemalloc

    arrays = good_arrays("full")
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "full"))
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    # A small entry whose header claims 1.6 GB: nothing of that size may be allocated.
    members["weights.npy"] = _npy_with_header((200_000_000,), b"\0" * 24)
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    tracemalloc.start()
    try:
        with pytest.raises(
            ModelFileError, match=r"weights has shape \(200000000,\) but the metadata"
        ):
            load_mixture(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def test_entry_shorter_than_its_header(tmp_path: Path) -> None:
    arrays = good_arrays("spherical")
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "spherical"))
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members["weights.npy"] = _npy_with_header((3,), b"\0" * 16)
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(ModelFileError, match="holds 16 data bytes, its header declares 24"):
        load_mixture(path)


@pytest.mark.parametrize("depth", [100_000, 40])
def test_deeply_nested_metadata(tmp_path: Path, depth: int) -> None:
    arrays = good_arrays("diag")
    text = json.dumps(metadata_for(arrays, "diag")).replace(
        '"extra": {}', '"extra": {"x": ' + "[" * depth + "]" * depth + "}"
    )
    path = write_raw(tmp_path / "m.npz", arrays, metadata=np.frombuffer(text.encode(), np.uint8))
    with pytest.raises(ModelFileError, match=r"nested (too|more than 32 levels) deep"):
        load_mixture(path)
    with pytest.raises(ModelFileError, match="nested"):
        read_metadata(path)


def test_save_refuses_metadata_it_could_not_read(tmp_path: Path) -> None:
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than"):
        save_mixture(tmp_path / "m.npz", make_state("diag"), extra={"x": deep})
    very_deep: Any = []
    for _ in range(100_000):
        very_deep = [very_deep]
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_mixture(tmp_path / "m.npz", make_state("diag"), extra={"x": very_deep})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_tokens_refused(tmp_path: Path, token: str) -> None:
    arrays = good_arrays("diag")
    text = json.dumps(metadata_for(arrays, "diag")).replace(
        '"extra": {}', f'"extra": {{"x": {token}}}'
    )
    assert token in text
    path = write_raw(tmp_path / "m.npz", arrays, metadata=np.frombuffer(text.encode(), np.uint8))
    with pytest.raises(ModelFileError, match=f"non-JSON number {token}; strict JSON"):
        load_mixture(path)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_big_endian_and_fortran_arrays_load_native(tmp_path: Path, covariance_type: str) -> None:
    arrays = good_arrays(covariance_type)
    meta = metadata_for(arrays, covariance_type)
    swapped = {k: np.asfortranarray(a.astype(">f8")) for k, a in arrays.items()}
    path = write_raw(tmp_path / "m.npz", swapped, meta)
    state, _ = load_mixture(path)
    for name in ("weights", "means", "covariances"):
        got = getattr(state, name)
        assert got.dtype == np.dtype(np.float64) and got.dtype.isnative
        assert got.tobytes() == arrays[name].tobytes()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_file_mode_honours_umask(tmp_path: Path, umask: int) -> None:
    import os

    old = os.umask(umask)
    try:
        path = save_mixture(tmp_path / "m.npz", make_state("diag"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------- feature names and transform


FIXTURE = Path(__file__).parent / "data" / "model-format-v1.npz"


def test_format_version_1_file_still_loads() -> None:
    # Written by format_version 1 code (commit 167813b) from the recipe below.
    rng = np.random.default_rng(12)
    k, d = 2, 3
    means = rng.normal(size=(k, d))
    a = rng.normal(size=(k, d, d))
    cov = a @ np.swapaxes(a, 1, 2) + d * np.eye(d)
    expected = MixtureState.from_covariances(np.array([0.25, 0.75]), means, cov, "full")
    model = load_model(FIXTURE)
    assert model.metadata["format_version"] == 1
    assert model.feature_names is None and model.transform is None and model.transform_info is None
    assert model.metadata["extra"]["algorithm"] == "fedgengmm"
    for name in ("weights", "means", "covariances"):
        assert getattr(model.state, name).tobytes() == getattr(expected, name).tobytes()


def test_feature_names_round_trip(tmp_path: Path) -> None:
    path = save_mixture(tmp_path / "m.npz", make_state("diag"), feature_names=["a", "b", "c", "d"])
    model = load_model(path)
    assert model.feature_names == ["a", "b", "c", "d"]
    assert model.metadata["format_version"] == FORMAT_VERSION == 2
    assert read_metadata(path)["feature_names"] == ["a", "b", "c", "d"]
    assert load_model(save_mixture(tmp_path / "n.npz", make_state("diag"))).feature_names is None


@pytest.mark.parametrize(
    ("names", "error", "message"),
    [
        (["a", "b", "c"], ValueError, "has 3 name"),
        (["a", "b", "a", "c"], ValueError, r"repeated: \['a'\]"),
        (["a", "b", "c", 4], TypeError, "must all be str"),
        ("abcd", TypeError, "list of str"),
    ],
)
def test_feature_names_checked_on_save(
    tmp_path: Path, names: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        save_mixture(tmp_path / "m.npz", make_state("diag"), feature_names=names)
    assert list(tmp_path.iterdir()) == []


def test_bad_feature_names_in_file(tmp_path: Path) -> None:
    arrays = good_arrays("diag")
    path = write_raw(
        tmp_path / "m.npz", arrays, metadata_for(arrays, "diag", feature_names=["a", "a", "b", "c"])
    )
    with pytest.raises(ModelFileError, match="feature_names must be a list of 4 distinct strings"):
        load_mixture(path)


def affine(d_in: int = 5, d: int = 4, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "mean": rng.normal(size=d_in),
        "matrix": rng.normal(size=(d_in, d)),
        "explained_variance_ratio": rng.dirichlet(np.ones(d)),
    }


def test_transform_round_trip(tmp_path: Path) -> None:
    tf = affine()
    info = {"kind": "affine", "method": "pca", "n_samples": 120}
    path = save_mixture(
        tmp_path / "m.npz", make_state("full"), transform=tf, transform_info=info,
        feature_names=["v", "w", "x", "y", "z"],
    )  # fmt: skip
    model = load_model(path)
    assert model.transform is not None and set(model.transform) == set(tf)
    for name, a in tf.items():
        assert model.transform[name].dtype == np.float64
        assert model.transform[name].tobytes() == a.tobytes()
    assert model.transform_info == info
    assert model.feature_names == ["v", "w", "x", "y", "z"]
    with np.load(path, allow_pickle=False) as z:  # still plain arrays for third parties
        assert "transform_matrix" in z.files and z["transform_mean"].shape == (5,)
    _, meta = load_mixture(path)
    assert meta["transform"]["arrays"] == {
        "explained_variance_ratio": [4],
        "matrix": [5, 4],
        "mean": [5],
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"transform": {**affine(), "matrix": np.ones((5, 3))}, "transform_info": {"kind": "affine"}},
         ValueError, r"matrix \(d_in, 4\)"),
        ({"transform": {"mean": np.full(5, np.nan)}}, ValueError, "finite"),
        ({"transform": {"Bad-Name": np.ones(2)}}, ValueError, "lower-case"),
        ({"transform": {}}, TypeError, "non-empty"),
        ({"transform_info": {"kind": "affine"}}, ValueError, "without transform"),
        ({"transform": affine(), "transform_info": {"kind": "affine"}, "feature_names": list("abcd")},
         ValueError, "has 4 name"),
    ],
)  # fmt: skip
def test_transform_checked_on_save(tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        save_mixture(tmp_path / "m.npz", make_state("full"), **kwargs)


def test_tampered_transform_refused(tmp_path: Path) -> None:
    path = save_mixture(
        tmp_path / "m.npz",
        make_state("full"),
        transform=affine(),
        transform_info={"kind": "affine"},
    )
    with np.load(path, allow_pickle=False) as z:
        entries = {name: z[name] for name in z.files}
    entries["transform_mean"] = entries["transform_mean"] + 1.0
    with open(path, "wb") as fh:
        np.savez(fh, **entries)
    with pytest.raises(ModelFileError, match="transform checksum mismatch"):
        load_model(path)
    del entries["transform_matrix"]
    with open(path, "wb") as fh:
        np.savez(fh, **entries)
    with pytest.raises(ModelFileError, match="has no 'transform_matrix' entry"):
        load_model(path)


def test_negative_npy_shape_refused(tmp_path: Path) -> None:
    arrays = good_arrays("spherical")
    path = write_raw(tmp_path / "m.npz", arrays, metadata_for(arrays, "spherical"))
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members["metadata.npy"] = _npy_with_header((-1,), members["metadata.npy"][128:], descr="|u1")
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(ModelFileError, match=r"'metadata' declares the shape \(-1,\); refused"):
        read_metadata(path)


def test_compressed_bomb_refused_before_reading(tmp_path: Path) -> None:
    import tracemalloc

    k, d = 100_000, 10
    arrays = {"weights": np.zeros(k), "means": np.zeros((k, d)), "covariances": np.zeros((k, d))}
    meta = metadata_for(arrays, "diag")
    path = tmp_path / "m.npz"
    with open(path, "wb") as fh:
        np.savez_compressed(
            fh,
            allow_pickle=False,
            **arrays,
            metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        )
    assert path.stat().st_size < 200_000  # 16.8 MB of zeros
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=r"would expand from .* bytes \(more than 50x"):
            load_mixture(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_compressed_real_model_loads(tmp_path: Path) -> None:
    arrays = good_arrays("full")
    path = tmp_path / "m.npz"
    meta = metadata_for(arrays, "full")
    with open(path, "wb") as fh:
        np.savez_compressed(
            fh,
            allow_pickle=False,
            **arrays,
            metadata=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        )
    state, _ = load_mixture(path)
    assert state.means.tobytes() == arrays["means"].tobytes()


def test_estimator_save_load_keeps_dataframe_feature_names(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    from fedgmm.gaussian_mixture import GaussianMixture

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    fitted = GaussianMixture(n_components=2, random_state=0).fit(df)
    path = fitted.save(tmp_path / "m.npz")
    assert load_model(path).feature_names == ["a", "b", "c"]
    loaded = GaussianMixture.load(path)
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.score_samples(df), fitted.score_samples(df))
    with pytest.raises(ValueError, match="same order"):
        loaded.score_samples(df[["c", "b", "a"]])
    plain = GaussianMixture(n_components=2, random_state=0).fit(df.to_numpy())
    assert load_model(plain.save(tmp_path / "p.npz")).feature_names is None
