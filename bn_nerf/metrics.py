"""PSNR, which every task reports and the codec measures its decoded images by: here, beneath both,
so that the codec imports nothing of bn_nerf.tasks."""

from __future__ import annotations

import math


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a signal in [0, 1] from its mean squared error."""
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)
