"""Save and load a Gaussian mixture as a plain, pickle-free, checksummed ``.npz`` file.

File format ``fedgmm-gmm``, version 1
-------------------------------------
A model file is an uncompressed NumPy ``.npz`` archive (a zip of ``.npy`` files,
written by :func:`numpy.savez`) with exactly these four entries, none of which
is a pickle or an object array:

``weights``
    float64, shape ``(K,)`` — mixing proportions, summing to one.
``means``
    float64, shape ``(K, d)``.
``covariances``
    float64, shape ``(K, d, d)`` for ``full``, ``(d, d)`` for ``tied``,
    ``(K, d)`` for ``diag``, ``(K,)`` for ``spherical``.
``metadata``
    uint8, shape ``(m,)`` — the UTF-8 bytes of a JSON object (strict JSON: no
    ``NaN``/``Infinity``) with the keys

    - ``format``: ``"fedgmm-gmm"``;
    - ``format_version``: ``1`` (an integer; readers refuse larger values);
    - ``covariance_type``: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``;
    - ``n_components`` (K) and ``n_features`` (d): integers;
    - ``dtype``: ``"float64"``;
    - ``fedgmm_version``: version string of the writer;
    - ``sha256``: hex SHA-256 digest of the bytes of ``weights``, ``means`` and
      ``covariances``, in that order, each as C-ordered little-endian float64
      (``a.astype("<f8").tobytes(order="C")``);
    - ``extra``: a JSON object of free user metadata (algorithm, training summary…).

Reading it without fedgmm::

    import hashlib, json
    import numpy as np

    with np.load("model.npz", allow_pickle=False) as z:
        meta = json.loads(z["metadata"].tobytes().decode("utf-8"))
        w, mu, cov = z["weights"], z["means"], z["covariances"]
    digest = hashlib.sha256(b"".join(a.astype("<f8").tobytes() for a in (w, mu, cov)))
    assert meta["format"] == "fedgmm-gmm" and digest.hexdigest() == meta["sha256"]

Loading never unpickles or executes anything: archives are opened with
``allow_pickle=False`` and entries that are not plain numeric arrays are refused.
The checksum detects corruption and accidental edits; it is not a signature (a
deliberate forger can recompute it), so authenticate files from untrusted
sources by other means.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedgmm._version import __version__
from fedgmm.exceptions import ModelFileError
from fedgmm.mixture import MixtureState, covariance_shape
from fedgmm.types import COVARIANCE_TYPES

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "array_checksum",
    "load_mixture",
    "read_metadata",
    "save_mixture",
]

FORMAT_NAME = "fedgmm-gmm"
FORMAT_VERSION = 1
ARRAY_NAMES: tuple[str, ...] = ("weights", "means", "covariances")
METADATA_NAME = "metadata"
#: Upper bound on the metadata entry; larger ones are refused before being read.
MAX_METADATA_BYTES = 64 * 1024 * 1024
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header / empty archive
# Errors the zip and npy readers raise on damaged input.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


def array_checksum(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> str:
    """Hex SHA-256 of the three parameter arrays as C-ordered little-endian float64 bytes.

    Parameters
    ----------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances : ndarray
        ``(K, d, d)`` full, ``(d, d)`` tied, ``(K, d)`` diag, ``(K,)`` spherical.

    Returns
    -------
    digest : str
        64 hexadecimal characters.
    """
    h = hashlib.sha256()
    for a in (weights, means, covariances):
        h.update(np.ascontiguousarray(a, dtype="<f8").tobytes(order="C"))
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    """Let numpy scalars and arrays through ``json.dumps``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _encode_metadata(metadata: Mapping[str, Any]) -> np.ndarray:
    try:
        text = json.dumps(metadata, allow_nan=False, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "extra must be JSON-serialisable (dicts with str keys, lists, str, finite numbers, "
            f"bool, None): {exc}"
        ) from exc
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def save_mixture(
    path: str | os.PathLike[str], state: MixtureState, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write a mixture to a ``fedgmm-gmm`` ``.npz`` file, atomically.

    The archive is written to a temporary file in the target directory, flushed to
    disk and moved over ``path`` with :func:`os.replace`, so readers see either the
    old file or the complete new one. ``path`` is used as given (no suffix is added).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its directory must exist.
    state : MixtureState
        The mixture; ``weights`` ``(K,)``, ``means`` ``(K, d)`` and ``covariances``
        (shape per covariance type) are stored as float64.
    extra : mapping, optional
        JSON-serialisable user metadata stored under ``metadata["extra"]``. NumPy
        scalars and arrays are converted to Python numbers and lists; NaN/inf are refused.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Raises
    ------
    TypeError
        If ``state`` is not a :class:`MixtureState` or ``extra`` is not a mapping.
    ValueError
        If ``extra`` is not JSON-serialisable.
    OSError
        If the file cannot be written.
    """
    if not isinstance(state, MixtureState):
        raise TypeError(f"state must be a fedgmm MixtureState, got {type(state).__name__}.")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(
            f"extra must be a dict of JSON-serialisable values, got {type(extra).__name__}."
        )
    arrays = {
        name: np.ascontiguousarray(a, dtype=np.float64) for name, a in state.to_arrays().items()
    }
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "covariance_type": state.covariance_type,
        "n_components": state.n_components,
        "n_features": state.n_features,
        "dtype": "float64",
        "fedgmm_version": __version__,
        "sha256": array_checksum(arrays["weights"], arrays["means"], arrays["covariances"]),
        "extra": dict(extra) if extra is not None else {},
    }
    encoded = _encode_metadata(metadata)

    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                weights=arrays["weights"],
                means=arrays["means"],
                covariances=arrays["covariances"],
                metadata=encoded,
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return target


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def _check_archive(path: str | os.PathLike[str]) -> Path:
    """Fail early, with a clear message, on a missing file or a non-zip file."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"model file {p} does not exist; check the path.")
    if not p.is_file():
        raise ModelFileError(f"model file {p} is not a regular file.")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {p}: {exc}") from exc
    if head not in _ZIP_MAGIC:
        raise ModelFileError(f"{p} is not a fedgmm model file (not an .npz archive).")
    if not zipfile.is_zipfile(p):
        raise ModelFileError(
            f"model file {p} is truncated or corrupted (its zip directory is unreadable); "
            "re-save or re-download it."
        )
    return p


def _entry_sizes(z: np.lib.npyio.NpzFile) -> dict[str, int]:
    assert z.zip is not None
    return {info.filename.removesuffix(".npy"): info.file_size for info in z.zip.infolist()}


def _read_entry(z: np.lib.npyio.NpzFile, name: str, p: Path, *, numeric: bool = True) -> np.ndarray:
    """Read one entry as a plain (numeric, unless told otherwise) array, wrapping every failure."""
    if name not in z.files:
        raise ModelFileError(
            f"model file {p} has no {name!r} entry (found {sorted(z.files)}); "
            "it was not written by fedgmm.save_mixture or is damaged."
        )
    try:
        value = z[name]
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ModelFileError(
                f"model file {p}: entry {name!r} is a pickled object array; refused without "
                "unpickling (fedgmm model files hold plain numeric arrays only)."
            ) from exc
        raise ModelFileError(f"model file {p}: entry {name!r} is unreadable ({exc}).") from exc
    except _READ_ERRORS as exc:
        raise ModelFileError(
            f"model file {p} is truncated or corrupted: entry {name!r} is unreadable ({exc}); "
            "re-save or re-download it."
        ) from exc
    if not isinstance(value, np.ndarray):
        raise ModelFileError(
            f"model file {p}: entry {name!r} is not a .npy array; refused (not a fedgmm model file)."
        )
    if value.dtype.hasobject or (numeric and value.dtype.kind not in "biuf"):
        raise ModelFileError(
            f"model file {p}: entry {name!r} has dtype {value.dtype}; expected plain numbers."
        )
    return value


def _parse_metadata(z: np.lib.npyio.NpzFile, p: Path) -> dict[str, Any]:
    sizes = _entry_sizes(z)
    if METADATA_NAME in sizes and sizes[METADATA_NAME] > MAX_METADATA_BYTES:
        raise ModelFileError(
            f"model file {p}: metadata entry is {sizes[METADATA_NAME]} bytes "
            f"(limit {MAX_METADATA_BYTES}); refused."
        )
    if METADATA_NAME not in z.files:
        raise ModelFileError(
            f"model file {p} has no 'metadata' entry; it is not a fedgmm model file "
            "(write models with fedgmm.model_io.save_mixture)."
        )
    raw = _read_entry(z, METADATA_NAME, p, numeric=False)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(
            f"model file {p}: metadata must be a 1-D uint8 array of UTF-8 JSON bytes, got "
            f"dtype {raw.dtype} and shape {raw.shape}."
        )
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"model file {p}: metadata is not valid UTF-8 JSON ({exc}).") from exc
    if not isinstance(meta, dict):
        raise ModelFileError(
            f"model file {p}: metadata must be a JSON object, got {type(meta).__name__}."
        )
    fmt = meta.get("format")
    if fmt != FORMAT_NAME:
        raise ModelFileError(
            f"{p} is not a fedgmm model file (metadata format is {fmt!r}, expected {FORMAT_NAME!r})."
        )
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"model file {p}: format_version must be a positive integer, got {version!r}."
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"model file {p} was written by a newer fedgmm (format_version {version}, writer "
            f"{meta.get('fedgmm_version', 'unknown')}); this fedgmm reads format_version "
            f"<= {FORMAT_VERSION}. Upgrade fedgmm to load it."
        )
    missing = [
        key
        for key in ("covariance_type", "n_components", "n_features", "dtype", "sha256")
        if key not in meta
    ]
    if missing:
        raise ModelFileError(f"model file {p}: metadata lacks the keys {missing}.")
    if meta["covariance_type"] not in COVARIANCE_TYPES:
        raise ModelFileError(
            f"model file {p}: covariance_type {meta['covariance_type']!r} is not one of "
            f"{list(COVARIANCE_TYPES)}."
        )
    for key in ("n_components", "n_features"):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelFileError(
                f"model file {p}: {key} must be a positive integer, got {value!r}."
            )
    if meta["dtype"] != "float64":
        raise ModelFileError(f"model file {p}: dtype {meta['dtype']!r} is not supported (float64).")
    if not isinstance(meta["sha256"], str):
        raise ModelFileError(f"model file {p}: sha256 must be a hex string.")
    if "extra" in meta and not isinstance(meta["extra"], dict):
        raise ModelFileError(f"model file {p}: extra must be a JSON object.")
    meta.setdefault("extra", {})
    return meta


