"""A preprocessing :class:`Transform` as the arrays and facts a model file stores, and back."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedgmm.federated.preprocessing import Transform
from fedgmm.model_io import ModelFile

TRANSFORM_KIND = "affine"


def transform_payload(transform: Transform) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The ``transform=`` and ``transform_info=`` arguments of :func:`fedgmm.model_io.save_mixture`.

    Parameters
    ----------
    transform : Transform
        ``mean`` of shape (d_in,), ``matrix`` of shape (d_in, d).

    Returns
    -------
    arrays : dict of str to ndarray
        ``mean``, ``matrix`` and, for PCA, ``explained_variance_ratio`` of shape (d,).
    info : dict
        ``{"kind": "affine", "n_samples": …, "transform_id": …}``.
    """
    arrays = {"mean": np.asarray(transform.mean, dtype=np.float64), "matrix": np.asarray(transform.matrix, dtype=np.float64)}
    if transform.explained_variance_ratio is not None:
        arrays["explained_variance_ratio"] = np.asarray(transform.explained_variance_ratio, dtype=np.float64)
    info = {"kind": TRANSFORM_KIND, "n_samples": int(transform.n_samples), "transform_id": transform.transform_id}
    return arrays, info


def transform_from_model(model: ModelFile) -> Transform | None:
    """The transform a loaded model file stores (None when it stores none).

    Raises
    ------
    ValueError
        If the file stores a transform of another kind than ``"affine"``.
    """
    if model.transform is None:
        return None
    info = model.transform_info or {}
    kind = info.get("kind", TRANSFORM_KIND)
    if kind != TRANSFORM_KIND:
        raise ValueError(f"the model file stores a {kind!r} transform; this version applies only {TRANSFORM_KIND!r} ones.")
    ratio = model.transform.get("explained_variance_ratio")
    return Transform(
        mean=np.asarray(model.transform["mean"], dtype=np.float64),
        matrix=np.asarray(model.transform["matrix"], dtype=np.float64),
        explained_variance_ratio=None if ratio is None else np.asarray(ratio, dtype=np.float64),
        n_samples=int(info.get("n_samples", 0)),
    )
