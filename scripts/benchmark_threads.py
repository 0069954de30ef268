"""Does the thread probe choose the faster count? --starts starts of it, each in a fresh process as a
run starts, judged against the count that a longer A/B run of the real workload measures faster.

    .venv/bin/python scripts/benchmark_threads.py --starts 20       # issue 19's check, about 4 minutes
    .venv/bin/python scripts/benchmark_threads.py --starts 2 --size 32 --short-steps 1 --long-steps 2 --repeats 1

1. The real workload, A/B: `bn-inr image`'s training loop (`fit` with glibc keeping freed memory) on a
   --size^2 photo, BN 10x28 after the ReLU -- the issue's run -- at one thread and at every usable
   core, alternating, --repeats times. Each figure is benchmark_image.py's per-process measurement:
   seconds per step as the difference of a --long-steps and a --short-steps run in one fresh process.
   The count with the lower median is the faster one.
2. --starts fresh processes, each doing what a run does before training (glibc keeping freed memory,
   then `choose_threads(None, cpu)`) and reporting its choice, its trials and the probe's own wall time.

Printed: each start's choice, its median trials, its wall time and whether it chose the faster count;
then how many did. The load average before and after says whether the machine was quiet; the check
means something only on a quiet one. --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmark_image import load_average, machine, step_seconds_in_fresh_process
from bn_nerf.runtime import most_threads

# A run's start, as plan_runs does it, with the probe's own wall time.
PROBE_START = """
import json, time, torch
from bn_nerf.runtime import choose_threads, keep_freed_memory
keep_freed_memory()
started = time.perf_counter()
choice = choose_threads(None, torch.device("cpu"))
print(json.dumps({"probe_seconds": time.perf_counter() - started, **choice.metrics(),
                  "trials_ms": {count: [round(s * 1e3, 2) for s in trials] for count, trials in choice.trials.items()}}))
"""


def workload_seconds_per_step(counts: tuple[int, ...], args: argparse.Namespace) -> dict[int, list[float]]:
    """Wall seconds per step of the issue's run at each count, the counts alternating."""
    samples: dict[int, list[float]] = {count: [] for count in counts}
    for repeat in range(args.repeats):
        for count in counts if repeat % 2 == 0 else counts[::-1]:
            result = step_seconds_in_fresh_process("ours", "bn", "after", True, count, args.size,
                                                   args.short_steps, args.long_steps)
            samples[count].append(result["wall"])
            print(f"workload, {count} thread(s): {result['wall']:.3f} s/step (load {load_average()})", flush=True)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=20, help="fresh processes running the probe (default 20)")
    parser.add_argument("--size", type=int, default=512, help="photo side of the workload (default 512, the issue's)")
    parser.add_argument("--short-steps", type=int, default=10, help="steps of the short workload run (default 10)")
    parser.add_argument("--long-steps", type=int, default=40, help="steps of the long workload run (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="workload measurements per count (default 3)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    most = most_threads()
    if most < 2:
        sys.exit("benchmark_threads.py: one usable core (or OMP_NUM_THREADS=1), nothing to choose")
    report: dict = {"machine": machine(), "load_before": load_average(), "settings": {key: value for key, value in vars(args).items() if key != "json"}}
    print(f"machine: {report['machine']}; load average {report['load_before']}", flush=True)

    workload = workload_seconds_per_step((1, most), args)
    medians = {count: statistics.median(seconds) for count, seconds in workload.items()}
    faster = min(medians, key=medians.get)
    print(f"workload: {medians[1]:.3f} s/step on 1 thread, {medians[most]:.3f} on {most} (medians of "
          f"{args.repeats}): {faster} faster by {max(medians.values()) / min(medians.values()):.2f}x", flush=True)

    starts = []
    for index in range(1, args.starts + 1):
        result = json.loads(subprocess.run([sys.executable, "-c", PROBE_START], capture_output=True, text=True,
                                           check=True).stdout.splitlines()[-1])
        result["faster"] = result["threads"] == faster
        starts.append(result)
        print(f"start {index:2d}: threads {result['threads']} (medians of {result['thread_probe_trials']} trials: "
              f"{result['thread_probe_ms_1']:.1f} ms on 1 thread, {result[f'thread_probe_ms_{most}']:.1f} ms on {most}; "
              f"probe {result['probe_seconds']:.3f} s) faster count: {'yes' if result['faster'] else 'NO'}", flush=True)

    probe_seconds = [start["probe_seconds"] for start in starts]
    report.update(workload_seconds_per_step=workload, faster=faster, starts=starts, load_after=load_average())
    print(f"{sum(start['faster'] for start in starts)} of {len(starts)} starts chose the faster count ({faster}); "
          f"probe wall time median {statistics.median(probe_seconds):.3f} s, max {max(probe_seconds):.3f} s; "
          f"load average at the end {report['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
