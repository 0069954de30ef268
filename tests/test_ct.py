"""CT: the projector against scikit-image, an end-to-end run where BN beats ReLU, bad input."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

from bn_nerf.cli import main
from conftest import kill_after_checkpoint, truncated
from bn_nerf.operators.radon import ParallelBeamProjector


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def test_projector_matches_skimage_radon_on_shepp_logan_256():
    image = resize(shepp_logan_phantom(), (256, 256)).astype(np.float32)
    angles = np.linspace(0.0, 180.0, 100, endpoint=False)
    ours = ParallelBeamProjector(256, 256, angles)(torch.from_numpy(image)).numpy()
    reference = radon(image, angles, circle=False)
    assert ours.shape == reference.shape
    assert relative_error(ours, reference) <= 1e-2


@pytest.mark.parametrize("circle", [False, True])
def test_projector_matches_skimage_for_any_angles_and_non_square_images(circle):
    rng = np.random.default_rng(0)
    image = rng.random((37, 50))
    if circle:  # skimage's circle mode assumes zero outside the inscribed circle
        rows, columns = np.mgrid[:37, :50]
        image[(rows - 18) ** 2 + (columns - 25) ** 2 > 18 ** 2] = 0
    angles = [0.0, 13.7, 90.0, 181.0, 300.5]
    ours = ParallelBeamProjector(37, 50, angles, circle=circle)(torch.from_numpy(image).float()).numpy()
    assert relative_error(ours, radon(image, angles, circle=circle)) <= 1e-2


def rotated_sums(image: torch.Tensor, angles, circle: bool) -> torch.Tensor:
    """The projector's definition computed directly in float64: every angle's rotated square sampled
    bilinearly (zeros outside) with grid_sample, summed along its columns; (detectors, angles)."""
    height, width = image.shape
    size = min(height, width) if circle else int(np.ceil(np.sqrt(2) * max(height, width)))
    if circle:
        offsets = [-int(np.ceil((s - size) / 2)) for s in (height, width)]
    else:
        offsets = [size // 2 - s // 2 for s in (height, width)]
    radians = torch.deg2rad(torch.tensor(angles, dtype=torch.float64))[:, None, None]
    steps = torch.arange(size, dtype=torch.float64) - size // 2
    columns = size // 2 + torch.cos(radians) * steps + torch.sin(radians) * steps[:, None] - offsets[1]
    rows = size // 2 - torch.sin(radians) * steps + torch.cos(radians) * steps[:, None] - offsets[0]
    grid = torch.stack([columns * 2 / (width - 1) - 1, rows * 2 / (height - 1) - 1], dim=-1)
    source = image.double()[None, None].expand(len(angles), 1, height, width)
    rotated = torch.nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return rotated[:, 0].sum(dim=1).T


@pytest.mark.parametrize("circle", [False, True])
def test_sparse_projector_is_the_bilinear_rotate_and_sum_it_stands_for(circle):
    image = torch.from_numpy(np.random.default_rng(1).random((23, 30))).float()
    angles = [0.0, 7.5, 45.0, 90.0, 133.3, 179.0]
    ours = ParallelBeamProjector(23, 30, angles, circle=circle)(image).double()
    assert relative_error(ours.numpy(), rotated_sums(image, angles, circle).numpy()) <= 1e-6


def test_projector_gradient_is_the_transposed_projection():
    """<A x, y> = <x, A^T y>: the stored adjoint is the projection's transpose, so autograd's
    gradient of a sinogram loss is the back-projection it should be."""
    generator = torch.Generator().manual_seed(0)
    projector = ParallelBeamProjector(20, 20, np.linspace(0.0, 180.0, 9, endpoint=False))
    image = torch.rand(20, 20, generator=generator, requires_grad=True)
    weights = torch.rand(projector.detectors, 9, generator=generator)
    inner = (projector(image) * weights).sum()
    inner.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert float((image.grad * image.detach()).sum()) == pytest.approx(float(inner), rel=1e-5)
    batch = torch.stack([image.detach(), image.detach().flip(0)])
    assert torch.allclose(projector(batch)[1], projector(image.detach().flip(0)))


def test_ct_end_to_end_bn_beats_relu_in_eval_mode(tmp_path):
    common = ["ct", "--size", "32", "--projections", "45", "--depth", "2", "--width", "128", "--iterations", "150",
              "--quiet", "--checkpoint-every", "100"]
    figures = {}
    for method in ("relu", "bn"):
        out = tmp_path / method
        assert main(common + ["--method", method, "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        for name in ("reconstruction.png", "fbp.png", "ground_truth.png"):
            picture = iio.imread(out / name)
            assert picture.shape == (32, 32) and picture.std() > 10, name
        assert iio.imread(out / "error_map.png").ndim == 3
        assert torch.load(out / "checkpoint.pt")["step"] == 150
        assert metrics["task"] == "ct" and metrics["method"] == method
        assert metrics["reference_method"] == "fbp" and metrics["reference_psnr"] > 15
        assert 0 < metrics["ssim"] <= 1
        figures[method] = metrics["psnr"]
    assert figures["bn"] > figures["relu"] + 0.5, figures


def test_ct_run_killed_part_way_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL a real run part-way: it leaves a checkpoint and no metrics.json; --resume continues
    from that checkpoint's iteration (not from zero) and ends where an uninterrupted run ends."""
    command = ["ct", "--size", "24", "--projections", "12", "--depth", "2", "--width", "32", "--method", "bn",
               "--iterations", "1500", "--checkpoint-every", "50"]
    killed = kill_after_checkpoint(command, tmp_path / "killed", at_least=100)
    assert 100 <= killed < 1500
    assert not (tmp_path / "killed" / "metrics.json").exists()

    assert main(command + ["--quiet", "--out", str(tmp_path / "killed"), "--resume"]) == 0
    assert main(command + ["--quiet", "--out", str(tmp_path / "straight")]) == 0
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert resumed["resumed_from_iteration"] == killed and straight["resumed_from_iteration"] == 0
    assert abs(resumed["psnr"] - straight["psnr"]) <= 0.05, (resumed["psnr"], straight["psnr"])


