"""bn-nerf-demo, the README's main job, shrunk to a few steps on a 16x16 scene: it writes the scene,
trains, reports eval-mode test metrics and a novel view, and leaves a run nerfstudio can load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bn_nerf.nerf import demo


@pytest.fixture(autouse=True, scope="module")
def restore_thread_count():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)  # the demo sets its own (one by default)


def test_demo_trains_reports_and_renders_a_novel_view(tmp_path, capsys):
    assert demo.main(["--output", str(tmp_path), "--steps", "3", "--size", "16"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "bn-nerf-cpu" and report["normalization"] == "batch"
    assert report["test_images"] == 8 and 3.0 < report["test_psnr"] < 40.0 and 0.0 < report["test_ssim"] <= 1.0
    assert 3.0 < report["novel_view_psnr"] < 40.0

    novel = np.asarray(Image.open(report["novel_view"]))
    assert novel.shape == (16, 16, 3) and novel.std() > 0
    assert np.asarray(Image.open(tmp_path / "novel_view_vs_truth.png")).shape == (16, 32, 3)

    config = yaml.load(Path(report["config"]).read_text(), Loader=yaml.Loader)
    assert config.vis == "tensorboard"  # no viewer unless --viewer
    checkpoints = list((config.get_base_dir() / "nerfstudio_models").glob("*.ckpt"))
    assert checkpoints and any(key.endswith("running_var") for key in torch.load(checkpoints[0])["pipeline"])
    assert "ns-viewer --load-config" in capsys.readouterr().out


def test_novel_view_is_not_a_scene_camera(tmp_path):
    """The rendered view must be a camera in none of the splits the scene writes."""
    from bn_nerf.nerf.scene import write_scene

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
