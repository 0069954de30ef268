"""The empirical neural tangent kernel of a coordinate network, its eigenvalue statistics (the
paper's Eq. 13) and log-log width-scaling fits against the paper's predictions (Eq. 14).

K = J J^T, J the Jacobian of all T·out outputs with respect to every parameter, evaluated on the
whole batch of coordinates in one forward pass. A BatchNorm net in training mode normalizes with the
batch's own statistics, so every output depends on every coordinate: that coupling is in J and is
what the paper's Eq. 6-12 analyse. `frozen_statistics_copy` gives the same function with the
statistics held constant, i.e. the kernel one gets by differentiating sample by sample.

Memory: J has T·out x P entries (12 GB for T = 1024 and a 4 x 1024 net), so it is never formed.
For the coordinate MLP the kernel is accumulated layer by layer from G_k = d f / d z_k (z_k a Linear
layer's output, one T x width slice per output row), using that a Linear's weight Jacobian is
G^T [h, 1]; G is carried down the layers in place, so the peak is one T·out x T x width buffer plus
`block_bytes`-sized working blocks. Other networks (MFN, complex WIRE) fall back to parameter-blocked
Jacobians from torch.func on the full batch, which is exact but re-runs the backward pass per block.

Work, for T = N and a BN net: per hidden layer one T^2 x N by N x N product carries G down (ReLU
and BatchNorm are differentiated in closed form, other norms through autograd), one T·N x T by
T x T product forms J in a factored basis of the inputs' Gram matrix, and a symmetric product J J^T
costs about half of another: ~2.5 T^4 multiply-adds per layer, all in large matrix products.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bn_nerf.networks import reestimate_batchnorm
from bn_nerf.networks.mlp import CoordinateMLP

DEFAULT_BLOCK_BYTES = 64 * 2**20


# ---------------------------------------------------------------------------------------------
# The kernel


def empirical_ntk(net: nn.Module, coords: torch.Tensor, block_bytes: int = DEFAULT_BLOCK_BYTES) -> torch.Tensor:
    """The T·out x T·out kernel (float64) of `net` on the batch `coords` (T x in_dim), in the mode
    the net is in (train mode: BatchNorm couples the batch). Rows are ordered output-major per
    coordinate: row t·out + o is output o at coordinate t. The net's buffers are left as they were.
    """
    with _buffers_preserved(net):
        if _chain_structure(net) is not None:
            return _coordinate_mlp_kernel(net, coords, block_bytes)
        return _parameter_blocked_kernel(net, coords, block_bytes)


def frozen_statistics_copy(net: nn.Module, coords: torch.Tensor) -> nn.Module:
    """A copy of `net` in eval mode whose BatchNorm statistics are those of the batch `coords`:
    the same outputs as train mode on that batch, but each output depends on its own coordinate
    only, which is the kernel a per-sample computation would report."""
    frozen = copy.deepcopy(net)
    with torch.no_grad():
        reestimate_batchnorm(frozen, lambda: frozen(coords))
    return frozen.eval()


@contextlib.contextmanager
def _buffers_preserved(net: nn.Module):
    # A train-mode forward pass moves BatchNorm's running statistics; measuring a kernel must not.
    saved = {name: buffer.detach().clone() for name, buffer in net.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in net.named_buffers():
                buffer.copy_(saved[name])


def _chain_structure(net: nn.Module) -> tuple[list[nn.Linear], list[list[nn.Parameter]]] | None:
    """For a real-valued CoordinateMLP with a head: its Linear layers in order and, for each gap
    between consecutive Linears, the parameters sitting there (the normalization's). None when the
    net is not such a chain, so the caller takes the generic path."""
    if not isinstance(net, CoordinateMLP) or net.head is None:
        return None
    if any(p.is_complex() for p in net.parameters()):
        return None
    linears = [*net.linears, net.head]
    between = [list(norm.parameters()) for norm in net.norms]
    accounted = sum(p.numel() for layer in linears for p in layer.parameters()) + sum(
        p.numel() for group in between for p in group
    )
    if accounted != sum(p.numel() for p in net.parameters()):
        return None
    return linears, between


def _rows_per_chunk(row_bytes: int, block_bytes: int, rows: int) -> int:
    return max(1, min(rows, block_bytes // max(row_bytes, 1)))


def _coordinate_mlp_kernel(net: CoordinateMLP, coords: torch.Tensor, block_bytes: int) -> torch.Tensor:
    linears, between = _chain_structure(net)
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def record(_module, args, output):
        inputs.append(args[0].detach())
        outputs.append(output)

    handles = [layer.register_forward_hook(record) for layer in linears]
    try:
        net(coords)
    finally:
        for handle in handles:
            handle.remove()
    rows = outputs[-1].numel()
    count = coords.shape[0]
    kernel = _SymmetricKernel(rows)

    # G for the head: output row r perturbed alone, i.e. one-hot cotangents on the head's output.
    head_cotangents = torch.eye(rows, dtype=outputs[-1].dtype).reshape(rows, *outputs[-1].shape)
    _add_linear_contribution(kernel, head_cotangents, inputs[-1], block_bytes)
    if len(linears) == 1:
        return kernel.full()

    width = outputs[-2].shape[-1]
    cotangents = torch.empty(rows, count, width, dtype=outputs[-2].dtype)
    chunk = _rows_per_chunk(count * width * cotangents.element_size(), block_bytes, rows)
    # Walk down the chain: G_k from G_(k+1), chunk by chunk; each output row's cotangent is
    # independent, so G_k can overwrite G_(k+1) in place once layer k+1 has been accounted for.
    upper_index = len(linears) - 1
    for lower_index in range(len(linears) - 2, -1, -1):
        gap = _closed_form_gap(net, outputs[lower_index].detach(), net.norms[lower_index])
        gap_rows = []
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk)
            upper = head_cotangents[start:stop] if upper_index == len(linears) - 1 else cotangents[start:stop]
            if gap is not None:
                lower, gap_grads = gap.pull_back(upper @ linears[upper_index].weight.detach())
            else:
                lower, *gap_grads = torch.autograd.grad(
                    outputs[upper_index],
                    [outputs[lower_index], *between[lower_index]],
                    upper,
                    retain_graph=True,
                    is_grads_batched=True,
                )
            cotangents[start:stop] = lower
            if gap_grads:
                gap_rows.append(torch.cat([g.reshape(stop - start, -1) for g in gap_grads], dim=1))
        if gap_rows:
            kernel.add_gram(torch.cat(gap_rows))
        _add_linear_contribution(kernel, cotangents, inputs[lower_index], block_bytes)
        upper_index = lower_index
    return kernel.full()


@dataclass
class _ReluNormGap:
    """ReLU and an optional BatchNorm between two Linear layers, differentiated in closed form for
    a whole chunk of cotangents at once. Autograd's batched vector-Jacobian products (vmap over the
    backward graph) run BatchNorm's backward sample by sample and copy every intermediate, which
    took about a fifth of the kernel's time at T = N = 512 (torch.profiler).

    `output_factor` multiplies the cotangent last: the ReLU mask (no norm), gamma/sigma times the
    mask (BN after the ReLU) or gamma/sigma (BN before it, whose ReLU mask `mask_first` comes first).
    With batch statistics (`coupled`), BN's backward also removes the cotangent's per-feature mean
    and its component along the normalized input, the batch coupling of the paper's Eq. 10-12."""

    output_factor: torch.Tensor
    mask_first: torch.Tensor | None = None
    normalized: torch.Tensor | None = None
    coupled: bool = False
    affine: bool = False

    def pull_back(self, cotangent: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(chunk x T x N cotangents on the gap's output, modified in place) -> cotangents on its
        input and the BN weight and bias gradients (chunk x N each; none without affine BN)."""
        if self.mask_first is not None:
            cotangent.mul_(self.mask_first)
        if self.normalized is None:
            return cotangent.mul_(self.output_factor), []
        # A product and a sum: einsum ran this as one small matrix product per feature, copying
        # its operands each time (a third of the kernel's time at T = N = 512).
        weight_grad = (cotangent * self.normalized).sum(dim=1)
        bias_grad = cotangent.sum(dim=1)
        if self.coupled:
            count = cotangent.shape[1]
            cotangent.sub_(bias_grad[:, None, :] / count)
            cotangent.addcmul_(self.normalized, weight_grad[:, None, :], value=-1.0 / count)
        return cotangent.mul_(self.output_factor), [weight_grad, bias_grad] if self.affine else []


def _closed_form_gap(net: CoordinateMLP, pre_activation: torch.Tensor, norm: nn.Module) -> _ReluNormGap | None:
    """The closed-form backward of the gap after a Linear whose output is `pre_activation`, or None
    when the gap is not ReLU with no norm or a 1D BatchNorm (autograd handles those), or when a skip
    connection widens the next layer's input."""
    if net.skips or not isinstance(net.activation, nn.ReLU):
        return None
    if isinstance(norm, nn.Identity):
        return _ReluNormGap(output_factor=(pre_activation > 0).to(pre_activation.dtype))
    if type(norm) is not nn.BatchNorm1d:
        return None
    after = net.config.norm_placement != "before"
    source = pre_activation.clamp(min=0) if after else pre_activation
    # Train mode normalizes with the batch's biased statistics; eval mode (and a frozen-statistics
    # copy) with the running ones, which do not depend on the batch.
    coupled = norm.training or norm.running_var is None
    mean = source.mean(0) if coupled else norm.running_mean
    variance = source.var(0, unbiased=False) if coupled else norm.running_var
    deviation = torch.sqrt(variance + norm.eps)
    normalized = (source - mean) / deviation
    weight = norm.weight.detach() if norm.affine else torch.ones_like(deviation)
    scale = weight / deviation
    if after:
        return _ReluNormGap(scale * (pre_activation > 0), None, normalized, coupled, norm.affine)
    shift = norm.bias.detach() if norm.affine else torch.zeros_like(deviation)
    mask = (normalized * weight + shift > 0).to(pre_activation.dtype)
    return _ReluNormGap(scale.expand_as(normalized), mask, normalized, coupled, norm.affine)


class _SymmetricKernel:
    """Accumulates sums of M M^T in float64 computing only the blocks on and above the diagonal
    (M M^T is symmetric, so the rest is a mirror): with row blocks of `block_rows`, about half the
    multiply-adds of full products once there are several blocks."""

    def __init__(self, rows: int, block_rows: int = 256):
        self.matrix = torch.zeros(rows, rows, dtype=torch.float64)
        self.bounds = [(start, min(rows, start + block_rows)) for start in range(0, rows, block_rows)]

    def add_gram(self, factor_rows: torch.Tensor) -> None:
        for top, bottom in self.bounds:
            # One product per block row: this row block against itself and every block below it.
            self.matrix[top:bottom, top:] += (factor_rows[top:bottom] @ factor_rows[top:].T).double()

    def full(self) -> torch.Tensor:
        for top, bottom in self.bounds:
            self.matrix[bottom:, top:bottom] = self.matrix[top:bottom, bottom:].T
        return self.matrix


def _input_factor(layer_input: torch.Tensor) -> torch.Tensor:
    """A count x k matrix C (k <= count) with C C^T = [h, 1][h, 1]^T, the Gram matrix of a Linear
    layer's inputs with the bias's constant 1. When the layer has more inputs than there are
    coordinates, the triangular factor of a QR decomposition of [h, 1]^T: C = R^T, since
    [h,1][h,1]^T = R^T Q^T Q R, which keeps every product at most count wide."""
    count = layer_input.shape[0]
    augmented = torch.cat([layer_input, torch.ones(count, 1, dtype=layer_input.dtype)], dim=1)
    if augmented.shape[1] <= count:
        return augmented
    # float64: the factor is small (count x count) and its rounding would enter every entry of K.
    triangular = torch.linalg.qr(augmented.T.double(), mode="r").R
    return triangular.T.to(layer_input.dtype).contiguous()


def _add_linear_contribution(
    kernel: _SymmetricKernel, cotangents: torch.Tensor, layer_input: torch.Tensor, block_bytes: int
) -> None:
    """kernel += J J^T for one Linear layer's weight and bias, where J[r] = G_r^T [h, 1]
    (G_r = d f_r / d z: count x features, h the layer's input: count x fan_in).

    J is formed feature block by feature block in the basis of `_input_factor` (J C, which has the
    same J J^T), as one matrix product per block: G's coordinates moved last, then times C."""
    rows, count, features = cotangents.shape
    factor = _input_factor(layer_input)
    inner = factor.shape[1]
    features_per_block = _rows_per_chunk(rows * max(count, inner) * cotangents.element_size(), block_bytes, features)
    for start in range(0, features, features_per_block):
        block = cotangents[:, :, start : start + features_per_block]
        by_feature = block.transpose(1, 2).reshape(-1, count)
        kernel.add_gram((by_feature @ factor).reshape(rows, -1))


def _parameter_blocked_kernel(net: nn.Module, coords: torch.Tensor, block_bytes: int) -> torch.Tensor:
    """Any network: each parameter, flattened and cut into slices whose T·out x slice Jacobian fits
    `block_bytes`, gets the reverse-mode Jacobian of the full-batch output (torch.func.vjp with
    batched one-hot cotangents); the kernel accumulates Re(J J^H), which for complex parameters
    counts their real and imaginary parts as two real parameters."""
    parameters = {name: p.detach() for name, p in net.named_parameters()}
    buffers = {name: b.detach() for name, b in net.named_buffers()}
    with torch.no_grad():
        reference = net(coords)
    rows = reference.numel()
    identity = torch.eye(rows, dtype=reference.dtype)
    # One batched cotangent carries a full-batch backward pass: about T x (widest layer) values.
    widest = max(max(p.shape) for p in parameters.values() if p.dim())
    cotangents_per_chunk = _rows_per_chunk(coords.shape[0] * widest * 4 * reference.element_size(), block_bytes, rows)
    kernel = torch.zeros(rows, rows, dtype=torch.float64)
    for name, parameter in parameters.items():
        flat = parameter.reshape(-1)
        slice_size = _rows_per_chunk(rows * flat.element_size(), block_bytes, flat.numel())
        for start in range(0, flat.numel(), slice_size):
            stop = min(flat.numel(), start + slice_size)

            def outputs_of_slice(part, name=name, flat=flat, start=start, stop=stop, shape=parameter.shape):
                full = torch.cat([flat[:start], part, flat[stop:]]).reshape(shape)
                # Buffers cloned inside the transformed function absorb train-mode BatchNorm's
                # running-statistics updates, which torch.func forbids on captured tensors.
                fresh_buffers = {key: value.clone() for key, value in buffers.items()}
                state = {**parameters, name: full, **fresh_buffers}
                return torch.func.functional_call(net, state, (coords,)).reshape(-1)

            _, pullback = torch.func.vjp(outputs_of_slice, flat[start:stop])
            jacobian = torch.cat(
                [
                    torch.func.vmap(pullback)(identity[first : first + cotangents_per_chunk])[0]
                    for first in range(0, rows, cotangents_per_chunk)
                ]
            )
            kernel += (jacobian @ jacobian.conj().T).real.double()
    return kernel


# ---------------------------------------------------------------------------------------------
# Statistics of the spectrum (Eq. 13)


def spectrum_statistics(kernel: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
    """Eq. 13's moments and bounds from the kernel, and its eigenvalues (ascending) from a
    symmetric eigensolver. m and s come from traces, as in the paper, and agree with the
    eigenvalues' own mean and mean square."""
    kernel = 0.5 * (kernel + kernel.T).double()
    size = kernel.shape[0]
    # numpy's LAPACK eigensolver: torch's eigvalsh took seconds for 256 x 256 on this 2-core
    # machine (thread contention), numpy's takes milliseconds.
    eigenvalues = np.linalg.eigvalsh(kernel.numpy())
    mean = float(torch.trace(kernel)) / size
    second_moment = float((kernel * kernel).sum()) / size
    lambda_max = float(eigenvalues[-1])
    lower, upper = second_moment / mean, math.sqrt(size * second_moment)
    return {
        "T": size,
        "m_lambda": mean,
        "v_lambda": second_moment - mean**2,
        "s_lambda": second_moment,
        "lambda_max": lambda_max,
        "lambda_min": float(eigenvalues[0]),
        "lambda_median": float(np.median(eigenvalues)),
        "eq13_lower_s_over_m": lower,
        "eq13_upper_sqrt_T_s": upper,
        # Relative slack: eigvalsh and the trace formulas round differently.
        "eq13_bounds_hold": bool(lower * (1 - 1e-9) <= lambda_max <= upper * (1 + 1e-9)),
    }, eigenvalues


# ---------------------------------------------------------------------------------------------
# Width scaling (Eq. 14)


@dataclass(frozen=True)
class PowerLawFit:
    exponent: float
    prefactor: float
    r_squared: float


def fit_power_law(widths, values) -> PowerLawFit:
    """Least squares of log(value) = exponent * log(width) + log(prefactor)."""
    x, y = np.log(np.asarray(widths, float)), np.log(np.asarray(values, float))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    spread = ((y - y.mean()) ** 2).sum()
    return PowerLawFit(float(slope), float(math.exp(intercept)), float(1 - (residual**2).sum() / spread) if spread else 1.0)


# Eq. 14: (smallest, largest) predicted exponent of the width N for each statistic.
PAPER_EXPONENTS: dict[str, dict[str, tuple[float, float]]] = {
    "mlp": {"m_lambda": (1.0, 1.0), "v_lambda": (3.0, 3.0), "lambda_max": (2.0, 2.0)},
    "bn": {"m_lambda": (1.0, 1.0), "v_lambda": (1.5, 1.5), "lambda_max": (1.0, 1.5)},
}
# How far a fitted exponent may sit outside the predicted range and still count as reproduced:
# a quarter of a power of N, about the spread between seeds at these widths.
EXPONENT_TOLERANCE = 0.25


def exponent_verdict(fitted: float, predicted: tuple[float, float], tolerance: float = EXPONENT_TOLERANCE) -> str:
    low, high = predicted
    shown = f"N^{low:g}" if low == high else f"N^{low:g}..N^{high:g}"
    miss = max(low - fitted, fitted - high, 0.0)
    if miss <= tolerance:
        return f"reproduced (fitted N^{fitted:.2f}, predicted {shown})"
    return f"NOT reproduced (fitted N^{fitted:.2f}, predicted {shown}: off by {miss:.2f} in the exponent)"
