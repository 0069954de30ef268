"""Image-task benchmark: our training loop against a re-creation of the authors' loop, BN's training
overhead, folded-BN inference, where the step's time goes, and the PSNR of every method at one
iteration budget.

    .venv/bin/python scripts/benchmark_image.py speed  [--size 512] [--threads 1 2] [--repeats 3]
    .venv/bin/python scripts/benchmark_image.py quality [--size 128] [--iterations 1000] [--threads 1]

`speed` prints markdown tables for BENCHMARKS.md and writes the raw figures as JSON (--json):
- loops: seconds per step, each the difference of a long and a short run in one fresh process (so
  start-up, the first steps and evaluation are excluded), for our loop (`fit`, as `bn-inr image`
  runs it, with its process defaults) and the authors' loop, interleaved, median of --repeats;
- inference: one eval-mode forward over all pixels, plain ReLU vs BN vs the folded BN net;
- layout: one fused BN layer pair forward and backward with sample-major (N x width, ours) and
  feature-major (width x N) activations;
- kernels: the three matrix products of a layer on PyTorch's `mm` (MKL) and on oneDNN, and the
  machine's copy bandwidth, for the floor of a step;
- compile: torch.compile's compile time and step time against eager, and the run length at which
  it would pay for itself.
Timings in one process are interleaved, so that a neighbour's load shifts both sides of a ratio alike.
Thread counts are fixed, never probed, so both sides of every comparison run at the same count: each
loop process at each of --threads in turn, the in-process measurements and `quality` at the first.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data
from skimage.transform import resize
from torch import nn

from bn_nerf import build_network, fold_normalization, reestimate_batchnorm
from bn_nerf.networks import PRESETS
from bn_nerf.networks.coordinates import pixel_coordinates
from bn_nerf.networks.encodings import PositionalEncoding
from bn_nerf.networks.fused import batchnorm_then_linear, linear
from bn_nerf.networks.matmul import matmul_transposed
from bn_nerf.tasks.arguments import paper_learning_rate
from bn_nerf.tasks.image import PAPER_DEFAULTS, ImageTask
from bn_nerf.runtime import cpu_model, keep_freed_memory
from bn_nerf.tasks.trainer import RunSpec, TrainConfig, fit

DEPTH, WIDTH = 10, 28


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


def load_average() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def photo(size: int) -> np.ndarray:
    """scikit-image's astronaut, a real 512x512 RGB photo (the authors benchmark Lena 512x512)."""
    return resize(data.astronaut() / 255.0, (size, size), anti_aliasing=True).astype(np.float32)


def median_seconds(function, repeats: int) -> float:
    function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


# ---------------------------------------------------------------------------------------------
# Loops: one measurement per fresh process


def authors_model(method: str) -> nn.Module:
    """The authors' network as their public code builds it from stock PyTorch modules (a
    re-creation, not their code): positional encoding inside the forward pass, then Linear ->
    BatchNorm1d -> ReLU blocks (their placement) and a Linear output."""
    layers: list[nn.Module] = []
    in_dim = 2
    if "pe" in method.split("+"):
        encoding = PositionalEncoding(2, 10)
        layers.append(encoding)
        in_dim = encoding.out_dim
    for index in range(DEPTH):
        layers.append(nn.Linear(in_dim if index == 0 else WIDTH, WIDTH))
        if method.startswith("bn"):
            layers.append(nn.BatchNorm1d(WIDTH))
        layers.append(nn.ReLU())
    layers.append(nn.Linear(WIDTH, 3))
    return nn.Sequential(*layers)


