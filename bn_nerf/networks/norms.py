"""Normalization kinds for coordinate networks, the care BatchNorm needs before deployment, and
BatchNorm whose batch spans several processes.

A coordinate network's "batch" is a set of coordinates of one signal, so batch statistics are
statistics over the signal's domain. That is what the paper's NTK argument is about (Eq. 5-12).
When a batch is split across the processes of a torch.distributed group (NeRF training on several
GPUs or CPU processes), each process holds a share of those coordinates, and BatchNorm normalized
with its own share's statistics would be a different method at every process count. So in a group
of several processes every BatchNorm is built (or converted, `synchronize_batchnorm`) as one of
two kinds whose statistics span the group's whole batch:

  - torch's `nn.SyncBatchNorm` on an NCCL group (CUDA), where it runs;
  - `CrossProcessBatchNorm1d` on any other backend (gloo on CPUs, where torch's raises): each
    process all-reduces its per-channel count, sum and sum of squares (one float64 message per
    layer), and in the backward the two per-channel reductions of the gradient, so inputs,
    running statistics and gradients are those of one process holding the union of the shares.

`batch_statistics` is the one place statistics are taken: the fused layers (`fused.py`) call it and
all-reduce their backward's two reductions with `sum_across_processes`, and the re-estimation before
checkpoints merges every process's moments, so all of them respect the group. Eval mode uses the
running statistics, the same on every process. With one process nothing of this runs: BatchNorm is
the plain `nn.BatchNorm1d`.
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple, Optional

import torch
import torch.distributed as dist
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
        return (synced_batchnorm_kind() or nn.BatchNorm1d)(width)
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


class CrossProcessBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (samples, channels) whose batch is every process's samples in
    `process_group` (None: the default group), on any backend; see the module docstring."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Optional[dist.ProcessGroup] = None,
                 **factory_kwargs) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, **factory_kwargs)
        self.process_group = process_group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not uses_batch_statistics(self):
            return super().forward(x)  # running statistics: the same on every process
        if x.dim() != 2:
            raise ValueError(f"CrossProcessBatchNorm1d takes (samples, channels), got input size {tuple(x.shape)}")
        return _CrossProcessBatchNorm.apply(x, self.weight, self.bias, self)


def synced_batchnorm_kind() -> Optional[type[_BatchNorm]]:
    """The BatchNorm kind whose statistics span the default group, or None with one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return nn.SyncBatchNorm if dist.get_backend() == dist.Backend.NCCL else CrossProcessBatchNorm1d


