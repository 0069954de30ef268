"""2D computed tomography (paper Sec. 4.2, Table 1 "2D CT", Fig. 4).

The network maps a pixel's coordinates in [-1, 1]^2 to density; it never sees the image. Its
output on the whole pixel grid goes through the parallel-beam projector and the loss is the MSE
against the measured projections (full batch, as the paper). The measured projections come from
the same projector applied to the ground truth, at `--projections` angles spread evenly over
[0, 180) degrees. Metrics (eval mode) are PSNR and SSIM of the reconstruction clipped to [0, 1]
against the ground truth; the classical reference row is scikit-image's filtered back-projection
(ramp filter) from the same projections, clipped the same way.

Input: any image file, made grayscale (luminance) and centre-cropped to a square, at its own size
unless `--size` asks for another; by default scikit-image's Shepp-Logan phantom at the paper's 512.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import nn

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import load_image, save_image
from bn_nerf.operators.radon import ParallelBeamProjector
from bn_nerf.io.plots import save_error_map
from bn_nerf.tasks.arguments import PaperDefaults
from bn_nerf.tasks.base import Task
from bn_nerf.metrics import psnr_from_mse
from bn_nerf.networks.coordinates import FixedCoordinates, grid_coordinates
from bn_nerf.tasks.runs import add_task_arguments, fit_runs, plan_runs, positive

PAPER_DEFAULTS = PaperDefaults(depth=4, width=256, iterations=20_000, learning_rate=5e-4, method="bn+pe",
                              sizes=((2, 128), (2, 256), (4, 128), (4, 256), (8, 256)))
PAPER_SIZE = 512
PAPER_PROJECTIONS = 100
EMBEDDED_DEFAULT = "shepp_logan"


def projection_angles(count: int) -> np.ndarray:
    """`count` angles in degrees, evenly over [0, 180): parallel beams repeat after 180."""
    return np.linspace(0.0, 180.0, count, endpoint=False)


def filtered_back_projection(sinogram: np.ndarray, angles: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import iradon

    return iradon(sinogram, theta=angles, output_size=size, filter_name="ramp", circle=False).astype(np.float32)


def quality(reconstruction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of a reconstruction clipped to [0, 1], the ground truth's range."""
    clipped = np.clip(reconstruction, 0.0, 1.0).astype(np.float64)
    mse = float(np.mean((clipped - target) ** 2))
    return {"psnr": psnr_from_mse(mse), "ssim": float(structural_similarity(clipped, target.astype(np.float64), data_range=1.0))}


class CTTask(Task):
    """Reconstruct a square (N, N) image in [0, 1] from `projections` parallel-beam projections."""

    name = "ct"
    in_dim = 2
    out_dim = 1
    primary_metric = "psnr"

    def __init__(self, image: np.ndarray, projections: int, label: str = "image"):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or image.shape[0] != image.shape[1]:
            raise InputError(f"{label}: CT needs a square grayscale image, got shape {image.shape}")
        if projections <= 0:
            raise InputError(f"--projections must be > 0, got {projections}")
        self.label = label
        self.size = image.shape[0]
        self.angles = projection_angles(projections)
        self.target = torch.from_numpy(image.copy())
        self.projector = ParallelBeamProjector(self.size, self.size, self.angles)
        with torch.no_grad():
            self.measured = self.projector(self.target)
        self.grid = FixedCoordinates(grid_coordinates((self.size, self.size)))
        self.fbp = filtered_back_projection(self.measured.numpy(), self.angles, self.size)
        self.reference = quality(self.fbp, image)

    def to(self, device: torch.device) -> "CTTask":
        super().to(device)
        self.projector.to(device)
        self.grid.to(device)
        return self

    def training_loss(self, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        return F.mse_loss(self.projector(self.reconstruct(net)), self.measured)

    def reconstruct(self, net: nn.Module) -> torch.Tensor:
        # Every pixel in one batch: train-mode BN normalizes with the whole image's statistics.
        return self.grid.predict(net).reshape(self.size, self.size)

    def metrics(self, reconstruction: torch.Tensor) -> dict[str, float]:
        return quality(reconstruction.detach().float().cpu().numpy(), self.target.cpu().numpy())

    def extra_metrics(self, net: nn.Module) -> dict:
        return {"input": self.label, "image_size": self.size, "projections": len(self.angles),
                "reference_method": "fbp", **{f"reference_{key}": value for key, value in self.reference.items()}}

    def write_outputs(self, reconstruction: torch.Tensor, out_dir: Path) -> None:
        reconstruction = reconstruction.detach().float().cpu().clamp(0.0, 1.0).numpy()
        target = self.target.cpu().numpy()
        save_image(out_dir / "reconstruction.png", reconstruction)
        save_image(out_dir / "ground_truth.png", target)
        save_error_map(out_dir / "error_map.png", reconstruction, target)
        save_image(out_dir / "fbp.png", self.fbp)


def embedded_default() -> np.ndarray:
    from skimage.data import shepp_logan_phantom

    return shepp_logan_phantom().astype(np.float32)


def prepare_image(path: Path | None, size: int | None) -> tuple[str, np.ndarray]:
    """(name, square grayscale image in [0, 1]): an image file's central square at its own side, or
    the embedded phantom at the paper's side, unless `size` asks for another; a crop or a resize is
    said in one line."""
    from skimage.transform import resize

    reason = " (--size)" if size is not None else ", the paper's size"
    if path is None:
        name, image = EMBEDDED_DEFAULT, embedded_default()
        size = PAPER_SIZE if size is None else size
    else:
        name, pixels = path.stem, load_image(path)
        # Luminance weights (ITU-R 601) for colour images; grayscale passes through.
        image = pixels[..., 0] if pixels.shape[-1] == 1 else pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    height, width = image.shape
    side = min(height, width)
    size = side if size is None else size
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]
    changes = []
    if height != width:
        changes.append(f"cropped from {width}x{height} to its central {side}x{side} square")
    if side != size:
        square = resize(square, (size, size), anti_aliasing=side > size)
        changes.append(f"resized from {side}x{side} to {size}x{size}{reason}")
    if changes:
        print(f"ct: {name} {' and '.join(changes)}")
    return name, np.clip(square, 0.0, 1.0).astype(np.float32)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path,
                        help="ground-truth image file (made grayscale, centre-cropped square); "
                             "default: scikit-image's Shepp-Logan phantom")
    parser.add_argument("--size", type=int,
                        help=f"image side in pixels (default: an --image file's own, the side of its central "
                             f"square; the embedded phantom at {PAPER_SIZE}, the paper's)")
    parser.add_argument("--projections", type=int, default=PAPER_PROJECTIONS,
                        help=f"parallel-beam projections over [0, 180) degrees (default {PAPER_PROJECTIONS}, the paper's)")
    add_task_arguments(parser, PAPER_DEFAULTS, "outputs/ct")


def check_arguments(args: argparse.Namespace) -> None:
    """The checks of this command's own options that need no input read; `bn-inr sweep` runs them
    for every cell before any cell starts."""
    if args.size is not None:  # None: an input file's own size (the embedded default: the paper's)
        positive(args.size, "--size")
    positive(args.projections, "--projections")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    name, image = prepare_image(args.image, args.size)
    runs = plan_runs(args, PAPER_DEFAULTS, [name])
    task = CTTask(image, args.projections, label=name)
    fit_runs(args, runs, lambda planned: task, summary_keys=("psnr", "ssim"))
    return 0
