"""A MutableMapping over Flower's ``context.state`` so the client's store survives between messages."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedgmm.mixture import MixtureState

#: Record names used in ``context.state`` (prefixes keep clear of other users of the state).
INDEX = "fedgmm-store"
PREFIX = "fedgmm-store:"

_SCALARS = (bool, int, float, str)


class StateStore(MutableMapping[str, Any]):
    """The client's request store kept in a node's ``context.state`` (a ``RecordDict``).

    Flower persists ``context.state`` per node and run, across messages and across the
    fresh ``flwr-clientapp`` process each message gets in deployment. Values are kept as
    records: arrays, tuples of arrays and mixtures in an ``ArrayRecord`` (bit-exact), plain
    scalars in a ``ConfigRecord``. An index record remembers each key's kind.

    Parameters
    ----------
    state : RecordDict
        ``context.state``; modified in place.
    """

    def __init__(self, state: RecordDict) -> None:
        self._state = state

    def _index(self) -> ConfigRecord:
        if INDEX not in self._state.config_records:
            self._state[INDEX] = ConfigRecord()
        return self._state.config_records[INDEX]

    def __getitem__(self, key: str) -> Any:
        index = self._index()
        if key not in index:
            raise KeyError(key)
        kind = str(index[key])
        name = PREFIX + key
        if kind == "scalar":
            return self._state.config_records[name]["value"]
        record = self._state.array_records[name]
        if kind == "array":
            return record["value"].numpy()
        if kind == "tuple":
            return tuple(record[str(i)].numpy() for i in range(len(record)))
        if kind.startswith("mixture:"):
            arrays = {k: v.numpy() for k, v in record.items()}
            return MixtureState.from_arrays(arrays, kind.split(":", 1)[1])  # type: ignore[arg-type]
        raise KeyError(f"{key} (stored with unknown kind {kind!r})")

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"store keys are strings, got {type(key).__name__}.")
        name = PREFIX + key
        if name in self._state:
            del self._state[name]
        if isinstance(value, MixtureState):
            kind = f"mixture:{value.covariance_type}"
            self._state[name] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in value.to_arrays().items()})
        elif isinstance(value, np.ndarray):
            kind = "array"
            self._state[name] = ArrayRecord({"value": Array(np.ascontiguousarray(value))})
        elif isinstance(value, tuple | list) and all(isinstance(v, np.ndarray) for v in value):
            kind = "tuple"
            self._state[name] = ArrayRecord({str(i): Array(np.ascontiguousarray(v)) for i, v in enumerate(value)})
        elif isinstance(value, _SCALARS):
            kind = "scalar"
            self._state[name] = ConfigRecord({"value": value})
        else:
            raise TypeError(
                f"cannot keep a {type(value).__name__} in the node state; store arrays, tuples of arrays, "
                "MixtureState or scalars."
            )
        self._index()[key] = kind

    def __delitem__(self, key: str) -> None:
        index = self._index()
        if key not in index:
            raise KeyError(key)
        del index[key]
        del self._state[PREFIX + key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._index().keys()))

    def __len__(self) -> int:
        return len(self._index())
