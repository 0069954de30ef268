"""`bn-inr encode IMAGE OUT.bnr`: fit a network to an image and write it as one coded file.

The fit is `bn-inr image`'s own (the image task, the one training loop, BatchNorm's statistics
re-estimated with the final weights); then BatchNorm is folded into the Linear layers, the weights
are quantized (optionally fine-tuned on their quantization grid first) and entropy-coded
(`bn_nerf.codec.compress`), and the file is written through a temporary name.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from bn_nerf.codec.compress import AUTO_BITS_PSNR_LOSS, check_image_size, decoder_config, encode_network, smallest_file_bytes
from bn_nerf.codec.jpeg import HIGHEST_QUALITY, jpeg_at_psnr
from bn_nerf.codec.quantize import BIT_DEPTHS, equalize_channel_ranges, fake_quantized, quantization_step
from bn_nerf.codec.sizing import DEFAULT_BITS_PER_PIXEL, default_bits_per_pixel, default_network_size
from bn_nerf.io.errors import InputError
from bn_nerf.io.images import load_image, require_output_folder
from bn_nerf.networks import NetworkConfig, fold_normalization, method_config
from bn_nerf.tasks.arguments import add_run_arguments, given_options, resolve_run
from bn_nerf.tasks.base import Task
from bn_nerf.tasks.image import PAPER_DEFAULTS, ImageTask, add_fitting_arguments, check_arguments, downscaled
from bn_nerf.tasks.runs import plan_runs, positive
from bn_nerf.tasks.trainer import BestIterate, fit, training_step, validate_run

# Quantization-aware fine-tuning moves each weight by about this fraction of its tensor's
# quantization step per Adam step: small enough not to undo the fit, large enough that weights
# cross bins within tens of steps. A fraction of the step, not one learning rate for all, because
# a folded network's tensors differ in scale by orders of magnitude.
QAT_STEP_FRACTION = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="the image to code (PNG, JPEG, ...; gray or RGB)")
    parser.add_argument("out", type=Path, help="the coded file to write (.bnr)")
    add_fitting_arguments(parser)
    parser.add_argument("--threads", type=int,
                        help="CPU threads for the fit (default: chosen as `bn-inr image` chooses them)")
    parser.add_argument("--run-dir", type=Path,
                        help="keep the fit's run folder (metrics.json, reconstruction, checkpoints) here, "
                             "so that --resume can continue it (default: a temporary folder, removed)")
    coding = parser.add_argument_group("quantization and coding")
    coding.add_argument("--bits", type=int,
                        help=f"quantization bits per weight, {BIT_DEPTHS[0]}-{BIT_DEPTHS[-1]} (default: the fewest "
                             f"whose decoded image is within {AUTO_BITS_PSNR_LOSS:g} dB of the unquantized network's)")
    coding.add_argument("--target-bpp", type=float,
                        help="the most bits per pixel the file may take (header included): the net is sized for it "
                             "unless --depth/--width are given, and coded with the most quantization bits that fit")
    coding.add_argument("--qat-steps", type=int, default=0,
                        help="quantization-aware fine-tuning steps of the folded network before coding (default 0)")
    add_run_arguments(parser, PAPER_DEFAULTS,
                      size_default=f"sized for a file of about {DEFAULT_BITS_PER_PIXEL:g} bpp (on a small image, "
                                   f"just under JPEG's smallest file), or --target-bpp: more pixels, a larger net")


def _check_coding_arguments(args: argparse.Namespace) -> None:
    if args.bits is not None and args.bits not in BIT_DEPTHS:
        raise InputError(f"--bits must be {BIT_DEPTHS[0]}-{BIT_DEPTHS[-1]}, got {args.bits}")
    if args.bits is not None and args.target_bpp is not None:
        raise InputError("give either --bits or --target-bpp, not both")
    if args.target_bpp is not None:
        positive(args.target_bpp, "--target-bpp")
    if args.qat_steps < 0:
        raise InputError(f"--qat-steps must be >= 0, got {args.qat_steps}")
    if args.resume and args.run_dir is None:
        raise InputError("--resume continues a kept run folder: give --run-dir")


class _OnQuantizationGrid(nn.Module):
    """A parametrization that shows a tensor on its quantization grid (straight-through gradients)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return fake_quantized(values, self.bits)


