"""Warnings that subclass scikit-learn's (kept apart so that ``fedgmm.exceptions`` stays free of it)."""

from __future__ import annotations

from sklearn.exceptions import ConvergenceWarning


class EmptyComponentWarning(ConvergenceWarning):
    """A fitted mixture has components holding (almost) no weight: fewer components would do.

    A subclass of scikit-learn's ``ConvergenceWarning``, so filters on that catch it too.
    """
