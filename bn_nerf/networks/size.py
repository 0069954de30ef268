"""How many numbers a decoder must store for a network (the numerator of bits per pixel)."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def stored_value_count(net: nn.Module) -> int:
    """Real numbers a decoder needs: every parameter (a complex one counts twice, as WIRE stores
    real and imaginary parts) plus each BatchNorm's running mean and variance, which eval mode
    uses. A folded network has no BatchNorm left, so this counts what it would store."""
    count = sum(p.numel() * (2 if p.is_complex() else 1) for p in net.parameters())
    for module in net.modules():
        if isinstance(module, _BatchNorm) and module.running_mean is not None:
            count += module.running_mean.numel() + module.running_var.numel()
    return count
