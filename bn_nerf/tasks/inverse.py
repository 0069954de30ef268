"""What the CT, MRI and occupancy commands share: coordinate grids, predictions on fixed
coordinates, and running one or several (method, size) runs with the image task's output layout.

Output layout (as `bn-inr image`): a single run writes straight into `--out`; several runs
(`--methods` and/or `--sizes`) write `--out/<input>/<method>_<depth>x<width>/` each, plus
`runs.csv` in `--out`.
"""

from __future__ import annotations

import argparse
import copy
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from bn_nerf.errors import InputError
from bn_nerf.networks.mlp import CoordinateMLP
from bn_nerf.tasks.arguments import PaperDefaults, add_run_arguments, resolve_run
from bn_nerf.tasks.base import Task
from bn_nerf.tasks.image import parse_size
from bn_nerf.tasks.trainer import CHECKPOINT_FILE, METRICS_FILE, RunSpec, TrainConfig, fit, validate_run

RUNS_CSV = "runs.csv"


def grid_coordinates(shape: Sequence[int]) -> torch.Tensor:
    """(prod(shape), len(shape)) sample-centre coordinates in [-1, 1], in the array's row-major
    order; column k is the coordinate along array axis k."""
    axes = [torch.linspace(-1.0, 1.0, size) for size in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))


class FixedCoordinates:
    """Coordinates a network is evaluated on again and again (a task's whole grid).

    A CoordinateMLP's encoding has no parameters, so it is computed once per network and reused
    every step: PE's sin/cos are a large share of a small network's step.
    """

    def __init__(self, coordinates: torch.Tensor):
        self.coordinates = coordinates
        self._encoded: torch.Tensor | None = None
        self._encoded_by: nn.Module | None = None

    def to(self, device: torch.device) -> "FixedCoordinates":
        self.coordinates = self.coordinates.to(device)
        self._encoded = self._encoded_by = None
        return self

    def predict(self, net: nn.Module) -> torch.Tensor:
        """(count, out_dim) network outputs, all coordinates in one batch."""
        if not isinstance(net, CoordinateMLP):
            return net(self.coordinates)
        if self._encoded_by is not net.encoding:
            with torch.no_grad():
                self._encoded = net.encoding(self.coordinates)
            self._encoded_by = net.encoding
        return net.forward_encoded(self._encoded)


def positive(value: int | float, flag: str) -> int | float:
    if value is None or not value > 0:
        raise InputError(f"{flag} must be > 0, got {value}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, defaults: PaperDefaults, out_default: str) -> None:
    parser.add_argument("--out", type=Path, default=Path(out_default), help=f"output folder (default {out_default})")
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="several methods in one call; replaces --method")
    parser.add_argument("--sizes", nargs="+", metavar="DEPTHxWIDTH",
                        help="several net sizes, e.g. 2x128 4x256; replaces --depth/--width")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for PyTorch (default: its own choice); 1 is often faster on a shared CPU")
    add_run_arguments(parser, defaults)


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    train: TrainConfig
    out_dir: Path


def plan_runs(args: argparse.Namespace, defaults: PaperDefaults, input_name: str) -> list[PlannedRun]:
    """Every (method, size) run asked for, each validated before anything trains."""
    if args.threads is not None:
        torch.set_num_threads(positive(args.threads, "--threads"))
    if args.methods and args.method:
        raise InputError("give either --method or --methods, not both")
    if args.sizes and (args.depth is not None or args.width is not None):
        raise InputError("give either --sizes or --depth/--width, not both")
    methods = args.methods or [args.method]
    sizes = [parse_size(text) for text in args.sizes] if args.sizes else [(args.depth, args.width)]
    single = len(methods) == 1 and len(sizes) == 1
    runs = []
    for method in methods:
        for depth, width in sizes:
            run_args = copy.copy(args)
            run_args.method, run_args.depth, run_args.width = method, depth, width
            spec, train = resolve_run(run_args, defaults)
            validate_run(spec, train)
            out_dir = args.out if single else args.out / input_name / f"{spec.method}_{spec.depth}x{spec.width}"
            runs.append(PlannedRun(spec, train, out_dir))
    return runs


def run_planned(args: argparse.Namespace, task: Task, runs: list[PlannedRun],
                extra_metrics: Callable[[nn.Module], dict], summary_keys: Sequence[str]) -> list[dict]:
    """Fit every planned run on `task`, print one line each, and write runs.csv for several."""
    rows = []
    for planned in runs:
        # Several runs: resume those that left a checkpoint and start the others afresh.
        resume = args.resume and (len(runs) == 1 or (planned.out_dir / CHECKPOINT_FILE).is_file())
        metrics, _ = fit(task, planned.spec, planned.train, planned.out_dir, resume=resume, extra_metrics=extra_metrics)
        rows.append(metrics)
        figures = ", ".join(f"{key} {metrics[key]:.4g}" for key in summary_keys)
        reference = ", ".join(f"{key} {metrics['reference_' + key]:.4g}" for key in summary_keys
                              if "reference_" + key in metrics)
        print(f"{task.name} {planned.spec.method} {planned.spec.depth}x{planned.spec.width}: {figures} "
              f"(eval mode; train mode {task.primary_metric} {metrics[task.primary_metric + '_train_mode']:.4g}"
              + (f"; {metrics['reference_method']} {reference}" if reference else "")
              + f"), {metrics['seconds']:.1f} s -> {planned.out_dir / METRICS_FILE}")
    if len(runs) > 1:
        leading = ["method", "depth", "width", *summary_keys, f"{task.primary_metric}_train_mode", "params",
                   "iterations", "seconds", "seed"]
        columns = leading + sorted({key for row in rows for key in row} - set(leading))
        with (args.out / RUNS_CSV).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        print(f"{len(rows)} runs -> {args.out / RUNS_CSV}")
    return rows
