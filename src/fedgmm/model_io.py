"""Save and load a Gaussian mixture as a plain, pickle-free, checksummed ``.npz`` file.

File format ``fedgmm-gmm``, version 2
-------------------------------------
A model file is an uncompressed NumPy ``.npz`` archive (a zip of ``.npy`` files,
written by :func:`numpy.savez`) whose entries are plain numeric arrays, never a
pickle or an object array:

``weights``
    float64, shape ``(K,)`` — mixing proportions, summing to one.
``means``
    float64, shape ``(K, d)``.
``covariances``
    float64, shape ``(K, d, d)`` for ``full``, ``(d, d)`` for ``tied``,
    ``(K, d)`` for ``diag``, ``(K,)`` for ``spherical``.
``transform_<name>`` (optional)
    float64 arrays of the preprocessing transform, one per name listed in
    ``metadata["transform"]["arrays"]``.
``metadata``
    uint8, shape ``(m,)`` — the UTF-8 bytes of a JSON object (strict JSON: no
    ``NaN``/``Infinity``; at most :data:`MAX_JSON_DEPTH` levels of nesting) with the keys

    - ``format``: ``"fedgmm-gmm"``;
    - ``format_version``: ``2`` (an integer; readers refuse larger values);
    - ``covariance_type``: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``;
    - ``n_components`` (K) and ``n_features`` (d): integers, at most
      :data:`MAX_COMPONENTS` and :data:`MAX_FEATURES`;
    - ``dtype``: ``"float64"``;
    - ``fedgmm_version``: version string of the writer;
    - ``sha256``: hex SHA-256 digest of the bytes of ``weights``, ``means`` and
      ``covariances``, in that order, each as C-ordered little-endian float64
      (``a.astype("<f8").tobytes(order="C")``);
    - ``extra``: a JSON object of free user metadata (algorithm, training summary…);
    - ``feature_names`` (version 2, optional): ``null`` or a list of distinct strings
      naming the columns of the data the model is applied to — the input of the
      transform when one is stored, else the model's ``d`` features;
    - ``transform`` (version 2, optional): ``null`` or an object
      ``{"arrays": {name: shape, ...}, "info": {...}, "sha256": hex}`` describing the
      preprocessing the model expects: ``arrays`` gives the shape of each
      ``transform_<name>`` entry, ``sha256`` digests those arrays as above, in sorted
      name order, and ``info`` is free JSON. fedgmm's own transform has
      ``info["kind"] == "affine"`` and arrays ``mean`` ``(d_in,)`` and ``matrix``
      ``(d_in, d)``: rows ``x`` are mapped to ``(x - mean) @ matrix`` before scoring.

Version 1 files (the same without ``feature_names``, ``transform`` and the
``transform_*`` entries) still load.

Reading it without fedgmm::

    import hashlib, json
    import numpy as np

    with np.load("model.npz", allow_pickle=False) as z:
        meta = json.loads(z["metadata"].tobytes().decode("utf-8"))
        w, mu, cov = z["weights"], z["means"], z["covariances"]
    digest = hashlib.sha256(b"".join(a.astype("<f8").tobytes() for a in (w, mu, cov)))
    assert meta["format"] == "fedgmm-gmm" and digest.hexdigest() == meta["sha256"]

Loading never unpickles or executes anything, and never allocates more than the
metadata declares: each ``.npy`` header is read and checked (dtype, shape) against
the metadata before its data, declared sizes are capped (:data:`MAX_COMPONENTS`,
:data:`MAX_FEATURES`, :data:`MAX_ARRAY_BYTES` in all), and float64 arrays of either
byte order are accepted and returned in native order. The checksum detects corruption
and accidental edits; it is not a signature (a deliberate forger can recompute it), so
authenticate files from untrusted sources by other means. Files are written with the
permissions of the process's umask, atomically (temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fedgmm._version import __version__
from fedgmm.exceptions import ModelFileError
from fedgmm.mixture import MixtureState, covariance_shape
from fedgmm.types import COVARIANCE_TYPES

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_ARRAY_BYTES",
    "MAX_COMPONENTS",
    "MAX_FEATURES",
    "MAX_JSON_DEPTH",
    "ModelFile",
    "array_checksum",
    "load_mixture",
    "load_model",
    "read_metadata",
    "save_mixture",
]

FORMAT_NAME = "fedgmm-gmm"
FORMAT_VERSION = 2
ARRAY_NAMES: tuple[str, ...] = ("weights", "means", "covariances")
METADATA_NAME = "metadata"
TRANSFORM_PREFIX = "transform_"
#: Upper bound on the metadata entry; larger ones are refused before being read.
MAX_METADATA_BYTES = 16 * 1024 * 1024
#: Largest ``n_components`` a model file may declare.
MAX_COMPONENTS = 100_000
#: Largest ``n_features`` (and transform input width) a model file may declare.
MAX_FEATURES = 100_000
#: Default cap on the bytes of all arrays a model file declares (``load_*(max_bytes=...)``).
MAX_ARRAY_BYTES = 1 << 30
#: Deepest nesting of JSON objects/lists accepted in the metadata.
MAX_JSON_DEPTH = 32
#: Most arrays a stored transform may hold.
MAX_TRANSFORM_ARRAYS = 8
#: Largest overall expansion of compressed array entries (float64 parameters barely compress).
MAX_COMPRESSION_RATIO = 50
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header / empty archive
# Errors the zip and npy readers raise on damaged input.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)
_HEADER_SLACK = 1 << 16  # room for an .npy header beyond the array bytes


@dataclass(frozen=True)
class ModelFile:
    """Everything a model file holds.

    Attributes
    ----------
    state : MixtureState
        The mixture, bit-identical to the saved one (native-order float64).
    metadata : dict
        The JSON metadata (see the module docstring).
    feature_names : list of str or None
        Names of the columns the model is applied to (the transform's input, when a
        transform is stored); None when the file records none (all version 1 files).
    transform : dict of str to ndarray, or None
        The preprocessing arrays (float64, native order), e.g. ``mean`` ``(d_in,)`` and
        ``matrix`` ``(d_in, d)``; None when none was stored.
    transform_info : dict or None
        The transform's JSON description (``kind``, …); None without a transform.
    """

    state: MixtureState
    metadata: dict[str, Any]
    feature_names: list[str] | None = None
    transform: dict[str, np.ndarray] | None = None
    transform_info: dict[str, Any] | None = None


def array_checksum(*arrays: np.ndarray) -> str:
    """Hex SHA-256 of arrays as C-ordered little-endian float64 bytes, in the order given.

    Parameters
    ----------
    *arrays : ndarray
        For the mixture: ``weights`` ``(K,)``, ``means`` ``(K, d)`` and ``covariances``
        (``(K, d, d)`` full, ``(d, d)`` tied, ``(K, d)`` diag, ``(K,)`` spherical).

    Returns
    -------
    digest : str
        64 hexadecimal characters.
    """
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype="<f8").tobytes(order="C"))
    return h.hexdigest()


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    """Let numpy scalars and arrays through ``json.dumps``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` and ``{}`` are 1)."""
    depth, stack = 0, [(obj, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            level += 1
            depth = max(depth, level)
            if depth > MAX_JSON_DEPTH:
                return depth
            stack.extend((v, level) for v in value)
    return depth


def _encode_metadata(metadata: Mapping[str, Any]) -> np.ndarray:
    try:
        text = json.dumps(metadata, allow_nan=False, default=_json_default, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(
            "extra must be JSON-serialisable (dicts with str keys, lists, str, finite numbers, "
            f"bool, None): {exc}"
        ) from exc
    if _json_depth(json.loads(text)) > MAX_JSON_DEPTH:
        raise ValueError(
            f"extra is nested more than {MAX_JSON_DEPTH - 2} levels deep; model files allow "
            f"{MAX_JSON_DEPTH} levels of JSON in all. Flatten it."
        )
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def _check_feature_names(names: Any, width: int) -> list[str]:
    if isinstance(names, str | bytes) or not isinstance(names, Sequence | np.ndarray):
        raise TypeError(f"feature_names must be a list of str, got {type(names).__name__}.")
    out = list(names)
    bad = [n for n in out if not isinstance(n, str)]
    if bad:
        raise TypeError(f"feature_names must all be str, got {bad[0]!r} ({type(bad[0]).__name__}).")
    if len(out) != width:
        raise ValueError(
            f"feature_names has {len(out)} name(s) but the model's input has {width} feature(s)."
        )
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ValueError(f"feature_names must be distinct; repeated: {dupes}.")
    return out


def _check_transform(
    transform: Mapping[str, Any], info: Mapping[str, Any] | None, n_features: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Validate the transform arrays on save; return them as C-ordered float64."""
    if not isinstance(transform, Mapping) or not transform:
        raise TypeError("transform must be a non-empty dict of name -> float array.")
    if len(transform) > MAX_TRANSFORM_ARRAYS:
        raise ValueError(
            f"transform holds {len(transform)} arrays (at most {MAX_TRANSFORM_ARRAYS})."
        )
    arrays: dict[str, np.ndarray] = {}
    for name, value in transform.items():
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"transform array name {name!r} must be lower-case letters, digits and '_' "
                "(starting with a letter, at most 32 characters)."
            )
        a = np.ascontiguousarray(value, dtype=np.float64)
        if a.ndim > 2 or not np.all(np.isfinite(a)):
            raise ValueError(f"transform[{name!r}] must be a finite array of at most 2 dimensions.")
        arrays[name] = a
    if info is not None and not isinstance(info, Mapping):
        raise TypeError(f"transform_info must be a dict, got {type(info).__name__}.")
    info_out = dict(info) if info is not None else {}
    _check_affine(arrays, info_out, n_features, error=ValueError)
    return arrays, info_out


def _check_affine(
    arrays: Mapping[str, np.ndarray] | Mapping[str, tuple[int, ...]],
    info: Mapping[str, Any],
    n_features: int,
    *,
    error: type[Exception],
    where: str = "",
) -> int | None:
    """For ``kind == "affine"``: ``mean`` ``(d_in,)`` and ``matrix`` ``(d_in, d)``; return d_in."""
    if info.get("kind") != "affine":
        return None
    shapes = {k: tuple(getattr(v, "shape", v)) for k, v in arrays.items()}
    mean, matrix = shapes.get("mean"), shapes.get("matrix")
    if mean is None or matrix is None or len(mean) != 1 or matrix != (mean[0], n_features):
        raise error(
            f"{where}an affine transform needs arrays mean (d_in,) and matrix (d_in, {n_features}) "
            f"(the model has {n_features} features), got {shapes}."
        )
    return int(mean[0])


def _umask() -> int:
    """The process's umask, without changing it when /proc tells it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_mixture(
    path: str | os.PathLike[str],
    state: MixtureState,
    *,
    extra: Mapping[str, Any] | None = None,
    feature_names: Sequence[str] | None = None,
    transform: Mapping[str, Any] | None = None,
    transform_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a mixture to a ``fedgmm-gmm`` ``.npz`` file, atomically.

    The archive is written to a temporary file in the target directory, flushed to
    disk, given the permissions ``0o666 & ~umask`` (as :func:`open` would) and moved
    over ``path`` with :func:`os.replace`, so readers see either the old file or the
    complete new one. ``path`` is used as given (no suffix is added).

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
    feature_names : sequence of str, optional
        Distinct names of the input columns (CSV header, DataFrame columns): ``d_in`` of
        them with an affine transform, else ``d``.
    transform : mapping of str to array_like, optional
        The preprocessing arrays (finite, at most 2-D, stored as float64 entries
        ``transform_<name>``), e.g. ``{"mean": (d_in,), "matrix": (d_in, d)}``.
    transform_info : mapping, optional
        JSON description of the transform; with ``{"kind": "affine"}`` the arrays must be
        ``mean`` ``(d_in,)`` and ``matrix`` ``(d_in, d)``. Only with ``transform``.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Raises
    ------
    TypeError
        If ``state`` is not a :class:`MixtureState`, ``extra`` or ``transform`` is not a
        mapping, or ``feature_names`` is not a list of str.
    ValueError
        If ``extra`` is not JSON-serialisable or too deeply nested, K or d exceed the
        format's caps, feature names are repeated or of the wrong count, or the
        transform's arrays are not finite or do not fit the model.
    OSError
        If the file cannot be written.
    """
    if not isinstance(state, MixtureState):
        raise TypeError(f"state must be a fedgmm MixtureState, got {type(state).__name__}.")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(
            f"extra must be a dict of JSON-serialisable values, got {type(extra).__name__}."
        )
    if state.n_components > MAX_COMPONENTS or state.n_features > MAX_FEATURES:
        raise ValueError(
            f"model files hold at most {MAX_COMPONENTS} components and {MAX_FEATURES} features, "
            f"got {state.n_components} and {state.n_features}."
        )
    if transform_info is not None and transform is None:
        raise ValueError("transform_info given without transform.")
    arrays = {
        name: np.ascontiguousarray(a, dtype=np.float64) for name, a in state.to_arrays().items()
    }
    tf_arrays: dict[str, np.ndarray] = {}
    tf_meta: dict[str, Any] | None = None
    width = state.n_features
    if transform is not None:
        tf_arrays, tf_info = _check_transform(transform, transform_info, state.n_features)
        width = _check_affine(tf_arrays, tf_info, state.n_features, error=ValueError) or width
        if width > MAX_FEATURES:
            raise ValueError(
                f"the transform's input has {width} features (at most {MAX_FEATURES})."
            )
        tf_meta = {
            "arrays": {k: list(a.shape) for k, a in sorted(tf_arrays.items())},
            "info": tf_info,
            "sha256": array_checksum(*(a for _, a in sorted(tf_arrays.items()))),
        }
    names = None if feature_names is None else _check_feature_names(feature_names, width)
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
        "feature_names": names,
        "transform": tf_meta,
    }
    encoded = _encode_metadata(metadata)
    entries = {**arrays, **{TRANSFORM_PREFIX + k: a for k, a in tf_arrays.items()}}

    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, allow_pickle=False, **entries, metadata=encoded)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())
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


@contextlib.contextmanager
def _open_zip(p: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(p)
    except _READ_ERRORS as exc:
        raise ModelFileError(
            f"model file {p} is truncated or corrupted ({exc}); re-save or re-download it."
        ) from exc
    with zf:
        yield zf


def _corrupted(p: Path, name: str, exc: BaseException) -> ModelFileError:
    return ModelFileError(
        f"model file {p} is truncated or corrupted: entry {name!r} is unreadable ({exc}); "
        "re-save or re-download it."
    )


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype[Any]


def _member(zf: zipfile.ZipFile, name: str, p: Path) -> zipfile.ZipInfo:
    names = zf.namelist()
    if f"{name}.npy" in names:
        return zf.getinfo(f"{name}.npy")
    if name in names:
        raise ModelFileError(
            f"model file {p}: entry {name!r} is not a .npy array; refused (not a fedgmm model file)."
        )
    found = sorted(n.removesuffix(".npy") for n in names)
    raise ModelFileError(
        f"model file {p} has no {name!r} entry (found {found}); "
        "it was not written by fedgmm.save_mixture or is damaged."
    )


def _read_header(fh: IO[bytes], name: str, p: Path) -> _Header:
    """Parse an ``.npy`` header (never unpickles: object dtypes are only named)."""
    try:
        version = np.lib.format.read_magic(fh)
    except ValueError as exc:
        raise ModelFileError(
            f"model file {p}: entry {name!r} is not a .npy array; refused (not a fedgmm model file)."
        ) from exc
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ModelFileError(
            f"model file {p}: entry {name!r} uses .npy version {version}; refused."
        )
    if any(int(s) < 0 for s in shape):
        raise ModelFileError(f"model file {p}: entry {name!r} declares the shape {shape}; refused.")
    return _Header(tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype))


def _read_body(fh: IO[bytes], header: _Header, name: str, p: Path) -> np.ndarray:
    """Read exactly the bytes the (already checked) header declares; copy to native order."""
    nbytes = math.prod(header.shape) * header.dtype.itemsize
    data = fh.read(nbytes + 1)  # one more, to reach the end and have the zip CRC checked
    if len(data) != nbytes:
        raise ModelFileError(
            f"model file {p} is truncated or corrupted: entry {name!r} holds {len(data)} data "
            f"bytes, its header declares {nbytes}; re-save or re-download it."
        )
    flat = np.frombuffer(data, dtype=header.dtype)
    arr = flat.reshape(header.shape, order="F" if header.fortran else "C")
    return np.ascontiguousarray(arr, dtype=header.dtype.newbyteorder("="))


def _pickled(p: Path, name: str) -> ModelFileError:
    return ModelFileError(
        f"model file {p}: entry {name!r} is a pickled object array; refused without "
        "unpickling (fedgmm model files hold plain numeric arrays only)."
    )


def _read_float_array(
    zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], p: Path, context: str
) -> np.ndarray:
    """Read a float64 entry (either byte order) whose shape must be ``shape``; checked before reading."""
    info = _member(zf, name, p)
    limit = 8 * math.prod(shape) + _HEADER_SLACK
    if info.file_size > limit:
        raise ModelFileError(
            f"model file {p}: entry {name!r} is {info.file_size} bytes, far more than the "
            f"shape {shape} in the metadata implies; the file is corrupted or not ours."
        )
    try:
        with zf.open(info) as fh:
            header = _read_header(fh, name, p)
            if header.dtype.hasobject:
                raise _pickled(p, name)
            if header.dtype.kind != "f" or header.dtype.itemsize != 8:
                raise ModelFileError(
                    f"model file {p}: {name} has dtype {header.dtype}, expected float64."
                )
            if header.shape != shape:
                raise ModelFileError(
                    f"model file {p}: {name} has shape {header.shape} but {context} implies {shape}."
                )
            return _read_body(fh, header, name, p)
    except ModelFileError:
        raise
    except _READ_ERRORS as exc:
        raise _corrupted(p, name, exc) from exc


def _check_compression(zf: zipfile.ZipFile, declared: Mapping[str, Any], p: Path) -> None:
    """Refuse a zip bomb: compressed entries that would expand far beyond their stored bytes."""
    infos = [zf.getinfo(f"{n}.npy") for n in declared if f"{n}.npy" in zf.namelist()]
    packed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED]
    expanded, stored = sum(i.file_size for i in packed), sum(i.compress_size for i in packed)
    if expanded > MAX_COMPRESSION_RATIO * stored + _HEADER_SLACK:
        raise ModelFileError(
            f"model file {p}: its compressed arrays would expand from {stored:,} to {expanded:,} "
            f"bytes (more than {MAX_COMPRESSION_RATIO}x, which fitted parameters never compress); "
            "refused as corrupted or hostile."
        )


def _load_json(raw: bytes, p: Path) -> Any:
    def refuse_constant(token: str) -> Any:
        raise ModelFileError(
            f"model file {p}: metadata holds the non-JSON number {token}; strict JSON allows "
            "no NaN or Infinity."
        )

    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)
    except RecursionError as exc:
        raise ModelFileError(
            f"model file {p}: metadata JSON is nested too deeply (limit {MAX_JSON_DEPTH} levels)."
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"model file {p}: metadata is not valid UTF-8 JSON ({exc}).") from exc
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise ModelFileError(
            f"model file {p}: metadata JSON is nested more than {MAX_JSON_DEPTH} levels deep; refused."
        )
    return value


def _read_metadata_entry(zf: zipfile.ZipFile, p: Path) -> Any:
    names = zf.namelist()
    if f"{METADATA_NAME}.npy" not in names and METADATA_NAME not in names:
        raise ModelFileError(
            f"model file {p} has no 'metadata' entry; it is not a fedgmm model file "
            "(write models with fedgmm.model_io.save_mixture)."
        )
    info = _member(zf, METADATA_NAME, p)
    if info.file_size > MAX_METADATA_BYTES + _HEADER_SLACK:
        raise ModelFileError(
            f"model file {p}: metadata entry is {info.file_size} bytes "
            f"(limit {MAX_METADATA_BYTES}); refused."
        )
    try:
        with zf.open(info) as fh:
            header = _read_header(fh, METADATA_NAME, p)
            if header.dtype.hasobject:
                raise _pickled(p, METADATA_NAME)
            if header.dtype != np.uint8 or len(header.shape) != 1:
                raise ModelFileError(
                    f"model file {p}: metadata must be a 1-D uint8 array of UTF-8 JSON bytes, got "
                    f"dtype {header.dtype} and shape {header.shape}."
                )
            if header.shape[0] > MAX_METADATA_BYTES:
                raise ModelFileError(
                    f"model file {p}: metadata declares {header.shape[0]} bytes "
                    f"(limit {MAX_METADATA_BYTES}); refused."
                )
            raw = _read_body(fh, header, METADATA_NAME, p).tobytes()
    except ModelFileError:
        raise
    except _READ_ERRORS as exc:
        raise _corrupted(p, METADATA_NAME, exc) from exc
    return _load_json(raw, p)


def _positive_int(meta: Mapping[str, Any], key: str, cap: int, p: Path) -> int:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelFileError(f"model file {p}: {key} must be a positive integer, got {value!r}.")
    if value > cap:
        raise ModelFileError(
            f"model file {p}: {key} = {value} exceeds the limit of {cap}; refused (the file is "
            "corrupted or hostile)."
        )
    return value


def _parse_transform_meta(meta: dict[str, Any], p: Path) -> dict[str, tuple[int, ...]] | None:
    tf = meta.get("transform")
    if tf is None:
        return None
    where = f"model file {p}: "
    if not isinstance(tf, dict) or not isinstance(tf.get("arrays"), dict) or not tf["arrays"]:
        raise ModelFileError(
            f"{where}transform must be an object with a non-empty 'arrays' object."
        )
    if not isinstance(tf.get("info", {}), dict) or not isinstance(tf.get("sha256"), str):
        raise ModelFileError(f"{where}transform needs an 'info' object and a 'sha256' string.")
    tf.setdefault("info", {})
    if len(tf["arrays"]) > MAX_TRANSFORM_ARRAYS:
        raise ModelFileError(
            f"{where}transform lists {len(tf['arrays'])} arrays (at most {MAX_TRANSFORM_ARRAYS})."
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in tf["arrays"].items():
        if not _NAME_RE.fullmatch(name):
            raise ModelFileError(f"{where}transform array name {name!r} is not allowed.")
        if (
            not isinstance(shape, list)
            or len(shape) > 2
            or any(
                isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_FEATURES
                for s in shape
            )
        ):
            raise ModelFileError(
                f"{where}transform array {name!r} has shape {shape!r}; expected a list of at most "
                f"2 integers in [0, {MAX_FEATURES}]."
            )
        shapes[name] = tuple(shape)
    _check_affine(shapes, tf["info"], meta["n_features"], error=ModelFileError, where=where)
    return shapes


def _parse_metadata(meta: Any, p: Path) -> dict[str, Any]:
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
    _positive_int(meta, "n_components", MAX_COMPONENTS, p)
    _positive_int(meta, "n_features", MAX_FEATURES, p)
    if meta["dtype"] != "float64":
        raise ModelFileError(f"model file {p}: dtype {meta['dtype']!r} is not supported (float64).")
    if not isinstance(meta["sha256"], str):
        raise ModelFileError(f"model file {p}: sha256 must be a hex string.")
    if "extra" in meta and not isinstance(meta["extra"], dict):
        raise ModelFileError(f"model file {p}: extra must be a JSON object.")
    meta.setdefault("extra", {})
    meta.setdefault("feature_names", None)
    meta.setdefault("transform", None)
    shapes = _parse_transform_meta(meta, p)
    names = meta["feature_names"]
    if names is not None:
        width = meta["n_features"]
        if shapes is not None and meta["transform"]["info"].get("kind") == "affine":
            width = shapes["mean"][0]
        if (
            not isinstance(names, list)
            or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)
            or len(names) != width
        ):
            raise ModelFileError(
                f"model file {p}: feature_names must be a list of {width} distinct strings."
            )
    return meta


def _declared_arrays(meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    k, d = meta["n_components"], meta["n_features"]
    shapes = {
        "weights": (k,),
        "means": (k, d),
        "covariances": covariance_shape(meta["covariance_type"], k, d),
    }
    if meta["transform"] is not None:
        for name, shape in meta["transform"]["arrays"].items():
            shapes[TRANSFORM_PREFIX + name] = tuple(shape)
    return shapes


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check only the metadata of a model file (the arrays are not loaded).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    metadata : dict
        The JSON metadata (``format``, ``format_version``, ``covariance_type``,
        ``n_components``, ``n_features``, ``dtype``, ``fedgmm_version``, ``sha256``,
        ``extra``, ``feature_names`` and ``transform`` — the last two None when absent).

    Raises
    ------
    ModelFileError
        If the file is missing, not an ``.npz`` archive, damaged, not ours, of a newer
        format version, or declares sizes beyond the caps.
    """
    p = _check_archive(path)
    with _open_zip(p) as zf:
        return _parse_metadata(_read_metadata_entry(zf, p), p)


def load_model(path: str | os.PathLike[str], *, max_bytes: int = MAX_ARRAY_BYTES) -> ModelFile:
    """Load and fully validate a model file: the mixture, feature names and transform.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, default :data:`MAX_ARRAY_BYTES`
        Refuse files whose metadata declares more array bytes than this in all
        (checked before any array is read).

    Returns
    -------
    ModelFile
        ``state`` (``weights`` ``(K,)``, ``means`` ``(K, d)``, ``covariances`` per type;
        bit-identical to the saved ones, native byte order), ``metadata``,
        ``feature_names``, ``transform`` and ``transform_info``.

    Raises
    ------
    ModelFileError
        If the file is missing, not an ``.npz`` archive, truncated, contains a pickle,
        lacks an entry, has bad or too deeply nested metadata, a newer format version,
        declared sizes beyond the caps, a checksum mismatch, shapes that disagree with
        the metadata, or invalid parameters (weights not summing to one, covariances not
        positive definite).
    """
    p = _check_archive(path)
    with _open_zip(p) as zf:
        meta = _parse_metadata(_read_metadata_entry(zf, p), p)
        cov_type, k, d = meta["covariance_type"], meta["n_components"], meta["n_features"]
        declared = _declared_arrays(meta)
        total = sum(8 * math.prod(s) for s in declared.values())
        if total > max_bytes:
            raise ModelFileError(
                f"model file {p}: the metadata declares {total:,} bytes of arrays "
                f"(K={k}, d={d}, {cov_type}), more than the limit of {max_bytes:,}; refused. "
                "Pass max_bytes to load a model this large on purpose."
            )
        _check_compression(zf, declared, p)
        context = f"the metadata ({cov_type}, n_components={k}, n_features={d})"
        arrays = {
            name: _read_float_array(zf, name, shape, p, context) for name, shape in declared.items()
        }
    digest = array_checksum(*(arrays[name] for name in ARRAY_NAMES))
    if not hmac.compare_digest(digest, meta["sha256"].lower()):
        raise ModelFileError(
            f"model file {p}: checksum mismatch (sha256 of the arrays is {digest}, the metadata "
            f"says {meta['sha256']}); the arrays were modified or corrupted after saving."
        )
    transform = transform_info = None
    if meta["transform"] is not None:
        names = sorted(meta["transform"]["arrays"])
        transform = {name: arrays[TRANSFORM_PREFIX + name] for name in names}
        tf_digest = array_checksum(*(transform[name] for name in names))
        if not hmac.compare_digest(tf_digest, meta["transform"]["sha256"].lower()):
            raise ModelFileError(
                f"model file {p}: transform checksum mismatch; the transform arrays were "
                "modified or corrupted after saving."
            )
        if not all(np.all(np.isfinite(a)) for a in transform.values()):
            raise ModelFileError(f"model file {p}: the transform holds NaN or infinite values.")
        transform_info = dict(meta["transform"]["info"])
    try:
        state = MixtureState.from_arrays({n: arrays[n] for n in ARRAY_NAMES}, cov_type)
    except ValueError as exc:  # includes DegenerateCovarianceError
        raise ModelFileError(f"model file {p} holds invalid mixture parameters: {exc}") from exc
    names = meta["feature_names"]
    return ModelFile(
        state, meta, list(names) if names is not None else None, transform, transform_info
    )


def load_mixture(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_ARRAY_BYTES
) -> tuple[MixtureState, dict[str, Any]]:
    """Load and fully validate the mixture of a model file (see :func:`load_model`).

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int, default :data:`MAX_ARRAY_BYTES`
        Cap on the array bytes the metadata may declare.

    Returns
    -------
    state : MixtureState
        ``weights`` ``(K,)``, ``means`` ``(K, d)``, ``covariances`` ``(K, d, d)`` full,
        ``(d, d)`` tied, ``(K, d)`` diag or ``(K,)`` spherical; bit-identical to the saved ones.
    metadata : dict
        As returned by :func:`read_metadata` (``feature_names`` and ``transform`` included).

    Raises
    ------
    ModelFileError
        As :func:`load_model`.
    """
    model = load_model(path, max_bytes=max_bytes)
    return model.state, model.metadata
