"""Inverse-task benchmark: every method preset on CT, MRI and occupancy at a CPU budget, beside
the classical reference rows and the paper's Table 1, and the peak memory of a 512^3 IoU evaluation.

    .venv/bin/python scripts/benchmark_inverse.py quality ct|mri|occupancy [--threads 1] [--json FILE]
    .venv/bin/python scripts/benchmark_inverse.py memory [--resolution 512]

`quality` prints a markdown table (eval-mode figures; train mode in brackets where it differs) for
BENCHMARKS.md; `memory` runs the occupancy evaluation (BN re-estimation, train- and eval-mode grid
passes, IoU, marching cubes, preview) on the embedded shape and prints the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from bn_nerf.networks import PRESETS
from bn_nerf.operators.kspace_masks import sampling_mask
from bn_nerf.signals.solids import BumpySphere
from bn_nerf.tasks.ct import CTTask, prepare_image
from bn_nerf.tasks.mri import DEFAULT_FRACTION, DEFAULT_MASK, MRITask, prepare_volume
from bn_nerf.tasks.occupancy import OccupancyTask
from bn_nerf.tasks.trainer import RunSpec, TrainConfig, fit

# Table 1 of the paper for the nets benchmarked here (CT, MRI: PSNR dB; shape: IoU).
PAPER_TABLE_1 = {
    ("ct", "2x128"): {"siren": 28.30, "relu": 26.31, "bn": 28.50, "mfn": 24.82, "wire": 28.30, "pe": 28.16, "bn+pe": 30.14},
    ("mri", "2x256"): {"siren": 26.04, "relu": 24.52, "bn": 28.97, "mfn": 27.24, "wire": 25.31, "pe": 30.17, "bn+pe": 32.42},
    ("occupancy", "2x128"): {"siren": 0.954, "relu": 0.905, "bn": 0.952, "mfn": 0.886, "wire": 0.956, "pe": 0.957, "bn+pe": 0.983},
}

# The CPU budgets: small sizes, stated in the table header.
BUDGETS = {
    "ct": {"size": 64, "projections": 100, "depth": 2, "width": 128, "iterations": 300, "lr": 5e-4},
    "mri": {"size": 24, "mask": DEFAULT_MASK, "fraction": DEFAULT_FRACTION, "depth": 2, "width": 128,
            "iterations": 200, "lr": 2e-3},
    "occupancy": {"eval_resolution": 64, "pool": 100_000, "points": 10_000, "depth": 2, "width": 128,
                  "iterations": 200, "lr": 5e-3, "lr_final": 5e-4},
}


def make_task(name: str, budget: dict):
    if name == "ct":
        _, image = prepare_image(None, budget["size"])
        return CTTask(image, budget["projections"], label="shepp_logan")
    if name == "mri":
        _, volume = prepare_volume(None, budget["size"])
        mask = sampling_mask(budget["mask"], volume.shape, budget["fraction"])
        return MRITask(volume, mask, label="head_phantom", mask_kind=budget["mask"])
    return OccupancyTask(BumpySphere(), budget["pool"], budget["points"], budget["eval_resolution"])


def quality(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    budget = dict(BUDGETS[args.task], **({"iterations": args.iterations} if args.iterations else {}))
    task = make_task(args.task, budget)
    metric = task.primary_metric
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods or list(PRESETS):
            encoded = PRESETS[method].encoding == "pe"
            overrides = {"pe_octaves": args.pe_octaves} if encoded and args.pe_octaves is not None else {}
            spec = RunSpec(method, budget["depth"], budget["width"], overrides)
            train = TrainConfig(budget["iterations"], budget["lr"], final_learning_rate=budget.get("lr_final"),
                                checkpoint_every=0, show_progress=False)
            metrics, _ = fit(task, spec, train, Path(scratch) / method)
            rows.append(metrics)
            print(f"{method}: {metric} {metrics[metric]:.4f} (train mode {metrics[metric + '_train_mode']:.4f}) "
                  f"{metrics['seconds']:.0f} s", flush=True)
    paper_net = {"ct": "2x128", "mri": "2x256", "occupancy": "2x128"}[args.task]
    paper = PAPER_TABLE_1[(args.task, paper_net)]
    print(f"\n{args.task}: {json.dumps(budget)}, pe_octaves {args.pe_octaves or 10}; "
          f"{platform.processor() or platform.machine()}, {args.threads} thread(s)\n")
    print(f"| method | {metric} (eval) | {metric} (train mode) | ssim | seconds | paper {paper_net} |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        ssim = f"{row['ssim']:.3f}" if "ssim" in row else "-"
        print(f"| {row['method']} | {row[metric]:.4g} | {row[metric + '_train_mode']:.4g} | {ssim} | "
              f"{row['seconds']:.0f} | {paper.get(row['method'], '-')} |")
    if "reference_method" in rows[0]:
        print(f"| {rows[0]['reference_method']} (classical) | {rows[0]['reference_' + metric]:.4g} | - | "
              f"{rows[0]['reference_ssim']:.3f} | - | - |")
    if args.json:
        Path(args.json).write_text(json.dumps({"budget": budget, "rows": rows}, indent=2) + "\n")


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of training briefly, then evaluating on a resolution^3 grid."""
    torch.set_num_threads(args.threads)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    task = OccupancyTask(BumpySphere(), 200_000, 20_000, args.resolution)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        metrics, _ = fit(task, RunSpec(args.method, args.depth, args.width), TrainConfig(args.iterations, 5e-3, 5e-4, checkpoint_every=0,
                                                                         show_progress=False),
                         Path(scratch))
        mesh_bytes = (Path(scratch) / "reconstruction.ply").stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"{args.resolution}^3 IoU evaluation, {args.method} {args.depth}x{args.width}, {args.iterations} iterations: "
          f"iou {metrics['iou']:.4f}, peak RSS {peak:.2f} GiB (before the task {before:.2f} GiB), "
          f"mesh {mesh_bytes / 2 ** 20:.0f} MiB, {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    quality_parser = commands.add_parser("quality")
    quality_parser.add_argument("task", choices=list(BUDGETS))
    quality_parser.add_argument("--methods", nargs="+", choices=list(PRESETS))
    quality_parser.add_argument("--threads", type=int, default=1)
    quality_parser.add_argument("--pe-octaves", type=int,
                                help="PE octaves for the PE methods (default 10, the paper's at 512 pixels; a grid "
                                     "8x smaller keeps the paper's top frequency per pixel with 7)")
    quality_parser.add_argument("--iterations", type=int, help="replace the budget's iteration count")
    quality_parser.add_argument("--json")
    memory_parser = commands.add_parser("memory")
    memory_parser.add_argument("--resolution", type=int, default=512)
    memory_parser.add_argument("--method", default="bn+pe")
    # Evaluation runs without gradients, so its peak grows with the width (one layer's activations
    # per chunk) and the grid, not the depth: one 256-wide layer measures a 2x256 net's peak cheaply.
    memory_parser.add_argument("--depth", type=int, default=1)
    memory_parser.add_argument("--width", type=int, default=256)
    memory_parser.add_argument("--iterations", type=int, default=50)
    memory_parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    quality(args) if args.command == "quality" else memory(args)


if __name__ == "__main__":
    main()