def authors_loop_seconds(method: str, image: np.ndarray, steps: int) -> float:
    """Seconds for `steps` steps of the authors' loop: forward over every pixel (encoding inside),
    loss, backward, Adam; the step's PSNR read back to Python and the whole state copied whenever it
    improves (they report the best train-mode PSNR)."""
    torch.manual_seed(0)
    height, width, channels = image.shape
    coordinates = pixel_coordinates(height, width)
    target = torch.from_numpy(image).reshape(-1, channels)
    net = authors_model(method).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=paper_learning_rate(method, PAPER_DEFAULTS))
    best_psnr, best_state = -math.inf, None
    started = time.perf_counter()
    for _ in range(steps):
        output = net(coordinates)
        loss = F.mse_loss(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        psnr = -10 * math.log10(F.mse_loss(output.detach().clamp(0, 1), target).item())
        if psnr > best_psnr:
            best_psnr, best_state = psnr, copy.deepcopy(net.state_dict())
    assert best_state is not None
    return time.perf_counter() - started


def our_loop_seconds(method: str, placement: str, image: np.ndarray, steps: int) -> float:
    """Seconds for `steps` steps of `fit` as `bn-inr image` runs it (its `seconds` covers the
    training loop only, not the evaluation and figures after it)."""
    with tempfile.TemporaryDirectory() as out:
        metrics, _ = fit(ImageTask(image), RunSpec(method, DEPTH, WIDTH, {"norm_placement": placement}),
                         TrainConfig(steps, paper_learning_rate(method, PAPER_DEFAULTS), checkpoint_every=0,
                                     show_progress=False),
                         Path(out))
    return metrics["seconds"]


def step_worker(args: argparse.Namespace) -> None:
    """One loop measurement in this (fresh) process: per-step seconds as the difference of a long
    and a short run, wall and CPU time. Prints one JSON line. Wall time is the training loop's own
    (`fit`'s `seconds`); CPU time is the whole call's, whose evaluation afterwards is the same in both
    runs and cancels in the difference."""
    if args.keep_memory:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    image = photo(args.size)
    short, long = args.short_steps, args.long_steps

    def run(steps: int) -> tuple[float, float]:
        cpu = time.process_time()
        if args.loop == "authors":
            wall = authors_loop_seconds(args.method, image, steps)
        else:
            wall = our_loop_seconds(args.method, args.placement, image, steps)
        return wall, time.process_time() - cpu

    run(1)  # first-call costs (imports, kernel set-up) land here, not in either timed run
    (short_wall, short_cpu), (long_wall, long_cpu) = run(short), run(long)
    print(json.dumps({"wall": (long_wall - short_wall) / (long - short),
                      "cpu": (long_cpu - short_cpu) / (long - short)}))


LOOP_CASES = [  # (loop, method, BN placement, glibc keeps freed memory)
    ("authors", "bn", "before", False), ("ours", "bn", "before", True),
    ("authors", "bn+pe", "before", False), ("ours", "bn+pe", "before", True),
    ("authors", "relu", "after", False), ("ours", "relu", "after", True),
    ("ours", "bn", "after", True), ("ours", "pe", "after", True), ("ours", "bn+pe", "after", True),
    ("authors", "bn", "before", True),  # the authors' loop with our allocator setting: what that alone buys
]


def step_seconds_in_fresh_process(loop: str, method: str, placement: str, keep: bool, threads: int, size: int,
                                  short_steps: int, long_steps: int) -> dict:
    """{"wall", "cpu"}: seconds per step of one loop, measured by `step_worker` in a fresh process."""
    command = [sys.executable, __file__, "_step", "--loop", loop, "--method", method, "--placement", placement,
               "--threads", str(threads), "--size", str(size), "--short-steps", str(short_steps),
               "--long-steps", str(long_steps)] + (["--keep-memory"] if keep else [])
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])


def measure_loops(args: argparse.Namespace) -> dict:
    samples: dict[str, list[dict]] = {}
    for threads in args.threads:
        for _ in range(args.repeats):
            for loop, method, placement, keep in LOOP_CASES:
                result = step_seconds_in_fresh_process(loop, method, placement, keep, threads, args.size,
                                                       args.short_steps, args.long_steps)
                key = f"{threads}|{loop}|{method}|{placement}|{'keep' if keep else 'glibc'}"
                samples.setdefault(key, []).append(result)
                print(f"{key:36s} {result['wall']:.3f} s/step wall, {result['cpu']:.3f} s CPU  (load {load_average()})", flush=True)
    return {key: {"wall": statistics.median(r["wall"] for r in runs), "cpu": statistics.median(r["cpu"] for r in runs),
                  "samples": len(runs)} for key, runs in samples.items()}


# ---------------------------------------------------------------------------------------------
# In-process measurements


def measure_inference(size: int, repeats: int) -> dict:
    """One eval-mode forward over every pixel: plain ReLU, BN (running statistics, folded on the fly
    by the fused layers), BN through stock modules, and the BN net folded once."""
    image = photo(size)
    coordinates = pixel_coordinates(size, size)
    target = torch.from_numpy(image).reshape(-1, 3)
    torch.manual_seed(0)
    bn = build_network("bn", 2, 3, DEPTH, WIDTH).train()
    optimizer = torch.optim.Adam(bn.parameters(), lr=1e-2)
    for _ in range(3):  # move the weights and statistics off their initial values
        optimizer.zero_grad()
        F.mse_loss(bn(coordinates), target).backward()
        optimizer.step()
    reestimate_batchnorm(bn, lambda: bn(coordinates))
    bn.eval()
    stock = copy.deepcopy(bn)
    for module in stock.modules():  # a hook on every module keeps each one on its stock forward
        module.register_forward_pre_hook(lambda *_: None)
    nets = {"relu": build_network("relu", 2, 3, DEPTH, WIDTH).eval(), "bn_eval": bn, "bn_eval_stock": stock,
            "bn_folded": fold_normalization(bn)}
    samples: dict[str, list[float]] = {name: [] for name in nets}
    with torch.no_grad():
        for net in nets.values():
            net(coordinates)
        for _ in range(repeats):
            for name, net in nets.items():
                started = time.perf_counter()
                net(coordinates)
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


