"""What SecAgg+ costs federated EM: Δ log-likelihood and bytes against the plain run, same data and seed.

Each run is the ServerApp's whole job (:func:`fedgmm.flower.job.run_job`) over a Grid that
delivers every message to the real ClientApp in this process (one Context per node, as a
SuperNode keeps it), through Flower's wire format; bytes are the project's usual
``payload_nbytes`` of every message, SecAgg+'s key-exchange stages included. Seconds are
printed as a ratio to the plain run of the same configuration (measured in the same run).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/secagg_fedem.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedgmm.flower.client_app import app as client_app
from fedgmm.flower.job import run_job
from fedgmm.flower.settings import DEFAULTS

#: name → (run-config overrides, nodes). Row bounds: every standardised/PCA row is well inside them.
CASES: dict[str, tuple[dict[str, Any], int]] = {
    "blobs d=2 K=4 full": ({"dataset": "blobs", "dataset-args": "n_samples=3000", "n-components": 4,
                            "eval-dataset": "blobs", "secure-row-bound": 30.0}, 3),
    "digits pca16 K=10 full": ({"dataset": "digits", "preprocessing": "pca", "pca-components": 16, "n-components": 10,
                                "eval-dataset": "digits", "secure-row-bound": 40.0}, 5),
    "digits pca16 K=10 diag": ({"dataset": "digits", "preprocessing": "pca", "pca-components": 16, "n-components": 10,
                                "covariance-type": "diag", "eval-dataset": "digits", "secure-row-bound": 40.0}, 5),
}  # fmt: skip


class LocalGrid:
    """A Grid whose nodes are the real ClientApp in this process (messages go through the wire format)."""

    def __init__(self, n_nodes: int, run_config: dict[str, Any]) -> None:
        self.contexts = {
            1000 + i: Context(run_id=1, node_id=1000 + i, node_config={"partition-id": i, "num-partitions": n_nodes},
                              state=RecordDict(), run_config=dict(run_config))
            for i in range(n_nodes)
        }  # fmt: skip

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id
            content = recorddict_from_proto(recorddict_to_proto(message.content))
            delivered = Message(content=content, metadata=message.metadata)
            reply = client_app(delivered, self.contexts[message.metadata.dst_node_id])
            replies.append(Message(content=recorddict_from_proto(recorddict_to_proto(reply.content)), metadata=reply.metadata))
        return replies


def run(config: dict[str, Any], n_nodes: int) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    summary = run_job(LocalGrid(n_nodes, config), config)
    return summary, time.perf_counter() - start


def em_round_bytes(summary: dict[str, Any]) -> tuple[float, float]:
    """Mean bytes (up, down) of one federated EM round (all SecAgg+ stages for a secure one)."""
    em = [r for r in summary["per_round"] if r["kind"] == "em-statistics"]
    return float(np.mean([r["bytes_up"] for r in em])), float(np.mean([r["bytes_down"] for r in em]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--variants", nargs="+", default=["2", "1", "1-robust-off"],
                    help="secure runs: limbs, optionally with robust=false (then against a plain robust=false run)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    rows = []
    header = (f"{'case':24} {'seed':>4} {'limbs':>5} {'rounds p/s':>10} {'Δ test ll':>10} {'max|Δ ll| rnds':>14} "
              f"{'ll bound/row':>12} {'EM up/rnd p':>11} {'s':>8} {'x':>5} {'EM down x':>9} {'total x':>7} {'time x':>6}")  # fmt: skip
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            overrides, n_nodes = CASES[case]
            for seed in args.seeds:
                base = {**DEFAULTS, "algorithm": "fedem", "min-nodes": n_nodes, "seed": seed, "wait-timeout": 1.0,
                        **overrides}  # fmt: skip
                plains: dict[bool, tuple[dict[str, Any], float]] = {}
                for variant in args.variants:
                    limbs, robust = int(variant.split("-")[0]), not variant.endswith("robust-off")
                    if robust not in plains:  # the plain reference has the same robust setting
                        plains[robust] = run({**base, "robust": robust, "output-dir": f"{tmp}/plain"}, n_nodes)
                    plain, t_plain = plains[robust]
                    config = {**base, "secure-aggregation": True, "secure-limbs": limbs, "output-dir": f"{tmp}/secure",
                              "robust": robust}  # fmt: skip
                    try:
                        secure, t_secure = run(config, n_nodes)
                    except Exception as exc:  # a failed secure run is a result: print why
                        rows.append({"case": case, "seed": seed, "variant": variant, "error": str(exc)})
                        print(f"{case:24} {seed:>4} {variant:>5} failed: {str(exc)[:150]}", flush=True)
                        continue
                    rows.append(compare(case, seed, variant, plain, secure, t_secure / t_plain))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def compare(case: str, seed: int, variant: str, plain: dict[str, Any], secure: dict[str, Any], time_ratio: float) -> dict[str, Any]:
    """One row: Δ log-likelihood (test set, per round), the error bound, bytes and time ratios; printed."""
    hp = np.array([h["log_likelihood"] for h in plain["history"]])
    hs = np.array([h["log_likelihood"] for h in secure["history"]])
    m = min(len(hp), len(hs))
    rounds = secure["secure_aggregation"]["rounds"]
    ll_bound = max(r["error_bounds"]["log_likelihood"] / max(r["n_samples"], 1) for r in rounds)
    p_em, s_em = em_round_bytes(plain), em_round_bytes(secure)
    row = {
        "case": case, "seed": seed, "variant": variant, "rounds_plain": plain["n_rounds"], "rounds_secure": secure["n_rounds"],
        "test_ll_plain": plain["evaluation"]["log_likelihood"], "test_ll_secure": secure["evaluation"]["log_likelihood"],
        "max_abs_dll_rounds": float(np.max(np.abs(hp[:m] - hs[:m]))), "ll_bound_per_row": ll_bound,
        "em_round_bytes_plain": p_em, "em_round_bytes_secure": s_em,
        "total_plain": plain["total"], "total_secure": secure["total"], "seconds_ratio": time_ratio,
    }  # fmt: skip
    total = (secure["total"]["bytes_up"] + secure["total"]["bytes_down"]) / (
        plain["total"]["bytes_up"] + plain["total"]["bytes_down"])
    print(f"{case:24} {seed:>4} {variant:>5} {plain['n_rounds']:>4}/{secure['n_rounds']:<5} "
          f"{row['test_ll_secure'] - row['test_ll_plain']:>10.2e} {row['max_abs_dll_rounds']:>14.2e} "
          f"{ll_bound:>12.2e} {p_em[0]:>11.0f} {s_em[0]:>8.0f} {s_em[0] / p_em[0]:>5.2f} "
          f"{s_em[1] / p_em[1]:>9.2f} {total:>7.2f} {time_ratio:>6.2f}", flush=True)  # fmt: skip
    return row


if __name__ == "__main__":
    main()
