"""The matrix products of a coordinate network's layers, on the fastest kernel at hand.

A coordinate network multiplies a tall activation (every coordinate of the signal, hundreds of
thousands of rows) by a small weight matrix. On x86 CPUs PyTorch's `mm` runs these skinny float32
products through MKL, which on the AMD EPYC this project is measured on reached about 45 GFLOP/s
where oneDNN's inner-product kernel (PyTorch's own CPU library, as its compiler uses it) reached
about 85 (BENCHMARKS.md, "Matrix-product kernels"). So products whose contraction runs along a
contiguous row -- the forward product x W^T and the input gradient g W -- go to oneDNN when it is
there and agrees with `mm` on a self-check; everything else (CUDA, float64, the weight gradient,
whose contraction runs down the batch) stays on `mm`. The kernels have no autograd formula: they
are called inside the layers' autograd Functions only (`bn_nerf.networks.fused`).
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _onednn_works() -> bool:
    """oneDNN's inner product exists in this build and computes x W^T + b (checked once)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        kernel = torch.ops.mkldnn._linear_pointwise
        generator = torch.Generator().manual_seed(0)
        x, weight, bias = (torch.randn(shape, generator=generator) for shape in ((37, 5), (3, 5), (3,)))
        with torch.no_grad():
            return torch.allclose(kernel(x, weight, bias, "none", [], ""), torch.addmm(bias, x, weight.T), atol=1e-5)
    except (AttributeError, RuntimeError):
        return False


def _onednn_suits(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors) and _onednn_works()


def matmul_transposed(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x y^T (+ bias): (n, k) by (m, k) -> (n, m), the product a Linear layer computes."""
    if _onednn_suits(x, y, bias):
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), y.contiguous(), bias, "none", [], "")
    return x @ y.T if bias is None else torch.addmm(bias, x, y.T)


def column_sums(x: torch.Tensor) -> torch.Tensor:
    """Sums over the batch (dim 0) of an (n, k) matrix, as a matrix-vector product: on a CPU that
    streams the rows once, where `sum(0)` took twice as long on a 262,144 x 28 activation."""
    if x.device.type != "cpu":
        return x.sum(0)
    return torch.mv(x.T, x.new_ones(x.shape[0]))