class _FeatureMajorNormalizedLinear(torch.autograd.Function):
    """The fused BN-after-activation layer with feature-major (width x N) activations, each product
    on the faster kernel this layout allows: forward and input gradient contract over features, which
    are not contiguous here, so they stay on `mm`; the weight gradient contracts over samples and goes
    to oneDNN. Written only to measure the layout against the library's sample-major one."""

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta):
        count = x.shape[1]
        mean = x.sum(1) / count
        variance = torch.linalg.vector_norm(x, dim=1).square() / count - mean.square()
        rstd = torch.rsqrt(variance + 1e-5)
        scale, shift = gamma * rstd, beta - gamma * rstd * mean
        folded = weight * scale
        ctx.save_for_backward(x, weight, folded, scale, shift, mean, rstd, gamma)
        return torch.addmm((bias + weight @ shift)[:, None], folded, x)

    @staticmethod
    def backward(ctx, grad):
        x, weight, folded, scale, shift, mean, rstd, gamma = ctx.saved_tensors
        count = x.shape[1]
        grad_sum = grad.sum(1)
        product = matmul_transposed(grad, x)
        grad_weight = product * scale + torch.outer(grad_sum, shift)
        grad_shift = weight.T @ grad_sum
        grad_scale = (weight * product).sum(0) - grad_shift * mean
        coefficient = 2.0 * (-0.5 * grad_scale * gamma * rstd.pow(3)) / count
        offset = -grad_shift * scale / count - coefficient * mean
        grad_x = torch.addmm(offset[:, None], folded.T, grad)
        grad_x.addcmul_(x, coefficient[:, None])
        return grad_x, grad_weight, grad_sum, grad_scale * rstd, grad_shift


def measure_layout(size: int, repeats: int) -> dict:
    """Forward and backward of Linear -> ReLU -> BN -> Linear (28 wide) over size^2 samples, with
    activations sample-major (the library) and feature-major."""
    count = size * size
    torch.manual_seed(0)
    first, second, norm = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH), nn.BatchNorm1d(WIDTH)
    inputs = torch.randn(count, WIDTH)
    inputs_feature_major = inputs.T.contiguous()
    cotangent = torch.randn(count, WIDTH)
    cotangent_feature_major = cotangent.T.contiguous()

    def sample_major():
        output = batchnorm_then_linear(torch.relu(linear(inputs, first)), None, norm, second)
        output.backward(cotangent)

    def feature_major():
        hidden = torch.relu(torch.addmm(first.bias[:, None], first.weight, inputs_feature_major))
        output = _FeatureMajorNormalizedLinear.apply(hidden, second.weight, second.bias, norm.weight, norm.bias)
        output.backward(cotangent_feature_major)

    cases = {"sample_major": sample_major, "feature_major": feature_major}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for function in cases.values():
        function()
    for _ in range(repeats):
        for name, function in cases.items():
            started = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_kernels(size: int, widths: tuple[int, ...], repeats: int) -> dict:
    """GFLOP/s of a layer's three products on `mm` and on `matmul_transposed` (oneDNN where it
    applies), and GB/s of a large copy."""
    count = size * size
    results: dict = {}
    for width in widths:
        x, grad, weight = torch.randn(count, width), torch.randn(count, width), torch.randn(width, width)
        flops = 2 * count * width * width / 1e9
        products = {
            "forward x W^T: mm": lambda: x @ weight.T, "forward x W^T: oneDNN": lambda: matmul_transposed(x, weight),
            "input grad g W: mm": lambda: grad @ weight, "input grad g W: oneDNN": lambda: matmul_transposed(grad, weight.T),
            "weight grad g^T x: mm": lambda: grad.T @ x,
        }
        results[width] = {name: flops / median_seconds(function, repeats) for name, function in products.items()}
    source = torch.randn(64 * 2**20)
    target = torch.empty_like(source)
    results["copy_gb_per_s"] = 2 * source.numel() * 4 / 1e9 / median_seconds(lambda: target.copy_(source), repeats)
    return results


