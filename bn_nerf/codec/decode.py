"""`bn-inr decode FILE.bnr OUT.png`: read a coded image, rebuild its network, render the pixels.

Imports no training code: the network comes from `bn_nerf.networks` (the one module that builds
networks), the pixel grid from `bn_nerf.networks.coordinates`.

Determinism: the render runs in float32 on one thread, in fixed chunks of pixels, so a file gives
the same PNG whatever thread count the process has. Measured (2-core AMD EPYC): one float32 pass at
1 and at 2 threads gave different PNGs for a bn+pe net (PE's sin/cos take vectorized or scalar
paths depending on how the threads split the tensor); SIREN's happened to agree. One thread costs
nothing here: in chunks of 8,192 pixels a 768x512 render takes 0.09 s (10x28) and 0.28 s (13x49),
against 0.57 s and 1.47 s in one pass, because a chunk's activations stay in cache, and 2 threads
on the whole grid were no faster. tests/test_codec.py decodes at 1 and 2 threads in fresh processes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import nn

from bn_nerf.codec.entropy import decode_tensors
from bn_nerf.codec.format import CodedImage, unpack
from bn_nerf.codec.quantize import dequantize
from bn_nerf.io.errors import InputError
from bn_nerf.io.images import require_file, require_output_folder
from bn_nerf.networks import build_from_config
from bn_nerf.networks.coordinates import pixel_coordinates

# Coordinates are 2D pixel positions.
IN_DIM = 2
RENDER_CHUNK_PIXELS = 8192


def decoder_network(coded: CodedImage, label: str) -> nn.Module:
    """The plain network the header describes, its parameters not yet set (in eval mode)."""
    try:
        net = build_from_config(coded.network, IN_DIM, coded.channels, coded.depth, coded.hidden_width)
    except ValueError as error:
        raise InputError(f"{label}: the header describes no network this decoder builds ({error})") from None
    parameters = list(net.parameters())
    if len(parameters) != len(coded.steps):
        raise InputError(f"{label}: the header codes {len(coded.steps)} tensors; its network has {len(parameters)}")
    return net.eval()


@torch.no_grad()
def set_parameters(net: nn.Module, tensors: list[np.ndarray], steps) -> None:
    """Load each parameter (in `net.parameters()` order) from its symbols and step."""
    for parameter, symbols, step in zip(net.parameters(), tensors, steps, strict=True):
        parameter.copy_(dequantize(symbols, step, parameter.shape))


def network_of(coded: CodedImage, label: str) -> nn.Module:
    """The coded image's network with its decoded weights."""
    net = decoder_network(coded, label)
    counts = [parameter.numel() for parameter in net.parameters()]
    set_parameters(net, decode_tensors(coded.payload, list(coded.models), counts, coded.bits), coded.steps)
    return net


@torch.no_grad()
def render(net: nn.Module, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8 pixels of `net` on the image's pixel grid: clipped to [0, 1], rounded.
    One thread, fixed chunks: see the module's note on determinism."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        colours = torch.cat([net(chunk) for chunk in pixel_coordinates(height, width).split(RENDER_CHUNK_PIXELS)])
    finally:
        torch.set_num_threads(previous_threads)
    return torch.round(colours.clamp(0.0, 1.0) * 255.0).to(torch.uint8).reshape(height, width, -1).numpy()


def read_coded_image(path: Path) -> CodedImage:
    return unpack(require_file(path).read_bytes(), str(path))


def decode_file(path: Path) -> np.ndarray:
    """A `.bnr` file's image as (H, W, C) uint8 pixels."""
    coded = read_coded_image(path)
    return render(network_of(coded, str(path)), coded.height, coded.width)


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write through a temporary file and rename, so that no half-written PNG is ever at `path`."""
    temporary = path.with_name(path.name + ".partial")
    iio.imwrite(temporary, pixels[..., 0] if pixels.shape[-1] == 1 else pixels, extension=".png")
    os.replace(temporary, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a coded image written by `bn-inr encode` (.bnr)")
    parser.add_argument("out", type=Path, help="the PNG to write")


def run(args: argparse.Namespace) -> int:
    require_output_folder(args.out)
    pixels = decode_file(args.file)
    write_png(args.out, pixels)
    print(f"{args.file} -> {args.out} ({pixels.shape[1]}x{pixels.shape[0]}, {pixels.shape[2]} channel(s))")
    return 0
