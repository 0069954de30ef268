"""Process defaults a run chooses for itself (`bn-inr` tasks and sweeps, `ns-train` with the plugin's
methods, `bn-nerf-demo`): how many CPU threads, and how freed memory is kept; and the CPU's model
name, with which every recorded figure names its machine.

Threads: PyTorch starts one thread per core. On a quiet machine a second thread nearly halves a
step; on a shared one whose other core is busy, two OpenMP threads wait on each other and a step
took 2.5-3.5x as long as on one thread (BENCHMARKS.md). Neither default is right everywhere, so a
run measures: short trials of a small network-shaped workload on one thread and on every usable
core, alternating, and keeps every core unless one thread's median trial wins by a clear margin.
`--threads` overrides, and so does a thread count the caller already lowered
(`torch.set_num_threads`, OMP_NUM_THREADS). Runs meant to be compared with one another (a sweep's
cells, a benchmark's methods) pass the same count rather than each probing on its own.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from bn_nerf.networks.matmul import column_sums, matmul_transposed

# glibc's mallopt parameters (malloc.h): never trim the heap's top; never serve a block by mmap().
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def cpu_model() -> str:
    """The CPU's model name, as every recorded figure names its machine ("unknown CPU" off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _glibc_function(name: str):
    """A function of glibc's malloc, or None off glibc (musl has no mallopt or malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), name)
    except (OSError, AttributeError, TypeError):
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse; True if it took effect (glibc only)."""
    mallopt = _glibc_function("mallopt")
    return mallopt is not None and bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


def return_freed_memory() -> bool:
    """Hand the memory freed since the last call back to the kernel (glibc's malloc_trim), which
    `keep_freed_memory` otherwise keeps for life: after work that peaks above the training steps
    (an eval image, a checkpoint), so that the process's resident size falls back to what its steps
    use. True if glibc returned any."""
    malloc_trim = _glibc_function("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


def available_memory_bytes() -> int | None:
    """Memory the kernel could give this process now without swapping (MemAvailable), or None
    where /proc/meminfo does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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


def most_threads() -> int:
    """The count the probe weighs against one thread: PyTorch's own (one per core, or OMP_NUM_THREADS,
    or what a caller set), capped by the cores a container's quota allows, which PyTorch does not read."""
    return min(torch.get_num_threads(), usable_cores())


