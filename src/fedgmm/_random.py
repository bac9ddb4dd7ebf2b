"""Seed handling: every random step takes an explicit Generator, RandomState or seed."""

from __future__ import annotations

import numbers

import numpy as np

SeedLike = int | np.integer | np.random.Generator | np.random.RandomState | None


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` for ``seed``.

    An ``int`` seeds a new PCG64 Generator, a Generator is returned as is (so the caller's
    stream advances), a legacy ``RandomState`` seeds a new Generator from one draw of it,
    and ``None`` gives fresh OS entropy.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(int(seed.randint(0, 2**31 - 1)))
    if seed is None or isinstance(seed, numbers.Integral):
        return np.random.default_rng(None if seed is None else int(seed))
    raise TypeError(
        f"expected an int seed, a numpy.random.Generator, a RandomState or None, got {type(seed).__name__}."
    )


def as_random_state(seed: SeedLike) -> np.random.RandomState:
    """Return a legacy ``RandomState`` (what scikit-learn's k-means needs) for ``seed``.

    An ``int`` gives ``RandomState(seed)`` exactly as ``sklearn.utils.check_random_state``
    does, so a fit seeded with an int initialises as scikit-learn's would; a Generator
    seeds a RandomState from one of its draws (advancing it).
    """
    if isinstance(seed, np.random.RandomState):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.RandomState(int(seed.integers(0, 2**32 - 1)))
    if seed is None:
        return np.random.RandomState()
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(int(seed))
    raise TypeError(
        f"expected an int seed, a numpy.random.Generator, a RandomState or None, got {type(seed).__name__}."
    )


def as_seed(seed: SeedLike) -> int:
    """An int run seed from ``seed`` (the facades' ``random_state``).

    An ``int`` is kept; a Generator or RandomState gives one draw in ``[0, 2**31 − 1)``
    (advancing it); ``None`` gives fresh OS entropy.
    """
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**31 - 1))
    if isinstance(seed, np.random.RandomState):
        return int(seed.randint(0, 2**31 - 1))
    raise ValueError(f"random_state must be an int, a Generator, a RandomState or None, got {seed!r}.")
