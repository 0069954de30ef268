"""`bn-inr ntk`: empirical NTK spectra (Fig. 1a), width sweeps against Eq. 14, and the 1D
spectral-bias demonstration (Eq. 4).

  bn-inr ntk spectrum --out DIR   histograms + ntk.json for pairs of networks (default: Fig. 1a)
  bn-inr ntk sweep --out DIR      m, v and lambda_max against the width N, fitted exponents, verdicts
  bn-inr ntk demo --out DIR       relative error per frequency over training, ReLU vs BN

A network is named by a preset, optionally with its PE octave count: relu, bn, pe:1, bn+pe:5, siren ...
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bn_nerf.io.errors import InputError
from bn_nerf.networks import PRESETS, build_network
from bn_nerf.runtime import cpu_model

DEFAULT_PANELS = "relu/bn,pe:1/bn+pe:1,pe:5/bn+pe:5"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    modes = parser.add_subparsers(dest="mode", required=True, metavar="{spectrum,sweep,demo}")
    spectrum = modes.add_parser("spectrum", help="eigenvalue histograms and ntk.json for pairs of networks (Fig. 1a)")
    sweep = modes.add_parser("sweep", help="NTK statistics against width, log-log fits and verdicts (Eq. 14)")
    demo = modes.add_parser("demo", help="error per frequency over training, ReLU vs BN (Eq. 4)")
    for mode, points, width, dtype in ((spectrum, 256, 256, "float64"), (sweep, 256, None, "float32"), (demo, 256, 256, None)):
        mode.add_argument("--out", type=Path, required=True, help="output folder")
        mode.add_argument("--points", type=int, default=points, help=f"coordinates T (default {points})")
        mode.add_argument("--depth", type=int, default=4, help="hidden layers (default 4; the paper's analysis leaves L open)")
        if width is not None:
            mode.add_argument("--width", type=int, default=width, help=f"features per hidden layer N (default {width})")
        mode.add_argument("--seed", type=int, default=0, help="initialization seed (default 0)")
        mode.add_argument("--norm-placement", choices=["after", "before"], default="after",
                          help="BN after the ReLU (paper text, default) or before it (authors' code)")
        mode.add_argument("--init", choices=["method", "torch_default"], default="method",
                          help="initialization: the method's own (LeCun-normal weights, nn.Linear's uniform biases; default) "
                               "or PyTorch's (uniform weights with 1/3 of LeCun's variance, the same biases)")
        mode.add_argument("--threads", type=int, default=1,
                          help="PyTorch CPU threads (default 1: on a busy shared CPU one thread was up to 10x faster "
                               "than two, which wait on each other in every small kernel)")
        if dtype is not None:
            mode.add_argument("--dtype", choices=list(DTYPES), default=dtype,
                              help=f"precision of the kernel (default {dtype}); float32 cannot resolve eigenvalues below ~1e-7 of lambda_max")
            mode.add_argument("--block-mb", type=int, default=64, help="working-block size in MB (default 64)")
    spectrum.add_argument("--panels", default=DEFAULT_PANELS,
                          help=f"comma-separated panels of '/'-separated networks (default {DEFAULT_PANELS})")
    spectrum.add_argument("--frozen-statistics", action="store_true",
                          help="also report each BN net's kernel with its batch statistics held fixed (the per-sample kernel); doubles BN's cost")
    spectrum.add_argument("--dims", type=int, choices=[1, 2], default=1, help="1D signal, or a 2D grid (--points a square)")
    sweep.add_argument("--widths", default="32,64,128,256,512,1024", help="widths N (default 32,...,1024)")
    sweep.add_argument("--methods", default="relu,bn", help="networks to sweep (default relu,bn)")
    sweep.add_argument("--seeds", type=int, default=3, help="initializations per width, averaged (default 3)")
    demo.add_argument("--frequencies", default="1,4,12,32", help="cycles over [-1,1) of the signal's sinusoids (default 1,4,12,32)")
    demo.add_argument("--methods", default="relu,bn", help="networks to train (default relu,bn)")
    demo.add_argument("--iterations", type=int, default=2000, help="training iterations per run (default 2000)")
    demo.add_argument("--adam-lr", type=float, default=1e-3, help="Adam learning rate, the same for every net (default 1e-3)")
    demo.add_argument("--threshold", type=float, default=0.1, help="relative error counted as learned (default 0.1)")


def run(args: argparse.Namespace) -> int:
    _check_common(args)
    args.out.mkdir(parents=True, exist_ok=True)
    return {"spectrum": run_spectrum, "sweep": run_sweep, "demo": run_demo}[args.mode](args)


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _check_common(args: argparse.Namespace) -> None:
    if args.points < 2:
        raise InputError(f"--points must be at least 2 (BatchNorm needs a batch), got {args.points}")
    if args.depth < 1:
        raise InputError(f"--depth must be >= 1, got {args.depth}")
    if getattr(args, "width", 1) < 1:
        raise InputError(f"--width must be >= 1, got {args.width}")
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if getattr(args, "block_mb", 1) < 1:
        raise InputError(f"--block-mb must be >= 1, got {args.block_mb}")


def parse_network(spec: str) -> tuple[str, dict]:
    """'bn+pe:5' -> ('bn+pe', {'pe_octaves': 5}); a bare preset name takes no overrides."""
    method, _, octaves = spec.strip().partition(":")
    if method not in PRESETS:
        raise InputError(f"unknown network '{spec}'; choose a preset ({', '.join(PRESETS)}), optionally with ':octaves'")
    if not octaves:
        return method, {}
    if not octaves.isdigit() or int(octaves) < 1:
        raise InputError(f"'{spec}': the PE octave count after ':' must be a positive integer")
    if PRESETS[method].encoding != "pe":
        raise InputError(f"'{spec}': ':octaves' applies only to methods with positional encoding")
    return method, {"pe_octaves": int(octaves)}


def _parse_list(text: str, option: str, kind=int) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option} must be a comma-separated list of numbers, got '{text}'") from None
    if not values or any(v <= 0 for v in values):
        raise InputError(f"{option} needs positive values, got '{text}'")
    return values


def coordinates(points: int, dims: int) -> torch.Tensor:
    """T coordinates of a 1D signal on [-1, 1], or of a sqrt(T) x sqrt(T) grid on [-1, 1]^2."""
    if dims == 1:
        return torch.linspace(-1, 1, points)[:, None]
    side = math.isqrt(points)
    if side * side != points:
        raise InputError(f"--dims 2 needs --points to be a square number, got {points}")
    axis = torch.linspace(-1, 1, side)
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)


def make_network(spec: str, in_dim: int, depth: int, width: int, seed: int, placement: str, dtype=torch.float32,
                 init: str = "method"):
    method, overrides = parse_network(spec)
    overrides["init_scheme"] = init
    if PRESETS[method].norm != "none":
        overrides["norm_placement"] = placement
    torch.manual_seed(seed)
    try:
        net = build_network(method, in_dim, 1, depth, width, **overrides)
    except ValueError as error:
        raise InputError(f"cannot build '{spec}': {error}") from None
    # WIRE's complex layers keep their own dtype; every real net follows the requested precision.
    if not any(p.is_complex() for p in net.parameters()):
        net = net.to(dtype)
    return net.train()


def _has_batchnorm(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def _machine() -> str:
    return f"{cpu_model()}, {torch.get_num_threads()} torch threads"


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------
# spectrum: Fig. 1a


def run_spectrum(args: argparse.Namespace) -> int:
    from bn_nerf.analysis.ntk import empirical_ntk, frozen_statistics_copy, spectrum_statistics

    panels = [[spec.strip() for spec in panel.split("/") if spec.strip()] for panel in args.panels.split(",") if panel.strip()]
    if not panels or any(not panel for panel in panels):
        raise InputError(f"--panels needs networks, e.g. {DEFAULT_PANELS}; got '{args.panels}'")
    for panel in panels:
        for spec in panel:
            parse_network(spec)
    dtype = DTYPES[args.dtype]
    coords = coordinates(args.points, args.dims).to(dtype)
    block_bytes = args.block_mb * 2**20
    results: dict[str, dict] = {}
    eigenvalues: dict[str, np.ndarray] = {}
    for spec in dict.fromkeys(spec for panel in panels for spec in panel):
        net = make_network(spec, args.dims, args.depth, args.width, args.seed, args.norm_placement, dtype, args.init)
        net_coords = coords.to(next(net.parameters()).real.dtype)
        started = time.perf_counter()
        kernel = empirical_ntk(net, net_coords, block_bytes)
        kernel_seconds = time.perf_counter() - started
        statistics, eigenvalues[spec] = spectrum_statistics(kernel)
        entry = {
            "parameters": sum(p.numel() for p in net.parameters()),
            "kernel_seconds": round(kernel_seconds, 2),
            "statistics": statistics,
        }
        if args.frozen_statistics and _has_batchnorm(net):
            # The same function with BN's statistics held fixed: what a per-sample kernel reports.
            frozen_kernel = empirical_ntk(frozen_statistics_copy(net, net_coords), net_coords, block_bytes)
            entry["frozen_statistics"] = spectrum_statistics(frozen_kernel)[0]
        results[spec] = entry
        s = statistics
        print(f"{spec:<10} P={entry['parameters']:>8}  {kernel_seconds:7.1f} s  m={s['m_lambda']:.3g}  "
              f"v={s['v_lambda']:.3g}  lambda_max={s['lambda_max']:.3g}  median={s['lambda_median']:.3g}  "
              f"Eq.13 {s['eq13_lower_s_over_m']:.3g} <= {s['lambda_max']:.3g} <= {s['eq13_upper_sqrt_T_s']:.3g}"
              f" ({'holds' if s['eq13_bounds_hold'] else 'VIOLATED'})", flush=True)
    comparisons = [_compare(panel, results) for panel in panels if len(panel) == 2]
    for comparison in comparisons:
        print(comparison["summary"])
    payload = {
        "setup": {
            "points": args.points, "dims": args.dims, "depth": args.depth, "width": args.width, "seed": args.seed,
            "norm_placement": args.norm_placement, "init": args.init, "dtype": args.dtype, "coordinates": "uniform on [-1, 1]" + ("^2" if args.dims == 2 else ""),
            "bn_mode": "training (batch statistics over all T coordinates)",
            "machine": _machine(), "peak_memory_mb": round(_peak_memory_mb()),
        },
        "networks": results,
        "comparisons": comparisons,
    }
    _write_json(args.out / "ntk.json", payload)
    np.savez(args.out / "eigenvalues.npz", **{spec.replace(":", "_"): values for spec, values in eigenvalues.items()})
    _plot_spectra(panels, eigenvalues, args.out / "ntk_spectra.png", f"T={args.points}, {args.depth}x{args.width}, {args.init} init")
    return 0


def _compare(panel: list[str], results: dict[str, dict]) -> dict:
    """Fig. 1a's reading of a pair (plain, normalized): did the bulk move up and lambda_max down?"""
    plain, normalized = (results[spec]["statistics"] for spec in panel)
    ratios = {key: normalized[key] / plain[key] if plain[key] else float("inf") for key in ("lambda_median", "lambda_max", "m_lambda", "v_lambda")}
    summary = (f"{panel[1]} vs {panel[0]}: median eigenvalue x{ratios['lambda_median']:.3g} "
               f"({'up' if ratios['lambda_median'] > 1 else 'not up'}), lambda_max x{ratios['lambda_max']:.3g} "
               f"({'down, as the paper says' if ratios['lambda_max'] < 1 else 'UP, unlike the paper'}), "
               f"mean x{ratios['m_lambda']:.3g}, lambda_max/median {plain['lambda_max'] / max(plain['lambda_median'], 1e-300):.3g} -> "
               f"{normalized['lambda_max'] / max(normalized['lambda_median'], 1e-300):.3g}")
    return {"panel": panel, "ratios_normalized_over_plain": ratios, "summary": summary}


