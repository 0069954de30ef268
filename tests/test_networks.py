"""The coordinate-network module: every preset trains, BN sits where asked, LeCun init, folding,
BN re-estimation and seeding, the fused BatchNorm layers against stock modules. CPU only, a few
seconds in all."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from skimage.transform import resize
from torch import nn

from bn_nerf import build_network, fold_normalization, reestimate_batchnorm
from bn_nerf.networks import PRESETS, convert_to_sync_batchnorm, stored_value_count
from bn_nerf.networks.matmul import column_sums, matmul_transposed



def photo(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(coordinates in [-1, 1]^2, RGB pixels) of a real photo shrunk to size x size."""
    pixels = resize(data.astronaut() / 255.0, (size, size), anti_aliasing=True).astype(np.float32)
    axis = torch.linspace(-1.0, 1.0, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y], -1).reshape(-1, 2), torch.from_numpy(pixels).reshape(-1, 3)


def train(net: nn.Module, inputs: torch.Tensor, target: torch.Tensor, steps: int, lr: float) -> nn.Module:
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.mse_loss(net(inputs), target).backward()
        optimizer.step()
    return net


def psnr(net: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> float:
    with torch.no_grad():
        return -10 * math.log10(F.mse_loss(net(inputs), target).item())


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_every_method_builds_and_one_step_lowers_nothing_to_nan(method):
    torch.manual_seed(0)
    inputs, target = photo(16)
    net = build_network(method, 2, 3, 3, 16)
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = F.mse_loss(net(inputs), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert net(inputs).shape == (256, 3)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    changed = [not torch.equal(old, new) for old, new in zip(before, net.parameters())]
    assert all(changed), f"{method}: {changed.count(False)} parameter tensors did not move"


def norm_inputs(net: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
               for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    net.train()
    net(inputs)
    for handle in handles:
        handle.remove()
    return seen


def test_batchnorm_after_the_relu_by_default_and_before_it_on_request():
    torch.manual_seed(0)
    inputs, _ = photo(16)
    after = build_network("bn", 2, 3, 4, 32)
    before = build_network("bn", 2, 3, 4, 32, norm_placement="before")
    after_inputs, before_inputs = norm_inputs(after, inputs), norm_inputs(before, inputs)
    assert len(after_inputs) == len(before_inputs) == 4
    # After the ReLU, BN sees rectified (non-negative) features; before it, the Linear's raw output.
    assert all((x >= 0).all() for x in after_inputs)
    assert all((x < 0).any() for x in before_inputs)
    # In train mode the features leaving an after-placed BN are standardized over the batch.
    features = []
    handle = after.head.register_forward_pre_hook(lambda _m, args: features.append(args[0].detach()))
    after(inputs)
    handle.remove()
    assert torch.allclose(features[0].mean(0), torch.zeros(32), atol=1e-5)
    assert torch.allclose(features[0].var(0, unbiased=False), torch.ones(32), atol=1e-2)


def test_relu_nets_start_from_lecun_normal_weights_and_siren_from_its_uniform_scheme():
    torch.manual_seed(0)
    for method in ("relu", "pe", "bn", "bn+pe"):
        net = build_network(method, 2, 3, 3, 512)
        for linear in list(net.linears[1:]) + [net.head]:
            fan_in = linear.in_features
            assert linear.weight.std().item() == pytest.approx(1 / math.sqrt(fan_in), rel=0.05)
            assert abs(linear.weight.mean().item()) < 0.05 / math.sqrt(fan_in)
            # Biases as the authors' code leaves them: uniform within +-1/sqrt(fan_in), not all zero,
            # so the ReLU net is not positively homogeneous about the origin at initialization.
            assert linear.bias.abs().max() <= 1 / math.sqrt(fan_in)
            assert torch.count_nonzero(linear.bias) == linear.bias.numel()
        for linear in net.linears[1:]:  # wide enough for a spread estimate (the head has 3 biases)
            assert linear.bias.std().item() == pytest.approx(1 / math.sqrt(3 * linear.in_features), rel=0.15)
    siren = build_network("siren", 2, 3, 3, 512)
    assert siren.linears[0].weight.abs().max() <= 1 / 2
    bound = math.sqrt(6 / 512) / 30
    assert siren.linears[1].weight.abs().max() <= bound
    assert siren.linears[1].weight.abs().max() > 0.95 * bound


@pytest.mark.parametrize("method", ["bn", "bn+pe"])
@pytest.mark.parametrize("placement", ["after", "before"])
def test_folded_network_equals_the_eval_mode_network(method, placement):
    torch.manual_seed(1)
    inputs, target = photo(24)
    net = train(build_network(method, 2, 3, 5, 24, norm_placement=placement), inputs, target, 30, 1e-2)
    reestimate_batchnorm(net, lambda: net(inputs))
    net.eval()
    folded = fold_normalization(net)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    # Five BNs of 24 features each carried gamma, beta, running mean and variance: 4 x 5 x 24 values.
    assert stored_value_count(net) - stored_value_count(folded) == 4 * 5 * 24
    probe = torch.rand(500, 2) * 2 - 1  # coordinates off the training grid too
    with torch.no_grad():
        expected, got = net(probe), folded(probe)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert net.training is False and any(isinstance(m, nn.BatchNorm1d) for m in net.modules())


@pytest.mark.parametrize("placement", ["after", "before"])
def test_reestimated_statistics_bring_eval_mode_within_a_tenth_of_a_db_of_train_mode(placement):
    torch.manual_seed(0)
    inputs, target = photo(48)
    net = train(build_network("bn", 2, 3, 6, 28, norm_placement=placement), inputs, target, 150, 1e-2)
    net.train()
    train_mode = psnr(net, inputs, target)
    net.eval()
    lagging = psnr(net, inputs, target)
    reestimate_batchnorm(net, lambda: net(inputs))
    net.eval()
    deployed = psnr(net, inputs, target)
    assert abs(train_mode - deployed) <= 0.1
    # The fix must matter: EMA statistics lag the fast-moving weights at lr 1e-2.
    assert train_mode - lagging > 0.1


@pytest.mark.parametrize("placement", ["after", "before"])
def test_reestimation_gives_the_statistics_of_one_batch_in_one_pass_or_in_chunks(placement):
    """All data in one call: one pass, and every layer's running statistics are exactly the batch
    statistics train mode normalizes that batch with. The same data in chunks: the same statistics,
    from one pass per layer (each layer's input depends on the full-data statistics before it)."""
    torch.manual_seed(0)
    net = build_network("bn", 2, 3, 4, 16, norm_placement=placement)
    inputs = torch.rand(3000, 2) * 2 - 1
    layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    batch_statistics = []
    hooks = [layer.register_forward_pre_hook(
        lambda _m, args: batch_statistics.append((args[0].mean(0), args[0].var(0, unbiased=False)))) for layer in layers]
    net.train()
    with torch.no_grad():
        net(inputs)
    for hook in hooks:
        hook.remove()

    passes = []
    assert reestimate_batchnorm(net, lambda: passes.append(net(inputs))) == len(layers)
    assert len(passes) == 1
    for layer, (mean, variance) in zip(layers, batch_statistics):
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var, variance, rtol=1e-4, atol=1e-5)
    one_batch = [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]

    for layer in layers:  # forget them
        layer.reset_running_stats()
    passes.clear()
    reestimate_batchnorm(net, lambda: passes.extend(net(chunk) for chunk in inputs.split(700)))
    assert len(passes) == 5 * (1 + len(layers))
    for layer, (mean, variance) in zip(layers, one_batch):
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var, variance, rtol=1e-4, atol=1e-5)


def test_the_same_seed_gives_the_same_network_and_training_and_another_seed_does_not():
    inputs, target = photo(16)

    def trained(seed):
        torch.manual_seed(seed)
        return train(build_network("bn+pe", 2, 3, 3, 16), inputs, target, 5, 1e-2)

    first, again, other = trained(3), trained(3), trained(4)
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.head.weight, other.head.weight)


