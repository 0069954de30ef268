"""How long a sweep configuration takes on one data-centre GPU, estimated from this CPU.

    python scripts/estimate_gpu_window.py configs/table1/gpu-window.yaml --cells-per-gpu 7

Each distinct cell (task, input, method, net size; seeds cost alike) runs here as the sweep runs
it -- its task command, at the paper's input size, one thread -- twice: for 1 iteration and for
1 + N. Every PyTorch operation of both runs is counted, so the difference over N is exactly one
training step's work (set-up and evaluation cancel out): its operations, their floating-point
operations (matrix products, the sparse Radon products included) and the bytes they read and
write. A step on the GPU then takes at least the largest of

- FLOPs / FLOP rate        (FP32 matrix products: PyTorch's default, no TF32)
- bytes / memory bandwidth (eager PyTorch: every operation reads its inputs from and writes its
                            outputs to memory; small MLPs are bound here, not by FLOPs)
- operations x launch cost (each operation is a kernel launched from Python: the floor of a small
                            step; Adam counted as it runs on CUDA, in multi-tensor operations)

and a cell takes its iterations x that, plus its set-up and evaluation as measured here (the
Radon matrix, SSIM and the figures run on the CPU there too). Cells sharing the GPU share its
FLOPs and bandwidth but launch from their own processes, so the window is the larger of the sum
of every cell's device time and the longest worker's queue (cells handed out longest first).
The rates are assumptions, stated in the output and settable by flag; the counts are measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import heapq
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bn_nerf.sweep.cells import Cell, plan_cells
from bn_nerf.sweep.config import load_config
from bn_nerf.sweep.tasks import SWEEP_TASKS
from bn_nerf.tasks.trainer import METRICS_FILE

# H200: FP32 (non-tensor-core) peak 67 TFLOP/s; products of K <= 256 reach about a third of it.
FLOP_RATE = 22e12
# H200: 4.8 TB/s HBM3e peak; a device-to-device copy through PyTorch reached 4.3 TB/s on the H200s
# lent to this project (2026-10-28 and 11-04, reads plus writes); elementwise kernels on
# activation-sized tensors reach less.
BANDWIDTH = 3e12
# PyTorch eager: Python dispatch plus a CUDA launch per operation.
LAUNCH_SECONDS = 10e-6
# `_linear_pointwise`: oneDNN's product on x86 CPUs (bn_nerf.networks.matmul), `mm` or `addmm` on CUDA.
MATRIX_PRODUCTS = {"mm", "addmm", "bmm", "baddbmm", "mv", "_linear_pointwise"}


def tensor_bytes(tensor: torch.Tensor) -> int:
    if tensor.layout == torch.sparse_csr:
        return sum(t.numel() * t.element_size() for t in (tensor.values(), tensor.col_indices(), tensor.crow_indices()))
    return tensor.numel() * tensor.element_size()


def product_flops(name: str, args: tuple, out: torch.Tensor) -> int:
    """2 x multiply-adds of a matrix product (x4 for complex); a sparse factor counts its entries."""
    left, right = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
    scale = 4 if out.is_complex() else 1
    if left.layout == torch.sparse_csr:
        return 2 * scale * left.values().numel() * (right.shape[-1] if right.dim() > 1 else 1)
    return 2 * scale * out.numel() * left.shape[-1]


class OperationCounter(TorchDispatchMode):
    """Counts the operations that launch a kernel (views launch none), their FLOPs and bytes moved."""

    def __init__(self):
        super().__init__()
        self.totals = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(ret.alias_info is not None and not ret.alias_info.is_write for ret in func._schema.returns):
            return out
        name = func.overloadpacket.__name__
        # Each tensor once: an in-place operation returns the tensor it was given.
        tensors = list({id(t): t for t in tree_flatten((args, kwargs or {}, out))[0] if isinstance(t, torch.Tensor)}.values())
        self.totals["operations"] += 1
        self.totals["bytes"] += sum(tensor_bytes(t) for t in tensors)
        if name in MATRIX_PRODUCTS:
            self.totals["flops"] += product_flops(name, args, out)
        return out


@contextlib.contextmanager
def adam_as_on_cuda():
    """Adam as PyTorch runs it on CUDA tensors -- a few multi-tensor (foreach) operations a step --
    rather than the per-parameter loop it runs on CPU tensors, so the count is the GPU's."""
    cpu_default = torch.optim.Adam
    torch.optim.Adam = functools.partial(cpu_default, foreach=True)
    try:
        yield
    finally:
        torch.optim.Adam = cpu_default


