"""A coordinate network's layers as single autograd Functions: a Linear, and BatchNorm fused with
the Linear beside it.

Why: a coordinate network's activations are tall and thin (262,144 pixels x 28 features for the
paper's 10 x 28 image net), so every elementwise pass over them costs a fifth to a third of a
matrix product, and `nn.BatchNorm1d` adds four or five of them per layer (statistics, normalize,
and in the backward two reductions and the input gradient) -- it made a BN step 1.3-1.5x a ReLU
step. Fused, BatchNorm costs one read for its statistics and one multiply-add in the backward:

- BN after the activation (the paper): BN(a) = s a + t per feature, and the Linear that consumes it
  computes W (s a + t) + b = (W diag(s)) a + (b + W t): the normalization is folded into that
  Linear's weights and the normalized activations are never formed. In the backward, BN's two
  reductions come with the weight gradient: with M = g^T a (the product the weight gradient needs
  anyway) and the bias gradient sum(g), d s_j = sum_k W_kj M_kj and d t = W^T sum(g), so the input
  gradient is g (W diag(s)) + c1 + c2 a: one matrix product with a bias, then one multiply-add.
- BN before the activation (the authors' code): BN normalizes the Linear's output z, so nothing
  folds forward through the ReLU; the Function computes z, its statistics and s z + t, and the
  backward does BN's two reductions and input gradient in three passes instead of five. The Linear's
  bias has no effect on the normalized output: its gradient is exactly zero.

Both keep `nn.BatchNorm1d`'s meaning: batch statistics (biased variance) in training, running
statistics updated as it updates them (momentum, or a cumulative average when momentum is None;
unbiased variance), `running_mean`/`running_var`/`weight`/`bias` in the same module. With running
statistics (eval mode) BN is a fixed affine map and is folded into the neighbouring Linear on the fly,
so eval-mode inference costs what the folded network costs.

Across processes (`norms.CrossProcessBatchNorm1d`) the statistics come from `norms.batch_statistics`,
which sums every process's moments, and the backward sums its two per-channel reductions (d scale and
d shift after the activation, sum(g) and sum(g z) before it) across the processes before forming the
input gradient with the whole batch's count; the weight, bias, gamma and beta gradients stay this
process's own, for DistributedDataParallel to average. With a plain BatchNorm1d neither sum runs.

`networks/mlp.py` decides where these are used; `fusable` says when they may be: not for modules
with hooks (those must see the BN's input, e.g. `reestimate_batchnorm`), not for torch's SyncBatchNorm
(it keeps its own forward), not under torch.func transforms or torch.compile, not for complex layers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.nn.modules.batchnorm import _BatchNorm

from bn_nerf.networks.matmul import column_sums, matmul_transposed
from bn_nerf.networks.norms import (CrossProcessBatchNorm1d, batch_statistics, batchnorm_affine, sum_across_processes,
                                    uses_batch_statistics)

# The BatchNorm kinds these Functions compute exactly as the module's own forward would.
FUSABLE_BATCHNORMS = (nn.BatchNorm1d, CrossProcessBatchNorm1d)


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _global_hooks() -> bool:
    return bool(module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks
                or module_hooks._global_backward_hooks or module_hooks._global_backward_pre_hooks)


def fusable(x: torch.Tensor, *modules: nn.Module) -> bool:
    """Whether input `x` may go through these Linear/BatchNorm modules as one autograd Function."""
    if x.is_complex() or _global_hooks() or any(_hooked(m) for m in modules):
        return False
    if any(isinstance(m, _BatchNorm) and type(m) not in FUSABLE_BATCHNORMS for m in modules):
        return False  # SyncBatchNorm and other BatchNorm kinds keep their own forward
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    return all(p.dtype == x.dtype for m in modules for p in m.parameters(recurse=False))


class _Linear(torch.autograd.Function):
    """x W^T + b with the products on `matmul_transposed`'s kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return matmul_transposed(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = matmul_transposed(grad, weight.T) if ctx.needs_input_grad[0] else None
        grad_weight = grad.T @ x if ctx.needs_input_grad[1] else None
        grad_bias = column_sums(grad) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, layer: nn.Linear, weight: torch.Tensor | None = None,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """`layer(x)`, or the same product with replacement (folded) `weight` and `bias`."""
    weight = layer.weight if weight is None else weight
    bias = layer.bias if bias is None else bias
    return _Linear.apply(x.contiguous(), weight, bias)


