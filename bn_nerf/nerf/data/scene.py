"""The embedded default scene: a small Blender-format dataset rendered by ray tracing a procedural
scene of known geometry with fine, high-frequency texture, so that no download is needed.

Geometry (world units, z up, all inside nerfstudio's Blender scene box [-1.5, 1.5]^3):
  - a sphere of radius 0.7 centred at (0, 0, 0.2), checkered 48 x 24 in longitude x latitude, with
    a colour that cycles with longitude and fine latitude stripes;
  - a slab |x|, |y| <= 1, -0.7 <= z <= -0.5 under it, its faces covered with thin grid lines every
    0.08 units on a colour gradient.
Lambertian shading under one directional light plus ambient light; no shadows. Cameras sit on the
upper hemisphere at distance 4 looking at the origin, as in the Blender scenes (near 2, far 6).
Pixels are 3x3 supersampled, so silhouettes get fractional alpha like Blender's renders.

`bn-nerf-scene OUTPUT` writes transforms_{train,val,test}.json and RGBA PNGs under train/ val/ test/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SPHERE_CENTRE = np.array([0.0, 0.0, 0.2])
SPHERE_RADIUS = 0.7
SLAB_MIN = np.array([-1.0, -1.0, -0.7])
SLAB_MAX = np.array([1.0, 1.0, -0.5])
CAMERA_DISTANCE = 4.0
CAMERA_ANGLE_X = 0.6911  # the Blender scenes' horizontal field of view, in radians
LIGHT_DIRECTION = np.array([0.4, -0.3, 0.85]) / np.linalg.norm([0.4, -0.3, 0.85])
SUPERSAMPLING = 3


def look_at_pose(position: np.ndarray) -> np.ndarray:
    """Camera-to-world matrix in Blender/OpenGL convention (x right, y up, looking along -z)."""
    backward = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], backward)
    right /= np.linalg.norm(right)
    up = np.cross(backward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, backward, position
    return pose


def camera_positions(count: int, rng: np.random.Generator) -> np.ndarray:
    """Views spread over the upper hemisphere between 10 and 70 degrees of elevation."""
    azimuth = rng.uniform(0.0, 2.0 * math.pi, count)
    elevation = np.radians(rng.uniform(10.0, 70.0, count))
    return CAMERA_DISTANCE * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], axis=-1
    )


def _hit_sphere(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    offset = origins - SPHERE_CENTRE
    b = np.sum(offset * directions, axis=-1)
    c = np.sum(offset * offset, axis=-1) - SPHERE_RADIUS**2
    discriminant = b * b - c
    t = -b - np.sqrt(np.maximum(discriminant, 0.0))
    return np.where((discriminant > 0) & (t > 0), t, np.inf)


def _hit_slab(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (SLAB_MIN - origins) / directions
        t2 = (SLAB_MAX - origins) / directions
    t_near = np.max(np.minimum(t1, t2), axis=-1)
    t_far = np.min(np.maximum(t1, t2), axis=-1)
    return np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)


def _sphere_colour(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    local = (points - SPHERE_CENTRE) / SPHERE_RADIUS
    longitude = np.arctan2(local[:, 1], local[:, 0])
    latitude = np.arcsin(np.clip(local[:, 2], -1.0, 1.0))
    checker = (np.floor(longitude / (2 * math.pi) * 48) + np.floor((latitude / math.pi + 0.5) * 24)) % 2
    hue = longitude[:, None] * 3 + np.array([0.0, 2.1, 4.2])
    base = 0.5 + 0.4 * np.cos(hue)
    stripes = 0.5 + 0.5 * np.cos(latitude * 90.0)
    colour = base * (0.45 + 0.55 * checker[:, None]) * (0.75 + 0.25 * stripes[:, None])
    return colour, local


def _slab_colour(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = (SLAB_MIN + SLAB_MAX) / 2
    half = (SLAB_MAX - SLAB_MIN) / 2
    scaled = (points - centre) / half
    axis = np.argmax(np.abs(scaled), axis=-1)
    normals = np.zeros_like(points)
    normals[np.arange(len(points)), axis] = np.sign(scaled[np.arange(len(points)), axis])
    spacing = 0.08
    lines = np.min(np.abs((points / spacing) - np.round(points / spacing)), axis=-1)
    line_mask = (lines < 0.12).astype(float)
    gradient = np.stack([0.55 + 0.35 * scaled[:, 0], 0.45 + 0.3 * scaled[:, 1], 0.35 + 0.0 * scaled[:, 2]], axis=-1)
    colour = gradient * (1.0 - 0.8 * line_mask[:, None]) + np.array([0.05, 0.1, 0.35]) * 0.8 * line_mask[:, None]
    return colour, normals


def render_view(pose: np.ndarray, size: int, width: int | None = None) -> np.ndarray:
    """RGBA float image [size, width, 4] (straight, not premultiplied, colour) seen from `pose`, with
    the scene's field of view across its height (a square image by default, as the dataset's)."""
    width = size if width is None else width
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING
    u = (np.arange(width)[None, :, None, None] + offsets[None, None, None, :]) * np.ones((size, 1, SUPERSAMPLING, 1))
    v = (np.arange(size)[:, None, None, None] + offsets[None, None, :, None]) * np.ones((1, width, 1, SUPERSAMPLING))
    camera_directions = np.stack([(u - width / 2) / focal, -(v - size / 2) / focal, -np.ones_like(u)], axis=-1)
    directions = camera_directions.reshape(-1, 3) @ pose[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origins = np.broadcast_to(pose[:3, 3], directions.shape)

    t_sphere = _hit_sphere(origins, directions)
    t_slab = _hit_slab(origins, directions)
    colour = np.zeros_like(directions)
    alpha = np.zeros(len(directions))
    on_sphere = np.isfinite(t_sphere) & (t_sphere <= t_slab)
    on_slab = np.isfinite(t_slab) & ~on_sphere
    for mask, t, shade in ((on_sphere, t_sphere, _sphere_colour), (on_slab, t_slab, _slab_colour)):
        points = origins[mask] + t[mask, None] * directions[mask]
        albedo, normals = shade(points)
        light = 0.35 + 0.65 * np.clip(normals @ LIGHT_DIRECTION, 0.0, 1.0)
        colour[mask] = np.clip(albedo * light[:, None], 0.0, 1.0)
        alpha[mask] = 1.0
    colour = colour.reshape(size, width, SUPERSAMPLING * SUPERSAMPLING, 3)
    alpha = alpha.reshape(size, width, SUPERSAMPLING * SUPERSAMPLING)
    coverage = alpha.mean(-1)
    straight = (colour * alpha[..., None]).sum(2) / np.maximum(alpha.sum(-1), 1.0)[..., None]
    return np.concatenate([straight, coverage[..., None]], axis=-1)


def trace_object(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each unit-direction ray to its first hit on the sphere or the slab (inf where it
    misses both) and the colour shaded there as render_view shades it (zero where it misses); for
    renders of the scene other than the Blender one (bn_nerf.nerf.data.capture)."""
    t_sphere = _hit_sphere(origins, directions)
    t_slab = _hit_slab(origins, directions)
    on_sphere = np.isfinite(t_sphere) & (t_sphere <= t_slab)
    on_slab = np.isfinite(t_slab) & ~on_sphere
    distance = np.where(on_sphere, t_sphere, t_slab)
    colour = np.zeros_like(directions)
    for mask, shade in ((on_sphere, _sphere_colour), (on_slab, _slab_colour)):
        points = origins[mask] + distance[mask, None] * directions[mask]
        albedo, normals = shade(points)
        light = 0.35 + 0.65 * np.clip(normals @ LIGHT_DIRECTION, 0.0, 1.0)
        colour[mask] = np.clip(albedo * light[:, None], 0.0, 1.0)
    return distance, colour


