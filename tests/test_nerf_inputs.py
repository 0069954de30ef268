"""Bad Blender folders give one-line errors naming the file and leave no run folder; metrics work
without the internet."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from nerfstudio.data.scene_box import SceneBox

from conftest import truncated

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.data.formats.blender import check_blender_split
from bn_nerf.nerf.data.scene import write_scene
from bn_nerf.nerf.method_configs import bn_nerf_cpu
from bn_nerf.nerf.model_components import metrics
from bn_nerf.nerf.models.nerf_model import BNNeRFModelConfig


@pytest.fixture
def scene(tmp_path) -> Path:
    write_scene(tmp_path / "scene", size=8, views={"train": 2, "val": 1, "test": 1})
    return tmp_path / "scene"


def error_of(data: Path, split: str = "train") -> str:
    with pytest.raises(InputError) as caught:
        check_blender_split(data, split)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_generated_scene_passes_the_check(scene):
    for split in ("train", "val", "test"):
        check_blender_split(scene, split)


def test_folder_without_transforms(tmp_path):
    assert str(tmp_path / "transforms_train.json") in error_of(tmp_path)
    assert "no such data folder" in error_of(tmp_path / "absent")


def test_transforms_naming_a_missing_image(scene):
    (scene / "train" / "r_1.png").unlink()
    message = error_of(scene)
    assert "transforms_train.json" in message and "r_1.png" in message and "frame 1" in message


def test_malformed_json(scene):
    (scene / "transforms_val.json").write_text('{"camera_angle_x": 0.69, "frames": [')
    message = error_of(scene, "val")
    assert "transforms_val.json" in message and "malformed JSON" in message


def test_transforms_without_camera_angle_x(scene):
    transforms = scene / "transforms_test.json"
    meta = json.loads(transforms.read_text())
    del meta["camera_angle_x"]
    transforms.write_text(json.dumps(meta))
    message = error_of(scene, "test")
    assert "transforms_test.json" in message and "camera_angle_x" in message


def test_images_of_mixed_sizes(scene):
    Image.new("RGBA", (5, 8)).save(scene / "train" / "r_1.png")
    message = error_of(scene)
    assert "mixed sizes" in message and "r_1.png is 5x8" in message


def test_truncated_image(scene):
    truncated(scene / "train" / "r_1.png")
    message = error_of(scene)
    assert str(scene / "train" / "r_1.png") in message and "truncated" in message


def test_an_image_replaced_after_a_check_is_checked_again(scene):
    check_blender_split(scene, "train")
    truncated(scene / "train" / "r_0.png")
    assert "r_0.png: unreadable image" in error_of(scene)


def edit_first_frame(scene: Path, split: str, **changes) -> Path:
    transforms = scene / f"transforms_{split}.json"
    meta = json.loads(transforms.read_text())
    meta["frames"][0].update(changes)
    transforms.write_text(json.dumps(meta))
    return transforms


@pytest.mark.parametrize("matrix, problem", [
    ([[1, 0], [0, 1]], "is not a 4x4 matrix of numbers"),
    ([[1, 0, 0, 0], [0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "is not a 4x4 matrix of numbers"),
    ([[1, 0, 0, "x"]] * 4, "is not a 4x4 matrix of numbers"),
    ([[1, 0, 0, math.nan]] * 4, "is not all finite"),
])
def test_transform_that_is_not_a_finite_4x4_matrix(scene, matrix, problem):
    transforms = edit_first_frame(scene, "val", transform_matrix=matrix)
    assert error_of(scene, "val") == f"{transforms}: frame 0's transform_matrix {problem}"


@pytest.mark.parametrize("angle", [0, -0.5, 3.2, "0.69", None, True])
def test_camera_angle_x_that_is_no_field_of_view(scene, angle):
    transforms = scene / "transforms_train.json"
    transforms.write_text(json.dumps({**json.loads(transforms.read_text()), "camera_angle_x": angle}))
    message = error_of(scene)
    assert message.startswith(f"{transforms}: camera_angle_x must be") and repr(angle) in message


@pytest.mark.parametrize("mode", ["P", "LA", "I;16"])
def test_image_that_nerfstudio_would_misread(scene, mode):
    """nerfstudio reads a palette image's indices as gray levels and asserts on two channels."""
    image = scene / "test" / "r_0.png"
    Image.open(image).convert("RGB").convert(mode).save(image)
    assert error_of(scene, "test") == f"{image}: a {mode} image; nerfstudio reads 8-bit grayscale, RGB or RGBA"


def test_frame_whose_file_path_is_not_a_string(scene):
    transforms = edit_first_frame(scene, "train", file_path=3)
    assert error_of(scene) == f"{transforms}: frame 0 needs a 'file_path' string and a 'transform_matrix'"


def truncate_a_training_image(scene: Path) -> Path:
    return truncated(scene / "train" / "r_1.png")


def drop_the_val_split(scene: Path) -> Path:
    (scene / "transforms_val.json").unlink()
    return scene / "transforms_val.json"


