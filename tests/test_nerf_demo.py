"""bn-nerf-demo, the README's main job, shrunk to a few steps on a 24x24 scene: it writes the scene,
trains, reports eval-mode test metrics -- those ns-eval measures on its checkpoint -- and a novel
view that beat any constant render, leaves a run nerfstudio can load, and says so on a console
that fits a screen, nerfstudio's own output kept in its log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bn_nerf.nerf import demo
from bn_nerf.upstream_warnings import silence_known_upstream_warnings

# Enough steps of the default method on a 24-pixel scene for its geometry to show.
DEMO_STEPS = 60
# What the demo may print in all, stdout and stderr together: a screen.
SCREEN_LINES = 40
# A warning as Python prints it: "path:line: SomeWarning: message".
WARNING_LINE = re.compile(r"^(?P<path>.+?):\d+: \w*Warning: ")


def best_constant_psnr(images: list[np.ndarray]) -> float:
    """Mean PSNR of the best constant render of each image (its mean colour), white included: what a
    field that learned nothing of the scene's geometry could score at most."""
    scores = []
    for image in images:
        mean_colour = image.reshape(-1, 3).mean(0)
        scores.append(max(-10 * np.log10(np.mean((image - constant) ** 2)) for constant in (mean_colour, np.ones(3))))
    return float(np.mean(scores))


def split_on_white(scene: Path) -> list[np.ndarray]:
    images = []
    for path in sorted((scene / "test").glob("*.png")):
        rgba = np.asarray(Image.open(path), dtype=float) / 255
        images.append(rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:])
    return images


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """One demo run for the tests that judge it, in its own process as a user starts it (pytest
    would record the warnings an in-process run gives, and they must be judged as printed): its
    output folder and everything it printed, stdout then stderr."""
    output = tmp_path_factory.mktemp("demo")
    command = [sys.executable, "-m", "bn_nerf.nerf.demo", "--output", str(output), "--steps", str(DEMO_STEPS), "--size", "24"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert finished.returncode == 0, finished.stderr
    return output, finished.stdout + finished.stderr


def test_demo_trains_reports_and_renders_a_novel_view(demo_run):
    tmp_path, printed = demo_run
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "bn-diner-cpu" and report["normalization"] == "batch" and report["test_images"] == 8
    # Judged against the truth: well above any render that ignores the scene's geometry.
    constant = best_constant_psnr(split_on_white(tmp_path / "scene"))
    assert report["test_psnr"] > constant + 3, (report["test_psnr"], constant)
    assert 0.0 < report["test_ssim"] <= 1.0

    novel = np.asarray(Image.open(report["novel_view"]), dtype=float) / 255
    side_by_side = np.asarray(Image.open(tmp_path / "novel_view_vs_truth.png"), dtype=float) / 255
    assert novel.shape == (24, 24, 3) and side_by_side.shape == (24, 48, 3)
    truth = side_by_side[:, :24]
    np.testing.assert_allclose(side_by_side[:, 24:], novel)  # the right half is the saved render
    assert report["novel_view_psnr"] > best_constant_psnr([truth]) + 3
    recomputed = -10 * np.log10(np.mean((novel - truth) ** 2))
    assert abs(recomputed - report["novel_view_psnr"]) < 0.3  # 8-bit rounding of the PNGs aside

    config = yaml.load(Path(report["config"]).read_text(), Loader=yaml.Loader)
    assert config.vis == "tensorboard"  # no viewer unless --viewer
    checkpoints = list((config.get_base_dir() / "nerfstudio_models").glob("*.ckpt"))
    assert checkpoints and any(key.endswith("running_var") for key in torch.load(checkpoints[0])["pipeline"])
    assert "ns-viewer --load-config" in printed


def test_console_fits_a_screen_without_upstream_warnings_and_the_log_holds_nerfstudios_output(demo_run):
    output, printed = demo_run
    lines = printed.splitlines()
    assert len(lines) <= SCREEN_LINES, printed
    upstream = [line for line in lines if (match := WARNING_LINE.match(line)) and "bn_nerf" not in match["path"]]
    assert not upstream, upstream
    report = json.loads((output / "report.json").read_text())
    # The summary gives the figures measured and where the files are.
    for figure in (f"PSNR {report['test_psnr']:.2f} dB", f"SSIM {report['test_ssim']:.3f}",
                   f"PSNR {report['novel_view_psnr']:.2f} dB", report["novel_view"], str(output / "report.json")):
        assert figure in printed, figure
    assert f"{DEMO_STEPS}/{DEMO_STEPS}" in printed  # the progress bar, at its end
    log = Path(report["log"])
    assert log == output / "train.log" and str(log) in printed
    held = log.read_text()
    # nerfstudio's set-up, its step table and its closing panel, for this run.
    run_folder = str(Path(report["config"]).parent)
    assert f"{run_folder}/nerfstudio_models" in held.replace("\n", "").replace(" ", "")
    assert "Step (% Done)" in held and "Training Finished" in held
    assert "Training Finished" not in printed and "Step (% Done)" not in printed


def test_known_upstream_warnings_are_silenced_and_ours_are_not():
    message = "Using a non-tuple sequence for multidimensional indexing is deprecated and will be changed"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_upstream_warnings()
        warnings.warn_explicit(message, UserWarning, "cameras.py", 601, module="nerfstudio.cameras.cameras")
        warnings.warn_explicit(message, UserWarning, "grid_model.py", 1, module="bn_nerf.nerf.models.grid_model")
        warnings.warn_explicit("an upstream warning nobody listed", UserWarning, "cameras.py", 1,
                               module="nerfstudio.cameras.cameras")
    assert [(w.filename, str(w.message)) for w in caught] == [
        ("grid_model.py", message), ("cameras.py", "an upstream warning nobody listed")]


def test_reported_test_metrics_are_what_ns_eval_measures_on_the_checkpoint(demo_run, tmp_path):
    """Any figure clears the constant-render bound above; only ns-eval's own code, loading the run's
    config and checkpoint afresh, says the reported one was measured."""
    from nerfstudio.scripts.eval import ComputePSNR

    report = json.loads((demo_run[0] / "report.json").read_text())
    ComputePSNR(load_config=Path(report["config"]), output_path=tmp_path / "eval.json").main()
    measured = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert abs(measured["psnr"] - report["test_psnr"]) < 0.05, (measured["psnr"], report["test_psnr"])
    assert abs(measured["ssim"] - report["test_ssim"]) < 0.005, (measured["ssim"], report["test_ssim"])


def test_novel_view_is_not_a_scene_camera(tmp_path):
    """The rendered view must be a camera in none of the splits the scene writes."""
    from bn_nerf.nerf.data.scene import write_scene

    write_scene(tmp_path, size=8)
    camera, _ = demo.novel_camera(8)
    novel_position = camera.camera_to_worlds[0, :, 3]
    for split in ("train", "val", "test"):
        frames = json.loads((tmp_path / f"transforms_{split}.json").read_text())["frames"]
        positions = torch.tensor([frame["transform_matrix"] for frame in frames])[:, :3, 3]
        assert (positions - novel_position).norm(dim=-1).min() > 0.3, split


def test_demo_rejects_bad_arguments(capsys):
    assert demo.main(["--steps", "0"]) == 2
    assert "error" in capsys.readouterr().err
