"""3D MRI reconstruction (paper Sec. 4.4, Table 1 "3D MRI", Fig. 6).

The network maps a voxel's coordinates in [-1, 1]^3 to intensity; it never sees the volume. Its
output on the whole voxel grid goes through the Fourier sampling operator (orthonormal 3D DFT,
then the coefficients the k-space mask keeps), and the loss is the mean squared magnitude of the
difference to the measured coefficients: unmeasured coefficients play no part.

Measurements: by default a variable-density mask keeping 25% of the coefficients (fully sampled
centre, sparser towards high frequencies; see `bn_nerf.operators.kspace_masks`). The paper does
not state its mask; with every coefficient measured (`--mask full`) the task is representation.
Metrics (eval mode): PSNR over the volume and SSIM averaged over the slices along the first axis,
of the reconstruction clipped to [0, 1]. The classical reference row is the zero-filled inverse
FFT (its real part, since the volume is real), clipped the same way.

Input: the embedded analytic head phantom, or a `.npy` / NIfTI volume rescaled to [0, 1],
zero-padded to a cube, at its own size unless `--size` asks for another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import nn

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import save_image
from bn_nerf.io.volumes import load_volume
from bn_nerf.operators.fourier import FourierSampling
from bn_nerf.operators.kspace_masks import MASK_KINDS, sampling_mask
from bn_nerf.signals.phantom import head_phantom
from bn_nerf.tasks.arguments import PaperDefaults
from bn_nerf.tasks.base import Task
from bn_nerf.metrics import psnr_from_mse
from bn_nerf.networks.coordinates import FixedCoordinates, grid_coordinates
from bn_nerf.tasks.runs import add_task_arguments, fit_runs, plan_runs, positive

PAPER_DEFAULTS = PaperDefaults(depth=4, width=256, iterations=1_000, learning_rate=2e-3, method="bn+pe",
                              sizes=((2, 256), (4, 256)))
PAPER_SIZE = 96
DEFAULT_MASK = "variable-density"
DEFAULT_FRACTION = 0.25
EMBEDDED_DEFAULT = "head_phantom"


def quality(reconstruction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR of the volume and mean SSIM of its slices along axis 0, clipped to [0, 1]."""
    clipped = np.clip(reconstruction, 0.0, 1.0).astype(np.float64)
    target = target.astype(np.float64)
    mse = float(np.mean((clipped - target) ** 2))
    ssim = np.mean([structural_similarity(a, b, data_range=1.0) for a, b in zip(clipped, target)])
    return {"psnr": psnr_from_mse(mse), "ssim": float(ssim)}