def fine_tune_quantized(folded: nn.Module, task: Task, bits: int, steps: int, seed: int) -> None:
    """Fine-tune `folded`'s weights in place for `steps` Adam steps of the task's loss with every
    tensor seen on its quantization grid, keeping the iterate with the lowest loss (the trainer's
    rule for full-batch fits; the starting point is a candidate, so a full-batch fine-tuning never
    ends worse than it began). Not a second training loop: no schedule, checkpoints or outputs,
    only the few hundred steps the quantized network needs to re-settle."""
    # On the ranges it will be coded with (coding leaves an equalized network as it is).
    equalize_channel_ranges(folded)
    owners = [(module, name) for module in folded.modules() for name, _ in module.named_parameters(recurse=False)]
    # The trainer's rule: the lowest loss only where a step's loss is the whole objective.
    groups = [{"params": [parameter], "lr": QAT_STEP_FRACTION * quantization_step(parameter, bits)}
              for module, name in owners for parameter in [getattr(module, name)]]
    for module, name in owners:
        parametrize.register_parametrization(module, name, _OnQuantizationGrid(bits))
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(seed)
    best = BestIterate(folded) if task.full_batch else None
    with torch.enable_grad():
        for step in range(steps):
            training_step(task, folded, optimizer, generator, best, step)
    if best is not None:
        with torch.no_grad():
            best.offer(folded, task.training_loss(folded, generator), steps)
        best.restore(folded)
    for module, name in owners:
        # The latent weights stay: coding quantizes them exactly as the parametrization did.
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _jpeg_line(target: np.ndarray, encoded_bytes: int, psnr: float) -> str:
    """The JPEG of the coded file's PSNR, beside the file: what the codec is up against."""
    quality, jpeg_bytes, jpeg_psnr = jpeg_at_psnr(target, psnr)
    jpeg = f"{jpeg_bytes} bytes, {jpeg_bytes * 8 / (target.shape[0] * target.shape[1]):.4f} bpp, {jpeg_psnr:.2f} dB"
    if jpeg_psnr < psnr:
        return f"JPEG (Pillow) does not reach {psnr:.2f} dB even at quality {HIGHEST_QUALITY} ({jpeg})"
    reached = "its smallest file, quality 1, already reaches it" if quality == 1 else f"quality {quality} reaches it"
    return f"JPEG (Pillow): {reached} ({jpeg}); this file is {encoded_bytes / jpeg_bytes:.2f}x its size"


def _with_default_size(args: argparse.Namespace, config: NetworkConfig, method: str, image: np.ndarray,
                       label: str) -> argparse.Namespace:
    """`args` with the net size chosen for the image where neither a flag nor --config gives it,
    that choice said in one line."""
    given = given_options(args)
    if "depth" in given and "width" in given:
        return args
    height, width, channels = image.shape
    bits_per_pixel = args.target_bpp or default_bits_per_pixel(image)
    depth, hidden_width = default_network_size(config, method, channels, height, width, bits_per_pixel,
                                               given.get("depth"), given.get("width"))
    why = "--target-bpp" if args.target_bpp else \
        "the default" if bits_per_pixel == DEFAULT_BITS_PER_PIXEL else "just under JPEG's smallest file"
    print(f"{label}: {method} {depth}x{hidden_width}, sized for a file of about {bits_per_pixel:.2f} bpp at "
          f"{width}x{height} ({why}; --depth/--width choose another)")
    sized = copy.copy(args)
    sized.depth, sized.width = depth, hidden_width
    return sized


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    _check_coding_arguments(args)
    require_output_folder(args.out)
    label = str(args.image)
    image = downscaled(load_image(args.image), args.downscale, label)
    height, width, channels = image.shape
    # What the file can hold is checked before the fit's thread probe and training.
    check_image_size(height, width, label)
    spec, train = resolve_run(args, PAPER_DEFAULTS)
    validate_run(spec, train)
    config = method_config(spec.method, **spec.overrides)
    decoder_config(config, f"method '{spec.method}'")
    args = _with_default_size(args, config, spec.method, image, label)
    spec, train = resolve_run(args, PAPER_DEFAULTS)
    target_bytes = None
    if args.target_bpp is not None:
        target_bytes = int(args.target_bpp * height * width / 8)
        least = smallest_file_bytes(config, spec.method, channels, height, width, spec.depth, spec.width)
        if target_bytes < least:
            raise InputError(f"--target-bpp {args.target_bpp:g} allows {target_bytes} bytes; a {spec.method} "
                             f"{spec.depth}x{spec.width} file's header alone takes {least} "
                             f"({least * 8 / (height * width):.4g} bpp)")
    with tempfile.TemporaryDirectory(prefix="bn-inr-encode-") as scratch:
        plan_args = copy.copy(args)
        plan_args.methods = plan_args.sizes = None
        plan_args.out = args.run_dir or Path(scratch)
        (planned,) = plan_runs(plan_args, PAPER_DEFAULTS, [args.image.stem])
        task = ImageTask(image, args.batch_size, args.image.stem)
        metrics, net = fit(task, planned.spec, planned.train, planned.out_dir, resume=args.resume, threads=planned.threads)
        folded = fold_normalization(net)
        bits = args.bits
        if args.qat_steps:
            # Fine-tuning needs the grid it will be coded on: the bit depth chosen before it.
            bits = bits or encode_network(folded.cpu(), image, target_bytes=target_bytes).coded.bits
            fine_tune_quantized(folded.to(next(net.parameters()).device), task, bits, args.qat_steps, args.seed)
        # A rate target is met again after fine-tuning, which may have widened a tensor's range.
        encoded = encode_network(folded.cpu(), image, bits=None if target_bytes else bits, target_bytes=target_bytes)
    _write_atomically(args.out, encoded.data)
    print(f"{args.out}: {len(encoded.data)} bytes ({encoded.header_bytes} header), {encoded.bits_per_pixel:.4f} bpp, "
          f"{encoded.coded.bits} bits, PSNR {encoded.psnr:.2f} dB (unquantized {encoded.psnr_unquantized:.2f} dB, "
          f"eval-mode fit {metrics['psnr']:.2f} dB)")
    print(_jpeg_line(image, len(encoded.data), encoded.psnr))
    return 0
