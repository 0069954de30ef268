"""One or several runs of a task from one command: `--methods` x `--sizes` (x inputs).

Output layout, the same for every `bn-inr` task: a single run writes straight into `--out`;
several runs write `--out/<input>/<method>_<depth>x<width>/` each, plus `runs.csv` in `--out`.
Every run is planned and validated before any trains, so bad input anywhere fails at once and
leaves no half-finished folder of results behind.
"""

from __future__ import annotations

import argparse
import copy
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bn_nerf.io.errors import InputError
from bn_nerf.tasks.arguments import PaperDefaults, add_run_arguments, resolve_run
from bn_nerf.tasks.base import Task
from bn_nerf.runtime import ThreadChoice, choose_threads, keep_freed_memory
from bn_nerf.tasks.trainer import CHECKPOINT_FILE, METRICS_FILE, RunSpec, TrainConfig, fit, resolve_device, validate_run

RUNS_CSV = "runs.csv"


def positive(value: int | float | None, flag: str) -> int | float:
    if value is None or not value > 0:
        raise InputError(f"{flag} must be > 0, got {value}")
    return value


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        depth, width = (int(part) for part in parts)
    except ValueError:
        raise InputError(f"net size '{text}' is not DEPTHxWIDTH (e.g. 10x28)") from None
    if depth <= 0 or width <= 0:
        raise InputError(f"net size '{text}': depth and width must be > 0")
    return depth, width


def add_task_arguments(parser: argparse.ArgumentParser, defaults: PaperDefaults, out_default: str) -> None:
    """The options every task command has: output folder, several runs, threads, and the run options."""
    parser.add_argument("--out", type=Path, default=Path(out_default), help=f"output folder (default {out_default})")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help="several methods in one call (runs.csv; for images a rate-distortion plot); replaces --method")
    parser.add_argument("--sizes", nargs="+", metavar="DEPTHxWIDTH",
                        help="several net sizes (the paper's: " + " ".join(f"{d}x{w}" for d, w in defaults.sizes)
                             + "); replaces --depth/--width")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for PyTorch (default: every usable core, unless a short probe at the "
                             "start measures one thread clearly faster, as when other jobs keep cores busy; "
                             "see BENCHMARKS.md). Runs to be compared should all pass the same count")
    add_run_arguments(parser, defaults)


@dataclass(frozen=True)
class PlannedRun:
    input_name: str
    spec: RunSpec
    train: TrainConfig
    out_dir: Path
    # The process's thread count and how it was chosen, recorded in the run's metrics.json.
    threads: ThreadChoice


def plan_runs(args: argparse.Namespace, defaults: PaperDefaults, input_names: Sequence[str],
              several_inputs: bool = False) -> list[PlannedRun]:
    """Every (input, method, size) run asked for, each validated. `several_inputs` keeps the
    several-runs layout even for one input (a folder holding a single image)."""
    if args.threads is not None:
        positive(args.threads, "--threads")
    if args.methods and args.method:
        raise InputError("give either --method or --methods, not both")
    if args.sizes and (args.depth is not None or args.width is not None):
        raise InputError("give either --sizes or --depth/--width, not both")
    methods = args.methods or [args.method]
    sizes = [parse_size(text) for text in args.sizes] if args.sizes else [(args.depth, args.width)]
    single = len(input_names) == 1 and len(methods) == 1 and len(sizes) == 1 and not several_inputs
    planned = []
    for method in methods:
        for depth, width in sizes:
            run_args = copy.copy(args)
            run_args.method, run_args.depth, run_args.width = method, depth, width
            spec, train = resolve_run(run_args, defaults)
            validate_run(spec, train)
            for name in input_names:
                out_dir = args.out if single else args.out / name / f"{spec.method}_{spec.depth}x{spec.width}"
                planned.append((name, spec, train, out_dir))
    keep_freed_memory()
    # Only once every run is valid: bad input fails at once, without a probe or its line.
    threads = choose_threads(args.threads, resolve_device(args.device))
    print(threads.line)
    return [PlannedRun(*run, threads) for run in planned]


def fit_runs(args: argparse.Namespace, runs: list[PlannedRun], task_for: Callable[[PlannedRun], Task],
             summary_keys: Sequence[str]) -> list[dict]:
    """Fit every planned run, print one line each, and write runs.csv when there are several."""
    rows = []
    for planned in runs:
        task = task_for(planned)
        # Several runs: resume those that left a checkpoint and start the others afresh.
        resume = args.resume and (len(runs) == 1 or (planned.out_dir / CHECKPOINT_FILE).is_file())
        metrics, _ = fit(task, planned.spec, planned.train, planned.out_dir, resume=resume, threads=planned.threads)
        rows.append({"input": planned.input_name, **metrics})
        figures = ", ".join(f"{key} {metrics[key]:.4g}" for key in summary_keys if key in metrics)
        reference = ", ".join(f"{key} {metrics['reference_' + key]:.4g}" for key in summary_keys
                              if "reference_" + key in metrics)
        print(f"{planned.input_name} {task.name} {planned.spec.method} {planned.spec.depth}x{planned.spec.width}: "
              f"{figures} (eval mode; train mode {task.primary_metric} "
              f"{metrics[task.primary_metric + '_train_mode']:.4g}"
              + (f"; {metrics['reference_method']} {reference}" if reference else "")
              + f"), {metrics['seconds']:.1f} s -> {planned.out_dir / METRICS_FILE}")
    if len(rows) > 1 or runs[0].out_dir != args.out:
        leading = ["input", "method", "depth", "width", *summary_keys, f"{task.primary_metric}_train_mode", "params", "iterations", "seconds", "seed"]
        columns = leading + sorted({key for row in rows for key in row} - set(leading))
        with (args.out / RUNS_CSV).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        print(f"{len(rows)} runs -> {args.out / RUNS_CSV}")
    return rows
