"""Client partitioners; kept at ``fedgmm.partition`` for existing code (they live in :mod:`fedgmm.datasets.partition`)."""

from fedgmm.datasets.partition import (
    PARTITIONERS,
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    PathologicalPartitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    make_partitioner,
    partition_data,
    partitioner_arguments,
)

__all__ = [
    "PARTITIONERS",
    "DirichletPartitioner",
    "IidPartitioner",
    "Partitioner",
    "PathologicalPartitioner",
    "QuantitySkewPartitioner",
    "ShardPartitioner",
    "make_partitioner",
    "partition_data",
    "partitioner_arguments",
]
