"""Cells as Ray tasks: the same code on a laptop (an embedded local instance) and on a cluster.

Each cell asks Ray for `threads_per_cell` CPUs (and a share of a GPU where the cluster has GPUs),
so a machine runs at most (its CPUs / threads_per_cell) cells at once and none is oversubscribed;
the cell sets PyTorch's thread count from what Ray granted it. A cell whose worker process dies
(killed, out of memory, node lost) is retried by Ray, and resumes from its last checkpoint. On a
cluster, `--out` must be a folder every node sees (e.g. NFS): cells write their runs there.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

from bn_nerf.io.errors import InputError
from bn_nerf.sweep.cells import Cell, execute, record_failure

DEFAULT_RETRIES = 3
# The embedded instance passes only small dicts between processes; Ray's default store is GBs.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 ** 2


def start_ray(address: str | None, cpus: int | None) -> None:
    """Join the cluster at `address` ("auto" or HOST:PORT), or start an embedded local instance
    with `cpus` CPUs (default: all) that listens on the loopback only and reports nothing."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        if cpus is not None:
            raise InputError("--cpus sizes the embedded instance; cluster nodes declare theirs (ray start --num-cpus)")
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    # address="local": a new instance even where `ray start` left one running; cells' own output
    # stays in their workers (the driver prints one line per cell, failures are in error.txt).
    ray.init(address="local", num_cpus=cpus or os.cpu_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             logging_level=logging.WARNING, log_to_driver=False)


def cell_resources(threads_per_cell: int, cells_per_gpu: int) -> dict:
    """What each cell asks Ray for. Refuses a request no node can grant (it would wait forever)."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    largest = max((resources.get("CPU", 0) for resources in nodes), default=0)
    if threads_per_cell > largest:
        raise InputError(f"--threads-per-cell {threads_per_cell}: no node has that many CPUs (largest: {largest:g})")
    has_gpus = any(resources.get("GPU", 0) > 0 for resources in nodes)
    return {"num_cpus": threads_per_cell, "num_gpus": 1.0 / cells_per_gpu if has_gpus else 0}


def _execute_in_worker(cell: Cell) -> dict:
    import ray

    granted = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return execute(cell, threads=max(1, int(granted)))


def run_cells(cells: Sequence[Cell], threads_per_cell: int, cells_per_gpu: int, retries: int,
              report: Callable[[Cell, dict], None]) -> list[dict]:
    """Run `cells` as Ray tasks; `report` sees each outcome as it arrives. Returns the outcomes."""
    import ray

    resources = cell_resources(threads_per_cell, cells_per_gpu)
    remote = ray.remote(_execute_in_worker).options(max_retries=retries, retry_exceptions=False, **resources)
    pending = {remote.remote(cell): cell for cell in cells}
    outcomes = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(done[0])
        try:
            outcome = ray.get(done[0])
        except ray.exceptions.RayError as error:
            # The worker was lost more often than Ray retries, or the cell could not be scheduled.
            message = f"{type(error).__name__} after {retries} retries: {' '.join(str(error).split())[:300]}"
            record_failure(cell, message)
            outcome = {"cell": cell.name, "status": "failed", "error": message}
        report(cell, outcome)
        outcomes.append(outcome)
    return outcomes
