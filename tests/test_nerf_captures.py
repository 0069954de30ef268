"""Captures (nerfstudio transforms.json, COLMAP, LLFF) are recognised from the folder, checked whole
before a run folder exists, read back as written, and normalized so that the scene box holds the
cameras and the object, with a near plane in front of every surface; Blender scenes read as before."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from PIL import Image

from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from conftest import truncated

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.data.capture import OPENCV_DISTORTION, capture_intrinsics, trace_capture, write_capture
from bn_nerf.nerf.data.dataparser import SceneDataParserConfig, check_scene
from bn_nerf.nerf.data.formats.detect import NO_FORMAT, detect_format
from bn_nerf.nerf.data.scene import SLAB_MAX, SLAB_MIN, SPHERE_CENTRE, SPHERE_RADIUS, write_scene
from bn_nerf.nerf.method_configs import bn_diner_cpu

SIZE = 48
VIEWS = 16
FORMATS = ("nerfstudio", "colmap", "llff")


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("captures")
    written = {name: write_capture(root / name, name, size=SIZE, views=VIEWS) for name in FORMATS}
    write_scene(root / "blender", size=8, views={"train": 3, "val": 1, "test": 1})
    return {**written, "blender": root / "blender"}


@pytest.fixture
def copy_of(captures, tmp_path):
    """A copy of a pristine capture, to damage."""
    def copy_capture(name: str) -> Path:
        return Path(shutil.copytree(captures[name], tmp_path / name))
    return copy_capture


def read(data: Path, split: str = "train", **options):
    return SceneDataParserConfig(data=data, **options).setup().get_dataparser_outputs(split)


def to_normalized(outputs, points: np.ndarray) -> np.ndarray:
    """World points of the files (the scene's own coordinates) in the outputs' normalized coordinates."""
    transform = outputs.dataparser_transform.double().numpy()
    return outputs.dataparser_scale * (points @ transform[:, :3].T + transform[:, 3])


def world_camera_to_worlds(outputs) -> np.ndarray:
    """The outputs' cameras back in the files' world coordinates (3x4 OpenGL camera-to-world)."""
    transform = outputs.dataparser_transform.double().numpy()
    normalized = outputs.cameras.camera_to_worlds.double().numpy()
    rotation = transform[:, :3].T @ normalized[:, :, :3]
    position = (normalized[:, :, 3] / outputs.dataparser_scale - transform[:, 3]) @ transform[:, :3]
    return np.concatenate([rotation, position[:, :, None]], axis=-1)


@pytest.mark.parametrize("name", [*FORMATS, "blender"])
def test_each_format_is_recognised_from_the_folder(captures, name):
    assert detect_format(captures[name]) == name


def test_a_folder_of_no_format_names_every_format_it_looks_for(tmp_path):
    with pytest.raises(InputError) as caught:
        detect_format(tmp_path)
    assert str(caught.value) == f"{tmp_path}: {NO_FORMAT}"


@pytest.mark.parametrize("name", FORMATS)
def test_capture_extent_holds_the_cameras_and_the_object_with_near_before_every_surface(captures, name, capsys):
    train, val = read(captures[name], "train"), read(captures[name], "val")
    summary = capsys.readouterr().out
    extent = train.metadata["scene_extent"]
    assert summary.count("unbounded") == 1, "the summary is printed once, for the training split"
    assert extent == val.metadata["scene_extent"] and not extent.bounded and extent.far >= 100
    assert torch.equal(train.scene_box.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    for outputs in (train, val):
        assert outputs.cameras.camera_to_worlds[:, :, 3].abs().max() <= 1
    slab_corners = np.array(np.meshgrid(*zip(SLAB_MIN, SLAB_MAX))).reshape(3, -1).T
    assert np.abs(to_normalized(train, slab_corners)).max() <= 1
    sphere_centre = to_normalized(train, SPHERE_CENTRE[None])[0]
    assert np.abs(sphere_centre).max() + SPHERE_RADIUS * train.dataparser_scale <= 1
    # The nearest surface any training pixel sees (rays traced in the files' world, where the scene is).
    image_size = torch.tensor([train.cameras.height[0, 0], train.cameras.width[0, 0]])
    rays = train.cameras.generate_rays(torch.arange(len(train.cameras))[:, None].repeat(1, 64).reshape(-1, 1),
                                       coords=torch.rand(len(train.cameras) * 64, 2) * image_size)
    world = world_camera_to_worlds(train)
    origins = np.repeat(world[:, :, 3], 64, axis=0)
    directions = rays.directions.double().numpy() @ train.dataparser_transform[:, :3].double().numpy()
    distance, _ = trace_capture(origins, directions)
    assert 0 < extent.near < distance.min() * train.dataparser_scale


def test_forward_facing_box_reaches_in_front_of_the_cameras(captures):
    outputs = read(captures["llff"])
    bounds = np.load(captures["llff"] / "poses_bounds.npy")[:, 15:]
    poses = outputs.cameras.camera_to_worlds.double().numpy()
    train_rows = [int(path.stem.split("_")[1]) - 1 for path in outputs.image_filenames]
    forward = -poses[:, :, 2]
    in_front = poses[:, :, 3] + bounds[train_rows, :1] * outputs.dataparser_scale * forward
    assert np.abs(in_front).max() <= 1
    # The cameras sit on a small plane; the box is deep in front of them, not just around them.
    depth_along_view = (poses[:, :, 3] - poses[:, :, 3].mean(0)) @ forward.mean(0)
    assert np.ptp(depth_along_view) < 1e-3 < bounds.min() * outputs.dataparser_scale


def test_blender_scene_reads_as_nerfstudios_blender_parser(captures, capsys):
    ours = read(captures["blender"])
    theirs = BlenderDataParserConfig(data=captures["blender"]).setup().get_dataparser_outputs("train")
    assert ours.image_filenames == theirs.image_filenames
    assert torch.equal(ours.cameras.camera_to_worlds, theirs.cameras.camera_to_worlds)
    assert torch.equal(ours.scene_box.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
    extent = ours.metadata["scene_extent"]
    assert (extent.bounded, extent.near, extent.far) == (True, 2.0, 6.0)
    assert "Blender" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["nerfstudio", "colmap"])
def test_intrinsics_distortion_and_poses_read_back_as_written(captures, name):
    outputs = read(captures[name])
    written = capture_intrinsics(SIZE)
    cameras = outputs.cameras
    for ours, key in ((cameras.fx, "fl_x"), (cameras.fy, "fl_y"), (cameras.cx, "cx"), (cameras.cy, "cy"),
                      (cameras.width, "w"), (cameras.height, "h")):
        assert torch.allclose(ours.double(), torch.tensor(float(written[key])).double(), atol=1e-4), key
    distortion = [OPENCV_DISTORTION[k] if k in OPENCV_DISTORTION else 0.0 for k in ("k1", "k2", "k3", "k4", "p1", "p2")]
    assert torch.allclose(cameras.distortion_params, torch.tensor(distortion), atol=1e-7)
    # Each image with its own pose: both formats hold the same views (same seed), the transforms.json shuffled.
    frames = json.loads((captures["nerfstudio"] / "transforms.json").read_text())["frames"]
    written_poses = {Path(frame["file_path"]).name: np.array(frame["transform_matrix"])[:3] for frame in frames}
    for path, pose in zip(outputs.image_filenames, world_camera_to_worlds(outputs)):
        assert np.allclose(pose, written_poses[path.name], atol=1e-4), path.name


def test_llff_focal_follows_the_images_read(captures, copy_of):
    full = read(captures["llff"])
    assert torch.allclose(full.cameras.fx, torch.tensor(capture_intrinsics(SIZE)["fl_x"]))
    assert torch.equal(full.cameras.cx, torch.full_like(full.cameras.cx, SIZE / 2))
    data = copy_of("llff")
    # Only images_2/ left, as fern holds images_8/ alone: hwf is for the full size, the focal halves.
    (data / "images_2").mkdir()
    for image in sorted((data / "images").iterdir()):
        with Image.open(image) as full_size:
            full_size.resize((SIZE // 2, SIZE * 3 // 8)).save(data / "images_2" / image.name)
    shutil.rmtree(data / "images")
    half = read(data)
    assert all(path.parent.name == "images_2" for path in half.image_filenames)
    assert torch.allclose(half.cameras.fx, full.cameras.fx / 2)
    assert torch.equal(half.cameras.width, full.cameras.width // 2)


def test_downscale_factor_reads_images_n_and_makes_missing_ones(copy_of):
    data = copy_of("nerfstudio")
    shutil.rmtree(data / "images_2")
    outputs = read(data, downscale_factor=2)
    assert all(path.parent.name == "images_2" and path.is_file() for path in outputs.image_filenames)
    assert Image.open(outputs.image_filenames[0]).size == (SIZE // 2, SIZE * 3 // 8)
    assert torch.allclose(outputs.cameras.fx, torch.tensor(capture_intrinsics(SIZE)["fl_x"] / 2))


def enlarged_capture(data: Path, factor: int) -> Path:
    """The transforms.json capture at `data` with its images and intrinsics `factor` times larger
    (no images_N/): a phone-sized capture without tracing a phone-sized image."""
    shutil.rmtree(data / "images_2")
    meta = json.loads((data / "transforms.json").read_text())
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        meta[key] = meta[key] * factor
    (data / "transforms.json").write_text(json.dumps(meta))
    for frame in meta["frames"]:
        image = Image.open(data / frame["file_path"])
        image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST).save(data / frame["file_path"])
    return data


def test_cpu_presets_read_a_phone_sized_capture_downscaled_and_say_so(copy_of, capsys):
    data = enlarged_capture(copy_of("nerfstudio"), 20)  # 960x720
    cpu = parse_ns_train("bn-diner-cpu", "--data", str(data)).pipeline.datamanager.dataparser
    gpu = parse_ns_train("bn-diner", "--data", str(data)).pipeline.datamanager.dataparser
    chosen = parse_ns_train("bn-diner-cpu", "--data", str(data), "bn-scene-data", "--downscale-factor", "1")
    for parser in (cpu, gpu, chosen.pipeline.datamanager.dataparser):
        parser.data = data
    capsys.readouterr()
    outputs = cpu.setup().get_dataparser_outputs("train")
    # The longer side halved to 640 or fewer: images_2/ made with Pillow, the intrinsics halved.
    assert all(path.parent.name == "images_2" for path in outputs.image_filenames)
    assert Image.open(outputs.image_filenames[0]).size == (480, 360)
    assert int(outputs.cameras.width[0]) == 480
    assert "images read at 480x360, downscaled 2x (--downscale-factor overrides)" in capsys.readouterr().out.replace("\n", " ")
    # nerfstudio's 1,600 pixels for the GPU presets, and a factor named on the command line stands.
    for parser in (gpu, chosen.pipeline.datamanager.dataparser):
        assert Image.open(parser.setup().get_dataparser_outputs("train").image_filenames[0]).size == (960, 720)


def test_a_capture_whose_images_would_not_fit_in_memory_is_refused_in_one_line_naming_the_factor(copy_of, monkeypatch):
    import bn_nerf.nerf.data.dataparser as dataparser

    data = enlarged_capture(copy_of("nerfstudio"), 20)  # 16 images of 960x720: 133 MB as float32 RGB
    monkeypatch.setattr(dataparser, "available_memory_bytes", lambda: dataparser.TRAINING_MEMORY_BESIDE_IMAGES + 40 * 2**20)
    with pytest.raises(InputError) as refused:
        check_scene(data)
    message = str(refused.value)
    assert message.startswith(f"{data}: 16 images at 960x720 need about") and "\n" not in message
    assert message.endswith("read them smaller with --downscale-factor 2")  # a quarter of 133 MB fits in 40
    check_scene(data, downscale_factor=2)
    monkeypatch.setattr(dataparser, "available_memory_bytes", lambda: None)  # a system that does not say
    check_scene(data)


def parse_ns_train(*arguments: str):
    """What ns-train's command line makes of `arguments`, with --data handed on as ns-train does."""
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    config = tyro.cli(AnnotatedBaseConfigUnion, args=list(arguments))
    config.pipeline.datamanager.data = config.data
    return config


def test_a_parser_named_by_hand_is_used(captures):
    by_hand = parse_ns_train("bn-diner-cpu", "--data", str(captures["nerfstudio"]), "nerfstudio-data")
    parser = by_hand.pipeline.datamanager.dataparser
    assert type(parser) is NerfstudioDataParserConfig
    parser.data = captures["nerfstudio"]
    assert len(parser.setup().get_dataparser_outputs("train").image_filenames) == len(read(captures["nerfstudio"]).image_filenames)
    blender = parse_ns_train("bn-nerf-cpu", "--data", str(captures["blender"]), "blender-data")
    assert type(blender.pipeline.datamanager.dataparser) is BlenderDataParserConfig
    default = parse_ns_train("bn-diner", "--data", str(captures["colmap"]))
    assert type(default.pipeline.datamanager.dataparser) is SceneDataParserConfig
    nerfacto = parse_ns_train("nerfacto", "--data", str(captures["llff"]), "bn-scene-data", "--downscale-factor", "2")
    assert type(nerfacto.pipeline.datamanager.dataparser) is SceneDataParserConfig
    assert nerfacto.pipeline.datamanager.dataparser.downscale_factor == 2


def edit_transforms(data: Path, frame: int | None = None, **changes) -> Path:
    transforms = data / "transforms.json"
    meta = json.loads(transforms.read_text())
    (meta if frame is None else meta["frames"][frame]).update(changes)
    transforms.write_text(json.dumps(meta))
    return transforms


def frame_image(data: Path, frame: int) -> Path:
    return data / json.loads((data / "transforms.json").read_text())["frames"][frame]["file_path"]


def edit_line(path: Path, line: int, edit) -> Path:
    lines = path.read_text().splitlines()
    lines[line] = edit(lines[line].split())
    path.write_text("\n".join(lines) + "\n")
    return path


def edit_rows(data: Path, edit) -> Path:
    path = data / "poses_bounds.npy"
    np.save(path, edit(np.load(path)))
    return path


# (capture, damage returning the file the error must name, words the error must hold)
BAD_INPUTS = {
    "truncated image": ("nerfstudio", lambda d: truncated(frame_image(d, 3)), "unreadable image"),
    "missing image": ("nerfstudio", lambda d: (frame_image(d, 2).unlink(), frame_image(d, 2))[1], "missing image"),
    "pose not 4x4": ("nerfstudio", lambda d: edit_transforms(d, 1, transform_matrix=[[1, 0, 0, 0]] * 3), "4x4"),
    "pose not finite": ("nerfstudio", lambda d: edit_transforms(d, 0, transform_matrix=[[float("nan")] * 4] * 4),
                        "not all finite"),
    "focal not positive": ("nerfstudio", lambda d: edit_transforms(d, fl_x=0), "fl_x must be a positive number"),
    "principal point outside": ("nerfstudio", lambda d: edit_transforms(d, cx=SIZE + 5), "lies outside"),
    "unknown camera model": ("nerfstudio", lambda d: edit_transforms(d, camera_model="OPENCV5"), "unknown camera_model"),
    "distortion not a number": ("nerfstudio", lambda d: edit_transforms(d, k1="0.1"), "k1 must be a number"),
    "size disagrees with w": ("nerfstudio", lambda d: (edit_transforms(d, w=SIZE + 2), frame_image(d, 0))[1],
                              f"the cameras say {SIZE + 2}x"),
    "model missing a file": ("colmap", lambda d: ((d / "sparse/0/points3D.txt").unlink(), d / "sparse/0/points3D.txt")[1],
                             "missing"),
    "colmap focal not positive": ("colmap", lambda d: edit_line(d / "sparse/0/cameras.txt", 0,
                                                                lambda f: " ".join(f[:4] + ["-3"] + f[5:])), "fl_x"),
    "colmap quaternion not finite": ("colmap", lambda d: edit_line(d / "sparse/0/images.txt", 2,
                                                                   lambda f: " ".join([f[0], "nan"] + f[2:])), "image 2"),
    "colmap image of another size": ("colmap", lambda d: (Image.new("RGB", (SIZE, SIZE)).save(d / "images/frame_00004.png"),
                                                          d / "images/frame_00004.png")[1], f"is {SIZE}x{SIZE}"),
    "llff row of 16 numbers": ("llff", lambda d: edit_rows(d, lambda rows: rows[:, :16]), "17 numbers"),
    "llff row not finite": ("llff", lambda d: edit_rows(d, lambda rows: np.where(np.arange(17) == 3, np.inf, rows)),
                            "row 0 is not 17 finite numbers"),
    "llff image missing": ("llff", lambda d: ((d / "images/frame_00002.png").unlink(), d / "poses_bounds.npy")[1],
                           f"{VIEWS} rows for {VIEWS - 1} images"),
    "llff truncated image": ("llff", lambda d: truncated(d / "images/frame_00005.png"), "unreadable image"),
}


def training_config(data: Path, runs: Path):
    config = copy.deepcopy(bn_diner_cpu.config)
    config.pipeline.datamanager.data = data
    config.output_dir = runs
    config.vis = "tensorboard"
    config.set_timestamp()
    return config


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_capture_ends_in_one_line_naming_the_file_before_a_run_folder(copy_of, case, capsys):
    name, damage, words = BAD_INPUTS[case]
    data = copy_of(name)
    named = damage(data)
    runs = data.parent / "runs"
    with pytest.raises(SystemExit) as exit_info:
        training_config(data, runs).save_config()
    assert exit_info.value.code == 2
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and str(named) in error_lines[0] and words in error_lines[0], error_lines
    assert not runs.exists()


def test_a_run_on_a_folder_of_no_format_says_what_it_looked_for(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        training_config(tmp_path / "empty", runs).save_config()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'empty'}: {NO_FORMAT}"]
    assert not runs.exists()


def test_the_whole_scene_check_passes_every_generated_capture(captures):
    for name in (*FORMATS, "blender"):
        check_scene(captures[name])


def test_generated_images_are_what_the_cameras_see(captures):
    """The capture's pixels are the scene traced along nerfstudio's rays for the written cameras
    (up to supersampling): a pixel whose neighbourhood is flat matches its centre ray's colour."""
    outputs = read(captures["nerfstudio"])
    image = np.asarray(Image.open(outputs.image_filenames[0]), dtype=np.float64) / 255
    rays = outputs.cameras.generate_rays(0, keep_shape=True)
    world = world_camera_to_worlds(outputs)[0]
    directions = rays.directions.double().numpy().reshape(-1, 3) @ outputs.dataparser_transform[:, :3].double().numpy()
    _, colour = trace_capture(np.broadcast_to(world[:, 3], directions.shape), directions)
    error = np.abs(colour.reshape(image.shape) - image).max(-1)
    assert np.median(error) < 0.03
