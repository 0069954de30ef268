"""Image representation and compression (paper Sec. 4.1, Table 1 "2D Image", Fig. 2 and 3).

The forward operator is the identity: the network maps a pixel's coordinates in [-1, 1]^2 to its
colour, and the loss is the mean squared error over all pixels (the paper's full batch) or over
random pixel mini-batches. A small network is a compressed image, so every run reports bits per
pixel (stored numbers x bits / pixels) for the trained network and for the BN-folded network a
decoder would store.

Output layout: a single run (one image, one method, one size) writes its files straight into
`--out`; several runs write `--out/<image>/<method>_<depth>x<width>/` each, plus `runs.csv` and
`rate_distortion.png` in `--out`.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import nn

from bn_nerf.codec.compress import codable, encode_network
from bn_nerf.io.errors import InputError
from bn_nerf.io.images import IMAGE_SUFFIXES, load_image, require_file, save_image
from bn_nerf.networks import fold_normalization, stored_value_count
from bn_nerf.io.plots import save_error_map, save_rate_distortion_plot, save_spectra
from bn_nerf.tasks.arguments import PaperDefaults
from bn_nerf.tasks.base import Task
from bn_nerf.networks.coordinates import FixedCoordinates, pixel_coordinates
from bn_nerf.metrics import psnr_from_mse
from bn_nerf.tasks.runs import add_task_arguments, fit_runs, plan_runs, positive

PAPER_DEFAULTS = PaperDefaults(depth=10, width=28, iterations=50_000, learning_rate=2e-4,
                               normalized_learning_rate=1e-2, method="bn+pe",
                               sizes=((5, 20), (5, 30), (10, 28), (10, 40), (13, 49)))
EMBEDDED_DEFAULT = "astronaut"
RATE_DISTORTION_PLOT = "rate_distortion.png"


class ImageTask(Task):
    """Fit one image, (H, W, C) float in [0, 1].

    `batch_size=None` trains on every pixel at each step (the paper); an integer draws that many
    pixels at random (with replacement) per step from the trainer's generator, so a resumed run
    draws the same pixels as an uninterrupted one.
    """

    name = "image"
    in_dim = 2
    primary_metric = "psnr"

    def __init__(self, image: np.ndarray, batch_size: int | None = None, label: str = "image"):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 3:
            raise InputError(f"{label}: expected an (H, W, C) image, got shape {image.shape}")
        if batch_size is not None and batch_size <= 0:
            raise InputError(f"batch size must be > 0, got {batch_size}")
        self.label = label
        self.height, self.width, self.out_dim = image.shape
        self.batch_size = batch_size
        self.full_batch = batch_size is None
        self.target = torch.from_numpy(image.copy())
        self.pixels = self.target.reshape(-1, self.out_dim)
        self.grid = FixedCoordinates(pixel_coordinates(self.height, self.width))

    @property
    def pixel_count(self) -> int:
        return self.height * self.width

    def training_loss(self, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        if self.batch_size is None:
            return F.mse_loss(self.grid.predict(net), self.pixels)
        index = torch.randint(self.pixel_count, (self.batch_size,), generator=generator).to(self.pixels.device)
        return F.mse_loss(self.grid.predict(net, index), self.pixels[index])

    def reconstruct(self, net: nn.Module) -> torch.Tensor:
        # All pixels in one batch: in train mode BN then normalizes with the whole image's statistics.
        return self.grid.predict(net).reshape(self.height, self.width, self.out_dim)

    def metrics(self, reconstruction: torch.Tensor) -> dict[str, float]:
        """PSNR and SSIM of the reconstruction clipped to [0, 1], as a decoder would display it."""
        clipped = reconstruction.detach().clamp(0.0, 1.0).float().cpu()
        target = self.target.cpu()
        mse = float(F.mse_loss(clipped, target))
        ssim = structural_similarity(clipped.numpy(), target.numpy(), data_range=1.0, channel_axis=-1)
        return {"psnr": psnr_from_mse(mse), "ssim": float(ssim)}

    def progress(self, loss: float) -> dict[str, float]:
        return {"psnr": psnr_from_mse(loss)}

    def to(self, device: torch.device) -> "ImageTask":
        self.grid.to(device)
        return super().to(device)

    def extra_metrics(self, net: nn.Module) -> dict:
        """Bits per pixel of the trained net and of the folded one a decoder stores, and the folded
        net's PSNR (equal to the eval-mode figure, as a check on the folding)."""
        folded = fold_normalization(net)
        with torch.no_grad():
            folded_psnr = self.metrics(self.reconstruct(folded))["psnr"]
        params, folded_params = stored_value_count(net), stored_value_count(folded)
        return {**self._file_metrics(folded),
            "image": self.label, "image_height": self.height, "image_width": self.width, "channels": self.out_dim,
            "batch_size": self.batch_size or self.pixel_count,
            "bpp_32": params * 32 / self.pixel_count, "bpp_16": params * 16 / self.pixel_count,
            "params_folded": folded_params, "psnr_folded": folded_psnr,
            "bpp_folded_32": folded_params * 32 / self.pixel_count,
            "bpp_folded_16": folded_params * 16 / self.pixel_count,
        }

    def _file_metrics(self, folded: nn.Module) -> dict:
        """The real rate: the folded net written as a .bnr file (`bn-inr encode`'s coding at its
        default bit depth), its bytes x 8 / pixels and its decoded PSNR. None for networks the
        codec does not store."""
        if not codable(folded):
            return {}
        encoded = encode_network(copy.deepcopy(folded).cpu(), self.target.cpu().numpy())
        return {"bpp_file": encoded.bits_per_pixel, "psnr_file": encoded.psnr,
                "file_bytes": len(encoded.data), "file_bits_per_weight": encoded.coded.bits}

    def write_outputs(self, reconstruction: torch.Tensor, out_dir: Path) -> None:
        reconstruction = reconstruction.detach().clamp(0.0, 1.0).float().cpu().numpy()
        target = self.target.cpu().numpy()
        save_image(out_dir / "reconstruction.png", reconstruction)
        save_error_map(out_dir / "error_map.png", reconstruction, target)
        save_spectra(out_dir / "spectra.png", {"reconstruction": reconstruction, "target": target})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path,
                        help=f"an image file, or a folder of images (e.g. Kodak's kodim01..24.png); "
                             f"default: scikit-image's '{EMBEDDED_DEFAULT}' photo (512x512 RGB)")
    add_fitting_arguments(parser)
    add_task_arguments(parser, PAPER_DEFAULTS, "outputs/image")


