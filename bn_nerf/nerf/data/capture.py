"""The embedded scene as a real capture: the checkered sphere on its gridded slab (scene.py) inside a
textured far background, photographed without alpha and written in the formats real captures come
in, so that the capture readers (bn_nerf.nerf.data.formats) and scene contraction can be tested without
a download:

  nerfstudio  transforms.json as ns-process-data and instant-ngp's colmap2nerf.py write it: shared
              OPENCV intrinsics with distortion, frames in shuffled order, images/ and images_2/,
              and the sparse points as sparse_pc.ply (ply_file_path);
  colmap      a COLMAP text model, sparse/0/{cameras,images,points3D}.txt beside images/;
  llff        poses_bounds.npy beside images/, forward-facing cameras on a small plane.

Every pixel is the average of supersampled rays that nerfstudio's own camera model (Cameras with
the written intrinsics and distortion, `generate_rays`) gives for it, so the images are exactly
what the files say. The background is a textured sphere around the object, far outside the
region a capture's inner box should hold, as the walls of a room or the trees behind a garden are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType

from bn_nerf.nerf.data.scene import (
    SLAB_MAX,
    SLAB_MIN,
    SPHERE_CENTRE,
    SPHERE_RADIUS,
    look_at_pose,
    trace_object,
)

CaptureFormat = Literal["nerfstudio", "colmap", "llff"]
CAPTURE_FORMATS: tuple[CaptureFormat, ...] = ("nerfstudio", "colmap", "llff")

# The object's farthest point from the origin (a slab corner), and the background sphere's radius:
# ten times that, so the background lies well outside any sensible inner box.
OBJECT_RADIUS = float(np.linalg.norm(np.maximum(np.abs(SLAB_MIN), np.abs(SLAB_MAX))))
BACKGROUND_RADIUS = 10.0 * OBJECT_RADIUS
ORBIT_DISTANCE = 4.0
# Forward-facing (LLFF) cameras: on a plane this far from the object, within this half-extent.
FORWARD_DISTANCE = 4.0
FORWARD_SPREAD = 0.5
SUPERSAMPLING = 2
# OpenCV radial (k1, k2) and tangential (p1, p2) terms, as a phone's main camera has about.
OPENCV_DISTORTION = {"k1": -0.06, "k2": 0.015, "p1": 0.0012, "p2": -0.0008}
SPARSE_POINTS_ON_OBJECT = 800
SPARSE_POINTS_ON_BACKGROUND = 150


def capture_intrinsics(size: int) -> dict[str, float | int]:
    """Shared intrinsics of a size-pixel-wide, 3:4 landscape capture: unequal focal lengths and a
    principal point off the centre, so a reader that swaps or ignores them shows it."""
    width, height = size, (3 * size) // 4
    return {"fl_x": 0.95 * width, "fl_y": 0.93 * width, "cx": width / 2 + 0.7, "cy": height / 2 - 0.4,
            "w": width, "h": height}


def trace_capture(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each unit ray to what it sees and the colour there: the object where the ray
    hits it, else the inside of the background sphere (every ray from inside it meets it)."""
    distance, colour = trace_object(origins, directions)
    along = np.sum(origins * directions, axis=-1)
    to_background = -along + np.sqrt(along**2 - np.sum(origins**2, axis=-1) + BACKGROUND_RADIUS**2)
    sees_background = ~np.isfinite(distance)
    points = origins[sees_background] + to_background[sees_background, None] * directions[sees_background]
    colour[sees_background] = _background_colour(points)
    return np.where(sees_background, to_background, distance), colour


def _background_colour(points: np.ndarray) -> np.ndarray:
    """A sky-to-ground gradient under a coarse longitude/latitude checker and finer stripes."""
    local = points / BACKGROUND_RADIUS
    longitude = np.arctan2(local[:, 1], local[:, 0])
    latitude = np.arcsin(np.clip(local[:, 2], -1.0, 1.0))
    checker = (np.floor(longitude / (2 * math.pi) * 24) + np.floor((latitude / math.pi + 0.5) * 12)) % 2
    height = 0.5 + 0.5 * np.sin(latitude)
    gradient = np.stack([0.35 + 0.3 * height, 0.45 + 0.2 * height, 0.3 + 0.5 * height], axis=-1)
    stripes = 0.85 + 0.15 * np.cos(longitude * 60.0)
    return np.clip(gradient * (0.7 + 0.3 * checker[:, None]) * stripes[:, None], 0.0, 1.0)


