"""Literal aliases shared by every layer."""

from __future__ import annotations

from typing import Literal, get_args

CovarianceType = Literal["full", "tied", "diag", "spherical"]
InitParams = Literal["kmeans", "k-means++", "random", "random_from_data"]
Precision = Literal["float64", "float32"]

COVARIANCE_TYPES: tuple[str, ...] = get_args(CovarianceType)
INIT_PARAMS: tuple[str, ...] = get_args(InitParams)
PRECISIONS: tuple[str, ...] = get_args(Precision)