# The probe: rounds of one trial per candidate count, alternating which goes first, until MAX_ROUNDS
# or until the trials have taken PROBE_BUDGET_SECONDS (a loaded machine's slow trials end it early,
# after MIN_ROUNDS). The median trial of each count decides, not the fastest: a neighbour's burst makes
# some trials slower on a quiet machine, and a neighbour's pause makes some faster on a busy one
# (a 2-thread trial at 7.4 ms among others at 24-51 ms, measured under load), and either kind of outlier
# would flip a minimum while a median needs most trials disturbed alike.
MIN_ROUNDS = 3
MAX_ROUNDS = 9
PROBE_BUDGET_SECONDS = 0.15
# One thread only when every core's median trial is slower than one thread's by more than this factor.
# On a quiet machine every core wins (issue 19: a 512^2 image step 0.37 s against 0.55 s on one thread); on one
# whose other core is busy, two OpenMP threads wait on each other and one thread wins by 2.5-3.5x. A
# near-tie is noise or a machine that is neither, and resolves to every core: wrongly chosen, that
# costs at most about this factor, while one thread wrongly chosen on a quiet machine costs 1.5x.
ONE_THREAD_MARGIN = 1.25


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a run uses, how it was chosen ("probe" or a key of UNPROBED_REASONS) and,
    when the probe chose, the seconds of each of its trials by thread count -- kept in a run's
    metrics.json, so that a slow run can be explained after the fact."""

    threads: int
    chosen_by: str
    trials: dict[int, tuple[float, ...]] = field(default_factory=dict)

    def median_milliseconds(self) -> dict[int, float]:
        return {threads: round(statistics.median(seconds) * 1e3, 2) for threads, seconds in self.trials.items()}

    @property
    def trials_per_count(self) -> int:
        return len(self.trials.get(1, ()))

    @property
    def line(self) -> str:
        """One line for the user."""
        if self.chosen_by == "probe":
            (_, one_ms), (most, most_ms) = sorted(self.median_milliseconds().items())
            return (f"threads: {self.threads} (median of {self.trials_per_count} probe trials: {one_ms:.1f} ms "
                    f"on 1 thread, {most_ms:.1f} ms on {most}; --threads overrides)")
        return f"threads: {self.threads} ({UNPROBED_REASONS[self.chosen_by]})"

    def metrics(self) -> dict:
        """Flat entries for a run's metrics.json (and so runs.csv and a sweep's cells.csv)."""
        probe = {f"thread_probe_ms_{threads}": ms for threads, ms in self.median_milliseconds().items()}
        if probe:
            probe["thread_probe_trials"] = self.trials_per_count
        return {"threads": self.threads, "threads_chosen_by": self.chosen_by, **probe}


# How a count is chosen without the probe, and what the user is told.
UNPROBED_REASONS = {
    "--threads": "--threads",
    "caller": "one usable core, or set so by the caller; --threads overrides",
    "default": "PyTorch's default: the run's work is not on the CPU",
}


def layer_trial() -> Callable[[int], float]:
    """Seconds of one layer-shaped piece of work -- a skinny product, a ReLU and a batch reduction, as
    a coordinate network's step is made of -- on a given number of threads."""
    generator = torch.Generator().manual_seed(0)
    activations = torch.rand(1 << 16, 64, generator=generator)
    weight = torch.rand(64, 64, generator=generator)

    def seconds(threads: int) -> float:
        torch.set_num_threads(threads)
        started = time.perf_counter()
        column_sums(torch.relu(matmul_transposed(activations, weight)))
        return time.perf_counter() - started

    return seconds


def probe_trials(most: int, trial: Callable[[int], float]) -> dict[int, tuple[float, ...]]:
    """Alternating trials on one thread and on `most` threads (see MAX_ROUNDS): seconds of each."""
    # Warm-ups, not counted: a count's first trial (thread pool, kernels, allocator) took 2-4x its others.
    for threads in (most, 1):
        trial(threads)
    trials: dict[int, list[float]] = {1: [], most: []}
    spent = 0.0
    for round_index in range(MAX_ROUNDS):
        if round_index >= MIN_ROUNDS and spent >= PROBE_BUDGET_SECONDS:
            break
        for threads in ((1, most) if round_index % 2 == 0 else (most, 1)):
            seconds = trial(threads)
            trials[threads].append(seconds)
            spent += seconds
    return {threads: tuple(seconds) for threads, seconds in trials.items()}


def faster_count(trials: dict[int, Sequence[float]]) -> int:
    """One thread when its median trial wins by ONE_THREAD_MARGIN; every core otherwise."""
    most = max(trials)
    return 1 if statistics.median(trials[most]) > ONE_THREAD_MARGIN * statistics.median(trials[1]) else most


def choose_threads(requested: int | None, device: torch.device,
                   trial: Callable[[int], float] | None = None) -> ThreadChoice:
    """Set PyTorch's CPU threads: `requested`, else what the probe measures faster on a CPU run.
    `trial` times one probe trial on a number of threads (default: `layer_trial()`)."""
    if requested is not None:
        torch.set_num_threads(requested)
        return ThreadChoice(requested, "--threads")
    if device.type != "cpu":
        return ThreadChoice(torch.get_num_threads(), "default")
    most = most_threads()
    if most == 1:
        torch.set_num_threads(1)
        return ThreadChoice(1, "caller")
    trials = probe_trials(most, trial or layer_trial())
    chosen = faster_count(trials)
    torch.set_num_threads(chosen)
    return ThreadChoice(chosen, "probe", trials)
