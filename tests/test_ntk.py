"""The empirical NTK (bn_nerf.analysis.ntk) against independent references on tiny nets, in float64."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bn_nerf.analysis.ntk import (
    empirical_ntk,
    exponent_verdict,
    fit_power_law,
    frozen_statistics_copy,
    spectrum_statistics,
)
from bn_nerf.analysis.spectral_bias import frequency_errors, multi_frequency_signal, periodic_grid
from bn_nerf.cli import main
from bn_nerf.networks import build_network



def tiny_net(method: str, out_dim: int = 1, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(method, 1, out_dim, 2, 6, **overrides).double().train()


def tiny_coords(points: int = 10) -> torch.Tensor:
    return torch.linspace(-1, 1, points, dtype=torch.float64)[:, None]


def finite_difference_jacobian(net: torch.nn.Module, coords: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """Central differences of the full-batch train-mode output with respect to every parameter,
    one parameter entry at a time: no autograd involved."""
    state = {name: b.clone() for name, b in net.named_buffers()}
    columns = []
    with torch.no_grad():
        for parameter in net.parameters():
            flat = parameter.view(-1)
            for index in range(flat.numel()):
                original = flat[index].item()
                flat[index] = original + step
                plus = net(coords).reshape(-1)
                flat[index] = original - step
                minus = net(coords).reshape(-1)
                flat[index] = original
                columns.append((plus - minus) / (2 * step))
        for name, buffer in net.named_buffers():
            buffer.copy_(state[name])
    return torch.stack(columns, dim=1)


def per_sample_kernel(net: torch.nn.Module, coords: torch.Tensor) -> torch.Tensor:
    """The per-sample computation: torch.func.vmap over single coordinates of jacrev, which cannot
    see any coupling between samples (BatchNorm must then run on fixed statistics, i.e. eval mode)."""
    parameters = {name: p.detach() for name, p in net.named_parameters()}
    buffers = {name: b.detach() for name, b in net.named_buffers()}

    def output_at(params, coordinate):
        return torch.func.functional_call(net, {**params, **buffers}, (coordinate[None],)).reshape(-1)

    jacobians = torch.func.vmap(torch.func.jacrev(output_at), in_dims=(None, 0))(parameters, coords)
    flat = torch.cat([j.reshape(coords.shape[0] * j.shape[1], -1) for j in jacobians.values()], dim=1)
    return flat @ flat.T


@pytest.mark.parametrize(
    "method, overrides",
    # relu and bn take the closed-form backward, ln the chain walk through autograd, mfn the
    # parameter-blocked Jacobians.
    [("relu", {}), ("bn", {}), ("bn", {"norm_placement": "before"}), ("bn+pe", {"pe_octaves": 2}), ("ln", {}), ("mfn", {})],
)
def test_kernel_matches_finite_difference_jacobian(method, overrides):
    net = tiny_net(method, **overrides)
    coords = tiny_coords()
    jacobian = finite_difference_jacobian(net, coords)
    expected = jacobian @ jacobian.T
    kernel = empirical_ntk(net, coords)
    assert not kernel.requires_grad
    assert torch.allclose(kernel, expected, rtol=1e-6, atol=1e-6 * expected.abs().max())


@pytest.mark.parametrize("placement", ["after", "before"])
def test_fewer_coordinates_than_layer_inputs(placement):
    # 6 coordinates against 6 hidden features plus the bias: the input Gram matrix is then
    # factored by QR instead of used as [h, 1] itself. (An odd count would put x = 0 on the grid,
    # which BN-before-ReLU maps exactly onto the ReLU's kink, where finite differences average the
    # two one-sided slopes.)
    net = tiny_net("bn", norm_placement=placement)
    coords = tiny_coords(6)
    jacobian = finite_difference_jacobian(net, coords)
    expected = jacobian @ jacobian.T
    assert torch.allclose(empirical_ntk(net, coords), expected, rtol=1e-6, atol=1e-6 * expected.abs().max())


def test_two_outputs_and_tiny_working_blocks_give_the_same_kernel():
    # Blocks of a few hundred bytes force every chunked loop (rows, features, parameter slices)
    # to take many turns; the answer must not depend on it.
    net = tiny_net("bn", out_dim=2)
    coords = tiny_coords(8)
    jacobian = finite_difference_jacobian(net, coords)
    kernel = empirical_ntk(net, coords, block_bytes=300)
    assert kernel.shape == (16, 16)
    assert torch.allclose(kernel, jacobian @ jacobian.T, rtol=1e-6, atol=1e-6 * kernel.abs().max())


def test_kernel_is_symmetric_positive_semidefinite_with_trace_of_squared_jacobian():
    net = tiny_net("bn+pe", pe_octaves=1)
    coords = tiny_coords(12)
    kernel = empirical_ntk(net, coords)
    assert torch.allclose(kernel, kernel.T, rtol=0, atol=1e-12 * kernel.abs().max())
    eigenvalues = torch.linalg.eigvalsh(kernel)
    assert eigenvalues.min() > -1e-10 * eigenvalues.max()
    parameters = dict(net.named_parameters())
    buffers = dict(net.named_buffers())

    def outputs(params):
        # Fresh buffer copies take train-mode BatchNorm's running-statistics update.
        fresh = {name: b.clone() for name, b in buffers.items()}
        return torch.func.functional_call(net, {**params, **fresh}, (coords,)).reshape(-1)

    autograd_jacobian = torch.func.jacrev(outputs)(parameters)
    squared_sum = sum(j.square().sum() for j in autograd_jacobian.values())
    assert torch.isclose(torch.trace(kernel), squared_sum, rtol=1e-10)


def test_batch_coupling_changes_the_bn_kernel_but_not_a_plain_mlp():
    coords = tiny_coords()
    normalized = tiny_net("bn")
    frozen = frozen_statistics_copy(normalized, coords)
    # Same function values on this batch: only the derivative through the statistics differs.
    assert torch.allclose(frozen(coords), normalized(coords), atol=1e-10)
    coupled = empirical_ntk(normalized, coords)
    per_sample = per_sample_kernel(frozen, coords)
    assert torch.allclose(empirical_ntk(frozen, coords), per_sample, rtol=1e-9, atol=1e-9 * per_sample.abs().max())
    assert (coupled - per_sample).abs().max() > 1e-2 * per_sample.abs().max()

    plain = tiny_net("relu")
    assert torch.allclose(empirical_ntk(plain, coords), per_sample_kernel(plain, coords), rtol=1e-9, atol=1e-12)


def test_kernel_leaves_batchnorm_running_statistics_alone():
    net = tiny_net("bn")
    before = {name: b.clone() for name, b in net.named_buffers()}
    empirical_ntk(net, tiny_coords())
    assert all(torch.equal(before[name], b) for name, b in net.named_buffers())


def test_statistics_follow_the_eigenvalues_and_satisfy_eq13():
    kernel = empirical_ntk(tiny_net("bn"), tiny_coords(16))
    statistics, eigenvalues = spectrum_statistics(kernel)
    assert statistics["m_lambda"] == pytest.approx(eigenvalues.mean(), rel=1e-9)
    assert statistics["v_lambda"] == pytest.approx(eigenvalues.var(), rel=1e-6)
    assert statistics["lambda_max"] == pytest.approx(eigenvalues.max(), rel=1e-12)
    assert statistics["eq13_lower_s_over_m"] <= statistics["lambda_max"] <= statistics["eq13_upper_sqrt_T_s"]
    assert statistics["eq13_bounds_hold"]


def test_power_law_fit_and_verdicts():
    widths = np.array([32, 64, 128, 256])
    fit = fit_power_law(widths, 3.0 * widths**1.5)
    assert fit.exponent == pytest.approx(1.5)
    assert fit.prefactor == pytest.approx(3.0)
    assert fit.r_squared == pytest.approx(1.0)
    assert exponent_verdict(1.6, (1.5, 1.5)).startswith("reproduced")
    assert exponent_verdict(1.2, (1.0, 1.5)).startswith("reproduced")
    verdict = exponent_verdict(1.0, (3.0, 3.0))
    assert verdict.startswith("NOT reproduced") and "off by 2.00" in verdict


def test_frequency_errors_read_one_dft_bin_each():
    coords = periodic_grid(64)
    target = multi_frequency_signal(coords, [2, 9])
    # Missing a unit sinusoid at f = 9 (any phase) leaves all of f = 9 unlearned and none of f = 2.
    missing_high = target - torch.cos(torch.pi * 9 * (coords + 1))
    assert frequency_errors(missing_high, target, [2, 9]) == pytest.approx([0.0, 1.0], abs=1e-5)
    assert frequency_errors(torch.zeros_like(target), target, [2, 9]) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert frequency_errors(target, target, [2, 9]) == pytest.approx([0.0, 0.0], abs=1e-6)


def test_cli_spectrum_writes_json_and_plot_for_any_preset(tmp_path, capsys):
    code = main(["ntk", "spectrum", "--out", str(tmp_path), "--points", "16", "--width", "8", "--depth", "2",
                 "--panels", "siren/ln,pe:2/bn+pe:2", "--frozen-statistics"])
    assert code == 0
    payload = json.loads((tmp_path / "ntk.json").read_text())
    assert set(payload["networks"]) == {"siren", "ln", "pe:2", "bn+pe:2"}
    assert "frozen_statistics" in payload["networks"]["bn+pe:2"] and "frozen_statistics" not in payload["networks"]["ln"]
    assert all(entry["statistics"]["eq13_bounds_hold"] for entry in payload["networks"].values())
    assert (tmp_path / "ntk_spectra.png").stat().st_size > 10_000
    assert len(payload["comparisons"]) == 2


def test_cli_sweep_prints_fits_with_verdicts(tmp_path, capsys):
    code = main(["ntk", "sweep", "--out", str(tmp_path), "--points", "12", "--widths", "8,16", "--depth", "2", "--seeds", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("reproduced") >= 6  # three statistics for each of relu and bn
    fits = json.loads((tmp_path / "sweep.json").read_text())["fits"]
    assert fits["bn"]["paper_family"] == "bn" and fits["relu"]["paper_family"] == "mlp"
    assert fits["relu"]["lambda_max"]["predicted_exponent"] == [2.0, 2.0]


def test_cli_demo_records_every_frequency(tmp_path):
    code = main(["ntk", "demo", "--out", str(tmp_path), "--points", "32", "--width", "8", "--depth", "2",
                 "--iterations", "5", "--frequencies", "1,3"])
    assert code == 0
    runs = json.loads((tmp_path / "spectral_bias.json").read_text())["runs"]
    assert [(r["network"], r["optimizer"]) for r in runs] == [("relu", "gd"), ("bn", "gd"), ("relu", "adam"), ("bn", "adam")]
    assert all(len(r["errors"][0]) == 2 for r in runs)
    assert (tmp_path / "spectral_bias.png").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["spectrum", "--panels", "relu/nonsense"], "unknown network 'nonsense'"),
        (["spectrum", "--panels", "relu:3/bn"], "only to methods with positional encoding"),
        (["spectrum", "--dims", "2", "--points", "10"], "square number"),
        (["sweep", "--widths", "32"], "at least two widths"),
        (["demo", "--points", "16", "--frequencies", "1,9"], "Nyquist"),
    ],
)
def test_cli_rejects_bad_input_with_one_line(tmp_path, capsys, arguments, message):
    assert main(["ntk", *arguments, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