def synchronize_batchnorm(model: nn.Module) -> nn.Module:
    """Every plain BatchNorm1d of `model` (built before the group started) as the group's synced kind,
    sharing its parameters and statistics; a no-op with one process. Returns the model, or its
    replacement when `model` itself is a BatchNorm1d."""
    kind = synced_batchnorm_kind()
    if kind is None:
        return model
    if type(model) is nn.BatchNorm1d:
        synced = kind(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
        if model.affine:
            synced.weight, synced.bias = model.weight, model.bias
        synced.running_mean, synced.running_var = model.running_mean, model.running_var
        synced.num_batches_tracked = model.num_batches_tracked
        synced.train(model.training)
        return synced
    for name, child in model.named_children():
        model.add_module(name, synchronize_batchnorm(child))
    return model


def process_group_of(norm: nn.Module) -> Optional[dist.ProcessGroup]:
    """The group of several processes whose batch `norm` normalizes over, or None when its
    statistics are this process's own (a plain BatchNorm, or a synced one outside a group)."""
    if not isinstance(norm, (CrossProcessBatchNorm1d, nn.SyncBatchNorm)):
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    group = norm.process_group or dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


def sum_across_processes(group: dist.ProcessGroup, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The sums over the group's processes of same-dtype tensors, in one all-reduce."""
    packed = torch.cat([value.reshape(-1) for value in values])
    dist.all_reduce(packed, group=group)
    return tuple(part.view_as(value) for part, value in zip(packed.split([v.numel() for v in values]), values))


def uses_batch_statistics(norm: _BatchNorm) -> bool:
    return norm.training or norm.running_mean is None


class BatchMoments(NamedTuple):
    """Per-channel mean and biased variance of a batch, its row count, and the group of processes it
    spans (None: this process's rows alone)."""

    mean: torch.Tensor
    variance: torch.Tensor
    count: int
    group: Optional[dist.ProcessGroup]


def batch_statistics(norm: _BatchNorm, x: torch.Tensor) -> BatchMoments:
    """Mean and biased variance of x's columns over the batch `norm` normalizes over -- this
    process's rows, or in a group every process's -- updating `norm`'s running statistics exactly
    as its own train-mode forward would."""
    group = process_group_of(norm)
    if group is None:
        count = x.shape[0]
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
        running_mean, running_var, factor = _running_update(norm)
        mean, variance = torch.batch_norm_update_stats(x, running_mean, running_var, factor)
        return BatchMoments(mean, variance, count, None)
    # Each process's float32 moments (computed stably) as float64 sums: the merged variance
    # S2/N - mean^2 then keeps float32's precision through the cancellation. One message of 2C + 1.
    local_count = x.shape[0]
    if local_count:
        variance, mean = torch.var_mean(x, dim=0, correction=0)
        mean, variance = mean.double(), variance.double()
    else:  # a process whose share of the batch has no rows still takes part in the sum
        mean = variance = x.new_zeros(x.shape[1], dtype=torch.float64)
    count_tensor = mean.new_full((1,), float(local_count))
    count_tensor, sums, squares = sum_across_processes(
        group, count_tensor, mean * local_count, (variance + mean.square()) * local_count)
    count = int(count_tensor.item())
    if count < 2:
        raise ValueError(f"Expected more than 1 value per channel across processes when training, got {count}")
    mean = sums / count
    variance = (squares / count - mean.square()).clamp(min=0)
    running_mean, running_var, factor = _running_update(norm)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.to(running_mean.dtype), factor)
            running_var.lerp_((variance * (count / (count - 1))).to(running_var.dtype), factor)
    return BatchMoments(mean.to(x.dtype), variance.to(x.dtype), count, group)


def _running_update(norm: _BatchNorm) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], float]:
    """The running statistics a train-mode step updates (None when it updates none) and the weight
    of the batch's statistics in them, counting the step as BatchNorm does."""
    if not (norm.training and norm.track_running_stats):
        return None, None, 0.0
    factor = norm.momentum or 0.0
    if norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:  # a cumulative average
            factor = 1.0 / float(norm.num_batches_tracked)
    return norm.running_mean, norm.running_var, factor