def mid_slices(volume: np.ndarray) -> np.ndarray:
    """The three orthogonal slices through the centre, side by side (padded to one height)."""
    slices = [volume[volume.shape[0] // 2], volume[:, volume.shape[1] // 2], volume[:, :, volume.shape[2] // 2]]
    height = max(s.shape[0] for s in slices)
    return np.concatenate([np.pad(s, ((0, height - s.shape[0]), (0, 1))) for s in slices], axis=1)


class MRITask(Task):
    """Reconstruct a (D, H, W) volume in [0, 1] from its Fourier coefficients under a mask."""

    name = "mri"
    in_dim = 3
    out_dim = 1
    primary_metric = "psnr"

    def __init__(self, volume: np.ndarray, mask: np.ndarray, label: str = "volume", mask_kind: str = "custom"):
        volume = np.asarray(volume, dtype=np.float32)
        if volume.ndim != 3:
            raise InputError(f"{label}: expected a 3-D volume, got shape {volume.shape}")
        if mask.shape != volume.shape:
            raise InputError(f"k-space mask {mask.shape} does not match the volume {volume.shape}")
        if not mask.any():
            raise InputError("the k-space mask is empty: no coefficient is measured")
        self.label, self.mask_kind = label, mask_kind
        self.shape = volume.shape
        self.target = torch.from_numpy(volume.copy())
        self.operator = FourierSampling(torch.from_numpy(mask))
        self.measured = self.operator(self.target)
        self.grid = FixedCoordinates(grid_coordinates(self.shape))
        zero_filled = self.operator.adjoint(self.measured).real.numpy()
        self.reference = quality(zero_filled, volume)

    def to(self, device: torch.device) -> "MRITask":
        super().to(device)
        self.operator.to(device)
        self.grid.to(device)
        return self

    def training_loss(self, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        residual = self.operator(self.reconstruct(net)) - self.measured
        return torch.mean(residual.real.square() + residual.imag.square())

    def reconstruct(self, net: nn.Module) -> torch.Tensor:
        # Every voxel in one batch: train-mode BN normalizes with the whole volume's statistics.
        return self.grid.predict(net).reshape(self.shape)

    def metrics(self, reconstruction: torch.Tensor) -> dict[str, float]:
        return quality(reconstruction.detach().float().cpu().numpy(), self.target.cpu().numpy())

    def extra_metrics(self, net: nn.Module) -> dict:
        return {"input": self.label, "volume_shape": "x".join(map(str, self.shape)), "mask": self.mask_kind,
                "sampled_fraction": self.operator.measurement_count / self.target.numel(),
                "reference_method": "zero_filled_ifft",
                **{f"reference_{key}": value for key, value in self.reference.items()}}

    def write_outputs(self, reconstruction: torch.Tensor, out_dir: Path) -> None:
        volume = reconstruction.detach().float().cpu().numpy()
        np.save(out_dir / "reconstruction.npy", volume)
        target = self.target.cpu().numpy()
        zero_filled = self.operator.adjoint(self.measured).real.cpu().numpy()
        save_image(out_dir / "reconstruction_slices.png", mid_slices(volume))
        save_image(out_dir / "ground_truth_slices.png", mid_slices(target))
        save_image(out_dir / "zero_filled_slices.png", mid_slices(zero_filled))
        save_image(out_dir / "error_slices.png", mid_slices(np.abs(np.clip(volume, 0.0, 1.0) - target)))
        mask = torch.fft.fftshift(self.operator.mask, dim=self.operator.dims).cpu().numpy().astype(np.float32)
        save_image(out_dir / "mask_slices.png", mid_slices(mask))


def prepare_volume(path: Path | None, size: int | None) -> tuple[str, np.ndarray]:
    """(name, cube volume in [0, 1]): a volume file zero-padded to a cube at its own side, or the
    head phantom at the paper's side, unless `size` asks for another; padding or resizing a file is
    said in one line."""
    from skimage.transform import resize

    if path is None:
        return EMBEDDED_DEFAULT, head_phantom(PAPER_SIZE if size is None else size)
    volume = load_volume(path)
    name = path.name.split(".")[0]
    side = max(volume.shape)
    size = side if size is None else size
    padding = [((side - s) // 2, side - s - (side - s) // 2) for s in volume.shape]
    cube = np.pad(volume, padding)
    changes = []
    if any(s != side for s in volume.shape):
        changes.append(f"zero-padded from {'x'.join(map(str, volume.shape))} to a {side}^3 cube")
    if side != size:
        cube = resize(cube, (size, size, size), anti_aliasing=side > size)
        changes.append(f"resized from {side}^3 to {size}^3 (--size)")
    if changes:
        print(f"mri: {name} {' and '.join(changes)}")
    return name, np.clip(cube, 0.0, 1.0).astype(np.float32)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", type=Path,
                        help="ground-truth volume (.npy, .nii, .nii.gz); default: an analytic head phantom")
    parser.add_argument("--size", type=int,
                        help=f"volume side in voxels (default: a --volume file's own longest side; the embedded "
                             f"phantom at {PAPER_SIZE}, the paper's)")
    parser.add_argument("--mask", choices=MASK_KINDS, default=DEFAULT_MASK, help=f"k-space sampling (default {DEFAULT_MASK})")
    parser.add_argument("--sampled-fraction", type=float, default=DEFAULT_FRACTION,
                        help=f"fraction of k-space measured by random, variable-density and radial masks (default {DEFAULT_FRACTION})")
    parser.add_argument("--mask-seed", type=int, default=0, help="seed of the random masks")
    add_task_arguments(parser, PAPER_DEFAULTS, "outputs/mri")


def check_arguments(args: argparse.Namespace) -> None:
    """The checks of this command's own options that need no input read; `bn-inr sweep` runs them
    for every cell before any cell starts."""
    if args.size is not None:  # None: an input file's own size (the embedded default: the paper's)
        positive(args.size, "--size")
    if args.mask != "full" and not 0.0 < args.sampled_fraction <= 1.0:
        raise InputError(f"--sampled-fraction must be in (0, 1], got {args.sampled_fraction}")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    name, volume = prepare_volume(args.volume, args.size)
    runs = plan_runs(args, PAPER_DEFAULTS, [name])
    mask = sampling_mask(args.mask, volume.shape, args.sampled_fraction, seed=args.mask_seed)
    task = MRITask(volume, mask, label=name, mask_kind=args.mask)
    fit_runs(args, runs, lambda planned: task, summary_keys=("psnr", "ssim"))
    return 0
