"""The scene's extent, derived from the data in one place: where nerfstudio's scene box goes (the
inner region, modelled at full resolution), the near and far planes, and whether everything lies
inside the box.

A Blender scene keeps nerfstudio's blender-data box, [-1.5, 1.5]^3, and vanilla NeRF's near 2 and
far 6: its objects lie inside, with alpha around them. A capture (transforms.json, COLMAP, LLFF) has
no alpha and a background at any distance, which the model contracts (mip-NeRF 360 style) outside
the box. Its poses are oriented with nerfstudio's "vertical" method (the direction most nearly
perpendicular to every camera's x axis, since cameras are rarely rolled; it falls back to the mean
camera up where the cameras are parallel, as in a forward-facing capture), then translated and
scaled so that [-1, 1]^3 holds every camera and the bulk of the content:

  - sparse points (COLMAP points3D, a transforms.json's ply_file_path): those within the nearer
    half, in log depth, of the depth range each camera sees (LLFF's rule for that range: a low and
    a high percentile of the depths of the points in its view), so that the far background is left
    to the contraction;
  - LLFF's per-image near and far bounds: each camera's view between the near bound and the same
    log-depth midpoint, so that a forward-facing capture's box reaches in front of the cameras;
  - nothing else: the cameras and the point they all look at (an orbit looks at its centre).

The near plane is 0.9 times the nearest of the cameras' near depths, where they are known, else
nerfacto's 0.05; the far plane of a capture is 1000 (normalized units), the contraction covers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from nerfstudio.cameras import camera_utils


@dataclass(frozen=True)
class SceneExtent:
    bounded: bool
    """True: the scene lies inside scene_box and images have alpha (Blender): no contraction"""
    near: float
    """near plane for every ray, in the normalized (scene_box) units"""
    far: float
    """far plane, normalized units (captures: large, the contraction covers it)"""
    summary: str
    """the one log line: format, centre, scale, near/far, bounded or not, what it was derived from"""


BLENDER_EXTENT = SceneExtent(
    bounded=True, near=2.0, far=6.0,
    summary="Blender scene: nerfstudio's blender-data box [-1.5, 1.5]^3 in the file's units (scale 1), "
            "near 2, far 6 (vanilla NeRF's), bounded: the images have alpha, nothing lies outside the box",
)

# nerfacto's near plane, for a capture whose depths are unknown.
DEFAULT_NEAR = 0.05
# A capture's far plane: beyond the box the contraction maps all of space into a bounded shell.
CAPTURE_FAR = 1e3
# The near plane sits this fraction of the nearest known depth: the depths are percentiles.
NEAR_MARGIN = 0.9
# The box is this much larger than what it must hold, so that cameras and content on its faces are
# not exactly where the contraction begins.
BOX_MARGIN = 1.05
# A camera's depth range from the sparse points in its view: LLFF's percentiles (imgs2poses), so
# that points and LLFF's bounds give the same ranges.
POINT_DEPTH_PERCENTILES = (0.1, 99.9)
# Fewer points than this in a camera's view say nothing reliable about its depth range.
MIN_POINTS_IN_VIEW = 10


@dataclass(frozen=True)
class Pinholes:
    """Each camera's pinhole intrinsics (the distortion is left out: it moves points by a few pixels
    and the extent needs only which points a camera sees and how deep)."""

    fx: np.ndarray
    fy: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    width: np.ndarray
    height: np.ndarray


@dataclass(frozen=True)
class Normalization:
    """World coordinates as read -> normalized: x' = scale * (transform[:, :3] @ x + transform[:, 3])."""

    transform: np.ndarray
    scale: float
    extent: SceneExtent

    def camera_to_worlds(self, poses: np.ndarray) -> np.ndarray:
        """(N, 3, 4) normalized camera-to-world matrices of (N, 4, 4) OpenGL poses as read."""
        normalized = (np.concatenate([self.transform, [[0.0, 0.0, 0.0, 1.0]]]) @ poses)[:, :3, :4]
        normalized[:, :, 3] *= self.scale
        return normalized