class _CrossProcessBatchNorm(torch.autograd.Function):
    """BatchNorm with the group's batch statistics where it is not fused with a Linear (a trunk's last
    BN, which feeds the heads)."""

    @staticmethod
    def forward(ctx, x, weight, bias, norm):
        moments = batch_statistics(norm, x)
        rstd = torch.rsqrt(moments.variance + norm.eps)
        normalized = (x - moments.mean) * rstd
        ctx.count, ctx.group = moments.count, moments.group
        ctx.save_for_backward(normalized, rstd, weight)
        out = normalized if weight is None else normalized * weight
        return out if bias is None else out + bias

    @staticmethod
    def backward(ctx, grad):
        normalized, rstd, weight = ctx.saved_tensors
        # This process's reductions give its weight and bias gradients (DDP averages those); the input
        # gradient needs the whole batch's, as one process holding every share would compute.
        grad_sum = grad.sum(0)
        grad_dot = (grad * normalized).sum(0)
        grad_x = None
        if ctx.needs_input_grad[0]:
            total_sum, total_dot = grad_sum, grad_dot
            if ctx.group is not None:
                total_sum, total_dot = sum_across_processes(ctx.group, grad_sum, grad_dot)
            scale = rstd if weight is None else rstd * weight
            grad_x = scale * (grad - total_sum / ctx.count - normalized * (total_dot / ctx.count))
        return (grad_x, grad_dot if ctx.needs_input_grad[1] else None, grad_sum if ctx.needs_input_grad[2] else None,
                None)


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
        count = values.shape[0]
        if count == 0:  # a process's empty share of a chunk the group calibrates on
            nothing = values.new_full(values.shape[1:], float("nan"))
            return nothing, nothing
        variance, mean = torch.var_mean(values, dim=0, correction=0)
        total = self.count + count
        delta = mean.double() - self.mean
        self.mean = self.mean + delta * (count / total)
        self.squared_deviations = (self.squared_deviations + variance.double() * count
                                   + delta.square() * (self.count * count / total))
        self.count = total
        return mean, variance

    def merged_across(self, group: Optional[dist.ProcessGroup], like: torch.Tensor) -> "_RunningMoments":
        """The moments of every process's data in `group` together (these when group is None); `like`
        (a layer's running mean) gives the channels and the device the group communicates on."""
        if group is None:
            return self
        mean = torch.as_tensor(self.mean, dtype=torch.float64, device=like.device).expand(like.shape)
        squared_deviations = torch.as_tensor(self.squared_deviations, dtype=torch.float64,
                                             device=like.device).expand(like.shape)
        count = mean.new_full((1,), float(self.count))
        count, sums, squares = sum_across_processes(group, count, mean * self.count,
                                                    squared_deviations + mean.square() * self.count)
        merged = _RunningMoments()
        merged.count = int(count.item())
        merged.mean = sums / merged.count
        merged.squared_deviations = squares - merged.mean.square() * merged.count
        return merged

    def mean_and_variance(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(self.mean), torch.as_tensor(self.squared_deviations) / self.count

    def store_in(self, layer: _BatchNorm) -> None:
        mean, variance = self.mean_and_variance()
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(variance.to(layer.running_var.dtype))


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

    A BatchNorm synced across a group of processes (`process_group_of`) is calibrated on every
    process's data together: each process calls this with its share of the data, and every one ends
    with the statistics of the union (each process must reach the same layers, in the same order, with
    the same number of calls; a share may be empty).

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
    groups = {layer: process_group_of(layer) for layer in layers}

    def normalize_with_own_statistics(layer, inputs):
        if inputs[0].shape[0] == 0 and groups[layer] is None:
            return  # an empty chunk has no statistics to record
        if layer not in calls:
            order.append(layer)
            calls[layer], moments[layer] = 0, _RunningMoments()
        calls[layer] += 1
        chunk = _channels_last(inputs)
        mean, variance = moments[layer].add(chunk)
        if groups[layer] is not None:  # the chunk's statistics are those of every process's share
            chunk_moments = _RunningMoments()
            chunk_moments.add(chunk)
            mean, variance = chunk_moments.merged_across(groups[layer], layer.running_mean).mean_and_variance()
        # Eval mode normalizes with the running statistics: make them this input's own.
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(variance)

    def record_statistics(layer, inputs):
        if inputs[0].shape[0]:
            moments[layer].add(_channels_last(inputs))

    def store(layer):
        moments[layer].merged_across(groups[layer], layer.running_mean).store_in(layer)

    try:
        _run_with_hook(layers, normalize_with_own_statistics, run_forward)
        if _most_calls(calls, groups, layers[0].running_mean.device) > 1:
            for layer in order:
                moments[layer] = _RunningMoments()
                _run_with_hook([layer], record_statistics, run_forward)
                store(layer)
        else:
            for layer in order:
                store(layer)
    finally:
        model.train(was_training)
    return len(order)


def _most_calls(calls: dict[_BatchNorm, int], groups: dict[_BatchNorm, Optional[dist.ProcessGroup]],
                device: torch.device) -> int:
    """The most calls any layer received -- on any process of the layers' groups, which must all
    choose the same calibration path."""
    most = max(calls.values(), default=0)
    for group in {group for group in groups.values() if group is not None}:
        counted = torch.tensor([most], device=device)
        dist.all_reduce(counted, op=dist.ReduceOp.MAX, group=group)
        most = int(counted.item())
    return most


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
