"""Figures every task reports."""

from __future__ import annotations

import math


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a signal in [0, 1] from its mean squared error."""
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)
