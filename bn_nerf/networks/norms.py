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


class _RunningMoments:
    """Count, mean and sum of squared deviations of a layer's input channels over several chunks,
    merged in float64 (Chan et al.'s pairwise update) from each chunk's float32 moments, so that no
    float64 copy of an activation is ever made and large sums lose nothing to cancellation."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | float = 0.0
        self.squared_deviations: torch.Tensor | float = 0.0

    def add(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge a (samples, channels) chunk; returns the chunk's own mean and biased variance."""
        variance, mean = torch.var_mean(values, dim=0, correction=0)
        count = values.shape[0]
        total = self.count + count
        delta = mean.double() - self.mean
        self.mean = self.mean + delta * (count / total)
        self.squared_deviations = (self.squared_deviations + variance.double() * count
                                   + delta.square() * (self.count * count / total))
        self.count = total
        return mean, variance

    def store_in(self, layer: _BatchNorm) -> None:
        layer.running_mean.copy_(torch.as_tensor(self.mean).to(layer.running_mean.dtype))
        layer.running_var.copy_((torch.as_tensor(self.squared_deviations) / self.count).to(layer.running_var.dtype))


def _channels_last(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    # Channels are dim 1 for every BatchNorm kind; all other dims are samples.
    return inputs[0].detach().movedim(1, -1).reshape(-1, inputs[0].shape[1])


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, run_forward: Callable[[], object]) -> int:
    """Replace every BatchNorm's running statistics by the exact statistics of the data that
    `run_forward` feeds through `model`, computed with the model's current weights.

    With the paper's learning rate of 1e-2 the weights move faster than BN's exponential running
    averages follow, so the deployed (eval-mode) network can lose several dB to the train-mode one.
    The result is what one train-mode pass over all of the data, as one batch, would normalize with:
    each layer's statistics are those of its input when every earlier layer normalizes with its own.
    Variances are the biased ones train mode normalizes with, so eval mode then reproduces that
    pass exactly.

    One pass suffices when `run_forward` reaches each BatchNorm layer once (all data in one call):
    each layer normalizes with the statistics of the input it receives, which are recorded. When it
    feeds the data in chunks (or calls the model several times), a layer's input depends on the
    full-data statistics of the layers before it, so the layers are then calibrated one at a time in
    the order data reaches them, each pass running the already-calibrated layers in eval mode.

    Returns the number of BatchNorm layers re-estimated.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    model.eval()
    order: list[_BatchNorm] = []
    calls: dict[_BatchNorm, int] = {}
    moments: dict[_BatchNorm, _RunningMoments] = {}

    def normalize_with_own_statistics(layer, inputs):
        if inputs[0].shape[0] == 0:
            return  # an empty chunk has no statistics to record
        if layer not in calls:
            order.append(layer)
            calls[layer], moments[layer] = 0, _RunningMoments()
        calls[layer] += 1
        mean, variance = moments[layer].add(_channels_last(inputs))
        # Eval mode normalizes with the running statistics: make them this input's own.
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(variance)

    def record_statistics(layer, inputs):
        if inputs[0].shape[0]:
            moments[layer].add(_channels_last(inputs))

    try:
        _run_with_hook(layers, normalize_with_own_statistics, run_forward)
        if any(count > 1 for count in calls.values()):
            for layer in order:
                moments[layer] = _RunningMoments()
                _run_with_hook([layer], record_statistics, run_forward)
                moments[layer].store_in(layer)
        else:
            for layer in order:
                moments[layer].store_in(layer)
    finally:
        model.train(was_training)
    return len(order)


def _run_with_hook(layers: list[_BatchNorm], hook: Callable, run_forward: Callable[[], object]) -> None:
    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        run_forward()
    finally:
        for handle in handles:
            handle.remove()


def convert_to_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm so that, across several devices, statistics span the whole batch."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
