"""`bn-inr`: the sidecar tasks of the paper on one coordinate-network module.

Each command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
it is imported only when chosen, so `bn-inr --help` stays fast and one task's imports never
slow another's start.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bn_nerf.io.errors import InputError
from bn_nerf.upstream_warnings import silence_known_upstream_warnings

COMMANDS: dict[str, tuple[str, str]] = {
    "image": ("bn_nerf.tasks.image", "fit an image or a folder of images (representation and compression)"),
    "ct": ("bn_nerf.tasks.ct", "reconstruct an image from parallel-beam projections"),
    "mri": ("bn_nerf.tasks.mri", "reconstruct a volume from sampled 3D Fourier coefficients"),
    "occupancy": ("bn_nerf.tasks.occupancy", "fit a mesh's occupancy and extract a surface"),
    "ntk": ("bn_nerf.analysis.ntk_command", "empirical NTK spectra, width sweeps and the 1D spectral-bias demo"),
    "encode": ("bn_nerf.tasks.encode", "fit a network to an image and write it as a compressed file (.bnr)"),
    "decode": ("bn_nerf.codec.decode", "decode a .bnr file to a PNG (no training code)"),
    "sweep": ("bn_nerf.sweep.command", "run a Table 1 grid (tasks x methods x sizes x seeds) on Ray or a local process pool and write the table"),
}


def _usage() -> str:
    lines = ["usage: bn-inr COMMAND [options]    (bn-inr COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    silence_known_upstream_warnings()
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"bn-inr: error: unknown command '{name}'; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"bn-inr {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except InputError as error:
        print(f"bn-inr {name}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