@pytest.mark.parametrize("damage", [truncate_a_training_image, drop_the_val_split])
def test_ns_train_reports_bad_input_on_one_line_and_leaves_no_run_folder(scene, damage):
    named = damage(scene)
    runs = scene.parent / "runs"
    result = subprocess.run(
        [Path(sys.executable).parent / "ns-train", "bn-nerf-cpu", "--data", scene, "--vis", "tensorboard",
         "--output-dir", runs],
        capture_output=True,
        text=True,
        timeout=120,
        # nerfstudio and torch print deprecation warnings of their own at import; not ours to judge.
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = result.stderr.strip().splitlines()
    assert error_lines == [error_lines[0]] and str(named) in error_lines[0], result.stderr
    # Checked before the run folder is made: no config.yml for ns-eval or ns-viewer to find.
    assert "Saving checkpoints" not in result.stdout and not runs.exists()


def training_config(scene: Path, output: Path):
    config = copy.deepcopy(bn_nerf_cpu.config)
    config.pipeline.datamanager.data = scene
    config.output_dir = output
    config.vis = "tensorboard"
    config.set_timestamp()
    return config


def test_a_run_failing_before_its_first_step_leaves_no_run_folder(scene, capsys):
    """Beyond the scene check: any failure while the trainer sets up (here the model's) removes the
    run folder that config.yml was saved to."""
    from nerfstudio.scripts.train import train_loop

    config = training_config(scene, scene.parent / "runs")
    config.pipeline.model.normalization = "no-such-kind"
    config.save_config()
    assert (config.get_base_dir() / "config.yml").is_file()
    with pytest.raises(SystemExit) as exit_info:
        train_loop(local_rank=0, world_size=1, config=config)
    assert exit_info.value.code == 2
    # A refused option is a usage error: one line naming it, as a bad scene gets.
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and "no-such-kind" in error_lines[0], error_lines
    assert list((scene.parent / "runs").iterdir()) == []


def test_an_earlier_runs_folder_named_again_is_never_removed(scene):
    from nerfstudio.scripts.train import train_loop

    config = training_config(scene, scene.parent / "runs")
    config.pipeline.model.normalization = "no-such-kind"
    earlier_checkpoint = config.get_base_dir() / "nerfstudio_models" / "step-000000999.ckpt"
    earlier_checkpoint.parent.mkdir(parents=True)
    earlier_checkpoint.write_bytes(b"an earlier run's weights")
    config.save_config()
    with pytest.raises(SystemExit) as exit_info:
        train_loop(local_rank=0, world_size=1, config=config)
    assert exit_info.value.code == 2
    assert earlier_checkpoint.is_file()


@pytest.fixture
def no_downloaded_weights(tmp_path, monkeypatch):
    """A torch hub folder holding nothing, as on a machine that never reached the internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    metrics._lpips_on_cpu.cache_clear()
    yield
    metrics._lpips_on_cpu.cache_clear()


def test_metrics_leave_out_lpips_with_one_warning_when_weights_are_absent(no_downloaded_weights):
    target = torch.rand(16, 16, 3)
    noisy = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = metrics.image_metrics(noisy, target)
        second = metrics.image_metrics(target, target)
    assert set(first) == {"psnr", "ssim"}
    assert 20 < first["psnr"] < 35 and 0 < first["ssim"] < 1
    assert second["psnr"] > 90 and second["ssim"] == pytest.approx(1.0)
    lpips_warnings = [w for w in caught if "LPIPS" in str(w.message)]
    assert len(lpips_warnings) == 1


@pytest.mark.parametrize("sampler", ["hierarchical", "occupancy"])
def test_model_metrics_work_offline(no_downloaded_weights, sampler):
    config = BNNeRFModelConfig(sampler=sampler, trunk_depth=2, trunk_width=16, skip_connections=(1,), colour_depth=1,
                               colour_width=8, occupancy_resolution=8)
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=1)
    image = torch.rand(8, 8, 3)
    levels = ("coarse", "fine") if sampler == "hierarchical" else ("",)
    outputs = {f"{kind}_{level}".rstrip("_"): torch.rand(8, 8, 3 if kind == "rgb" else 1)
               for kind in ("rgb", "accumulation", "depth") for level in levels}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics_dict, images = model.get_image_metrics_and_images(outputs, {"image": image})
    assert {"psnr", "ssim"} <= set(metrics_dict) and not any("lpips" in name for name in metrics_dict)
    if sampler == "hierarchical":
        assert {"coarse_psnr", "fine_psnr", "fine_ssim"} <= set(metrics_dict)
    assert images["img"].shape == (8, 8 * (1 + len(levels)), 3)


@pytest.mark.skipif(not metrics.alexnet_weights_path().is_file(), reason="AlexNet weights are not on this machine")
def test_metrics_include_lpips_when_weights_are_present():
    metrics._lpips_on_cpu.cache_clear()
    target = torch.rand(32, 32, 3)
    assert metrics.image_metrics(target, target)["lpips"] == pytest.approx(0.0, abs=1e-3)