def photograph(cameras: Cameras) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """8-bit RGB images of every camera and the depth (along each camera's optical axis) of what
    each pixel's centre ray sees."""
    images, depths = [], []
    offsets = (torch.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING
    for index in range(len(cameras)):
        height, width = int(cameras.height[index]), int(cameras.width[index])
        # (y, x) coordinates of SUPERSAMPLING^2 points in each pixel, then of each pixel's centre.
        rows = torch.arange(height)[:, None, None, None] + offsets[None, None, :, None]
        columns = torch.arange(width)[None, :, None, None] + offsets[None, None, None, :]
        rows, columns = torch.broadcast_tensors(rows, columns)
        centres = torch.stack(torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij"), -1)
        coords = torch.cat([torch.stack([rows, columns], dim=-1).reshape(-1, 2), centres.reshape(-1, 2)])
        rays = cameras.generate_rays(camera_indices=index, coords=coords.float())
        origins = rays.origins.double().numpy()
        directions = rays.directions.double().numpy()
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        distance, colour = trace_capture(origins, directions)
        samples = height * width * SUPERSAMPLING**2
        image = colour[:samples].reshape(height, width, SUPERSAMPLING**2, 3).mean(axis=2)
        images.append(np.round(image * 255).astype(np.uint8))
        forward = -cameras.camera_to_worlds[index, :3, 2].double().numpy()
        depths.append((distance[samples:] * (directions[samples:] @ forward)).reshape(height, width))
    return images, depths


def orbit_poses(count: int, rng: np.random.Generator) -> np.ndarray:
    """OpenGL camera-to-world poses around the object, 10 to 60 degrees above the ground, looking at
    the origin: a walk around a table-top object."""
    azimuth = rng.uniform(0.0, 2.0 * math.pi, count)
    elevation = np.radians(rng.uniform(10.0, 60.0, count))
    positions = ORBIT_DISTANCE * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=-1
    )
    return np.stack([look_at_pose(position) for position in positions])


def forward_facing_poses(count: int, rng: np.random.Generator) -> np.ndarray:
    """OpenGL poses of parallel cameras on a small plane facing the object, as LLFF's hand-held
    captures are: the orientation of a camera at the plane's centre looking at the origin."""
    centre = FORWARD_DISTANCE * np.array([0.0, -math.cos(math.radians(20.0)), math.sin(math.radians(20.0))])
    orientation = look_at_pose(centre)
    offsets = rng.uniform(-FORWARD_SPREAD, FORWARD_SPREAD, (count, 2))
    poses = np.repeat(orientation[None], count, axis=0)
    poses[:, :3, 3] = centre + offsets[:, :1] * orientation[:3, 0] + offsets[:, 1:] * orientation[:3, 1]
    return poses


def nerfstudio_cameras(poses: np.ndarray, intrinsics: dict, distortion: dict) -> Cameras:
    return Cameras(
        camera_to_worlds=torch.from_numpy(poses[:, :3, :4]).float(),
        fx=float(intrinsics["fl_x"]), fy=float(intrinsics["fl_y"]),
        cx=float(intrinsics["cx"]), cy=float(intrinsics["cy"]),
        width=int(intrinsics["w"]), height=int(intrinsics["h"]),
        distortion_params=camera_utils.get_distortion_params(**distortion),
        camera_type=CameraType.PERSPECTIVE,
    )


def sparse_points(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points on the object's visible surfaces (the sphere, the slab's top and sides), spread by
    area, plus a minority on the background, as structure from motion finds them; with the colour
    a ray coming back along the surface normal sees at each."""
    slab_size = SLAB_MAX - SLAB_MIN
    # (area, sampler of `n` points and their outward normals) per surface.
    def on_sphere(n):
        normals = rng.normal(size=(n, 3))
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        return SPHERE_CENTRE + SPHERE_RADIUS * normals, normals

    def on_slab_face(axis: int, side: int):
        def sample(n):
            points = SLAB_MIN + rng.uniform(size=(n, 3)) * slab_size
            points[:, axis] = (SLAB_MIN, SLAB_MAX)[side][axis]
            normals = np.zeros((n, 3))
            normals[:, axis] = 1.0 if side else -1.0
            return points, normals
        return sample

    surfaces = [(4 * math.pi * SPHERE_RADIUS**2, on_sphere)]
    surfaces += [(slab_size[0] * slab_size[1], on_slab_face(2, 1))]
    surfaces += [(slab_size[1 - axis] * slab_size[2], on_slab_face(axis, side)) for axis in (0, 1) for side in (0, 1)]
    areas = np.array([area for area, _ in surfaces])
    counts = rng.multinomial(SPARSE_POINTS_ON_OBJECT, areas / areas.sum())
    sampled = [sample(count) for (_, sample), count in zip(surfaces, counts)]
    points = np.concatenate([p for p, _ in sampled])
    normals = np.concatenate([n for _, n in sampled])
    # Colour: a ray from just off the surface back along the normal hits the surface point itself.
    _, colour = trace_object(points + 1e-4 * normals, -normals)
    background_directions = rng.normal(size=(SPARSE_POINTS_ON_BACKGROUND, 3))
    background_directions /= np.linalg.norm(background_directions, axis=-1, keepdims=True)
    background = BACKGROUND_RADIUS * background_directions
    points = np.concatenate([points, background])
    colour = np.concatenate([colour, _background_colour(background)])
    return points, np.round(colour * 255).astype(np.uint8)


def write_capture(output: Path, capture_format: CaptureFormat, size: int = 64, views: int = 24, seed: int = 0) -> Path:
    """Write `views` photographs of the scene, `size` pixels wide, as a capture in `capture_format`
    under `output`, and return `output`."""
    if capture_format not in CAPTURE_FORMATS:
        raise ValueError(f"unknown capture format {capture_format!r}; expected one of {CAPTURE_FORMATS}")
    rng = np.random.default_rng(seed)
    output.mkdir(parents=True, exist_ok=True)
    (output / "images").mkdir(exist_ok=True)
    names = [f"frame_{index + 1:05d}.png" for index in range(views)]
    intrinsics = capture_intrinsics(size)
    if capture_format == "llff":
        intrinsics = {**intrinsics, "fl_y": intrinsics["fl_x"], "cx": intrinsics["w"] / 2, "cy": intrinsics["h"] / 2}
        poses, distortion = forward_facing_poses(views, rng), {}
    else:
        poses, distortion = orbit_poses(views, rng), OPENCV_DISTORTION
    images, depths = photograph(nerfstudio_cameras(poses, intrinsics, distortion))
    for name, image in zip(names, images):
        Image.fromarray(image, mode="RGB").save(output / "images" / name)
    if capture_format == "nerfstudio":
        _write_transforms_json(output, names, poses, intrinsics, images, rng)
    elif capture_format == "colmap":
        _write_colmap_text(output / "sparse" / "0", names, poses, intrinsics, rng)
    else:
        _write_poses_bounds(output, poses, intrinsics, depths)
    return output


def _write_transforms_json(output: Path, names: list[str], poses: np.ndarray, intrinsics: dict,
                           images: list[np.ndarray], rng: np.random.Generator) -> None:
    (output / "images_2").mkdir(exist_ok=True)
    for name, image in zip(names, images):
        full = Image.fromarray(image, mode="RGB")
        full.resize((full.width // 2, full.height // 2), Image.Resampling.BOX).save(output / "images_2" / name)
    points, colours = sparse_points(rng)
    trimesh.PointCloud(points, colors=colours).export(output / "sparse_pc.ply")
    frames = [{"file_path": f"images/{name}", "transform_matrix": pose.tolist()} for name, pose in zip(names, poses)]
    transforms = {"camera_model": "OPENCV", **intrinsics, **OPENCV_DISTORTION,
                  "frames": [frames[index] for index in rng.permutation(len(frames))],
                  "ply_file_path": "sparse_pc.ply"}
    (output / "transforms.json").write_text(json.dumps(transforms, indent=2))


def _write_colmap_text(model: Path, names: list[str], poses: np.ndarray, intrinsics: dict,
                       rng: np.random.Generator) -> None:
    """COLMAP's text model: one shared OPENCV camera; each image's world-to-camera rotation (as a
    scalar-first quaternion) and translation in COLMAP's camera axes (x right, y down, z forward);
    the sparse points, with no 2D observations (COLMAP's text format allows empty tracks)."""
    model.mkdir(parents=True, exist_ok=True)
    parameters = [intrinsics[key] for key in ("fl_x", "fl_y", "cx", "cy")]
    parameters += [OPENCV_DISTORTION[key] for key in ("k1", "k2", "p1", "p2")]
    (model / "cameras.txt").write_text(
        f"1 OPENCV {intrinsics['w']} {intrinsics['h']} " + " ".join(repr(float(p)) for p in parameters) + "\n"
    )
    lines = []
    for image_id, (name, pose) in enumerate(zip(names, poses), start=1):
        camera_to_world = pose @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes to OpenCV's
        world_to_camera = np.linalg.inv(camera_to_world)
        qx, qy, qz, qw = Rotation.from_matrix(world_to_camera[:3, :3]).as_quat()
        values = [qw, qx, qy, qz, *world_to_camera[:3, 3]]
        lines += [f"{image_id} " + " ".join(repr(float(v)) for v in values) + f" 1 {name}", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    points, colours = sparse_points(rng)
    (model / "points3D.txt").write_text("".join(
        f"{point_id} {x!r} {y!r} {z!r} {r} {g} {b} 0.5\n"
        for point_id, ((x, y, z), (r, g, b)) in enumerate(zip(points.tolist(), colours.tolist()), start=1)
    ))


def _write_poses_bounds(output: Path, poses: np.ndarray, intrinsics: dict, depths: list[np.ndarray]) -> None:
    """LLFF's poses_bounds.npy: per image a 3x5 [R | t | (h, w, focal)] with R's columns the camera's
    (down, right, back) axes, flattened, then the near and far depth of what the image sees (LLFF
    takes the 0.1 and 99.9 percentiles of its points' depths)."""
    rows = []
    for pose, depth in zip(poses, depths):
        right, up, back, position = pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3]
        hwf = [intrinsics["h"], intrinsics["w"], intrinsics["fl_x"]]
        matrix = np.column_stack([-up, right, back, position, hwf])
        rows.append(np.concatenate([matrix.ravel(), np.percentile(depth, [0.1, 99.9])]))
    np.save(output / "poses_bounds.npy", np.array(rows))
