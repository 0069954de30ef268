"""nerfstudio / instant-ngp captures: one transforms.json (what ns-process-data and instant-ngp's
colmap2nerf.py write) whose frames name their images relative to the file.

Read as nerfstudio's nerfstudio-data parser reads it -- intrinsics shared at the top or given per
frame, camera_model and its distortion terms, frames sorted by file name, images_N/ for
`--downscale-factor N`, a 90/10 train/eval split or the file's own {train,val,test}_filenames,
mask_path -- and as instant-ngp does where nerfstudio would stop: a focal length from
camera_angle_x (and camera_angle_y), an image size from the image itself. Every field is checked
before anything is built, with a one-line error naming the file and the frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import trimesh

from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import CAMERA_MODEL_TO_TYPE, CameraType
from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction

from bn_nerf.io.errors import InputError
from bn_nerf.nerf.data.extent import Pinholes
from bn_nerf.nerf.data.formats.checks import check_image_size, check_pinhole, finite_matrix, is_number, read_json
from bn_nerf.nerf.data.formats.frames import CaptureFrames
from bn_nerf.nerf.data.formats.images import (
    MASK_MODES,
    MAX_AUTO_RESOLUTION,
    decode_all,
    downscale_factor_to_read,
    images_to_read,
    make_missing_downscaled,
)

TRANSFORMS = "transforms.json"
# nerfstudio's distortion parameters, in the order of its camera model's vector.
DISTORTION_TERMS = ("k1", "k2", "k3", "k4", "p1", "p2")
# nerfstudio-data's default split.
TRAIN_FRACTION = 0.9
SPLITS = ("train", "val", "test")


def read_transforms(data: Path, downscale_factor: Optional[int] = None,
                    max_auto_side: int = MAX_AUTO_RESOLUTION) -> CaptureFrames:
    """Check and read the capture of `data` (a folder holding transforms.json, or the file)."""
    transforms = data if data.suffix == ".json" else data / TRANSFORMS
    folder = transforms.parent
    meta = read_json(transforms)
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise InputError(f"{transforms}: needs a list of 'frames'")
    if not meta["frames"]:
        raise InputError(f"{transforms}: lists no frames")
    camera_model = meta.get("camera_model", "PINHOLE")
    if camera_model not in CAMERA_MODEL_TO_TYPE:
        raise InputError(f"{transforms}: unknown camera_model {camera_model!r}; nerfstudio reads "
                         + ", ".join(CAMERA_MODEL_TO_TYPE))

    frames = meta["frames"]
    poses = np.stack([_pose(transforms, index, frame) for index, frame in enumerate(frames)])
    originals = [folder / frame["file_path"] for frame in frames]

    def downscaled(factor: int) -> list[Path]:
        # nerfstudio-data's mapping: images_N/ beside the file, whatever folder the frame names.
        return [folder / f"images_{factor}" / path.name for path in originals]

    factor = downscale_factor_to_read(originals, downscaled, folder, downscale_factor, max_auto_side)
    read = images_to_read(originals, downscaled, factor,
                          lambda index, path: f"{transforms}: frame {index} names missing image {path}")
    images = decode_all(read)

    intrinsics = [_intrinsics(transforms, meta, index, frame, originals[index]) for index, frame in enumerate(frames)]
    for index, (image, path, camera) in enumerate(zip(images, read, intrinsics)):
        expected = (int(camera["w"] / factor), int(camera["h"] / factor))
        check_image_size(f"{transforms}: frame {index}", path, image.size, expected)
    masks = _masks(transforms, folder, frames, factor, [image.size for image in images])

    def read_path(name: str) -> Path:
        """The file read for an image name as the file lists it (nerfstudio-data's mapping)."""
        return folder / name if factor == 1 else folder / f"images_{factor}" / Path(name).name

    # nerfstudio-data sorts the frames by the file read, so the split does not depend on their order.
    order = np.argsort([str(path) for path in read], kind="stable")
    read = [read[index] for index in order]
    intrinsics = [intrinsics[index] for index in order]
    camera_type = CAMERA_MODEL_TO_TYPE[camera_model]
    return CaptureFrames(
        format_name=f"nerfstudio capture {transforms.name}",
        image_filenames=read,
        downscale_factor=factor,
        poses=poses[order],
        pinholes=Pinholes(
            fx=np.array([camera["fl_x"] for camera in intrinsics]) / factor,
            fy=np.array([camera["fl_y"] for camera in intrinsics]) / factor,
            cx=np.array([camera["cx"] for camera in intrinsics]) / factor,
            cy=np.array([camera["cy"] for camera in intrinsics]) / factor,
            width=np.array([int(camera["w"] / factor) for camera in intrinsics]),
            height=np.array([int(camera["h"] / factor) for camera in intrinsics]),
        ),
        distortion=np.array([camera["distortion"] for camera in intrinsics]),
        camera_type=camera_type,
        splits=_splits(transforms, meta, read, read_path),
        bounded=all(image.mode == "RGBA" for image in images) and any(image.transparent for image in images),
        points=_sparse_points(transforms, folder, meta),
        mask_filenames=None if masks is None else [masks[index] for index in order],
        applied_transform=(finite_matrix(meta["applied_transform"], (3, 4), f"{transforms}: applied_transform")
                           if "applied_transform" in meta else None),
        camera_metadata=({"fisheye_crop_radius": meta["fisheye_crop_radius"]}
                         if camera_type == CameraType.FISHEYE and is_number(meta.get("fisheye_crop_radius")) else {}),
    )


def _pose(transforms: Path, index: int, frame) -> np.ndarray:
    if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str) or "transform_matrix" not in frame:
        raise InputError(f"{transforms}: frame {index} needs a 'file_path' string and a 'transform_matrix'")
    return finite_matrix(frame["transform_matrix"], (4, 4), f"{transforms}: frame {index}'s transform_matrix")


