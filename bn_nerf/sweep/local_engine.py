"""Cells in a pool of worker processes on this machine: the sweep without Ray (`--engine local`).

For a machine that has PyTorch and nothing else of a cluster, such as a lent GPU box: this module
and everything it imports need no Ray. Each worker is a spawned process (a forked one would
inherit the parent's CUDA and OpenMP state) that runs cells one after another through
`cells.execute`, the function the Ray engine's tasks call, so a cell is the same run under either
engine; a worker imports PyTorch once, not once per cell.

How many workers: with CUDA, `cells_per_gpu` per GPU (a Table 1 cell is a small MLP that leaves
most of a data-centre GPU idle, so several share one), each cell on its worker's GPU; without,
one per `threads_per_cell` CPUs, as the Ray engine schedules. A worker that dies in the middle of
a cell (killed, out of memory) is replaced; its cell runs again, resuming from its checkpoint, up
to `retries` times, and is then recorded as failed while the other cells go on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable, Sequence

import torch

from bn_nerf.io.errors import InputError
from bn_nerf.runtime import usable_cores
from bn_nerf.sweep.cells import Cell, execute, record_failure


def worker_devices(cpus: int | None, threads_per_cell: int, cells_per_gpu: int) -> list[str]:
    """The device of each worker the pool starts: `cells_per_gpu` per CUDA GPU, never more than
    the CPUs hold cells of `threads_per_cell` threads; without CUDA, one CPU worker per such cell."""
    cpus = cpus or usable_cores()
    if threads_per_cell > cpus:
        raise InputError(f"--threads-per-cell {threads_per_cell}: more than the {cpus} CPUs the local engine uses")
    cpu_slots = cpus // threads_per_cell
    gpus = torch.cuda.device_count()
    if gpus == 0:
        return ["cpu"] * cpu_slots
    return [f"cuda:{index}" for _ in range(cells_per_gpu) for index in range(gpus)][:cpu_slots]


def _exit_with_parent() -> None:
    """End this worker when the sweep's process ends, even by SIGKILL, rather than let it train on
    unwatched (a rerun would then find two processes writing one cell)."""
    wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _serve(connection: Connection, threads: int, device: str) -> None:
    """A worker: run each cell the pool sends, answer with its outcome, stop at None. A cell's own
    printing stays in the worker, as under Ray: the sweep prints one line per cell, a failure's
    story is in the cell's error.txt."""
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    with open(os.devnull, "w") as silent, contextlib.redirect_stdout(silent):
        while (cell := connection.recv()) is not None:
            connection.send(execute(cell, threads=threads, device=device))


@dataclass
class _Worker:
    device: str
    process: multiprocessing.process.BaseProcess
    connection: Connection
    cell: Cell | None = None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"


def run_cells_locally(cells: Sequence[Cell], devices: Sequence[str], threads_per_cell: int, retries: int,
                      report: Callable[[Cell, dict], None]) -> list[dict]:
    """Run `cells` on one worker per entry of `devices`; `report` sees each outcome as it arrives.
    Returns the outcomes."""
    context = multiprocessing.get_context("spawn")
    waiting = deque(cells)
    deaths: dict[str, int] = {}
    outcomes: list[dict] = []

    def start(device: str) -> _Worker:
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, threads_per_cell, device), daemon=True)
        process.start()
        theirs.close()
        return _Worker(device, process, ours)

    def hand_out(worker: _Worker) -> None:
        worker.cell = waiting.popleft() if waiting else None
        if worker.cell is not None:
            worker.connection.send(worker.cell)

    def finish(cell: Cell, outcome: dict) -> None:
        report(cell, outcome)
        outcomes.append(outcome)

    workers = [start(device) for device in devices[:len(cells)]]
    try:
        for worker in workers:
            hand_out(worker)
        while busy := [worker for worker in workers if worker.cell is not None]:
            wait([worker.connection for worker in busy])
            for index, worker in enumerate(workers):
                if worker.cell is None or not worker.connection.poll():
                    continue
                cell = worker.cell
                try:
                    outcome = worker.connection.recv()
                except EOFError:  # the worker died mid-cell: replace it, rerun or give up on the cell
                    worker.process.join()
                    death = _death(worker.process.exitcode)
                    worker.connection.close()
                    workers[index] = worker = start(worker.device)
                    deaths[cell.name] = deaths.get(cell.name, 0) + 1
                    if deaths[cell.name] <= retries:
                        waiting.appendleft(cell)
                    else:
                        message = f"worker process died ({death}) {deaths[cell.name]} time(s), after {retries} retries"
                        record_failure(cell, message)
                        finish(cell, {"cell": cell.name, "status": "failed", "error": message})
                else:
                    finish(cell, outcome)
                hand_out(worker)
    finally:
        for worker in workers:
            if worker.process.is_alive() and worker.cell is None:
                worker.connection.send(None)
            else:
                worker.process.terminate()
        for worker in workers:
            worker.process.join()
    return outcomes
