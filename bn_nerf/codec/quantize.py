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