def _intrinsics(transforms: Path, meta: dict, index: int, frame: dict, original: Path) -> dict:
    """A frame's own intrinsics where it has them, else the file's shared ones, checked."""
    def value(key: str):
        return frame.get(key, meta.get(key))

    where = f"{transforms}: frame {index}" if any(key in frame for key in ("fl_x", "w", "cx", "camera_angle_x")) else str(transforms)
    width, height = value("w"), value("h")
    if width is None and height is None:
        # instant-ngp reads the size from the image (nerfstudio would stop).
        if not original.is_file():
            raise InputError(f"{where}: states no image size (w, h), and {original} is missing to read it from")
        width, height = decode_all([original])[0].size
    for name, side in (("w", width), ("h", height)):
        if not is_number(side) or side <= 0 or side != int(side):
            raise InputError(f"{where}: image {name} must be a positive whole number of pixels; got {side!r}")
    width, height = int(width), int(height)
    fx = _focal(where, value("fl_x"), value("camera_angle_x"), width, "fl_x", "camera_angle_x")
    fy = _focal(where, value("fl_y"), value("camera_angle_y"), height, "fl_y", "camera_angle_y") if (
        value("fl_y") is not None or value("camera_angle_y") is not None) else fx
    cx, cy = value("cx"), value("cy")
    cx, cy = width / 2 if cx is None else cx, height / 2 if cy is None else cy
    check_pinhole(where, fx, fy, cx, cy, width, height)
    return {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": width, "h": height, "distortion": _distortion(where, value)}


def _focal(where: str, focal, angle, side: int, focal_name: str, angle_name: str) -> float:
    if focal is not None:
        return focal  # checked with the principal point
    if angle is None:
        raise InputError(f"{where}: needs a focal length ({focal_name}) or a field of view ({angle_name})")
    if not is_number(angle) or not 0 < angle < math.pi:
        raise InputError(f"{where}: {angle_name} must be a field of view in radians, between 0 and pi; got {angle!r}")
    return side / 2 / math.tan(angle / 2)


def _distortion(where: str, value) -> list[float]:
    if value("distortion_params") is not None:
        terms = value("distortion_params")
        if not isinstance(terms, list) or len(terms) != 6 or not all(is_number(term) for term in terms):
            raise InputError(f"{where}: distortion_params must be 6 numbers (k1, k2, k3, k4, p1, p2); got {terms!r}")
        return [float(term) for term in terms]
    for term in DISTORTION_TERMS:
        if value(term) is not None and not is_number(value(term)):
            raise InputError(f"{where}: distortion term {term} must be a number; got {value(term)!r}")
    return camera_utils.get_distortion_params(**{term: float(value(term) or 0.0) for term in DISTORTION_TERMS}).tolist()


def _masks(transforms: Path, folder: Path, frames: list, factor: int, sizes: list) -> Optional[list[Path]]:
    """The masks the frames name (all or none), at the resolution read and of their images' sizes."""
    named = ["mask_path" in frame for frame in frames]
    if not any(named):
        return None
    if not all(named):
        raise InputError(f"{transforms}: frame {named.index(False)} has no mask_path, while other frames do")
    originals = [folder / frame["mask_path"] for frame in frames]
    if factor == 1:
        masks = originals
    else:
        masks = [folder / f"masks_{factor}" / path.name for path in originals]
        make_missing_downscaled(originals, masks, factor, masks=True)
    for index, path in enumerate(masks):
        if not path.is_file():
            raise InputError(f"{transforms}: frame {index} names missing mask {path}")
    for index, (mask, path, size) in enumerate(zip(decode_all(masks, MASK_MODES), masks, sizes)):
        check_image_size(f"{transforms}: frame {index}", path, mask.size, size)
    return masks


def _splits(transforms: Path, meta: dict, read: list[Path], resolve) -> dict[str, np.ndarray]:
    """The file's own {train,val,test}_filenames where it lists any, else nerfstudio-data's 90/10."""
    listed = [split for split in SPLITS if f"{split}_filenames" in meta]
    if not listed:
        train, evaluation = get_train_eval_split_fraction(read, TRAIN_FRACTION)
        return {"train": train, "val": evaluation, "test": evaluation}
    index_of = {path: index for index, path in enumerate(read)}
    splits = {}
    for split in listed:
        names = meta[f"{split}_filenames"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InputError(f"{transforms}: {split}_filenames must be a list of file names")
        unknown = [name for name in names if resolve(name) not in index_of]
        if unknown:
            raise InputError(f"{transforms}: {split}_filenames names {unknown[0]!r}, which no frame reads")
        splits[split] = np.array(sorted(index_of[resolve(name)] for name in names), dtype=np.int64)
    return splits


def _sparse_points(transforms: Path, folder: Path, meta: dict) -> Optional[np.ndarray]:
    """The point cloud ply_file_path names (ns-process-data's sparse_pc.ply), in the frames' world."""
    if "ply_file_path" not in meta:
        return None
    ply = folder / str(meta["ply_file_path"])
    if not ply.is_file():
        raise InputError(f"{transforms}: ply_file_path names missing point cloud {ply}")
    try:
        points = np.asarray(trimesh.load(ply, file_type="ply").vertices, dtype=np.float64)
    except Exception as error:  # trimesh raises many kinds for a damaged file; each is one bad file
        raise InputError(f"{ply}: unreadable point cloud ({type(error).__name__}: {error})") from None
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise InputError(f"{ply}: not a cloud of finite 3D points")
    return points