class _NormalizedLinear(torch.autograd.Function):
    """BatchNorm with batch statistics and a Linear, as one Function; see the module docstring.

    placement "after":  out = Linear(cat(BN(x), extra))  (extra: a skip connection's input, or None)
    placement "before": out = BN(Linear(x))
    """

    @staticmethod
    def forward(ctx, x, extra, weight, bias, gamma, beta, norm, placement):
        ctx.placement = placement
        ctx.has_bias = bias is not None
        if placement == "after":
            mean, variance, ctx.count, ctx.group = batch_statistics(norm, x)
            rstd = torch.rsqrt(variance + norm.eps)
            scale = rstd if gamma is None else rstd * gamma
            shift = -scale * mean if beta is None else beta - scale * mean
            width = x.shape[1]
            hidden_weight = weight[:, :width]
            folded = hidden_weight * scale
            folded_bias = hidden_weight @ shift
            if bias is not None:
                folded_bias = folded_bias + bias
            inputs, weights = x, folded
            if extra is not None:
                inputs = torch.cat([x, extra], dim=1)
                weights = torch.cat([folded, weight[:, width:]], dim=1)
            ctx.save_for_backward(inputs, weight, folded, scale, shift, mean, rstd, gamma)
            return matmul_transposed(inputs, weights, folded_bias)
        z = matmul_transposed(x, weight, bias)
        mean, variance, ctx.count, ctx.group = batch_statistics(norm, z)
        rstd = torch.rsqrt(variance + norm.eps)
        scale = rstd if gamma is None else rstd * gamma
        shift = -scale * mean if beta is None else beta - scale * mean
        ctx.save_for_backward(x, weight, z, scale, mean, rstd)
        return torch.addcmul(shift, z, scale)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        if ctx.placement == "after":
            return _NormalizedLinear._backward_after(ctx, grad)
        return _NormalizedLinear._backward_before(ctx, grad)

    @staticmethod
    def _backward_after(ctx, grad):
        inputs, weight, folded, scale, shift, mean, rstd, gamma = ctx.saved_tensors
        count, width = ctx.count, folded.shape[1]
        needs_x, needs_extra, needs_weight, needs_bias, needs_gamma, needs_beta = ctx.needs_input_grad[:6]
        grad_sum = column_sums(grad)
        product = grad.T @ inputs  # the weight gradient's product; BN's reductions come with it
        hidden_weight, hidden_product = weight[:, :width], product[:, :width]
        grad_weight = None
        if needs_weight:
            grad_weight = hidden_product * scale + torch.outer(grad_sum, shift)
            if inputs.shape[1] > width:
                grad_weight = torch.cat([grad_weight, product[:, width:]], dim=1)
        # Through s = gamma rstd and t = beta - s mean, back to gamma, beta, mean and variance.
        grad_scale = (hidden_weight * hidden_product).sum(0)
        grad_shift = hidden_weight.T @ grad_sum
        grad_scale = grad_scale - grad_shift * mean
        grad_gamma = grad_scale * rstd if needs_gamma else None
        grad_beta = grad_shift if needs_beta else None
        grad_x = grad_extra = None
        if needs_x:
            if ctx.group is not None:  # the batch's mean and variance depend on every process's share
                grad_scale, grad_shift = sum_across_processes(ctx.group, grad_scale, grad_shift)
            grad_rstd = grad_scale if gamma is None else grad_scale * gamma
            grad_variance = -0.5 * grad_rstd * rstd.pow(3)
            # d mean / dx = 1/n and d variance / dx = 2 (x - mean) / n give the affine c1 + c2 x.
            coefficient = 2.0 * grad_variance / count
            offset = -grad_shift * scale / count - coefficient * mean
            grad_x = matmul_transposed(grad, folded.T, offset)
            grad_x.addcmul_(inputs[:, :width], coefficient)
        if needs_extra:
            grad_extra = grad @ weight[:, width:]
        return grad_x, grad_extra, grad_weight, grad_sum if needs_bias else None, grad_gamma, grad_beta, None, None

    @staticmethod
    def _backward_before(ctx, grad):
        x, weight, z, scale, mean, rstd = ctx.saved_tensors
        count = ctx.count
        needs_x, _, needs_weight, needs_bias, needs_gamma, needs_beta = ctx.needs_input_grad[:6]
        grad_sum = column_sums(grad)
        grad_normalized = rstd * (column_sums(grad * z) - mean * grad_sum)
        total_normalized, total_sum = grad_normalized, grad_sum
        if ctx.group is not None:  # the batch's mean and variance depend on every process's share
            total_normalized, total_sum = sum_across_processes(ctx.group, grad_normalized, grad_sum)
        coefficient = -scale * rstd * total_normalized / count
        offset = -scale * total_sum / count - coefficient * mean
        grad_z = torch.addcmul(offset, grad, scale)
        grad_z.addcmul_(z, coefficient)
        grad_x = matmul_transposed(grad_z, weight.T) if needs_x else None
        grad_weight = grad_z.T @ x if needs_weight else None
        # The bias shifts z and its batch mean alike: the normalized output does not depend on it.
        grad_bias = torch.zeros_like(mean) if needs_bias else None
        return (grad_x, None, grad_weight, grad_bias, grad_normalized if needs_gamma else None,
                grad_sum if needs_beta else None, None, None)


def batchnorm_then_linear(x: torch.Tensor, extra: torch.Tensor | None, norm: nn.BatchNorm1d,
                          layer: nn.Linear) -> torch.Tensor:
    """layer(cat(norm(x), extra)) -- BN after an activation x, folded into the Linear it feeds."""
    if uses_batch_statistics(norm):
        return _NormalizedLinear.apply(x.contiguous(), None if extra is None else extra.to(x.dtype).contiguous(),
                                       layer.weight, layer.bias, norm.weight, norm.bias, norm, "after")
    scale, shift = batchnorm_affine(norm)
    width = x.shape[1]
    hidden_weight = layer.weight[:, :width]
    weight = hidden_weight * scale
    bias = hidden_weight @ shift
    if layer.bias is not None:
        bias = bias + layer.bias
    if extra is not None:
        x = torch.cat([x, extra.to(x.dtype)], dim=1)
        weight = torch.cat([weight, layer.weight[:, width:]], dim=1)
    return linear(x, layer, weight, bias)


def linear_then_batchnorm(x: torch.Tensor, layer: nn.Linear, norm: nn.BatchNorm1d) -> torch.Tensor:
    """norm(layer(x)) -- BN on a Linear's output, before the activation."""
    if uses_batch_statistics(norm):
        return _NormalizedLinear.apply(x.contiguous(), None, layer.weight, layer.bias, norm.weight, norm.bias,
                                       norm, "before")
    scale, shift = batchnorm_affine(norm)
    bias = shift if layer.bias is None else layer.bias * scale + shift
    return linear(x, layer, layer.weight * scale[:, None], bias)
