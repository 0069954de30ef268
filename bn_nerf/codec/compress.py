"""A fitted network -> a coded image: quantize the BN-folded network's weights, entropy-code them,
and pick the bit depth. The decode path (`decode.network_of`, `decode.render`) is the one that
judges every candidate, so what the encoder measures is what a decoder will show, to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bn_nerf.codec.decode import IN_DIM, decoder_network, network_of, render
from bn_nerf.codec.entropy import LAPLACE, TensorModel, decode_tensors, encode_tensors, information_bits, model_information_bits
from bn_nerf.codec.format import MAX_SIDE, CodedImage, header_size, pack
from bn_nerf.codec.quantize import BIT_DEPTHS, equalize_channel_ranges, quantization_step, quantize
from bn_nerf.io.errors import InputError
from bn_nerf.metrics import psnr_from_mse
from bn_nerf.networks import NetworkConfig, build_from_config

# `--bits auto`: the fewest bits whose decoded image is at most this many dB below the unquantized
# folded network's. Each bit halves the step, so the weights' quantization noise falls about 4x per
# bit: past this point another bit buys under a tenth of a dB and still costs about a bit per weight,
# while one bit fewer than needed can cost decibels (tests/test_codec.py: 4 bits cost > 0.3 dB).
AUTO_BITS_PSNR_LOSS = 0.1
# Where `--bits auto` starts looking: fewer bits leave almost no network standing.
AUTO_BITS_START = 4


def codable(net: nn.Module) -> bool:
    """Whether the codec stores this network: see `decoder_config`."""
    config = getattr(net, "config", None)
    return isinstance(config, NetworkConfig) and _codable_config(config)


def _codable_config(config: NetworkConfig) -> bool:
    return config.norm in ("none", "batch") and config.activation != "gabor" and config.architecture == "mlp"


def decoder_config(config: NetworkConfig, method: str = "the network") -> NetworkConfig:
    """The configuration of the plain network a decoder runs for a network of `config`: BatchNorm is
    folded away, so the decoder's network has no normalization. Networks with normalization left
    after folding (layer, group, cross norms), complex-valued ones (WIRE) and multiplicative filter
    networks are not coded."""
    if not _codable_config(config):
        raise InputError(f"{method} cannot be coded: the codec stores real-valued MLPs with no "
                         f"normalization left after folding BatchNorm (relu, pe, siren, bn, bn+pe and their "
                         f"--norm-placement/--pe-octaves variants)")
    return config.replace(norm="none")


def check_image_size(height: int, width: int, label: str) -> None:
    if max(height, width) > MAX_SIDE:
        raise InputError(f"{label}: image is {width}x{height}; the format holds sides up to {MAX_SIDE} pixels")


def coded_image(folded: nn.Module, channels: int, height: int, width: int, bits: int) -> CodedImage:
    """`folded` (a BN-folded CoordinateMLP in eval mode), its channel ranges equalized, quantized at
    `bits` and entropy-coded."""
    check_image_size(height, width, "coded image")
    config = decoder_config(folded.config)
    plain = build_from_config(config, IN_DIM, channels, folded.depth, folded.width)
    # Strict: the folded network must be exactly the plain network the decoder will build.
    plain.load_state_dict(folded.state_dict())
    equalize_channel_ranges(plain)
    parameters = [parameter.detach().cpu() for parameter in plain.parameters()]
    steps = tuple(quantization_step(parameter, bits) for parameter in parameters)
    symbols = [quantize(parameter, step, bits) for parameter, step in zip(parameters, steps)]
    models, payload = encode_tensors(symbols, bits)
    return CodedImage(height, width, channels, folded.depth, folded.width, bits, config, steps, tuple(models), payload)


def smallest_file_bytes(config: NetworkConfig, method: str, channels: int, height: int, width: int,
                        depth: int, hidden_width: int) -> int:
    """The header and checksum of a file for this network: the least any file of it can take,
    known before training."""
    plain_config = decoder_config(config, method)
    tensor_count = len(list(build_from_config(plain_config, IN_DIM, channels, depth, hidden_width).parameters()))
    # Any values: every tensor's entry in the header has the same size.
    empty = CodedImage(height, width, channels, depth, hidden_width, bits=8, network=plain_config,
                       steps=(1.0,) * tensor_count, models=(TensorModel(LAPLACE, 0.0, 1.0),) * tensor_count, payload=b"")
    return header_size(empty)


def psnr_uint8(pixels: np.ndarray, target: np.ndarray) -> float:
    """PSNR of 8-bit pixels against a float target, both in [0, 1]."""
    return psnr_from_mse(float(np.mean((pixels.astype(np.float64) / 255.0 - target.astype(np.float64)) ** 2)))


@dataclass(frozen=True)
class EncodedImage:
    """A coded image with what the encoder measured on its decoded pixels."""

    data: bytes
    coded: CodedImage
    pixels: np.ndarray
    psnr: float
    # The unquantized folded network's PSNR, for the quantization's cost.
    psnr_unquantized: float

    @property
    def bits_per_pixel(self) -> float:
        """The real rate: file bytes x 8 / pixels, header and checksum included."""
        return len(self.data) * 8 / self.coded.pixel_count

    @property
    def header_bytes(self) -> int:
        return len(self.data) - len(self.coded.payload)

    def entropy_estimates(self) -> dict[str, float]:
        return entropy_estimates(self.coded, self.header_bytes)


def entropy_estimates(coded: CodedImage, header_bytes: int) -> dict[str, float]:
    """A coded image's size as an ideal coder would write it, header included: under the file's own
    entropy models (`entropy_estimate_bytes`, what the ANS coder is measured against) and under each
    tensor's empirical symbol frequencies (`empirical_entropy_bytes`, what the models' mismatch costs)."""
    counts = [parameter.numel() for parameter in decoder_network(coded, "coded image").parameters()]
    models, bits = list(coded.models), coded.bits
    symbols = decode_tensors(coded.payload, models, counts, bits)
    return {"entropy_estimate_bytes": header_bytes + model_information_bits(symbols, models, bits) / 8,
            "empirical_entropy_bytes": header_bytes + information_bits(symbols) / 8}


def _encoded(folded: nn.Module, target: np.ndarray, bits: int, psnr_unquantized: float) -> EncodedImage:
    height, width, channels = target.shape
    coded = coded_image(folded, channels, height, width, bits)
    pixels = render(network_of(coded, "encoded image"), height, width)
    return EncodedImage(pack(coded), coded, pixels, psnr_uint8(pixels, target), psnr_unquantized)


@torch.no_grad()
def encode_network(folded: nn.Module, target: np.ndarray, bits: int | None = None,
                   target_bytes: int | None = None) -> EncodedImage:
    """Code `folded` (BN folded, eval mode, on the CPU) for the (H, W, C) float image `target`.

    `bits` fixes the bit depth; `target_bytes` takes the most bits whose file fits; neither takes
    the fewest bits within AUTO_BITS_PSNR_LOSS dB of the unquantized network.
    """
    height, width, _ = target.shape
    psnr_unquantized = psnr_uint8(render(folded, height, width), target)
    if bits is not None:
        return _encoded(folded, target, bits, psnr_unquantized)
    if target_bytes is not None:
        for candidate in reversed(BIT_DEPTHS):
            encoded = _encoded(folded, target, candidate, psnr_unquantized)
            if len(encoded.data) <= target_bytes:
                return encoded
        raise InputError(f"the network does not fit in {target_bytes} bytes even at {BIT_DEPTHS[0]} bits; "
                         f"use a smaller --depth/--width")
    for candidate in range(AUTO_BITS_START, BIT_DEPTHS[-1] + 1):
        encoded = _encoded(folded, target, candidate, psnr_unquantized)
        if encoded.psnr >= psnr_unquantized - AUTO_BITS_PSNR_LOSS:
            return encoded
    return encoded
