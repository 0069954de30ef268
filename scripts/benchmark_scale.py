"""What input size and frequency scaling do to each method (issue 17, item 2): eval-mode PSNR against
iterations for the paper's seven methods, one run per curve, at two input sizes and at the small
size with every frequency hyperparameter rescaled to the paper's ratio to the pixel pitch.

    .venv/bin/python scripts/benchmark_scale.py run ct --panels 64:5000 64-rescaled:5000 256:500
    .venv/bin/python scripts/benchmark_scale.py run image --panels 64:5000 64-rescaled:5000 256:500
    .venv/bin/python scripts/benchmark_scale.py plot ct image --at 500

(results/scale/README.md has the grid as it was run, WIRE last, and what it measured.)

`run` trains each (panel, method) once with `fit` -- the protocol `bn-inr` applies to every method:
the paper's learning rate for the task and method, constant, the iterate with the lowest training
loss kept -- and evaluates at log-spaced iterations (1, 2, 5 x 10^k from 10, and the last) what a
run of that length would report: the kept iterate, BatchNorm statistics re-estimated, eval mode.
Each point is appended to results/scale/<task>.csv as it is measured; a rerun skips the points
already there and resumes an interrupted run from its checkpoint (outputs/scale/...). `--methods`
runs a subset, e.g. every method but WIRE first (WIRE's complex layers are 10-20x slower per step on
the CPU), so that a grid stopped early is missing WIRE points, not others.

Inputs: CT, scikit-image's Shepp-Logan phantom resized to the side, 100 projections, 2x128 nets
(the paper: 512^2 x-ray images, 20,000 iterations). Image: scikit-image's astronaut, centre-cropped
and resized to the side (scripts/skimage_photos.py), 10x28 nets (the paper: Kodak 768x512, 50,000).

The rescaling rule (`rescaled_overrides`): a frequency is defined on coordinates in [-1, 1], which
span N pixels at side N, so at side N the paper's frequencies (chosen at 512) sit 512/N times higher
relative to the pixel pitch. A rescaled run divides every frequency the network applies to its input
coordinates by 512/N: SIREN's first-layer omega0, WIRE's first-layer omega and s (both through
NetworkConfig.coordinate_scale = N/512, i.e. the coordinates multiplied by N/512; hidden layers keep
omega0 = 30 and WIRE's omega, s = 20, 10, gains on features rather than frequencies of the input),
MFN's filter frequencies (coordinate_scale too, the same as its input scale 256 -> 256 N/512 at
initialization), and PE's top frequency (log2(512/N) octaves fewer: 7 instead of 10 at 64). ReLU and
BN have no frequency hyperparameter; their rescaled curves are their unscaled ones.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from bn_nerf.networks import PAPER_METHODS, PRESETS
from bn_nerf.runtime import cpu_model, keep_freed_memory
from bn_nerf.tasks import ct, image
from bn_nerf.tasks.arguments import paper_learning_rate
from bn_nerf.tasks.trainer import CHECKPOINT_FILE, METRICS_FILE, RunSpec, TrainConfig, fit
from skimage_photos import square_photo

RESULTS = Path("results/scale")
WORK = Path("outputs/scale")
# The side the paper's frequency hyperparameters were chosen at: 512^2 CT, Kodak's 512 short side.
PAPER_SIDE = 512
TASKS = {
    "ct": {"defaults": ct.PAPER_DEFAULTS, "depth": 2, "width": 128, "input": "shepp_logan"},
    "image": {"defaults": image.PAPER_DEFAULTS, "depth": 10, "width": 28, "input": "astronaut"},
}
COLUMNS = ("task", "input", "size", "variant", "method", "depth", "width", "learning_rate", "overrides",
           "iteration", "psnr", "ssim", "psnr_train_mode", "kept_iteration", "seconds", "reference_psnr", "threads")
METHOD_COLOURS = {"siren": "tab:blue", "relu": "tab:gray", "bn": "tab:green", "mfn": "tab:purple",
                  "wire": "tab:brown", "pe": "tab:orange", "bn+pe": "tab:red"}


@dataclass(frozen=True)
class Panel:
    size: int
    rescaled: bool
    iterations: int

    @property
    def variant(self) -> str:
        return "rescaled" if self.rescaled else "paper"


def parse_panel(text: str) -> Panel:
    """'64:10000' (paper hyperparameters) or '64-rescaled:10000' -> Panel."""
    where, _, iterations = text.partition(":")
    size, _, variant = where.partition("-")
    if variant not in ("", "rescaled") or not size.isdigit() or not iterations.isdigit():
        raise argparse.ArgumentTypeError(f"panel '{text}' is not SIDE:ITERATIONS or SIDE-rescaled:ITERATIONS")
    return Panel(int(size), variant == "rescaled", int(iterations))


def evaluation_points(iterations: int) -> tuple[int, ...]:
    """1, 2, 5 x 10^k from 10 up to `iterations`, and `iterations` itself."""
    points = {step * 10 ** power for power in range(8) for step in (1, 2, 5)}
    return tuple(sorted({point for point in points if 10 <= point < iterations} | {iterations}))


def rescaled_overrides(method: str, side: int) -> dict:
    """NetworkConfig overrides that put `method`'s input frequencies at the paper's ratio to the pixel
    pitch at `side` pixels (the module docstring states the rule); {} for methods without any."""
    factor = PAPER_SIDE / side
    config = PRESETS[method]
    if config.encoding == "pe":
        octaves_fewer = math.log2(factor)
        if octaves_fewer != int(octaves_fewer):
            raise ValueError(f"PE octaves rescale by powers of two only; 512/{side} is not one")
        return {"pe_octaves": config.pe_octaves - int(octaves_fewer)}
    if config.activation in ("sine", "gabor") or config.architecture == "mfn":
        return {"coordinate_scale": side / PAPER_SIDE}
    return {}


def make_task(task_name: str, side: int):
    if task_name == "ct":
        _, phantom = ct.prepare_image(None, side)
        return ct.CTTask(phantom, ct.PAPER_PROJECTIONS, label=TASKS["ct"]["input"])
    return image.ImageTask(square_photo(TASKS["image"]["input"], side), label=TASKS["image"]["input"])


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def row_key(row: dict) -> tuple:
    return row["size"], row["variant"], row["method"], int(row["iteration"])


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    setting = TASKS[args.task]
    csv_path = RESULTS / f"{args.task}.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    done = {row_key(row) for row in read_rows(csv_path)}
    if not csv_path.is_file():
        csv_path.write_text(",".join(COLUMNS) + "\n")
    tasks = {}
    for panel, method in [(panel, method) for panel in args.panels for method in args.methods]:
        overrides = rescaled_overrides(method, panel.size) if panel.rescaled else {}
        if panel.rescaled and not overrides:
            continue  # the same network as the unscaled run: its curve is that one
        points = evaluation_points(panel.iterations)
        keys = {(str(panel.size), panel.variant, method, point) for point in points}
        if keys <= done:
            continue
        if panel.size not in tasks:
            tasks[panel.size] = make_task(args.task, panel.size)
        task = tasks[panel.size]
        learning_rate = paper_learning_rate(method, setting["defaults"])
        spec = RunSpec(method, setting["depth"], setting["width"], overrides)
        train = TrainConfig(panel.iterations, learning_rate, evaluate_at=points, seed=0,
                            checkpoint_every=args.checkpoint_every, show_progress=False)
        out_dir = WORK / args.task / f"{panel.size}-{panel.variant}" / method
        fixed = {"task": args.task, "input": setting["input"], "size": panel.size, "variant": panel.variant,
                 "method": method, "depth": spec.depth, "width": spec.width, "learning_rate": learning_rate,
                 "overrides": " ".join(f"{key}={value:g}" for key, value in overrides.items()),
                 "reference_psnr": getattr(task, "reference", {}).get("psnr", ""), "threads": args.threads}

        def record(point: dict) -> None:
            if (str(panel.size), panel.variant, method, point["iteration"]) in done:
                return  # measured before an interruption, again after resuming from the checkpoint
            row = {**fixed, **{key: point[key] for key in ("iteration", "psnr", "ssim", "psnr_train_mode",
                                                            "kept_iteration", "seconds")}}
            with csv_path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=COLUMNS).writerow(row)
            print(f"{args.task} {panel.size} {panel.variant} {method} it {point['iteration']}: "
                  f"psnr {point['psnr']:.2f} ({point['seconds']:.0f} s)", flush=True)

        resume = (out_dir / CHECKPOINT_FILE).is_file() and not (out_dir / METRICS_FILE).is_file()
        fit(task, spec, train, out_dir, resume=resume, on_curve_point=record)


def panels_of(rows: list[dict]) -> list[tuple[int, str]]:
    return sorted({(int(row["size"]), row["variant"]) for row in rows}, key=lambda panel: (panel[1] == "rescaled", panel[0]))


def curves(rows: list[dict], size: int, variant: str) -> dict[str, list[dict]]:
    """method -> its points in the panel; in a rescaled panel a method without frequency
    hyperparameters shows its unscaled curve, the same network."""
    by_method = {}
    for method in PAPER_METHODS:
        own = [row for row in rows if int(row["size"]) == size and row["variant"] == variant and row["method"] == method]
        if not own and variant == "rescaled" and not rescaled_overrides(method, size):
            own = [row for row in rows if int(row["size"]) == size and row["variant"] == "paper" and row["method"] == method]
        if own:
            by_method[method] = sorted(own, key=lambda row: int(row["iteration"]))
    return by_method


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task_name in args.tasks:
        rows = read_rows(RESULTS / f"{task_name}.csv")
        panels = panels_of(rows)
        figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), sharey=True, squeeze=False)
        for axis, (size, variant) in zip(axes[0], panels):
            for method, points in curves(rows, size, variant).items():
                borrowed = points[0]["variant"] != variant
                axis.plot([int(row["iteration"]) for row in points], [float(row["psnr"]) for row in points],
                          marker="o", markersize=3, color=METHOD_COLOURS[method], linestyle="--" if borrowed else "-",
                          label=method.upper() + (" (no frequency: unchanged)" if borrowed else ""))
            reference = {row["reference_psnr"] for row in rows if int(row["size"]) == size and row["reference_psnr"]}
            if reference:
                axis.axhline(float(reference.pop()), color="black", linestyle=":", label="FBP (classical)")
            title = f"{size}x{size}, " + ("frequencies rescaled to the paper's pixel pitch" if variant == "rescaled"
                                          else "paper's hyperparameters")
            axis.set_title(title, fontsize=10)
            axis.set_xscale("log")
            axis.set_xlabel("iterations")
            axis.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("PSNR, eval mode (dB)")
        for axis in axes[0]:
            axis.legend(fontsize=7, loc="upper left")
        setting = TASKS[task_name]
        lengths = panel_lengths(rows)
        command = " ".join(f"{size}{'-rescaled' if variant == 'rescaled' else ''}:{lengths[(size, variant)]}"
                           for size, variant in panels)
        figure.suptitle(f"{task_name}: {setting['input']}, {setting['depth']}x{setting['width']}, seed 0, paper's "
                        f"learning rates, best iterate kept, eval-mode PSNR\n"
                        f"scripts/benchmark_scale.py run {task_name} --panels {command}; {cpu_model()}, 1 thread",
                        fontsize=9)
        figure.tight_layout()
        figure.savefig(RESULTS / f"{task_name}.png", dpi=120)
        plt.close(figure)
        print(f"-> {RESULTS / f'{task_name}.png'}")
        print(final_table(rows, task_name))
        for iteration in args.at:
            print(f"\nat {iteration:,} iterations:\n" + final_table(rows, task_name, iteration))


def panel_lengths(rows: list[dict]) -> dict[tuple[int, str], int]:
    """(size, variant) -> the panel's iteration count: its last evaluation point of any method."""
    lengths = {}
    for row in rows:
        panel = (int(row["size"]), row["variant"])
        lengths[panel] = max(lengths.get(panel, 0), int(row["iteration"]))
    return lengths


