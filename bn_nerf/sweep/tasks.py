"""The tasks a sweep can run, and what the sweep needs to know of each: its command module (whose
parser and `run` a cell uses unchanged), the flag that names its input, the input files it takes,
and the metric its Table 1 row reports."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import IMAGE_SUFFIXES, load_image
from bn_nerf.io.meshes import MESH_SUFFIXES, load_mesh
from bn_nerf.io.volumes import VOLUME_SUFFIXES, load_volume
from bn_nerf.tasks import ct, image, mri, occupancy


@dataclass(frozen=True)
class SweepTask:
    name: str
    module: ModuleType
    # The command-line flag naming the input file; without it the command fits its embedded default.
    input_flag: str
    input_suffixes: tuple[str, ...]
    # Reads an input file, raising InputError for one that is unreadable.
    load_input: Callable[[Path], object]
    # The metric of the task's Table 1 row (higher is better for each).
    metric: str
    title: str
    # Options that shrink a cell's input to a few hundred or thousand samples for `--smoke`,
    # replacing the configuration's: the grid is kept, its inputs and budgets are not.
    smoke_options: tuple[tuple[str, object], ...]

    def parser(self) -> argparse.ArgumentParser:
        """The task command's own parser, raising InputError instead of exiting on bad options."""
        parser = _RaisingParser(prog=f"bn-inr {self.name}", add_help=False)
        self.module.add_arguments(parser)
        return parser


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise InputError(f"{self.prog}: {message}")


SWEEP_TASKS: dict[str, SweepTask] = {
    task.name: task for task in (
        # Kodak's 768x512 -> 48x32, the embedded 512x512 photo -> 32x32.
        SweepTask("image", image, "--image", IMAGE_SUFFIXES, load_image, "psnr", "2D image", (("downscale", 16),)),
        SweepTask("ct", ct, "--image", IMAGE_SUFFIXES, load_image, "psnr", "2D CT", (("size", 32),)),
        SweepTask("occupancy", occupancy, "--mesh", MESH_SUFFIXES, load_mesh, "iou", "3D shape",
                  (("eval_resolution", 16), ("points_per_iteration", 512), ("pool_points", 4096))),
        SweepTask("mri", mri, "--volume", VOLUME_SUFFIXES, load_volume, "psnr", "3D MRI", (("size", 12),)),
    )
}