def _open_npz(p: Path) -> np.lib.npyio.NpzFile:
    try:
        z = np.load(p, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise ModelFileError(
            f"model file {p} is truncated or corrupted ({exc}); re-save or re-download it."
        ) from exc
    if not isinstance(z, np.lib.npyio.NpzFile):  # pragma: no cover - guarded by the zip magic
        raise ModelFileError(f"{p} is not a fedgmm model file (not an .npz archive).")
    return z


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check only the metadata of a model file (the arrays are not loaded).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    metadata : dict
        The JSON metadata (``format``, ``format_version``, ``covariance_type``,
        ``n_components``, ``n_features``, ``dtype``, ``fedgmm_version``, ``sha256``, ``extra``).

    Raises
    ------
    ModelFileError
        If the file is missing, not an ``.npz`` archive, damaged, not ours or of a
        newer format version.
    """
    p = _check_archive(path)
    with _open_npz(p) as z:
        return _parse_metadata(z, p)


def load_mixture(path: str | os.PathLike[str]) -> tuple[MixtureState, dict[str, Any]]:
    """Load and fully validate a mixture written by :func:`save_mixture`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    state : MixtureState
        ``weights`` ``(K,)``, ``means`` ``(K, d)``, ``covariances`` ``(K, d, d)`` full,
        ``(d, d)`` tied, ``(K, d)`` diag or ``(K,)`` spherical; bit-identical to the saved ones.
    metadata : dict
        As returned by :func:`read_metadata`.

    Raises
    ------
    ModelFileError
        If the file is missing, not an ``.npz`` archive, truncated, contains a pickle,
        lacks an entry, has bad metadata, a newer format version, a checksum mismatch,
        shapes that disagree with the metadata, or invalid parameters (weights not
        summing to one, covariances not positive definite).
    """
    p = _check_archive(path)
    with _open_npz(p) as z:
        meta = _parse_metadata(z, p)
        cov_type = meta["covariance_type"]
        k, d = meta["n_components"], meta["n_features"]
        expected = {
            "weights": (k,),
            "means": (k, d),
            "covariances": covariance_shape(cov_type, k, d),
        }
        sizes = _entry_sizes(z)
        for name, shape in expected.items():
            # Refuse grossly oversized entries before reading them into memory.
            limit = 2 * 8 * int(np.prod(shape)) + (1 << 20)
            if sizes.get(name, 0) > limit:
                raise ModelFileError(
                    f"model file {p}: entry {name!r} is {sizes[name]} bytes, far more than the "
                    f"shape {shape} in the metadata implies; the file is corrupted or not ours."
                )
        arrays = {name: _read_entry(z, name, p) for name in ARRAY_NAMES}
    for name, shape in expected.items():
        arr = arrays[name]
        if arr.shape != shape:
            raise ModelFileError(
                f"model file {p}: {name} has shape {arr.shape} but the metadata "
                f"({cov_type}, n_components={k}, n_features={d}) implies {shape}."
            )
        if arr.dtype != np.float64:
            raise ModelFileError(f"model file {p}: {name} has dtype {arr.dtype}, expected float64.")
    digest = array_checksum(arrays["weights"], arrays["means"], arrays["covariances"])
    if not hmac.compare_digest(digest, meta["sha256"].lower()):
        raise ModelFileError(
            f"model file {p}: checksum mismatch (sha256 of the arrays is {digest}, the metadata "
            f"says {meta['sha256']}); the arrays were modified or corrupted after saving."
        )
    try:
        state = MixtureState.from_arrays(arrays, cov_type)
    except ValueError as exc:  # includes DegenerateCovarianceError
        raise ModelFileError(f"model file {p} holds invalid mixture parameters: {exc}") from exc
    return state, meta
