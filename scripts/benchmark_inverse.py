"""Inverse-task benchmark: every method preset on CT, MRI and occupancy at a CPU budget, beside
the classical reference rows and the paper's Table 1; the speed of a step at the paper's sizes, split
into the forward operator and the network; and the peak memory of a 512^3 IoU evaluation.

    .venv/bin/python scripts/benchmark_inverse.py quality ct|mri|occupancy [--threads 1] [--json FILE]
    .venv/bin/python scripts/benchmark_inverse.py speed ct|mri|occupancy [--threads N] [--repeats 3]
    .venv/bin/python scripts/benchmark_inverse.py memory [--resolution 512]

`quality` prints a markdown table (eval-mode figures; train mode in brackets where it differs) for
BENCHMARKS.md. `speed` builds the task at the paper's size (CT 512^2 with 100 projections, MRI 96^3,
occupancy 200,000 points per step from a 1,000,000-point pool) with the process defaults `bn-inr`
uses (threads chosen once by its probe unless --threads, glibc keeping freed memory) and times, interleaved,
median of --repeats: a whole training step; the operator alone (its forward, the loss and its
backward on a fixed reconstruction: the projector, the Fourier sampling, or drawing and encoding the
points); and the network alone (forward and backward with the operator's gradient replaced by a
fixed one). For CT it also times the projector it replaced (`grid_sample` over the rotated images).
Every part of one `speed` call runs at that one count (printed, and in --json with the probe's
medians); `quality` trains every method at --threads (default 1), never a per-method probe.
`memory` runs the occupancy evaluation (BN re-estimation, train- and eval-mode grid passes, IoU,
marching cubes, preview) on the embedded shape and prints the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bn_nerf.networks import PRESETS, build_network
from bn_nerf.operators.kspace_masks import sampling_mask
from bn_nerf.signals.solids import BumpySphere
from bn_nerf.tasks.ct import CTTask, prepare_image
from bn_nerf.tasks.mri import DEFAULT_FRACTION, DEFAULT_MASK, MRITask, prepare_volume
from bn_nerf.tasks.occupancy import PAPER_POINTS_PER_ITERATION, DEFAULT_POOL, OccupancyTask
from bn_nerf.runtime import choose_threads, keep_freed_memory
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


# The paper's sizes for `speed`, with the net of the timings (2 x 128; occupancy at the paper's 2 x 256).
SPEED_SETTINGS = {
    "ct": {"size": 512, "projections": 100, "method": "bn+pe", "depth": 2, "width": 128, "lr": 5e-4},
    "mri": {"size": 96, "mask": DEFAULT_MASK, "fraction": DEFAULT_FRACTION, "method": "bn", "depth": 2,
            "width": 128, "lr": 2e-3},
    "occupancy": {"eval_resolution": 64, "points": PAPER_POINTS_PER_ITERATION, "pool": DEFAULT_POOL,
                  "method": "bn+pe", "depth": 2, "width": 256, "lr": 5e-3},
}


def grid_sample_projector(height: int, angles_degrees: np.ndarray):
    """The projector `ParallelBeamProjector` replaced, for comparison: every angle's rotated image
    sampled bilinearly with grid_sample (float32 grid of angles x rays x detectors), summed over rays."""
    size = math.ceil(math.sqrt(2) * height)
    offset, centre = size // 2 - height // 2, size // 2
    radians = torch.deg2rad(torch.as_tensor(angles_degrees, dtype=torch.float64))
    cos, sin = torch.cos(radians)[:, None, None], torch.sin(radians)[:, None, None]
    steps = torch.arange(size, dtype=torch.float64) - centre
    columns = centre + cos * steps[None, None, :] + sin * steps[None, :, None] - offset
    rows = centre - sin * steps[None, None, :] + cos * steps[None, :, None] - offset
    grid = torch.stack([columns, rows], dim=-1).mul(2.0 / (height - 1)).sub(1.0).float()

    def project(image: torch.Tensor) -> torch.Tensor:
        source = image[None, None].expand(grid.shape[0], 1, height, height)
        rotated = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return rotated[:, 0].sum(dim=1).T

    return project


def speed(args: argparse.Namespace) -> None:
    keep_freed_memory()
    threads = choose_threads(args.threads, torch.device("cpu"))
    settings = SPEED_SETTINGS[args.task]
    load_before = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    started = time.perf_counter()
    task = make_task(args.task, settings)
    setup_seconds = time.perf_counter() - started
    torch.manual_seed(0)
    net = build_network(settings["method"], task.in_dim, task.out_dim, settings["depth"], settings["width"])
    optimizer = torch.optim.Adam(net.parameters(), lr=settings["lr"])
    generator = torch.Generator().manual_seed(0)

    def whole_step():
        optimizer.zero_grad(set_to_none=True)
        task.training_loss(net, generator).backward()
        optimizer.step()

    # The operator alone: a fixed reconstruction (or, for occupancy, the drawn points) through the loss.
    cases = {"step": whole_step}
    if args.task == "occupancy":
        def operator():
            index = torch.randint(task.pool.shape[0], (task.points_per_iteration,), generator=generator)
            net.encoding(task.pool[index] * 2.0)
            task.pool_labels[index]

        def network():
            points = task.pool[:task.points_per_iteration]
            output = net(points * 2.0)
            output.backward(torch.ones_like(output))
    else:
        with torch.no_grad():
            fixed = task.reconstruct(net)

        class Frozen(torch.nn.Module):
            def forward(self, _coordinates):
                return leaf

        leaf = fixed.clone().reshape(-1, 1).requires_grad_()

        def operator():
            # The task's own loss on a reconstruction that no network produced: the operator's forward,
            # the loss, and the backward through the operator (its adjoint) to the reconstruction.
            leaf.grad = None
            task.training_loss(Frozen(), generator).backward()

        upstream = torch.randn(fixed.numel(), 1)

        def network():
            output = task.grid.predict(net)
            output.backward(upstream)
    cases["operator"] = operator
    cases["network"] = network
    if args.task == "ct":
        old_projector = grid_sample_projector(task.size, task.angles)
        old_image = fixed.clone().requires_grad_()

        def grid_sample_operator():
            old_image.grad = None
            F.mse_loss(old_projector(old_image), task.measured).backward()

        cases["grid_sample operator (before)"] = grid_sample_operator
    samples: dict[str, list[float]] = {name: [] for name in cases}
    cpu_samples: dict[str, list[float]] = {name: [] for name in cases}
    for function in cases.values():
        function()
    for _ in range(args.repeats):
        for name, function in cases.items():
            begun, cpu = time.perf_counter(), time.process_time()
            function()
            samples[name].append(time.perf_counter() - begun)
            cpu_samples[name].append(time.process_time() - cpu)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu_samples.items()}
    # The network's multiply-adds x 2 per step: forward, weight gradients, and input gradients of
    # every layer but the first (its input needs none).
    count = task.points_per_iteration if args.task == "occupancy" else fixed.numel()
    fans = [(layer.in_features, layer.out_features) for layer in [*net.linears, net.head]]
    forward = sum(2 * count * fan_in * fan_out for fan_in, fan_out in fans)
    network_gflop = (3 * forward - 2 * count * fans[0][0] * fans[0][1]) / 1e9
    load_after = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n{args.task}: {json.dumps(settings)}; {platform.processor() or platform.machine()}; {threads.line}; "
          f"load {load_before} -> {load_after}; task set-up {setup_seconds:.1f} s"
          + (f" (sparse projector: {task.projector.nonzeros / 1e6:.1f} M weights)" if args.task == "ct" else ""))
    print("| part | seconds, wall / CPU (median of %d) | share of the step (wall) |\n|---|---|---|" % args.repeats)
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} / {cpu_medians[name]:.3f} | {value / medians['step']:.0%} |")
    print(f"network: {network_gflop:.1f} GFLOP per step, {network_gflop / medians['network']:.0f} GFLOP/s achieved")
    if args.task == "ct":
        # Each direction streams its values (float32) and column indices (int32) once.
        operator_gb = 2 * task.projector.nonzeros * 8 / 1e9
        print(f"operator: {operator_gb:.2f} GB of sparse matrices streamed per step, "
              f"{operator_gb / medians['operator']:.1f} GB/s achieved")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, **threads.metrics(), "medians": medians, "cpu_medians": cpu_medians,
                                               "setup_seconds": setup_seconds, "network_gflop": network_gflop,
                                               "load": [load_before, load_after]}, indent=2) + "\n")


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
    speed_parser = commands.add_parser("speed")
    speed_parser.add_argument("task", choices=list(SPEED_SETTINGS))
    speed_parser.add_argument("--threads", type=int, help="default: chosen as bn-inr chooses them")
    speed_parser.add_argument("--repeats", type=int, default=3)
    speed_parser.add_argument("--json")
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
    {"quality": quality, "speed": speed, "memory": memory}[args.command](args)


if __name__ == "__main__":
    main()