@pytest.mark.parametrize("method", ["siren", "wire", "mfn", "pe"])
def test_coordinate_scale_is_the_same_network_seeing_scaled_coordinates(method):
    inputs = torch.rand(50, 2) * 2 - 1
    torch.manual_seed(0)
    scaled = build_network(method, 2, 3, 2, 16, coordinate_scale=0.125)
    torch.manual_seed(0)
    plain = build_network(method, 2, 3, 2, 16)
    with torch.no_grad():
        assert torch.allclose(scaled(inputs), plain(inputs * 0.125), atol=1e-6)


def graph_nodes(output: torch.Tensor) -> set[str]:
    """Names of every autograd node that produced `output`."""
    seen, names, stack = set(), set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def plain_forward(net: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The coordinate MLP written out with stock modules (nn.Linear, nn.BatchNorm1d, ReLU)."""
    encoded = net.encoding(inputs)
    before = net.config.norm_placement == "before"
    h = encoded
    for index, (linear, norm) in enumerate(zip(net.linears, net.norms)):
        if index in net.skips:
            h = torch.cat([h, encoded], dim=-1)
        h = torch.relu(norm(linear(h))) if before else norm(torch.relu(linear(h)))
    return h if net.head is None else net.head(h)


FUSED_CASES = {  # (method, overrides, out_dim): the image net, PE, NeRF's skip, a NeRF trunk ending in BN
    "plain": ("bn", {}, 3),
    "pe": ("bn+pe", {"pe_octaves": 3}, 3),
    "skip": ("bn", {"skip_connections": (2,)}, 3),
    "nerf-trunk": ("bn", {"skip_connections": (2,), "encoding": "pe", "pe_octaves": 2}, None),
}


@pytest.mark.parametrize("case", sorted(FUSED_CASES))
@pytest.mark.parametrize("placement", ["after", "before"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_batchnorm_equals_nn_batchnorm1d_in_float64(case, placement, mode):
    """Outputs, every gradient (parameters and input) and the running statistics of the fused
    layers equal stock nn.Linear + nn.BatchNorm1d to 1e-6 relative, in float64."""
    method, overrides, out_dim = FUSED_CASES[case]
    torch.manual_seed(0)
    net = build_network(method, 2, out_dim, 4, 16, norm_placement=placement, **overrides).double()
    with torch.no_grad():  # non-trivial BN affine parameters and running statistics
        for norm in net.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
    net.norms[1].momentum = None  # a cumulative average keeps its meaning too
    reference = copy.deepcopy(net)
    net.train(mode == "train")
    reference.train(mode == "train")
    inputs = (torch.rand(300, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    reference_inputs = inputs.detach().clone().requires_grad_()
    cotangent = torch.randn(300, out_dim or 16, dtype=torch.float64)
    for _ in range(2):  # two steps: running statistics move twice
        output, expected = net(inputs), plain_forward(reference, reference_inputs)
        (output * cotangent).sum().backward()
        (expected * cotangent).sum().backward()
    # Batch statistics: the fused Function; running statistics: BN folded into a Linear, no BN kernel.
    nodes = graph_nodes(output)
    assert ("_NormalizedLinearBackward" if mode == "train" else "_LinearBackward") in nodes
    assert "NativeBatchNormBackward0" not in nodes or case == "nerf-trunk"
    assert torch.allclose(output, expected, rtol=1e-9, atol=1e-12)
    for (name, mine), theirs in zip([("input", inputs), *net.named_parameters()],
                                    [reference_inputs, *reference.parameters()]):
        scale = theirs.grad.abs().max()
        # A Linear feeding a train-mode BN has an exactly zero bias gradient (its stock gradient is rounding).
        assert (mine.grad - theirs.grad).abs().max() <= 1e-6 * max(scale, net_gradient_scale(reference)), name
    for (name, mine), theirs in zip(net.named_buffers(), reference.buffers()):
        assert torch.equal(mine, theirs) if name.endswith("num_batches_tracked") else torch.allclose(mine, theirs, rtol=1e-12), name


def net_gradient_scale(net: nn.Module) -> float:
    return max(p.grad.abs().max().item() for p in net.parameters()) * 1e-6


def test_fused_layers_agree_with_stock_modules_in_float32_on_the_fast_kernels():
    torch.manual_seed(0)
    net = build_network("bn", 2, 3, 5, 28)
    reference = copy.deepcopy(net)
    inputs, target = photo(64)
    losses = []
    for model, forward in ((net, net), (reference, lambda x: plain_forward(reference, x))):
        loss = F.mse_loss(forward(inputs), target)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, mine), theirs in zip(net.named_parameters(), reference.parameters()):
        assert (mine.grad - theirs.grad).norm() <= 1e-4 * theirs.grad.norm() + 1e-7, name


def test_hooks_and_syncbatchnorm_take_the_stock_path():
    torch.manual_seed(0)
    inputs, _ = photo(16)
    net = build_network("bn", 2, 3, 3, 16)
    assert "_NormalizedLinearBackward" in graph_nodes(net(inputs))
    seen = []
    handle = net.norms[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    output = net(inputs)
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (256, 16) and (seen[0] >= 0).all()
    assert "NativeBatchNormBackward0" in graph_nodes(output)
    synced = convert_to_sync_batchnorm(copy.deepcopy(net))
    assert "_NormalizedLinearBackward" not in graph_nodes(synced(inputs))
    assert torch.allclose(synced(inputs), net(inputs), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matmul_transposed_is_x_times_y_transposed_plus_bias(dtype):
    generator = torch.Generator().manual_seed(0)
    x, y, bias = (torch.randn(shape, generator=generator, dtype=dtype) for shape in ((1000, 28), (7, 28), (7,)))
    expected = x.double() @ y.double().T + bias.double()
    tolerance = 1e-4 if dtype == torch.float32 else 1e-12
    assert torch.allclose(matmul_transposed(x, y, bias).double(), expected, atol=tolerance)
    assert torch.allclose(matmul_transposed(x, y).double(), expected - bias.double(), atol=tolerance)
    assert torch.allclose(column_sums(x).double(), x.double().sum(0), atol=tolerance * 100)
