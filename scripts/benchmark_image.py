"""Image-task benchmark: our training loop against a re-creation of the authors' loop, BN's training
overhead, folded-BN inference, and the PSNR of every method at one iteration budget.

    .venv/bin/python scripts/benchmark_image.py speed  [--size 512] [--steps 6] [--threads 1 2]
    .venv/bin/python scripts/benchmark_image.py quality [--size 128] [--iterations 1000] [--threads 1]

Prints markdown tables for BENCHMARKS.md and writes the raw figures as JSON (--json). Timings are
medians over interleaved repeats, so that a neighbour's load shifts both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data
from skimage.transform import resize

from bn_nerf import build_network, fold_normalization, reestimate_batchnorm
from bn_nerf.networks import PRESETS
from bn_nerf.tasks.image import PAPER_DEFAULTS, ImageTask, pixel_coordinates
from bn_nerf.tasks.trainer import RunSpec, TrainConfig, fit


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def load_average() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def photo(size: int) -> np.ndarray:
    """scikit-image's astronaut, a real 512x512 RGB photo (the authors benchmark Lena 512x512)."""
    return resize(data.astronaut() / 255.0, (size, size), anti_aliasing=True).astype(np.float32)


def paper_learning_rate(method: str) -> float:
    normalized = PRESETS[method].norm != "none"
    return PAPER_DEFAULTS.normalized_learning_rate if normalized else PAPER_DEFAULTS.learning_rate


