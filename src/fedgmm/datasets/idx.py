"""Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or plain, written with numpy."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from fedgmm.datasets.errors import DatasetFormatError

__all__ = ["IDX_DTYPES", "read_idx"]

# Third byte of the magic number -> element type (multi-byte types are big-endian).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (``*.gz`` files are decompressed on the fly).

    The header is ``0x00 0x00 <type> <ndim>`` followed by ``ndim`` big-endian uint32
    dimensions; the payload must hold exactly ``prod(dims)`` elements.

    Parameters
    ----------
    path : str or Path
        The IDX file, e.g. ``train-images-idx3-ubyte.gz``.
    magic : int, optional
        The magic number the file must start with, e.g. ``0x00000803`` (2051) for
        uint8 images of 3 dimensions, ``0x00000801`` (2049) for uint8 labels.

    Returns
    -------
    data : ndarray of shape dims, read-only
        The payload in its stored dtype.

    Raises
    ------
    DatasetFormatError
        If the file is not gzip (for ``.gz``), its magic number is wrong, or it is
        truncated or has trailing bytes.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise _bad(path, f"truncated: {len(raw)} bytes, shorter than the 4-byte magic number")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise _bad(path, f"magic number 0x{found:08x}, expected 0x{magic:08x}")
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise _bad(path, f"magic number 0x{found:08x} is not an IDX header")
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise _bad(
            path, f"truncated: the header announces {ndim} dimensions but the file ends first"
        )
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    count = math.prod(dims)
    expected = offset + count * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "has trailing bytes"
        raise _bad(
            path, f"{state}: dims {dims} of {dtype} need {expected} bytes, the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise _bad(path, f"not a complete gzip file ({exc})") from exc


def _bad(path: Path, what: str) -> DatasetFormatError:
    return DatasetFormatError(f"{path}: {what}.")
