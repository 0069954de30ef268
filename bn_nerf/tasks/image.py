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
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import nn

from bn_nerf.errors import InputError
from bn_nerf.io import IMAGE_SUFFIXES, load_image, require_file, save_image
from bn_nerf.networks import fold_normalization, stored_value_count
from bn_nerf.networks.mlp import CoordinateMLP
from bn_nerf.plots import save_error_map, save_rate_distortion_plot, save_spectra
from bn_nerf.tasks.arguments import PaperDefaults, add_run_arguments, resolve_run
from bn_nerf.tasks.base import Task
from bn_nerf.tasks.trainer import METRICS_FILE, CHECKPOINT_FILE, RunSpec, TrainConfig, fit, validate_run

PAPER_DEFAULTS = PaperDefaults(depth=10, width=28, iterations=50_000, learning_rate=2e-4,
                               normalized_learning_rate=1e-2, method="bn+pe")
# The paper's five "[hidden layers x hidden features]" net sizes (configs/image/*.json).
PAPER_SIZES = ((5, 20), (5, 30), (10, 28), (10, 40), (13, 49))
EMBEDDED_DEFAULT = "astronaut"
RUNS_CSV = "runs.csv"
RATE_DISTORTION_PLOT = "rate_distortion.png"


def pixel_coordinates(height: int, width: int) -> torch.Tensor:
    """(H*W, 2) pixel-centre coordinates (x, y) in [-1, 1], row-major like the image's pixels."""
    rows = torch.linspace(-1.0, 1.0, height)
    columns = torch.linspace(-1.0, 1.0, width)
    y, x = torch.meshgrid(rows, columns, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def psnr_from_mse(mse: float) -> float:
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


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
        self.target = torch.from_numpy(image.copy())
        self.pixels = self.target.reshape(-1, self.out_dim)
        self.coordinates = pixel_coordinates(self.height, self.width)
        # The coordinates never change, so a CoordinateMLP's (parameter-free) encoding of them is
        # computed once per network and reused every step: PE's sin/cos are a large share of a step.
        self._encoded: torch.Tensor | None = None
        self._encoded_by: nn.Module | None = None

    @property
    def pixel_count(self) -> int:
        return self.height * self.width

    def _predict(self, net: nn.Module, index: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(net, CoordinateMLP):
            return net(self.coordinates if index is None else self.coordinates[index])
        if self._encoded_by is not net.encoding or self._encoded.device != self.coordinates.device:
            with torch.no_grad():
                self._encoded = net.encoding(self.coordinates)
            self._encoded_by = net.encoding
        return net.forward_encoded(self._encoded if index is None else self._encoded[index])

    def training_loss(self, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        if self.batch_size is None:
            return F.mse_loss(self._predict(net), self.pixels)
        index = torch.randint(self.pixel_count, (self.batch_size,), generator=generator).to(self.pixels.device)
        return F.mse_loss(self._predict(net, index), self.pixels[index])

    def reconstruct(self, net: nn.Module) -> torch.Tensor:
        # All pixels in one batch: in train mode BN then normalizes with the whole image's statistics.
        return self._predict(net).reshape(self.height, self.width, self.out_dim)

    def metrics(self, reconstruction: torch.Tensor) -> dict[str, float]:
        """PSNR and SSIM of the reconstruction clipped to [0, 1], as a decoder would display it."""
        clipped = reconstruction.detach().clamp(0.0, 1.0).float().cpu()
        target = self.target.cpu()
        mse = float(F.mse_loss(clipped, target))
        ssim = structural_similarity(clipped.numpy(), target.numpy(), data_range=1.0, channel_axis=-1)
        return {"psnr": psnr_from_mse(mse), "ssim": float(ssim)}

    def progress(self, loss: float) -> dict[str, float]:
        return {"psnr": psnr_from_mse(loss)}

    def compression_metrics(self, net: nn.Module) -> dict:
        """Bits per pixel of the trained net and of the folded one a decoder stores, and the folded
        net's PSNR (equal to the eval-mode figure, as a check on the folding)."""
        folded = fold_normalization(net)
        with torch.no_grad():
            folded_psnr = self.metrics(self.reconstruct(folded))["psnr"]
        params, folded_params = stored_value_count(net), stored_value_count(folded)
        return {
            "image": self.label, "image_height": self.height, "image_width": self.width, "channels": self.out_dim,
            "batch_size": self.batch_size or self.pixel_count,
            "bpp_32": params * 32 / self.pixel_count, "bpp_16": params * 16 / self.pixel_count,
            "params_folded": folded_params, "psnr_folded": folded_psnr,
            "bpp_folded_32": folded_params * 32 / self.pixel_count,
            "bpp_folded_16": folded_params * 16 / self.pixel_count,
        }

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
    parser.add_argument("--out", type=Path, default=Path("outputs/image"), help="output folder")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help="several methods in one call (for a rate-distortion plot); replaces --method")
    parser.add_argument("--sizes", nargs="+", metavar="DEPTHxWIDTH",
                        help="several net sizes, e.g. 5x20 10x28 (the paper's: "
                             + " ".join(f"{d}x{w}" for d, w in PAPER_SIZES) + "); replaces --depth/--width")
    parser.add_argument("--downscale", type=int, default=1,
                        help="shrink every image by this integer factor (anti-aliased) before fitting, for CPU runs")
    parser.add_argument("--batch-size", type=int,
                        help="random pixels per step (default: all pixels, as the paper)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for PyTorch (default: its own choice); 1 is many times faster "
                             "when other jobs share the cores (see BENCHMARKS.md)")
    add_run_arguments(parser, PAPER_DEFAULTS)


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        depth, width = (int(part) for part in parts)
    except ValueError:
        raise InputError(f"net size '{text}' is not DEPTHxWIDTH (e.g. 10x28)") from None
    if depth <= 0 or width <= 0:
        raise InputError(f"net size '{text}': depth and width must be > 0")
    return depth, width


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


@dataclass(frozen=True)
class PlannedRun:
    image_name: str
    spec: RunSpec
    train: TrainConfig
    out_dir: Path


def plan_runs(args: argparse.Namespace, image_names: list[str]) -> list[PlannedRun]:
    """Every (image, method, size) run asked for, each validated before anything trains."""
    if args.methods and args.method:
        raise InputError("give either --method or --methods, not both")
    if args.sizes and (args.depth is not None or args.width is not None):
        raise InputError("give either --sizes or --depth/--width, not both")
    methods = args.methods or [args.method]
    sizes = [parse_size(text) for text in args.sizes] if args.sizes else [(args.depth, args.width)]
    single = len(image_names) == 1 and len(methods) == 1 and len(sizes) == 1 and not (args.image and args.image.is_dir())
    runs = []
    for method in methods:
        for depth, width in sizes:
            run_args = copy.copy(args)
            run_args.method, run_args.depth, run_args.width = method, depth, width
            spec, train = resolve_run(run_args, PAPER_DEFAULTS)
            validate_run(spec, train)
            for name in image_names:
                out_dir = args.out if single else args.out / name / f"{spec.method}_{spec.depth}x{spec.width}"
                runs.append(PlannedRun(name, spec, train, out_dir))
    return runs


CSV_LEADING = ("image", "method", "depth", "width", "psnr", "psnr_train_mode", "ssim", "bpp_32", "bpp_16",
               "bpp_folded_32", "bpp_folded_16", "params", "params_folded", "iterations", "seconds", "seed")


def write_runs_csv(path: Path, rows: list[dict]) -> None:
    columns = list(CSV_LEADING) + sorted({key for row in rows for key in row} - set(CSV_LEADING))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace) -> int:
    if args.downscale <= 0:
        raise InputError(f"--downscale must be a positive integer, got {args.downscale}")
    if args.batch_size is not None and args.batch_size <= 0:
        raise InputError(f"--batch-size must be > 0, got {args.batch_size}")
    if args.threads is not None:
        if args.threads <= 0:
            raise InputError(f"--threads must be > 0, got {args.threads}")
        torch.set_num_threads(args.threads)
    # Read and check every image and every run before training anything, so that bad input
    # anywhere fails at once and leaves no half-finished folder of results behind.
    images = [(name, downscaled(image, args.downscale, name)) for name, image in load_images(args.image)]
    runs = plan_runs(args, [name for name, _ in images])
    pixels_of = dict(images)
    multiple = len(runs) > 1 or (args.image is not None and args.image.is_dir())
    rows = []
    for planned in runs:
        task = ImageTask(pixels_of[planned.image_name], args.batch_size, label=planned.image_name)
        # Several runs: resume those that left a checkpoint and start the others afresh.
        resume = args.resume and (not multiple or (planned.out_dir / CHECKPOINT_FILE).is_file())
        metrics, _ = fit(task, planned.spec, planned.train, planned.out_dir, resume=resume,
                         extra_metrics=task.compression_metrics)
        rows.append(metrics)
        print(f"{planned.image_name} {planned.spec.method} {planned.spec.depth}x{planned.spec.width}: "
              f"PSNR {metrics['psnr']:.2f} dB (train mode {metrics['psnr_train_mode']:.2f}), "
              f"SSIM {metrics['ssim']:.4f}, {metrics['bpp_folded_32']:.3f} bpp folded at 32 bits, "
              f"{metrics['seconds']:.1f} s -> {planned.out_dir / METRICS_FILE}")
    if multiple:
        write_runs_csv(args.out / RUNS_CSV, rows)
        save_rate_distortion_plot(args.out / RATE_DISTORTION_PLOT, rows,
                                  title=f"{len(images)} image(s), {runs[0].train.iterations} iterations")
        print(f"{len(rows)} runs -> {args.out / RUNS_CSV}, {args.out / RATE_DISTORTION_PLOT}")
    return 0