def normalize_capture(
    format_name: str,
    poses: np.ndarray,
    pinholes: Pinholes,
    bounded: bool,
    points: Optional[np.ndarray] = None,
    depth_bounds: Optional[np.ndarray] = None,
    world_from_files: Optional[np.ndarray] = None,
) -> Normalization:
    """The normalization of a capture's (N, 4, 4) OpenGL camera-to-world `poses`, from its sparse
    `points` (M, 3) or per-camera `depth_bounds` (N, 2: near, far; LLFF's) where it has them, all in
    the reader's world coordinates; `world_from_files` (3x4) maps the files' coordinates to those
    where they differ, so that the summary gives the centre in the files' coordinates."""
    _, orientation = camera_utils.auto_orient_and_center_poses(
        torch.from_numpy(poses).float(), method="vertical", center_method="poses"
    )
    orientation = orientation.double().numpy()
    oriented = np.concatenate([orientation, [[0.0, 0.0, 0.0, 1.0]]]) @ poses
    positions = oriented[:, :3, 3]

    evidence = "the camera positions and the point they look at"
    content = focus_point(oriented, positions)
    if points is not None and len(points):
        oriented_points = points @ orientation[:, :3].T + orientation[:, 3]
        depth_bounds, kept = _depth_bounds_and_content(oriented, pinholes, oriented_points)
        if kept.any():
            content = oriented_points[kept]
            evidence = f"the camera positions and {kept.sum()} of {len(points)} sparse points (the nearer half of each view)"
    elif depth_bounds is not None:
        content = _views_between(oriented, pinholes, depth_bounds[:, 0], np.sqrt(depth_bounds[:, 0] * depth_bounds[:, 1]))
        evidence = "the camera positions and each view from its near bound to the log-depth midpoint of its bounds"

    everything = np.concatenate([positions, content])
    low, high = everything.min(axis=0), everything.max(axis=0)
    centre = (low + high) / 2
    scale = 1.0 / (BOX_MARGIN * float(np.max(high - low)) / 2)
    transform = np.concatenate([orientation[:, :3], (orientation[:, 3] - centre)[:, None]], axis=1)

    known_depths = depth_bounds is not None and np.isfinite(depth_bounds[:, 0]).any()
    near = NEAR_MARGIN * float(np.nanmin(depth_bounds[:, 0])) * scale if known_depths else DEFAULT_NEAR
    if bounded:
        corners = np.array(np.meshgrid([-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0])).reshape(3, -1).T
        far = float(np.max(np.linalg.norm(corners[None] - ((positions - centre) * scale)[:, None], axis=-1)))
    else:
        far = CAPTURE_FAR
    world_centre = np.linalg.solve(orientation[:, :3], centre - orientation[:, 3])
    if world_from_files is not None:
        world_centre = np.linalg.solve(world_from_files[:, :3], world_centre - world_from_files[:, 3])
    span = high - low
    summary = (
        f"{format_name}, {len(poses)} cameras: scene box [-1, 1]^3 = a cube {2 / scale:.3g} units of the files across "
        f"centred at ({world_centre[0]:.3g}, {world_centre[1]:.3g}, {world_centre[2]:.3g}) (scale {scale:.4g}), holding "
        f"{evidence} ({span[0]:.3g} x {span[1]:.3g} x {span[2]:.3g}); near {near:.3g}, far {far:.4g} (normalized); "
        + ("bounded: the images have alpha" if bounded else "unbounded: the space beyond the box is contracted")
    )
    return Normalization(transform, scale, SceneExtent(bounded=bounded, near=near, far=far, summary=summary))


def focus_point(oriented: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(1, 3): the point nearest every camera's optical axis, nerfstudio's focus of attention."""
    focus = camera_utils.focus_of_attention(torch.from_numpy(oriented).float(), torch.from_numpy(positions.mean(0)).float())
    return focus.double().numpy()[None]


def _camera_space(pose: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (along the optical axis) and OpenCV pixel direction (x / depth, y / depth, y down) of
    each point in the camera of OpenGL pose `pose`."""
    local = (points - pose[:3, 3]) @ pose[:3, :3]
    depth = -local[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return depth, local[:, 0] / depth, -local[:, 1] / depth


def _depth_bounds_and_content(oriented: np.ndarray, pinholes: Pinholes, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each camera's (near, far) depth range from the points in its view (NaN where it sees too
    few), and which points lie in some camera's view within the nearer half of its range."""
    bounds = np.full((len(oriented), 2), np.nan)
    kept = np.zeros(len(points), dtype=bool)
    for index, pose in enumerate(oriented):
        depth, x, y = _camera_space(pose, points)
        u = pinholes.fx[index] * x + pinholes.cx[index]
        v = pinholes.fy[index] * y + pinholes.cy[index]
        in_view = (depth > 0) & (u >= 0) & (u <= pinholes.width[index]) & (v >= 0) & (v <= pinholes.height[index])
        if in_view.sum() < MIN_POINTS_IN_VIEW:
            continue
        near, far = np.percentile(depth[in_view], POINT_DEPTH_PERCENTILES)
        bounds[index] = near, far
        kept |= in_view & (depth <= np.sqrt(near * far))
    return bounds, kept


def _views_between(oriented: np.ndarray, pinholes: Pinholes, near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """The corners of each camera's view at depths `near` and `far` (one each per camera)."""
    corners = []
    for index, pose in enumerate(oriented):
        for u in (0.0, pinholes.width[index]):
            for v in (0.0, pinholes.height[index]):
                # OpenCV pixel direction to OpenGL camera axes (y up, looking along -z).
                direction = np.array([(u - pinholes.cx[index]) / pinholes.fx[index],
                                      -(v - pinholes.cy[index]) / pinholes.fy[index], -1.0])
                for depth in (near[index], far[index]):
                    corners.append(pose[:3, 3] + depth * (pose[:3, :3] @ direction))
    return np.array(corners)
