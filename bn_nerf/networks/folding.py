"""Fold eval-mode BatchNorm into the neighbouring Linear layer.

In eval mode BatchNorm is the affine map y = s * x + t with s = gamma / sqrt(var + eps) and
t = beta - s * mean. Placed before the activation it folds into the Linear that feeds it; placed
after the activation it folds into the Linear it feeds. A decoder then stores and runs a plain MLP.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bn_nerf.networks.mlp import CoordinateMLP
from bn_nerf.networks.norms import batchnorm_affine


@torch.no_grad()
def _fold_mlp(mlp: CoordinateMLP) -> None:
    consumers: list[nn.Linear | None] = list(mlp.linears[1:]) + [mlp.head]
    for index, norm in enumerate(mlp.norms):
        if not isinstance(norm, _BatchNorm):
            continue
        scale, shift = batchnorm_affine(norm)
        if mlp.config.norm_placement == "before":
            producer = mlp.linears[index]
            producer.bias.copy_(producer.bias * scale + shift)
            producer.weight.mul_(scale[:, None])
        else:
            consumer = consumers[index]
            if consumer is None:
                continue  # a trunk's last BN feeds its caller's heads: nothing of ours to fold into
            # The consumer's first `width` input columns see the normalized features; any columns
            # after them carry the skip connection's encoded input and stay as they are.
            hidden_columns = consumer.weight[:, : mlp.width]
            consumer.bias.add_(hidden_columns @ shift.to(hidden_columns.dtype))
            hidden_columns.mul_(scale[None, :].to(hidden_columns.dtype))
        mlp.norms[index] = nn.Identity()


def fold_normalization(net: nn.Module) -> nn.Module:
    """A copy of `net` in eval mode with every BatchNorm of its coordinate MLPs folded away.

    Outputs equal the eval-mode network's (BN with running statistics). Layer, group and cross
    norms depend on each input batch and cannot be folded; they are left in place.
    """
    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        if isinstance(module, CoordinateMLP):
            _fold_mlp(module)
    return folded
