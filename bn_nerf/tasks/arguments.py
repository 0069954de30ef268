"""Command-line options every task shares, so `bn-inr image|ct|mri|occupancy` read alike.

Values resolve as: an explicit flag, else the `--config` file (JSON, e.g. configs/image/10x28.json),
else the task's paper default.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from bn_nerf.io.errors import InputError
from bn_nerf.networks import PRESETS
from bn_nerf.tasks.trainer import KEEP_CHOICES, RunSpec, TrainConfig

CONFIG_KEYS = ("method", "depth", "width", "iterations", "lr", "lr_final", "keep", "norm_placement", "pe_octaves")


@dataclass(frozen=True)
class PaperDefaults:
    """A task's defaults from the paper (Sec. 4)."""

    depth: int
    width: int
    iterations: int
    learning_rate: float
    # The paper trains BN and BN+PE with a larger learning rate (1e-2 for images); None: same as others.
    normalized_learning_rate: float | None = None
    # The paper's minimum learning rate, reached by exponential decay (occupancy); None: constant.
    final_learning_rate: float | None = None
    method: str = "bn+pe"
    # The paper's "[hidden layers x hidden features]" net sizes for the task (configs/<task>/*.json).
    sizes: tuple[tuple[int, int], ...] = ()


def add_run_arguments(parser: argparse.ArgumentParser, defaults: PaperDefaults, size_default: str | None = None) -> None:
    """`size_default`: how a command that does not take the paper's net size chooses it, for --help."""
    group = parser.add_argument_group("network and training")
    group.add_argument("--config", type=Path, help="JSON file of defaults for the options below (see configs/)")
    # No argparse `choices`: an unknown method gets resolve_run's one-line error, not a usage dump.
    group.add_argument("--method", help=f"network preset: {', '.join(PRESETS)} (default {defaults.method})")
    group.add_argument("--depth", type=int, help=f"hidden layers (default {size_default or defaults.depth})")
    group.add_argument("--width", type=int, help=f"features per hidden layer (default {size_default or defaults.width})")
    group.add_argument("--iterations", type=int, help=f"training iterations (default {defaults.iterations})")
    lr_help = f"Adam learning rate (default {defaults.learning_rate:g}"
    if defaults.normalized_learning_rate:
        lr_help += f"; {defaults.normalized_learning_rate:g} for normalized nets, as the paper"
    group.add_argument("--lr", type=float, help=lr_help + ")")
    group.add_argument("--lr-final", type=float,
                       help="decay the learning rate exponentially to this value at the last iteration "
                            + (f"(default {defaults.final_learning_rate:g}, the paper's)" if defaults.final_learning_rate
                               else "(default: constant, the paper's initial rate throughout)"))
    group.add_argument("--keep", choices=KEEP_CHOICES,
                       help="iterate to evaluate and save: best = lowest training loss, when each step sees all "
                            "the data (default), or last")
    group.add_argument("--norm-placement", choices=["after", "before"],
                       help="normalization after the activation (paper text, default) or before it (authors' code)")
    group.add_argument("--pe-octaves", type=int, help="positional-encoding octaves (default 10)")
    group.add_argument("--eval-at", type=int, nargs="+", metavar="ITERATION",
                       help="also evaluate (eval mode, the iterate a run of that length keeps) after these "
                            "iterations: a curve in metrics.json, e.g. --eval-at 100 1000 10000")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    group.add_argument("--checkpoint-every", type=int, default=1000, help="iterations between checkpoints")
    group.add_argument("--resume", action="store_true", help="continue from the output folder's checkpoint")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _config_values(path: Path | None) -> dict:
    if path is None:
        return {}
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: malformed JSON ({error})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a JSON object of options")
    unknown = sorted(set(values) - set(CONFIG_KEYS) - {"task", "comment"})
    if unknown:
        raise InputError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    return values


def paper_learning_rate(method: str, defaults: PaperDefaults) -> float:
    """The task's paper learning rate for `method`: the normalized nets' own where the paper gives one."""
    normalized = PRESETS[method].norm != "none"
    return defaults.normalized_learning_rate if normalized and defaults.normalized_learning_rate else defaults.learning_rate


def given_options(args: argparse.Namespace) -> dict:
    """The options the user set, by flag or in the --config file (a flag wins): a command that
    defaults an option otherwise than the paper (bn-inr encode's net size) does so only where this
    leaves it out."""
    values = _config_values(args.config)
    values.update({name: getattr(args, name) for name in CONFIG_KEYS if getattr(args, name, None) is not None})
    return values


def resolve_run(args: argparse.Namespace, defaults: PaperDefaults) -> tuple[RunSpec, TrainConfig]:
    """The run the user asked for, from flags, config file and paper defaults."""
    config = _config_values(args.config)

    def pick(name: str, fallback):
        flag = getattr(args, name)
        return flag if flag is not None else config.get(name, fallback)

    method = pick("method", defaults.method)
    if method not in PRESETS:
        raise InputError(f"unknown method '{method}'; choose from {', '.join(PRESETS)}")
    overrides = {}
    if pick("norm_placement", None) is not None:
        overrides["norm_placement"] = pick("norm_placement", None)
    if pick("pe_octaves", None) is not None:
        overrides["pe_octaves"] = pick("pe_octaves", None)
    spec = RunSpec(method, int(pick("depth", defaults.depth)), int(pick("width", defaults.width)), overrides)
    paper_lr = paper_learning_rate(method, defaults)
    train = TrainConfig(
        iterations=int(pick("iterations", defaults.iterations)),
        learning_rate=float(pick("lr", paper_lr)),
        final_learning_rate=pick("lr_final", defaults.final_learning_rate),
        keep=pick("keep", "best"),
        seed=args.seed,
        evaluate_at=tuple(sorted(set(args.eval_at or ()))),
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        show_progress=not args.quiet,
    )
    return spec, train