def add_fitting_arguments(parser: argparse.ArgumentParser) -> None:
    """How an image is fitted beyond the run options; `bn-inr encode` shares them."""
    parser.add_argument("--downscale", type=int, default=1,
                        help="shrink every image by this integer factor (anti-aliased) before fitting, for CPU runs")
    parser.add_argument("--batch-size", type=int,
                        help="random pixels per step (default: all pixels, as the paper)")


def downscaled(image: np.ndarray, factor: int, label: str) -> np.ndarray:
    if factor == 1:
        return image
    from skimage.transform import resize

    height, width = image.shape[0] // factor, image.shape[1] // factor
    if min(height, width) < 2:
        raise InputError(f"{label}: --downscale {factor} leaves {width}x{height} pixels; need at least 2x2")
    return np.clip(resize(image, (height, width), anti_aliasing=True), 0.0, 1.0).astype(np.float32)


def embedded_default() -> np.ndarray:
    from skimage import data

    return getattr(data, EMBEDDED_DEFAULT)().astype(np.float32) / 255.0


def load_images(source: Path | None) -> list[tuple[str, np.ndarray]]:
    """(name, image) pairs: the embedded default, one file, or every image file in a folder."""
    if source is None:
        return [(EMBEDDED_DEFAULT, embedded_default())]
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{source}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return [(path.stem, load_image(path)) for path in files]
    return [(source.stem, load_image(require_file(source)))]


def check_arguments(args: argparse.Namespace) -> None:
    """The checks of this command's own options that need no input read; `bn-inr sweep` runs them
    for every cell before any cell starts."""
    positive(args.downscale, "--downscale")
    if args.batch_size is not None:
        positive(args.batch_size, "--batch-size")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    images = dict((name, downscaled(image, args.downscale, name)) for name, image in load_images(args.image))
    runs = plan_runs(args, PAPER_DEFAULTS, list(images), several_inputs=args.image is not None and args.image.is_dir())
    rows = fit_runs(args, runs, lambda planned: ImageTask(images[planned.input_name], args.batch_size, planned.input_name),
                    summary_keys=("psnr", "ssim", "bpp_folded_32", "bpp_file"))
    if len(rows) > 1 or runs[0].out_dir != args.out:
        save_rate_distortion_plot(args.out / RATE_DISTORTION_PLOT, rows,
                                  title=f"{len(images)} image(s), {runs[0].train.iterations} iterations")
        print(f"rate-distortion plot -> {args.out / RATE_DISTORTION_PLOT}")
    return 0
