"""Process defaults a run chooses for itself (`bn-inr` tasks, `bn-nerf-demo`): how many CPU threads,
and how freed memory is kept.

Threads: PyTorch starts one thread per core. On a quiet machine a second thread nearly halves a
step; on a shared one whose other core is busy, two OpenMP threads wait on each other and a step
took 2.5-3.3x as long as on one thread (BENCHMARKS.md). Neither default is right everywhere, so a
run measures: the same small network-shaped workload on one thread and on every usable core,
interleaved, and keeps the faster (all cores only when clearly faster). `--threads` overrides, and so
does a thread count the caller already lowered (`torch.set_num_threads`, OMP_NUM_THREADS).

Memory: a full-batch step allocates and frees dozens of activation-sized tensors (29 MB each for a
512^2 image at width 28, 450 MB for a 96^3 volume at width 128). glibc serves blocks that large with
fresh mmap()s or trims them back to the kernel when freed, so every step page-faults its whole
working set in again: 56,000-109,000 page faults and a quarter of the CPU time of a 512^2 image
step. `keep_freed_memory` makes glibc keep freed memory for reuse (the process's resident size
then stays at its peak until it exits, which is what a training run needs anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bn_nerf.networks.matmul import column_sums, matmul_transposed

# glibc's mallopt parameters (malloc.h): never trim the heap's top; never serve a block by mmap().
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse; True if it took effect (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl has no mallopt)
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity, then a cgroup CPU quota when one is set)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _probe_seconds(threads: int, activations: torch.Tensor, weight: torch.Tensor) -> float:
    """Seconds for one layer-shaped piece of work: a skinny product, a ReLU and a batch reduction."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    for _ in range(4):
        column_sums(torch.relu(matmul_transposed(activations, weight)))
    return time.perf_counter() - started


def choose_threads(requested: int | None, device: torch.device) -> str:
    """Set PyTorch's CPU threads and say how they were chosen (one line for the user)."""
    if requested is not None:
        torch.set_num_threads(requested)
        return f"threads: {requested} (--threads)"
    if device.type != "cpu":
        return f"threads: {torch.get_num_threads()} (PyTorch's default; the work runs on {device})"
    # PyTorch's own count (one per core, or OMP_NUM_THREADS, or what a caller set), capped by the
    # cores a container's quota allows, which PyTorch does not read.
    most = min(torch.get_num_threads(), usable_cores())
    if most == 1:
        torch.set_num_threads(1)
        return "threads: 1 (one usable core, or set so by the caller; --threads overrides)"
    generator = torch.Generator().manual_seed(0)
    activations = torch.rand(1 << 16, 64, generator=generator)
    weight = torch.rand(64, 64, generator=generator)
    samples: dict[int, list[float]] = {1: [], most: []}
    _probe_seconds(most, activations, weight)  # warm up the kernels and the allocator
    for _ in range(3):
        for threads in samples:
            samples[threads].append(_probe_seconds(threads, activations, weight))
    one, every = statistics.median(samples[1]), statistics.median(samples[most])
    # All cores only when clearly faster: on a shared machine the gain is fragile, the loss is not.
    chosen = most if every < 0.8 * one else 1
    torch.set_num_threads(chosen)
    return (f"threads: {chosen} (a probe took {one * 1e3:.0f} ms on 1 thread, {every * 1e3:.0f} ms on {most}; "
            f"--threads overrides)")