def authors_loop_step_seconds(method: str, placement: str, image: np.ndarray, steps: int) -> float:
    """Seconds per step of a re-creation of the authors' public training loop (not their code):
    the model encodes its coordinates inside every forward pass; forward, loss, backward, Adam
    step; then the PSNR of the step's output is read back to Python and, whenever it improves,
    the whole state is copied as the best one (they report the best train-mode PSNR)."""
    torch.manual_seed(0)
    height, width, channels = image.shape
    coordinates = pixel_coordinates(height, width)
    target = torch.from_numpy(image).reshape(-1, channels)
    net = build_network(method, 2, channels, 10, 28, norm_placement=placement).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=paper_learning_rate(method))
    best_psnr, best_state = -math.inf, None
    started = None
    for step in range(steps + 1):  # step 0 warms up allocators and is not timed
        if step == 1:
            started = time.perf_counter()
        output = net(coordinates)
        loss = F.mse_loss(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        psnr = -10 * math.log10(F.mse_loss(output.detach().clamp(0, 1), target).item())
        if psnr > best_psnr:
            best_psnr, best_state = psnr, copy.deepcopy(net.state_dict())
    assert best_state is not None
    return (time.perf_counter() - started) / steps


def our_loop_step_seconds(method: str, placement: str, image: np.ndarray, steps: int) -> float:
    """Seconds per step of bn_nerf's own loop: `fit` itself, as `bn-inr image` runs it. Its
    `seconds` figure covers the training loop only (not the evaluation and figures after it)."""
    with tempfile.TemporaryDirectory() as out:
        metrics, _ = fit(ImageTask(image), RunSpec(method, 10, 28, {"norm_placement": placement}),
                         TrainConfig(steps, paper_learning_rate(method), checkpoint_every=0, show_progress=False),
                         Path(out))
    return metrics["seconds"] / steps


def inference_seconds(net: torch.nn.Module, coordinates: torch.Tensor) -> float:
    with torch.no_grad():
        started = time.perf_counter()
        net(coordinates)
        return time.perf_counter() - started


def speed(args: argparse.Namespace) -> dict:
    image = photo(args.size)
    results: dict = {"machine": machine(), "load_before": load_average(), "size": args.size, "steps": args.steps,
                     "loops": {}, "inference": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        # The authors place BN before the ReLU; compare like with like, then add the paper's placement.
        cases = [("authors", "bn", "before"), ("ours", "bn", "before"), ("authors", "bn+pe", "before"),
                 ("ours", "bn+pe", "before"), ("ours", "bn", "after"), ("ours", "relu", "after"),
                 ("authors", "relu", "after"), ("ours", "pe", "after")]
        samples: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for loop, method, placement in cases:
                measure = authors_loop_step_seconds if loop == "authors" else our_loop_step_seconds
                key = f"{threads}|{loop}|{method}|{placement}"
                samples.setdefault(key, []).append(measure(method, placement, image, args.steps))
                print(f"threads {threads} {loop:8s} {method:6s} BN {placement:6s} {samples[key][-1]:.3f} s/step", flush=True)
        results["loops"].update({key: statistics.median(values) for key, values in samples.items()})

        coordinates = pixel_coordinates(args.size, args.size)
        target = torch.from_numpy(image).reshape(-1, 3)
        torch.manual_seed(0)
        bn = build_network("bn", 2, 3, 10, 28).train()
        optimizer = torch.optim.Adam(bn.parameters(), lr=1e-2)
        for _ in range(3):  # move the weights and statistics off their initial values
            optimizer.zero_grad()
            F.mse_loss(bn(coordinates), target).backward()
            optimizer.step()
        reestimate_batchnorm(bn, lambda: bn(coordinates))
        nets = {"relu": build_network("relu", 2, 3, 10, 28).eval(), "bn_eval": bn.eval(), "bn_folded": fold_normalization(bn)}
        timings: dict[str, list[float]] = {name: [] for name in nets}
        for _ in range(args.inference_repeats):
            for name, net in nets.items():
                timings[name].append(inference_seconds(net, coordinates))
        results["inference"].update({f"{threads}|{name}": statistics.median(values) for name, values in timings.items()})
    results["load_after"] = load_average()
    return results


def quality(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads[0])
    image = photo(args.size)
    results: dict = {"machine": machine(), "load_before": load_average(), "size": args.size,
                     "iterations": args.iterations, "methods": {}}
    for method in PRESETS:
        with tempfile.TemporaryDirectory() as out:
            metrics, _ = fit(ImageTask(image), RunSpec(method, 10, 28),
                             TrainConfig(args.iterations, paper_learning_rate(method), checkpoint_every=0,
                                         show_progress=False),
                             Path(out))
        results["methods"][method] = {key: metrics[key] for key in
                                      ("psnr", "psnr_train_mode", "ssim", "bpp_folded_32", "learning_rate", "seconds")}
        print(f"{method:6s} {metrics['psnr']:.2f} dB (train mode {metrics['psnr_train_mode']:.2f}) "
              f"{metrics['seconds']:.0f} s", flush=True)
    results["load_after"] = load_average()
    return results


def print_speed_tables(results: dict) -> None:
    loops, inference = results["loops"], results["inference"]
    for threads in sorted({key.split("|")[0] for key in loops}):
        def step(loop, method, placement):
            return loops[f"{threads}|{loop}|{method}|{placement}"]

        print(f"\n{results['size']}x{results['size']}, 10x28, {threads} thread(s), median s/step")
        print("| method (BN placement) | authors' loop | our loop | ours / authors' |\n|---|---|---|---|")
        for method, placement in (("bn", "before"), ("bn+pe", "before"), ("relu", "after")):
            authors, ours = step("authors", method, placement), step("ours", method, placement)
            print(f"| {method} ({placement}) | {authors:.3f} | {ours:.3f} | {ours / authors:.2f}x |")
        relu = step("ours", "relu", "after")
        print(f"BN training overhead (our loop): after {step('ours', 'bn', 'after') / relu:.2f}x, "
              f"before {step('ours', 'bn', 'before') / relu:.2f}x ReLU; BN+PE {step('ours', 'bn+pe', 'before') / step('ours', 'pe', 'after'):.2f}x PE")
        plain = inference[f"{threads}|relu"]
        print(f"inference: plain ReLU {plain * 1e3:.1f} ms, BN eval {inference[f'{threads}|bn_eval'] * 1e3:.1f} ms "
              f"({inference[f'{threads}|bn_eval'] / plain:.2f}x), folded BN {inference[f'{threads}|bn_folded'] * 1e3:.1f} ms "
              f"({inference[f'{threads}|bn_folded'] / plain:.2f}x)")


def print_quality_table(results: dict) -> None:
    print(f"\n{results['size']}x{results['size']}, 10x28, {results['iterations']} iterations, paper learning rates")
    print("| method | PSNR eval (dB) | PSNR train mode | SSIM | bpp (folded, 32-bit) | s |\n|---|---|---|---|---|---|")
    for method, m in sorted(results["methods"].items(), key=lambda item: -item[1]["psnr"]):
        print(f"| {method} | {m['psnr']:.2f} | {m['psnr_train_mode']:.2f} | {m['ssim']:.3f} | "
              f"{m['bpp_folded_32']:.2f} | {m['seconds']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["speed", "quality"])
    parser.add_argument("--size", type=int, help="image side in pixels (speed: 512, quality: 128)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per loop measurement")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each loop measurement")
    parser.add_argument("--inference-repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=1000, help="quality: iterations per method")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    args.size = args.size or (512 if args.part == "speed" else 128)
    print(f"machine: {machine()}; load average {load_average()}")
    results = speed(args) if args.part == "speed" else quality(args)
    (print_speed_tables if args.part == "speed" else print_quality_table)(results)
    print(f"load average at the end: {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
