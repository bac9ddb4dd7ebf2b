"""Errors raised by the dataset loaders; each message says what to do."""

from __future__ import annotations

from fedgmm.exceptions import FedGMMError

__all__ = ["DatasetFormatError", "DatasetNotAvailableError"]


class DatasetNotAvailableError(FedGMMError, FileNotFoundError):
    """The data files of a known dataset are not installed; the message names the install command."""


class DatasetFormatError(FedGMMError, ValueError):
    """A data file is truncated, malformed or not what its name says; the message names where."""
