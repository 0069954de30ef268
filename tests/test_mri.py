"""MRI: the Fourier operator's adjoint, the masks, volume loading, an end-to-end run, bad input."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from bn_nerf.cli import main
from bn_nerf.io.errors import InputError
from bn_nerf.io.volumes import load_volume
from bn_nerf.operators.fourier import FourierSampling
from bn_nerf.operators.kspace_masks import MASK_KINDS, sampling_mask
from bn_nerf.tasks.mri import MRITask, prepare_volume
from conftest import truncated


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_fourier_sampling_adjoint_satisfies_the_inner_product_identity(kind):
    shape = (12, 10, 14)
    operator = FourierSampling(torch.from_numpy(sampling_mask(kind, shape, 0.3, seed=1)))
    generator = torch.Generator().manual_seed(0)
    volume = torch.randn(shape, dtype=torch.complex128, generator=generator)
    measurements = torch.randn(operator.measurement_count, dtype=torch.complex128, generator=generator)
    left = torch.vdot(operator(volume), measurements)
    right = torch.vdot(volume.reshape(-1), operator.adjoint(measurements).reshape(-1))
    assert torch.allclose(left, right, rtol=1e-10, atol=1e-10)


def test_full_sampling_zero_filled_reconstruction_is_the_volume():
    volume = torch.rand(8, 9, 10, dtype=torch.float64)
    operator = FourierSampling(torch.ones(8, 9, 10, dtype=torch.bool))
    assert torch.allclose(operator.adjoint(operator(volume)).real, volume, atol=1e-12)


@pytest.mark.parametrize("kind", ["random", "variable-density", "radial"])
def test_masks_keep_about_the_asked_fraction(kind):
    mask = sampling_mask(kind, (24, 24, 24), 0.2, seed=3)
    assert 0.17 < mask.mean() < 0.23
    if kind != "random":  # both centre-weighted masks measure the zero frequency
        assert mask[12, 12, 12]


def test_variable_density_mask_samples_low_frequencies_more_densely():
    mask = sampling_mask("variable-density", (32, 32, 32), 0.25)
    frequencies = np.meshgrid(*[np.arange(32) - 16] * 3, indexing="ij")
    radius = np.sqrt(sum(k.astype(float) ** 2 for k in frequencies))
    assert mask[radius < 4].mean() > 0.9 > 0.1 > mask[radius > 12].mean()


def test_empty_mask_is_refused():
    with pytest.raises(InputError, match="empty"):
        MRITask(np.random.rand(8, 8, 8), np.zeros((8, 8, 8), dtype=bool))


def test_npy_volume_loads_rescaled_and_non_3d_is_refused(tmp_path):
    path = tmp_path / "volume.npy"
    np.save(path, np.arange(24, dtype=np.int16).reshape(2, 3, 4) * 3 - 5)
    volume = load_volume(path)
    assert volume.shape == (2, 3, 4) and volume.min() == 0.0 and volume.max() == 1.0
    flat = tmp_path / "flat.npy"
    np.save(flat, np.random.rand(6, 6))
    with pytest.raises(InputError, match="3-D"):
        load_volume(flat)


def test_mri_end_to_end_bn_beats_relu_in_eval_mode(tmp_path):
    common = ["mri", "--size", "16", "--mask", "full", "--depth", "2", "--width", "128", "--iterations", "400", "--quiet"]
    _, truth = prepare_volume(None, 16)
    figures = {}
    for method in ("relu", "bn"):
        out = tmp_path / method
        assert main(common + ["--method", method, "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["task"] == "mri" and metrics["reference_method"] == "zero_filled_ifft"
        # The saved volume is the one the metrics judged: its PSNR against the phantom is the reported one.
        volume = np.load(out / "reconstruction.npy")
        assert volume.shape == (16, 16, 16) and np.isfinite(volume).all()
        mse = np.mean((np.clip(volume, 0, 1).astype(np.float64) - truth) ** 2)
        assert -10 * np.log10(mse) == pytest.approx(metrics["psnr"], abs=1e-3)
        # Three mid-slices of 16 x 16 side by side, showing structure rather than one flat value.
        for name in ("reconstruction_slices.png", "ground_truth_slices.png", "zero_filled_slices.png", "error_slices.png"):
            slices = iio.imread(out / name)
            assert slices.shape[0] == 16 and slices.shape[1] >= 3 * 16 and slices.std() > 5, name
        figures[method] = metrics["psnr"]
    # Measured over seeds 0-2: BN ahead by 0.55-0.90 dB at 400 iterations.
    assert figures["bn"] > figures["relu"] + 0.3, figures


def test_undersampled_run_reports_the_zero_filled_reference(tmp_path):
    assert main(["mri", "--size", "12", "--mask", "radial", "--sampled-fraction", "0.3", "--depth", "1",
                 "--width", "16", "--iterations", "5", "--quiet", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.3 <= metrics["sampled_fraction"] < 0.4 and 5 < metrics["reference_psnr"] < 60


@pytest.mark.parametrize("flags, message", [
    (["--sampled-fraction", "0"], "--sampled-fraction"),
    (["--size", "-4"], "--size must be > 0"),
    (["--volume", "missing.npy"], "no such file"),
])
def test_mri_bad_input_is_one_line_error_without_metrics(tmp_path, capsys, flags, message):
    code = main(["mri", "--quiet", "--iterations", "1", "--out", str(tmp_path)] + flags)
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and "\n" not in error
    assert not (tmp_path / "metrics.json").exists()


def test_a_volume_file_is_fitted_at_its_own_size_unless_size_says_otherwise(tmp_path, capsys):
    path = tmp_path / "scan.npy"
    np.save(path, np.random.default_rng(0).random((6, 8, 10)))
    common = ["mri", "--quiet", "--volume", str(path), "--mask", "full", "--depth", "1", "--width", "8",
              "--iterations", "2", "--threads", "1"]
    assert main(common + ["--out", str(tmp_path / "own")]) == 0
    assert "mri: scan zero-padded from 6x8x10 to a 10^3 cube\n" in capsys.readouterr().out
    assert np.load(tmp_path / "own" / "reconstruction.npy").shape == (10, 10, 10)
    assert main(common + ["--size", "7", "--out", str(tmp_path / "small")]) == 0
    assert "and resized from 10^3 to 7^3 (--size)" in capsys.readouterr().out
    assert np.load(tmp_path / "small" / "reconstruction.npy").shape == (7, 7, 7)


def test_mri_truncated_volume_fails_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "scan.npy"
    np.save(path, np.random.default_rng(0).random((8, 8, 8)))
    truncated(path)
    assert main(["mri", "--quiet", "--volume", str(path), "--iterations", "2", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert f"{path}: not a readable .npy array" in error and "\n" not in error
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_mri_volume_that_is_not_3d_fails_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "slice.npy"
    np.save(path, np.random.rand(8, 8))
    assert main(["mri", "--quiet", "--volume", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "expected a 3-D volume" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()
