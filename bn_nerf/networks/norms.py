"""Normalization kinds for coordinate networks, and the care BatchNorm needs before deployment.

A coordinate network's "batch" is a set of coordinates of one signal, so batch statistics are
statistics over the signal's domain. That is what the paper's NTK argument is about (Eq. 5-12).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

NormKind = Literal["none", "batch", "layer", "group", "cross"]
NORM_KINDS: tuple[str, ...] = ("none", "batch", "layer", "group", "cross")


class CrossNorm(nn.Module):
    """The authors' "cross norm" (CN): each activation is centred by the mean over its "cross" --
    its feature column across the batch together with its sample row across the features -- and
    scaled by the batch variance plus the feature variance. It keeps no running statistics, so
    evaluation normalizes with the statistics of whatever batch it is given, as in training.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, features = x.shape
        cross_sum = x.sum(0, keepdim=True) + x.sum(1, keepdim=True) - x
        mean = cross_sum / (batch + features - 1)
        variance = x.var(0, keepdim=True) + x.var(1, keepdim=True)
        return (x - mean) / torch.sqrt(variance + self.eps) * self.weight + self.bias


def make_norm(kind: str, width: int, groups: int = 4) -> nn.Module:
    """One normalization layer over `width` features; inputs are (samples, width)."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "group":
        if width % groups:
            raise ValueError(f"group norm needs the width ({width}) to be a multiple of norm_groups ({groups})")
        return nn.GroupNorm(groups, width)
    if kind == "cross":
        return CrossNorm(width)
    raise ValueError(f"unknown normalization '{kind}'; choose from {', '.join(NORM_KINDS)}")


def batchnorm_affine(norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of a BatchNorm with its running statistics: eval mode computes scale * x + shift.
    Differentiable in the BatchNorm's weight and bias."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, run_forward: Callable[[], object]) -> int:
    """Replace every BatchNorm's running statistics by the exact statistics of the data that
    `run_forward` feeds through `model`, computed with the model's current weights.

    With the paper's learning rate of 1e-2 the weights move faster than BN's exponential running
    averages follow, so the deployed (eval-mode) network can lose several dB to the train-mode one.
    Layers are calibrated one at a time in the order data reaches them, each pass running the
    already-calibrated layers in eval mode: the result equals the batch statistics of one pass over
    all of the data even when `run_forward` feeds it in chunks. Variances are the biased ones train
    mode normalizes with, so on the full batch eval mode reproduces train mode exactly.

    `run_forward` may call the model any number of times (chunks, coarse-then-fine renders, ...).
    Returns the number of BatchNorm layers re-estimated.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    model.eval()
    order: list[_BatchNorm] = []
    handles = [
        layer.register_forward_pre_hook(lambda module, _inputs: order.append(module) if module not in order else None)
        for layer in layers
    ]
    try:
        run_forward()
    finally:
        for handle in handles:
            handle.remove()
    for layer in order:
        totals: dict[str, torch.Tensor | int] = {"sum": 0, "squares": 0, "count": 0}

        def accumulate(_module, inputs, totals=totals):
            # Channels are dim 1 for every BatchNorm kind; all other dims are samples.
            values = inputs[0].detach().movedim(1, -1).reshape(-1, inputs[0].shape[1]).double()
            totals["sum"] = totals["sum"] + values.sum(0)
            totals["squares"] = totals["squares"] + values.square().sum(0)
            totals["count"] = totals["count"] + values.shape[0]

        handle = layer.register_forward_pre_hook(accumulate)
        try:
            run_forward()
        finally:
            handle.remove()
        mean = totals["sum"] / totals["count"]
        variance = (totals["squares"] / totals["count"] - mean.square()).clamp_min(0)
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(variance.to(layer.running_var.dtype))
    model.train(was_training)
    return len(order)


def convert_to_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm so that, across several devices, statistics span the whole batch."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