def write_scene(output: Path, size: int = 100, views: dict[str, int] | None = None, seed: int = 0) -> dict[str, int]:
    """Write the scene to `output` and return the number of views written per split."""
    views = views or {"train": 50, "val": 4, "test": 8}
    rng = np.random.default_rng(seed)
    output.mkdir(parents=True, exist_ok=True)
    for split, count in views.items():
        (output / split).mkdir(exist_ok=True)
        frames = []
        for index, position in enumerate(camera_positions(count, rng)):
            pose = look_at_pose(position)
            rgba = render_view(pose, size)
            Image.fromarray(np.round(rgba * 255).astype(np.uint8), mode="RGBA").save(output / split / f"r_{index}.png")
            frames.append({"file_path": f"./{split}/r_{index}", "transform_matrix": pose.tolist()})
        transforms = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        (output / f"transforms_{split}.json").write_text(json.dumps(transforms, indent=2))
    return dict(views)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bn-nerf-scene",
        description="Write the embedded procedural scene as a Blender-format folder (transforms_*.json + RGBA PNGs).",
    )
    parser.add_argument("output", type=Path, nargs="?", default=Path("data/bn-nerf-scene"), help="folder to write")
    parser.add_argument("--size", type=int, default=100, help="image width and height in pixels (default 100)")
    parser.add_argument("--train", type=int, default=50, help="training views (default 50)")
    parser.add_argument("--val", type=int, default=4, help="validation views (default 4)")
    parser.add_argument("--test", type=int, default=8, help="test views (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the camera placement")
    args = parser.parse_args(argv)
    if args.size < 8 or min(args.train, args.val, args.test) < 1:
        print("bn-nerf-scene: error: --size must be at least 8 and every split needs a view", file=sys.stderr)
        return 2
    written = write_scene(args.output, args.size, {"train": args.train, "val": args.val, "test": args.test}, args.seed)
    print(f"wrote {', '.join(f'{n} {split}' for split, n in written.items())} views of {args.size}x{args.size} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