def _plot_spectra(panels: list[list[str]], eigenvalues: dict[str, np.ndarray], path: Path, title: str) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, panel in zip(axes[0], panels):
        largest = max(float(eigenvalues[spec].max()) for spec in panel)
        # Eigenvalues at or below rounding level (and tiny negative ones) share the leftmost bin.
        floor = largest * 1e-16
        bins = np.logspace(np.log10(floor), np.log10(largest * 2), 60)
        for spec in panel:
            values = eigenvalues[spec]
            clipped = int((values <= floor).sum())
            label = spec + (f" ({clipped} <= {floor:.0e})" if clipped else "")
            axis.hist(np.clip(values, floor, None), bins=bins, alpha=0.55, label=label)
        axis.set_xscale("log")
        axis.set_xlabel("NTK eigenvalue")
        axis.set_ylabel("count")
        axis.set_title(" vs ".join(panel))
        axis.legend(fontsize=8)
    figure.suptitle(f"Empirical NTK eigenvalues ({title}, BN in training mode)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# sweep: Eq. 14


def run_sweep(args: argparse.Namespace) -> int:
    from bn_nerf.analysis.ntk import PAPER_EXPONENTS, empirical_ntk, exponent_verdict, fit_power_law, spectrum_statistics

    widths = sorted(set(_parse_list(args.widths, "--widths")))
    if len(widths) < 2:
        raise InputError("--widths needs at least two widths to fit an exponent")
    specs = [spec.strip() for spec in args.methods.split(",") if spec.strip()]
    for spec in specs:
        parse_network(spec)
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    dtype = DTYPES[args.dtype]
    coords = coordinates(args.points, 1).to(dtype)
    statistics_names = ("m_lambda", "v_lambda", "lambda_max")
    measurements: dict[str, list[dict]] = {spec: [] for spec in specs}
    for spec in specs:
        for width in widths:
            for seed in range(args.seed, args.seed + args.seeds):
                net = make_network(spec, 1, args.depth, width, seed, args.norm_placement, dtype, args.init)
                started = time.perf_counter()
                kernel = empirical_ntk(net, coords.to(next(net.parameters()).real.dtype), args.block_mb * 2**20)
                seconds = time.perf_counter() - started
                statistics, _ = spectrum_statistics(kernel)
                measurements[spec].append({"width": width, "seed": seed, "kernel_seconds": round(seconds, 2), **statistics})
                print(f"{spec:<8} N={width:<5} seed={seed}  {seconds:7.1f} s  m={statistics['m_lambda']:.3g}  "
                      f"v={statistics['v_lambda']:.3g}  lambda_max={statistics['lambda_max']:.3g}", flush=True)
    fits: dict[str, dict] = {}
    print(f"\nlog-log fits over N = {widths} (geometric mean of {args.seeds} seed(s) per width), T = {args.points}, depth {args.depth}:")
    for spec in specs:
        family = "bn" if _has_batchnorm(make_network(spec, 1, 1, 2, 0, args.norm_placement)) else "mlp"
        fits[spec] = {"paper_family": family}
        for name in statistics_names:
            per_width = [math.exp(np.mean([math.log(row[name]) for row in measurements[spec] if row["width"] == w])) for w in widths]
            fit = fit_power_law(widths, per_width)
            predicted = PAPER_EXPONENTS[family][name]
            verdict = exponent_verdict(fit.exponent, predicted)
            fits[spec][name] = {**asdict(fit), "per_width_geometric_mean": per_width, "predicted_exponent": predicted, "verdict": verdict}
            print(f"  {spec:<8} {name:<10} ~ N^{fit.exponent:5.2f} (R^2 {fit.r_squared:.3f})   {verdict}")
    payload = {
        "setup": {"points": args.points, "depth": args.depth, "widths": widths, "seeds": args.seeds, "dtype": args.dtype, "init": args.init,
                  "norm_placement": args.norm_placement, "coordinates": "uniform on [-1, 1]", "machine": _machine(),
                  "peak_memory_mb": round(_peak_memory_mb()),
                  "tolerance": "a fitted exponent within 0.25 of the predicted range counts as reproduced"},
        "measurements": measurements,
        "fits": fits,
    }
    _write_json(args.out / "sweep.json", payload)
    _plot_sweep(specs, widths, fits, args.out / "sweep.png", f"T={args.points}, depth {args.depth}")
    return 0


def _plot_sweep(specs: list[str], widths: list[int], fits: dict, path: Path, title: str) -> None:
    plt = _pyplot()
    names = {"m_lambda": "mean m_λ", "v_lambda": "variance v_λ", "lambda_max": "λ_max"}
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    grid = np.array(widths, float)
    for axis, (name, shown) in zip(axes, names.items()):
        for index, spec in enumerate(specs):
            color = f"C{index}"
            fit = fits[spec][name]
            axis.loglog(grid, fit["per_width_geometric_mean"], "o", color=color)
            axis.loglog(grid, fit["prefactor"] * grid ** fit["exponent"], "-", color=color,
                        label=f"{spec}: fitted N^{fit['exponent']:.2f}")
            # The paper's exponent drawn through the first point, to compare slopes.
            for exponent in sorted(set(fit["predicted_exponent"])):
                axis.loglog(grid, fit["per_width_geometric_mean"][0] * (grid / grid[0]) ** exponent, ":", color=color,
                            label=f"{spec}: paper N^{exponent:g}")
        axis.set_xlabel("width N")
        axis.set_title(shown)
        axis.legend(fontsize=7)
    figure.suptitle(f"NTK statistics against width ({title}); dotted: the paper's Eq. 14 slopes")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------
# demo: Eq. 4


def run_demo(args: argparse.Namespace) -> int:
    from bn_nerf.analysis.spectral_bias import multi_frequency_signal, periodic_grid, train_tracking_frequencies

    frequencies = _parse_list(args.frequencies, "--frequencies")
    if max(frequencies) >= args.points // 2:
        raise InputError(f"--frequencies must stay below the Nyquist limit {args.points // 2} of --points {args.points}")
    if args.iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {args.iterations}")
    specs = [spec.strip() for spec in args.methods.split(",") if spec.strip()]
    for spec in specs:
        parse_network(spec)
    coords = periodic_grid(args.points)
    target = multi_frequency_signal(coords, frequencies, args.seed)
    traces = []
    for optimizer, learning_rate in (("gd", None), ("adam", args.adam_lr)):
        for spec in specs:
            net = make_network(spec, 1, args.depth, args.width, args.seed, args.norm_placement, init=args.init)
            trace = train_tracking_frequencies(net, coords, target, frequencies, optimizer, args.iterations,
                                               learning_rate, record_every=max(1, args.iterations // 200), label=spec)
            reached = trace.iterations_to_reach(args.threshold)
            print(f"{optimizer:<4} {spec:<8} lr={trace.learning_rate:.3g}  {trace.seconds:6.1f} s  iterations to error < "
                  f"{args.threshold}: " + ", ".join(f"f={f}: {r if r is not None else 'never'}" for f, r in zip(frequencies, reached))
                  + "; late median error: " + ", ".join(f"f={f}: {e:.3f}" for f, e in zip(frequencies, trace.late_errors())), flush=True)
            traces.append(trace)
    payload = {
        "setup": {"points": args.points, "depth": args.depth, "width": args.width, "seed": args.seed, "frequencies": frequencies,
                  "iterations": args.iterations, "threshold": args.threshold, "norm_placement": args.norm_placement, "init": args.init,
                  "signal": "sum of unit sinusoids with f cycles over [-1, 1), random phases",
                  "error": "|DFT(f - y)| / |DFT(y)| at each frequency", "machine": _machine(),
                  "gd": "eta = 0.5/lambda_max of each net's initial NTK, loss 1/2 ||f - y||^2",
                  "adam": f"lr {args.adam_lr} for every net, mean squared error",
                  "iterations_to_threshold": "first recorded iteration from which the error stays below the threshold"},
        "runs": [
            {"network": t.label, "optimizer": t.optimizer, "learning_rate": t.learning_rate, "seconds": round(t.seconds, 1),
             "iterations_to_threshold": dict(zip(map(str, frequencies), t.iterations_to_reach(args.threshold))),
             "final_errors": dict(zip(map(str, frequencies), t.errors[-1].tolist())),
             "late_median_errors": dict(zip(map(str, frequencies), t.late_errors())),
             "iterations": t.iterations, "errors": t.errors.tolist()}
            for t in traces
        ],
    }
    _write_json(args.out / "spectral_bias.json", payload)
    _plot_demo(traces, frequencies, args.threshold, args.out / "spectral_bias.png")
    return 0


def _plot_demo(traces, frequencies: list[int], threshold: float, path: Path) -> None:
    plt = _pyplot()
    optimizers = list(dict.fromkeys(t.optimizer for t in traces))
    labels = list(dict.fromkeys(t.label for t in traces))
    figure, axes = plt.subplots(len(optimizers), len(labels), figsize=(4.5 * len(labels), 3.4 * len(optimizers)),
                                squeeze=False, sharey=True)
    for trace in traces:
        axis = axes[optimizers.index(trace.optimizer)][labels.index(trace.label)]
        for index, frequency in enumerate(frequencies):
            axis.semilogy(trace.iterations, trace.errors[:, index], label=f"f = {frequency}", color=f"C{index}")
        axis.axhline(threshold, color="gray", lw=0.8, ls="--")
        axis.set_title(f"{trace.label}, {trace.optimizer} (lr {trace.learning_rate:.2g})")
        axis.set_xlabel("iteration")
        axis.set_ylabel("relative error at f")
        axis.legend(fontsize=7)
    figure.suptitle("Error per frequency over training (Eq. 4: small-eigenvalue components converge slowly)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")
