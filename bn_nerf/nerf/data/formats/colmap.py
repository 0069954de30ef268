"""COLMAP reconstructions: a model folder (sparse/0, as COLMAP writes it, or colmap/sparse/0, as
ns-process-data does) holding cameras, images and points3D, all text or all binary, beside images/.

Read with nerfstudio's COLMAP readers and camera-model table (parse_colmap_camera_params) and in its
colmap parser's conventions: images in image-id order, OpenCV camera axes turned to OpenGL's, COLMAP's
world (gravity along -y) turned to z up, every 8th image held out for evaluation, images_N/ for
`--downscale-factor N` (made with Pillow where missing, not with ffmpeg after a prompt). Every
camera, image and point is checked first, with a one-line error naming the file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nerfstudio.cameras.cameras import CAMERA_MODEL_TO_TYPE
from nerfstudio.data.utils import colmap_parsing_utils as colmap_utils
from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_interval
from nerfstudio.process_data.colmap_utils import parse_colmap_camera_params

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.data.extent import Pinholes
from bn_nerf.nerf.data.formats.checks import check_image_size, check_pinhole
from bn_nerf.nerf.data.formats.frames import CaptureFrames
from bn_nerf.nerf.data.formats.images import (MAX_AUTO_RESOLUTION, decode_all, downscale_factor_to_read,
                                              images_to_read)

MODEL_FOLDERS = (Path("sparse/0"), Path("colmap/sparse/0"))
MODEL_FILES = ("cameras", "images", "points3D")
IMAGES = "images"
# The COLMAP parser's default: every 8th image (by id) is an evaluation image.
EVAL_INTERVAL = 8
# COLMAP's world has gravity along -y; nerfstudio's colmap parser turns it to z up (rows x, z, -y).
COLMAP_WORLD_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def find_model(data: Path) -> Optional[Path]:
    return next((data / folder for folder in MODEL_FOLDERS if (data / folder).is_dir()), None)


def read_colmap(data: Path, downscale_factor: Optional[int] = None,
                max_auto_side: int = MAX_AUTO_RESOLUTION) -> CaptureFrames:
    """Check and read the COLMAP capture of folder `data`."""
    model = find_model(data)
    if model is None:
        raise InputError(f"{data}: no COLMAP model (expected " + " or ".join(str(data / f) for f in MODEL_FOLDERS) + ")")
    extension = ".txt" if (model / "cameras.txt").is_file() else ".bin"
    paths = {name: model / f"{name}{extension}" for name in MODEL_FILES}
    for path in paths.values():
        if not path.is_file():
            raise InputError(f"{path}: missing; a COLMAP model holds cameras, images and points3D, all .txt or all .bin")
    text = extension == ".txt"
    cameras = _read(paths["cameras"], colmap_utils.read_cameras_text if text else colmap_utils.read_cameras_binary)
    images = _read(paths["images"], colmap_utils.read_images_text if text else colmap_utils.read_images_binary)
    points = _read(paths["points3D"], colmap_utils.read_points3D_text if text else colmap_utils.read_points3D_binary)
    if not images:
        raise InputError(f"{paths['images']}: lists no images")

    intrinsics = {camera_id: _intrinsics(paths["cameras"], camera) for camera_id, camera in cameras.items()}
    models = sorted({camera["camera_model"] for camera in intrinsics.values()})
    if len(models) > 1:
        raise InputError(f"{paths['cameras']}: cameras of several models ({', '.join(models)}); nerfstudio reads one")

    ordered = [images[image_id] for image_id in sorted(images)]
    poses = np.stack([_pose(paths["images"], image, cameras) for image in ordered])
    image_folder = data / IMAGES
    originals = [image_folder / image.name for image in ordered]

    def downscaled(factor: int) -> list[Path]:
        # The colmap parser's mapping: images_N/ beside images/, the same relative path inside.
        return [data / f"{IMAGES}_{factor}" / path.relative_to(image_folder) for path in originals]

    factor = downscale_factor_to_read(originals, downscaled, data, downscale_factor, max_auto_side)
    read = images_to_read(originals, downscaled, factor,
                          lambda index, path: f"{paths['images']}: image {ordered[index].id} names missing {path}")
    decoded = decode_all(read)
    frame_intrinsics = [intrinsics[image.camera_id] for image in ordered]
    for image, path, camera, decoded_image in zip(ordered, read, frame_intrinsics, decoded):
        expected = (camera["w"] // factor, camera["h"] // factor)
        check_image_size(f"{paths['images']}: image {image.id} (camera {image.camera_id})", path, decoded_image.size, expected)

    xyz = np.array([point.xyz for point in points.values()], dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(xyz).all():
        raise InputError(f"{paths['points3D']}: holds points that are not finite")
    train, evaluation = get_train_eval_split_interval(read, EVAL_INTERVAL)

    def column(key: str) -> np.ndarray:
        return np.array([camera[key] for camera in frame_intrinsics], dtype=np.float64)

    return CaptureFrames(
        format_name=f"COLMAP model {model.relative_to(data)}",
        image_filenames=read,
        downscale_factor=factor,
        poses=poses,
        pinholes=Pinholes(fx=column("fl_x") / factor, fy=column("fl_y") / factor,
                          cx=column("cx") / factor, cy=column("cy") / factor,
                          width=column("w").astype(np.int64) // factor, height=column("h").astype(np.int64) // factor),
        distortion=np.array([camera["distortion"] for camera in frame_intrinsics]),
        camera_type=CAMERA_MODEL_TO_TYPE[models[0]],
        splits={"train": train, "val": evaluation, "test": evaluation},
        bounded=all(image.mode == "RGBA" for image in decoded) and any(image.transparent for image in decoded),
        points=xyz @ COLMAP_WORLD_TO_Z_UP.T,
        applied_transform=np.concatenate([COLMAP_WORLD_TO_Z_UP, np.zeros((3, 1))], axis=1),
        world_from_files=np.concatenate([COLMAP_WORLD_TO_Z_UP, np.zeros((3, 1))], axis=1),
    )


def _read(path: Path, reader: Callable):
    try:
        return reader(path)
    except (ValueError, IndexError, KeyError, struct.error, UnicodeDecodeError, AssertionError) as error:
        raise InputError(f"{path}: malformed COLMAP file ({type(error).__name__}: {error})") from None


def _intrinsics(cameras_path: Path, camera) -> dict:
    where = f"{cameras_path}: camera {camera.id} ({camera.model})"
    if not np.isfinite(camera.params).all():
        raise InputError(f"{where}: parameters are not all finite")
    try:
        parsed = parse_colmap_camera_params(camera)
    except NotImplementedError:
        raise InputError(f"{where}: a camera model nerfstudio does not read") from None
    except IndexError:
        raise InputError(f"{where}: too few parameters for its model ({len(camera.params)})") from None
    terms = {term: float(parsed.get(term, 0.0)) for term in ("k1", "k2", "k3", "k4", "k5", "k6", "p1", "p2")}
    # FULL_OPENCV's rational terms have no place in nerfstudio's camera model (whose k4 is a fisheye's).
    rational = ("k4", "k5", "k6") if parsed["camera_model"] == "OPENCV" else ("k5", "k6")
    if any(terms[term] != 0 for term in rational):
        raise InputError(f"{where}: rational distortion terms ({', '.join(rational)}), which nerfstudio cannot model")
    if camera.width <= 0 or camera.height <= 0:
        raise InputError(f"{where}: image size {camera.width}x{camera.height}")
    check_pinhole(where, parsed["fl_x"], parsed["fl_y"], parsed["cx"], parsed["cy"], camera.width, camera.height)
    return {**parsed, "distortion": [terms[term] for term in ("k1", "k2", "k3", "k4", "p1", "p2")]}


def _pose(images_path: Path, image, cameras: dict) -> np.ndarray:
    """The image's OpenGL camera-to-world matrix in the z-up world (nerfstudio's colmap parser's)."""
    where = f"{images_path}: image {image.id} ({image.name})"
    if image.camera_id not in cameras:
        raise InputError(f"{where}: names camera {image.camera_id}, which the model's cameras do not hold")
    qvec, tvec = np.asarray(image.qvec, dtype=np.float64), np.asarray(image.tvec, dtype=np.float64)
    if qvec.shape != (4,) or tvec.shape != (3,) or not (np.isfinite(qvec).all() and np.isfinite(tvec).all()):
        raise InputError(f"{where}: its pose is not a finite quaternion and translation")
    if np.linalg.norm(qvec) < 1e-8:
        raise InputError(f"{where}: its rotation quaternion is zero")
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = colmap_utils.qvec2rotmat(qvec / np.linalg.norm(qvec))
    world_to_camera[:3, 3] = tvec
    camera_to_world = np.linalg.inv(world_to_camera)
    camera_to_world[:3, 1:3] *= -1  # OpenCV camera axes (y down, z forward) to OpenGL's
    camera_to_world[:3] = COLMAP_WORLD_TO_Z_UP @ camera_to_world[:3]
    return camera_to_world