def measure_compile(size: int, steps: int) -> dict:
    """torch.compile of the network's forward (with its backward) against eager, for BN and ReLU:
    compile time, seconds per step, and the iterations after which compiling would have paid."""
    image = photo(size)
    encoded_coordinates = pixel_coordinates(size, size)
    target = torch.from_numpy(image).reshape(-1, 3)
    results = {}
    for method in ("bn", "relu"):
        runs = {}
        for compiled in (False, True):
            torch.manual_seed(0)
            net = build_network(method, 2, 3, DEPTH, WIDTH)
            forward = torch.compile(net.forward_encoded) if compiled else net.forward_encoded
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

            def step():
                optimizer.zero_grad(set_to_none=True)
                F.mse_loss(forward(encoded_coordinates), target).backward()
                optimizer.step()

            started = time.perf_counter()
            step()
            first = time.perf_counter() - started
            runs[compiled] = (first, median_seconds(step, steps))
        (_, eager_step), (first_compiled, compiled_step) = runs[False], runs[True]
        gain = eager_step - compiled_step
        results[method] = {"eager_step": eager_step, "compiled_step": compiled_step,
                           "compile_seconds": first_compiled - compiled_step,
                           "break_even_iterations": (first_compiled - compiled_step) / gain if gain > 0 else None}
    return results


def step_flops(size: int) -> float:
    """Multiply-adds x 2 of one full-batch step of the 10 x 28 image net (forward, input gradient
    for every layer but the first, weight gradient), without PE."""
    fans = [(2, WIDTH)] + [(WIDTH, WIDTH)] * (DEPTH - 1) + [(WIDTH, 3)]
    forward = sum(2 * size * size * a * b for a, b in fans)
    input_grads = forward - 2 * size * size * fans[0][0] * fans[0][1]
    return (2 * forward + input_grads) / 1e9


def speed(args: argparse.Namespace) -> dict:
    results: dict = {"machine": machine(), "load_before": load_average(), "size": args.size,
                     "short_steps": args.short_steps, "long_steps": args.long_steps, "repeats": args.repeats}
    results["loops"] = measure_loops(args)
    keep_freed_memory()
    results["threads_in_process"] = args.threads[0]
    torch.set_num_threads(args.threads[0])
    results["inference"] = measure_inference(args.size, 7)
    results["layout"] = measure_layout(args.size, 7)
    results["kernels"] = measure_kernels(args.size, (28, 128), 5)
    results["flops_per_step"] = step_flops(args.size)
    if not args.skip_compile:
        results["compile"] = measure_compile(args.size, 5)
    results["load_after"] = load_average()
    return results


def quality(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads[0])
    image = photo(args.size)
    results: dict = {"machine": machine(), "load_before": load_average(), "size": args.size,
                     "iterations": args.iterations, "methods": {}}
    for method in PRESETS:
        with tempfile.TemporaryDirectory() as out:
            metrics, _ = fit(ImageTask(image), RunSpec(method, DEPTH, WIDTH),
                             TrainConfig(args.iterations, paper_learning_rate(method, PAPER_DEFAULTS),
                                         checkpoint_every=0, show_progress=False),
                             Path(out))
        results["methods"][method] = {key: metrics[key] for key in
                                      ("psnr", "psnr_train_mode", "ssim", "bpp_folded_32", "learning_rate", "seconds")}
        print(f"{method:6s} {metrics['psnr']:.2f} dB (train mode {metrics['psnr_train_mode']:.2f}) "
              f"{metrics['seconds']:.0f} s", flush=True)
    results["load_after"] = load_average()
    return results


