"""Uniform per-tensor quantization of a decoder network's weights.

Each tensor gets its own step, sized to its largest magnitude so that every value lands on one of
2^(bits-1) - 1 levels either side of an exact zero: a folded network's tensors differ in scale by
orders of magnitude (BN's scale is folded into the weights), so one step for the whole network
would spend the bits of the small tensors on the large ones. The step is stored as float16 in the
file and rounded to float16 *before* quantizing, so encoder and decoder multiply by the same number.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BIT_DEPTHS = range(2, 17)


def symbol_limit(bits: int) -> int:
    """The largest symbol magnitude at `bits` bits: symbols lie in [-limit, limit]."""
    return 2 ** (bits - 1) - 1


def quantization_step(values: torch.Tensor, bits: int) -> float:
    """The tensor's step at `bits` bits, as the float16 the file stores. A tensor of zeros gets
    step 1 (any step codes it exactly)."""
    largest = float(values.detach().abs().max())
    step = largest / symbol_limit(bits) if largest > 0 else 1.0
    # float16's smallest normal number; a step below it would lose precision in the file.
    return float(np.float16(max(step, 2.0 ** -14)))


def quantize(values: torch.Tensor, step: float, bits: int) -> np.ndarray:
    """int32 symbols of `values` at `step`, clipped to the bit depth's range (float16 rounding of the
    step may put the largest value a hair past the last level)."""
    limit = symbol_limit(bits)
    symbols = torch.round(values.detach().double() / step).clamp(-limit, limit)
    return symbols.to(torch.int32).cpu().numpy().reshape(-1)


def dequantize(symbols: np.ndarray, step: float, shape: torch.Size) -> torch.Tensor:
    """float32 values of the symbols, shaped like the tensor they came from."""
    return (torch.from_numpy(symbols.astype(np.float64)) * step).to(torch.float32).reshape(shape)


def fake_quantized(values: torch.Tensor, bits: int) -> torch.Tensor:
    """`values` on their quantization grid in the forward pass, unchanged gradients in the backward
    (the straight-through estimator), for quantization-aware fine-tuning. The step follows the
    tensor's current range exactly as `quantization_step` will at the end."""
    step = quantization_step(values, bits)
    limit = symbol_limit(bits)
    on_grid = torch.round(values.detach().double() / step).clamp(-limit, limit).mul(step).to(values.dtype)
    return values + (on_grid - values).detach()


# Passes of range equalization: each pass balances every layer pair once; a balanced network is left
# unchanged, so the loop ends early (two or three passes in practice). The cap only bounds a
# network whose pairs keep trading a factor of two.
EQUALIZATION_PASSES = 16


@torch.no_grad()
def equalize_channel_ranges(net: nn.Module) -> None:
    """Balance each hidden channel's weight range between the Linear that produces it and the one
    that consumes it (cross-layer equalization, Nagel et al., ICCV 2019), in place and exactly.

    Why: BatchNorm folded after the activation multiplies each input column of the next Linear by
    gamma / sigma, and one channel of small variance can leave a column hundreds of times larger
    than the rest; a per-tensor step sized to that column then rounds every other column to a few
    levels (a BN 10x28 net needed 16 bits for 0.1 dB). ReLU is positively homogeneous,
    relu(r z) = r relu(z) for r > 0, so moving r from the consumer's column to the producer's row and
    bias leaves the network's function unchanged. r is a power of two, so the move is exact in
    floating point and a balanced network is a fixed point: coding a network this function already
    balanced (quantization-aware fine-tuning works on one) changes none of its weights.
    Networks whose activation is not ReLU (SIREN's sine) are left as they are.
    """
    if getattr(getattr(net, "config", None), "activation", None) != "relu":
        return
    layers = list(net.linears) + ([net.head] if net.head is not None else [])
    for _ in range(EQUALIZATION_PASSES):
        moved = False
        for producer, consumer in zip(layers[:-1], layers[1:]):
            channels = producer.out_features  # a skip connection's inputs follow them in the consumer
            produced = producer.weight.abs().amax(dim=1)
            consumed = consumer.weight[:, :channels].abs().amax(dim=0)
            ratio = torch.where((produced > 0) & (consumed > 0), consumed / produced, torch.ones_like(produced))
            exponent = torch.round(0.5 * torch.log2(ratio))
            if not exponent.any():
                continue
            moved = True
            factor = torch.exp2(exponent)
            producer.weight.mul_(factor[:, None])
            producer.bias.mul_(factor)
            consumer.weight[:, :channels].div_(factor)
        if not moved:
            return