def final_table(rows: list[dict], task_name: str, at: int | None = None) -> str:
    """Markdown: each method's PSNR at its last measured iteration, per panel (iteration if short),
    or, with `at`, at that iteration (panels and runs that never reached it left out)."""
    lengths = panel_lengths(rows)
    if at is not None:
        rows = [row for row in rows if int(row["iteration"]) <= at]
        lengths = {panel: at for panel, length in lengths.items() if length >= at}
    panels = [panel for panel in panels_of(rows) if panel in lengths]
    header = " | ".join(f"{size}² {variant} ({lengths[(size, variant)]:,} it)" for size, variant in panels)
    lines = [f"| {task_name} | {header} |", "|---" * (len(panels) + 1) + "|"]
    tables = {panel: curves(rows, *panel) for panel in panels}
    for method in PAPER_METHODS:
        cells = []
        for panel in panels:
            points = tables[panel].get(method)
            if not points or (at is not None and int(points[-1]["iteration"]) != at):
                cells.append("–")
                continue
            last = points[-1]
            short = "" if int(last["iteration"]) == lengths[panel] else f" (at {int(last['iteration']):,})"
            cells.append(f"{float(last['psnr']):.2f}{short}")
        lines.append(f"| {method.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run")
    run_parser.add_argument("task", choices=list(TASKS))
    run_parser.add_argument("--panels", nargs="+", type=parse_panel, required=True,
                            metavar="SIDE[-rescaled]:ITERATIONS")
    run_parser.add_argument("--methods", nargs="+", choices=PAPER_METHODS, default=list(PAPER_METHODS))
    run_parser.add_argument("--threads", type=int, default=1)
    run_parser.add_argument("--checkpoint-every", type=int, default=500)
    plot_parser = commands.add_parser("plot")
    plot_parser.add_argument("tasks", nargs="+", choices=list(TASKS))
    plot_parser.add_argument("--at", nargs="+", type=int, default=[], metavar="ITERATION",
                             help="also print each panel's PSNR at these iterations (comparisons at equal budgets)")
    args = parser.parse_args()
    {"run": run, "plot": plot}[args.command](args)


if __name__ == "__main__":
    main()
