"""Fixtures of the Flower tests: a task identity for building messages, a small blobs run config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flower_testing import partition_nodes
from flwr.supercore.task_identity import TaskIdentity

from fedgmm.flower.settings import DEFAULTS


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Lets ``Message(content, dst_node_id, message_type)`` be built outside a running ServerApp."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture
def blobs_config(tmp_path: Any) -> dict[str, Any]:
    """A complete run config: 600 blobs rows in 2-D, K=4, three nodes, output in tmp_path."""
    return dict(
        DEFAULTS,
        **{
            "dataset": "blobs", "dataset-args": "n_samples=600", "n-components": 4, "local-components-min": 1, "local-components-max": 4,
            "max-rounds": 3, "min-nodes": 3, "min-replies": 2, "round-timeout": 30.0, "wait-timeout": 5.0,
            "output-dir": str(tmp_path / "out"),
        },
    )  # fmt: skip


@pytest.fixture
def nodes() -> dict[int, dict[str, Any]]:
    """Three partition nodes."""
    return partition_nodes()