def measured_run(cell: Cell, iterations: int, folder: Path) -> dict:
    """One run of `cell` for `iterations` on this CPU, one thread: its operation totals, the training
    loop's seconds and the whole run's wall seconds."""
    cell = dataclasses.replace(cell, iterations=iterations, checkpoint_every=iterations, folder=folder)
    task = SWEEP_TASKS[cell.task]
    arguments = task.parser().parse_args(cell.arguments(threads=1, resume=False, device="cpu"))
    counter = OperationCounter()
    started = time.perf_counter()
    with open(os.devnull, "w") as silent, contextlib.redirect_stdout(silent), adam_as_on_cuda(), counter:
        task.module.run(arguments)
    wall = time.perf_counter() - started
    loop = json.loads((folder / METRICS_FILE).read_text())["seconds"]
    return {**counter.totals, "loop_seconds": loop, "wall_seconds": wall}


def step_profile(cell: Cell, extra_iterations: int, scratch: Path) -> dict:
    short = measured_run(cell, 1, scratch / "short")
    long = measured_run(cell, 1 + extra_iterations, scratch / "long")
    step = {key: (long[key] - short[key]) / extra_iterations for key in ("operations", "bytes", "flops")}
    # Seconds per CPU step over the longer run's whole loop: a difference of two short, noisy loop
    # times (the first step also warms kernels up) can come out negative on a busy machine.
    step["loop_seconds"] = long["loop_seconds"] / (1 + extra_iterations)
    # Set-up and evaluation: the short run less its one step.
    return {**step, "setup_seconds": short["wall_seconds"] - short["loop_seconds"]}


def window(cells_seconds: list[tuple[float, float]], workers: int) -> float:
    """Wall time of cells (alone-time, device-time) on `workers` processes sharing one GPU."""
    queues = [0.0] * workers
    for alone, _ in sorted(cells_seconds, reverse=True):
        heapq.heapreplace(queues, queues[0] + alone)
    return max(max(queues), sum(device for _, device in cells_seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--cells-per-gpu", type=int, default=1, help="workers sharing the GPU, as the sweep's flag")
    parser.add_argument("--steps", type=int, default=3, help="measured training steps per cell (default 3)")
    parser.add_argument("--flop-rate", type=float, default=FLOP_RATE, help=f"FLOP/s (default {FLOP_RATE:.3g})")
    parser.add_argument("--bandwidth", type=float, default=BANDWIDTH, help=f"bytes/s (default {BANDWIDTH:.3g})")
    parser.add_argument("--launch-seconds", type=float, default=LAUNCH_SECONDS,
                        help=f"seconds per operation (default {LAUNCH_SECONDS:g})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as scratch:
        cells = plan_cells(config, Path(scratch) / "plan")
        seeds = Counter((c.task, c.input_name, c.method, c.depth, c.width) for c in cells)
        print(f"{config.path}: {len(cells)} cells; per step on this CPU (1 thread) and on the GPU "
              f"(FLOP rate {args.flop_rate:.3g}/s, bandwidth {args.bandwidth:.3g} B/s, {args.launch_seconds * 1e6:g} µs "
              f"per operation)\n")
        print(f"{'cell':<34} {'iters':>6} {'CPU s/step':>10} {'ops':>6} {'GFLOP':>8} {'GB':>7} "
              f"{'flop ms':>8} {'byte ms':>8} {'launch ms':>9} {'setup s':>8} {'cell s':>8}")
        cells_seconds = []
        for index, cell in enumerate(cells):
            key = (cell.task, cell.input_name, cell.method, cell.depth, cell.width)
            if key not in seeds:
                continue
            profile = step_profile(cell, args.steps, Path(scratch) / str(index))
            bounds = (profile["flops"] / args.flop_rate, profile["bytes"] / args.bandwidth,
                      profile["operations"] * args.launch_seconds)
            device = cell.iterations * max(bounds[:2])
            alone = profile["setup_seconds"] + cell.iterations * max(bounds)
            cells_seconds += [(alone, device)] * seeds.pop(key)
            print(f"{cell.task + '/' + cell.input_name + '/' + cell.method + f'_{cell.depth}x{cell.width}':<34} "
                  f"{cell.iterations:>6} {profile['loop_seconds']:>10.3f} {profile['operations']:>6.0f} "
                  f"{profile['flops'] / 1e9:>8.2f} {profile['bytes'] / 1e9:>7.2f} {bounds[0] * 1e3:>8.3f} "
                  f"{bounds[1] * 1e3:>8.3f} {bounds[2] * 1e3:>9.3f} {profile['setup_seconds']:>8.1f} {alone:>8.0f}", flush=True)
    total = window(cells_seconds, args.cells_per_gpu)
    print(f"\n{len(cells_seconds)} cells, {args.cells_per_gpu} at a time on one GPU: device busy "
          f"{sum(d for _, d in cells_seconds) / 60:.1f} min, cells alone {sum(a for a, _ in cells_seconds) / 60:.1f} min "
          f"in all; window about {total / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