@pytest.mark.parametrize("flags, message", [
    (["--projections", "0"], "--projections must be > 0"),
    (["--size", "0"], "--size must be > 0"),
    (["--image", "missing.png"], "no such file"),
])
def test_ct_bad_input_is_one_line_error_without_metrics(tmp_path, capsys, flags, message):
    code = main(["ct", "--quiet", "--iterations", "1", "--out", str(tmp_path)] + flags)
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and "\n" not in error
    assert not (tmp_path / "metrics.json").exists()


def test_an_image_file_is_fitted_at_its_own_size_unless_size_says_otherwise(tmp_path, capsys):
    photo = resize(shepp_logan_phantom(), (20, 30))
    path = tmp_path / "wide.png"
    iio.imwrite(path, np.round(photo * 255).astype(np.uint8))
    common = ["ct", "--quiet", "--image", str(path), "--projections", "8", "--depth", "1", "--width", "8",
              "--iterations", "2", "--threads", "1"]
    assert main(common + ["--out", str(tmp_path / "own")]) == 0
    assert "ct: wide cropped from 30x20 to its central 20x20 square\n" in capsys.readouterr().out
    assert iio.imread(tmp_path / "own" / "reconstruction.png").shape == (20, 20)
    assert main(common + ["--size", "12", "--out", str(tmp_path / "small")]) == 0
    assert "and resized from 20x20 to 12x12 (--size)" in capsys.readouterr().out
    assert iio.imread(tmp_path / "small" / "reconstruction.png").shape == (12, 12)


@pytest.mark.parametrize("damage, problem", [
    (lambda path: path.write_bytes(b"not an image"), "not a readable image"),
    (truncated, "not a readable image (OSError: image file is truncated)"),
])
def test_ct_unreadable_image_is_an_error(tmp_path, capsys, damage, problem):
    broken = tmp_path / "broken.png"
    iio.imwrite(broken, np.round(resize(shepp_logan_phantom(), (16, 16)) * 255).astype(np.uint8))
    damage(broken)
    assert main(["ct", "--quiet", "--image", str(broken), "--iterations", "2", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"bn-inr ct: error: {broken}: {problem}") and "\n" not in error, error
    assert not (tmp_path / "out" / "metrics.json").exists()