def print_speed_tables(results: dict) -> None:
    loops = results["loops"]
    threads_measured = sorted({key.split("|")[0] for key in loops}, key=int)
    print(f"\n{results['size']}x{results['size']}, {DEPTH}x{WIDTH}, seconds per step (median of {results['repeats']}, "
          f"each the difference of {results['long_steps']}- and {results['short_steps']}-step runs), wall / CPU")
    print("| method (BN placement) | threads | authors' loop | our loop | ours / authors' (wall) | ours / authors' (CPU) |")
    print("|---|---|---|---|---|---|")
    for threads in threads_measured:
        def step(loop, method, placement, keep):
            return loops[f"{threads}|{loop}|{method}|{placement}|{keep}"]

        for method, placement in (("bn", "before"), ("bn+pe", "before"), ("relu", "after")):
            authors, ours = step("authors", method, placement, "glibc"), step("ours", method, placement, "keep")
            print(f"| {method} ({placement}) | {threads} | {authors['wall']:.3f} / {authors['cpu']:.3f} | "
                  f"{ours['wall']:.3f} / {ours['cpu']:.3f} | {ours['wall'] / authors['wall']:.2f}x | "
                  f"{ours['cpu'] / authors['cpu']:.2f}x |")
        kept = step("authors", "bn", "before", "keep")
        print(f"| bn (before), authors' loop with glibc keeping freed memory | {threads} | {kept['wall']:.3f} / "
              f"{kept['cpu']:.3f} | | | |")
        relu, pe = step("ours", "relu", "after", "keep"), step("ours", "pe", "after", "keep")
        for label, normalized, plain in (("BN after / ReLU", step("ours", "bn", "after", "keep"), relu),
                                         ("BN before / ReLU", step("ours", "bn", "before", "keep"), relu),
                                         ("BN+PE after / PE", step("ours", "bn+pe", "after", "keep"), pe),
                                         ("BN+PE before / PE", step("ours", "bn+pe", "before", "keep"), pe)):
            print(f"{threads} thread(s), our loop, {label}: {normalized['wall'] / plain['wall']:.2f}x wall, "
                  f"{normalized['cpu'] / plain['cpu']:.2f}x CPU")
        flops = results["flops_per_step"]
        print(f"{threads} thread(s), our ReLU step: {flops:.1f} GFLOP in {relu['wall']:.3f} s = "
              f"{flops / relu['wall']:.0f} GFLOP/s achieved")
    inference = results["inference"]
    plain = inference["relu"]
    print(f"\ninference ({results['threads_in_process']} thread(s)): plain ReLU {plain * 1e3:.1f} ms, "
          + ", ".join(f"{name} {value * 1e3:.1f} ms ({value / plain:.2f}x)" for name, value in inference.items()
                      if name != "relu"))
    layout = results["layout"]
    print(f"layout, one fused BN layer pair forward+backward: sample-major {layout['sample_major'] * 1e3:.1f} ms, "
          f"feature-major {layout['feature_major'] * 1e3:.1f} ms")
    for width, rates in results["kernels"].items():
        if width == "copy_gb_per_s":
            print(f"copy bandwidth: {rates:.1f} GB/s")
            continue
        print(f"products at width {width} (GFLOP/s): " + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items()))
    for method, figures in results.get("compile", {}).items():
        break_even = figures["break_even_iterations"]
        print(f"torch.compile {method}: compile {figures['compile_seconds']:.1f} s, step {figures['compiled_step']:.3f} s "
              f"vs eager {figures['eager_step']:.3f} s; "
              + (f"pays after {break_even:.0f} iterations" if break_even else "never pays"))


def print_quality_table(results: dict) -> None:
    print(f"\n{results['size']}x{results['size']}, {DEPTH}x{WIDTH}, {results['iterations']} iterations, paper learning rates")
    print("| method | PSNR eval (dB) | PSNR train mode | SSIM | bpp (folded, 32-bit) | s |\n|---|---|---|---|---|---|")
    for method, m in sorted(results["methods"].items(), key=lambda item: -item[1]["psnr"]):
        print(f"| {method} | {m['psnr']:.2f} | {m['psnr_train_mode']:.2f} | {m['ssim']:.3f} | "
              f"{m['bpp_folded_32']:.2f} | {m['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["speed", "quality", "_step"])
    parser.add_argument("--size", type=int, help="image side in pixels (speed: 512, quality: 128)")
    parser.add_argument("--short-steps", type=int, default=3, help="speed: steps of the short run")
    parser.add_argument("--long-steps", type=int, default=9, help="speed: steps of the long run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each loop measurement")
    parser.add_argument("--iterations", type=int, default=1000, help="quality: iterations per method")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--skip-compile", action="store_true", help="speed: leave out the torch.compile measurement")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    # The per-process loop measurement `speed` runs: one loop, one method, one thread count.
    parser.add_argument("--loop", choices=["ours", "authors"])
    parser.add_argument("--method", default="bn")
    parser.add_argument("--placement", default="after")
    parser.add_argument("--keep-memory", action="store_true")
    args = parser.parse_args()
    args.size = args.size or (128 if args.part == "quality" else 512)
    if args.part == "_step":
        args.threads = args.threads[0]
        step_worker(args)
        return
    print(f"machine: {machine()}; load average {load_average()}")
    results = speed(args) if args.part == "speed" else quality(args)
    (print_speed_tables if args.part == "speed" else print_quality_table)(results)
    print(f"load average at the end: {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
