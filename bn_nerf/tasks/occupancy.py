"""3D shape representation as occupancy (paper Sec. 4.3, Table 1 "3D Shape", Fig. 5).

The solid sits in the unit cube [-0.5, 0.5]^3 (a mesh is centred and scaled uniformly so its
longest side spans 0.9 of it); the network sees 2 x position, i.e. coordinates in [-1, 1] like
every other task, and outputs an occupancy logit. Training draws `--points-per-iteration` points
(the paper: 200,000) per step from a labelled pool, half uniform in the cube and half near the
surface (surface samples plus Gaussian noise of 0.01), and minimizes binary cross-entropy; Adam
decays exponentially from 5e-3 to 5e-4. The default of 1,000 iterations is the paper's "200
epochs" read as 200 passes over the default 1,000,000-point pool.

Labels: a mesh's inside is where its generalized winding number exceeds 1/2, so open scans with
holes are labelled sensibly (`bn_nerf.signals`). Evaluation (eval mode, BN statistics re-estimated
on a large sample of the training distribution, not on the grid): IoU of occupancy >= 0.5 against
the labels on the cell centres of an `--eval-resolution`^3 grid (paper: 512^3), computed in
chunks so memory stays bounded. Outputs: the marching-cubes surface at 0.5 (`reconstruction.ply`)
and a shaded preview of the reconstruction and the ground truth seen along the three axes.
The train-mode IoU normalizes each evaluation chunk by its own statistics.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import save_image
from bn_nerf.io.meshes import load_mesh, normalized_to_unit_cube
from bn_nerf.signals.solids import BASE_RESOLUTION, HALF_EXTENT, BumpySphere, MeshSolid
from bn_nerf.tasks.arguments import PaperDefaults
from bn_nerf.tasks.base import Task
from bn_nerf.tasks.runs import add_task_arguments, fit_runs, plan_runs, positive

PAPER_DEFAULTS = PaperDefaults(depth=2, width=256, iterations=1_000, learning_rate=5e-3,
                               final_learning_rate=5e-4, method="bn+pe", sizes=((2, 128), (2, 256)))
PAPER_POINTS_PER_ITERATION = 200_000
PAPER_EVAL_RESOLUTION = 512
DEFAULT_POOL = 1_000_000
NEAR_SURFACE_NOISE = 0.01
# Network evaluations per chunk of the grid: activations of a 256-wide net stay near 0.3 GB each.
GRID_CHUNK = 1 << 18
# The finest label grid of a mesh; finer evaluation grids label their uncertain points exactly.
FINEST_LABEL_RESOLUTION = 256


def grid_axis(resolution: int) -> torch.Tensor:
    return -HALF_EXTENT + (torch.arange(resolution, dtype=torch.float32) + 0.5) * (2 * HALF_EXTENT / resolution)


def grid_slabs(resolution: int):
    """(first x index, (n, 3) cell centres) of consecutive x-slabs of the grid, about GRID_CHUNK points each."""
    axis = grid_axis(resolution)
    rows = max(1, GRID_CHUNK // resolution ** 2)
    for start in range(0, resolution, rows):
        xs = axis[start:start + rows]
        yield start, torch.stack(torch.meshgrid(xs, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def shaded_views(occupied: np.ndarray) -> np.ndarray:
    """The solid seen along x, y and z: Lambert shading of its depth map, white background."""
    views = []
    for axis in range(3):
        solid = np.moveaxis(occupied, axis, 0)
        hit = solid.any(axis=0)
        depth = np.where(hit, solid.argmax(axis=0), solid.shape[0]).astype(np.float64) / solid.shape[0]
        gradient_u, gradient_v = np.gradient(depth * solid.shape[1])
        normal = np.stack([-gradient_u, -gradient_v, np.ones_like(depth)])
        normal /= np.linalg.norm(normal, axis=0)
        light = np.array([-0.4, -0.5, 0.77])
        shade = 0.25 + 0.75 * np.clip(np.tensordot(light, normal, axes=1), 0.0, 1.0)
        views.append(np.pad(np.where(hit, shade, 1.0), ((0, 0), (0, 2)), constant_values=1.0))
    return np.concatenate(views, axis=1)


class OccupancyTask(Task):
    name = "occupancy"
    in_dim = 3
    out_dim = 1
    primary_metric = "iou"
    full_batch = False

    def __init__(self, solid, pool_points: int, points_per_iteration: int, eval_resolution: int, seed: int = 0):
        for value, flag in ((pool_points, "--pool-points"), (points_per_iteration, "--points-per-iteration"),
                            (eval_resolution, "--eval-resolution")):
            positive(value, flag)
        self.solid = solid
        self.points_per_iteration = points_per_iteration
        self.eval_resolution = eval_resolution
        if isinstance(solid, MeshSolid):
            solid.label_resolution = max(BASE_RESOLUTION, min(FINEST_LABEL_RESOLUTION, 2 ** int(math.log2(max(eval_resolution // 2, 1)))))
        generator = torch.Generator().manual_seed(seed)
        uniform = torch.rand(pool_points - pool_points // 2, 3, generator=generator) - HALF_EXTENT
        near = solid.surface_points(pool_points // 2, generator)
        near = near + NEAR_SURFACE_NOISE * torch.randn(near.shape, generator=generator)
        self.pool = torch.cat([uniform, near])
        self.pool_labels = torch.cat([solid.inside(chunk) for chunk in self.pool.split(GRID_CHUNK)]).float()
        if self.pool_labels.sum() == 0:
            raise InputError(f"{solid.name}: no point is inside the shape; it encloses no volume")
        self._grid_labels: torch.Tensor | None = None

    def to(self, device: torch.device) -> "OccupancyTask":
        self.pool, self.pool_labels = self.pool.to(device), self.pool_labels.to(device)
        return self

    def _logits(self, net: nn.Module, points: torch.Tensor) -> torch.Tensor:
        return net(points * (1.0 / HALF_EXTENT)).squeeze(-1)

    def training_loss(self, net: nn.Module, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(self.pool.shape[0], (self.points_per_iteration,), generator=generator).to(self.pool.device)
        return F.binary_cross_entropy_with_logits(self._logits(net, self.pool[index]), self.pool_labels[index])

    def calibrate(self, net: nn.Module) -> None:
        # The training distribution (the whole pool, batch by batch), not the evaluation grid.
        for chunk in self.pool.split(self.points_per_iteration):
            self._logits(net, chunk)

    def reconstruct(self, net: nn.Module) -> torch.Tensor:
        """Occupancy probabilities on the eval grid, (R, R, R) float16 to halve its memory."""
        resolution = self.eval_resolution
        device = self.pool.device
        grid = torch.empty((resolution,) * 3, dtype=torch.float16)
        for start, points in grid_slabs(resolution):
            probabilities = torch.sigmoid(self._logits(net, points.to(device))).cpu().to(torch.float16)
            grid[start:start + points.shape[0] // resolution ** 2] = probabilities.reshape(-1, resolution, resolution)
        return grid

    def grid_labels(self) -> torch.Tensor:
        """Ground-truth inside/outside on the eval grid, (R, R, R) bool, computed once."""
        if self._grid_labels is None:
            resolution = self.eval_resolution
            labels = torch.empty((resolution,) * 3, dtype=torch.bool)
            for start, points in grid_slabs(resolution):
                labels[start:start + points.shape[0] // resolution ** 2] = self.solid.inside(points).reshape(-1, resolution, resolution)
            self._grid_labels = labels
        return self._grid_labels

    def metrics(self, reconstruction: torch.Tensor) -> dict[str, float]:
        truth = self.grid_labels()
        intersection = union = 0
        for predicted_slab, true_slab in zip(reconstruction.split(8), truth.split(8)):
            predicted = predicted_slab >= 0.5
            intersection += int((predicted & true_slab).sum())
            union += int((predicted | true_slab).sum())
        return {"iou": intersection / union if union else 1.0}

    def extra_metrics(self, net: nn.Module) -> dict:
        return {"input": self.solid.name, "eval_resolution": self.eval_resolution, "pool_points": self.pool.shape[0],
                "points_per_iteration": self.points_per_iteration,
                "inside_fraction": float(self.grid_labels().float().mean())}

    def write_outputs(self, reconstruction: torch.Tensor, out_dir: Path) -> None:
        vertices, faces = surface_at_half(reconstruction)
        if len(faces):
            positions = -HALF_EXTENT + (vertices + 0.5) * (2 * HALF_EXTENT / self.eval_resolution)
            write_binary_ply(out_dir / "reconstruction.ply", positions, faces)
        else:
            print(f"occupancy: no surface at 0.5 on the {self.eval_resolution}^3 grid; no mesh written", file=sys.stderr)
        predicted = shaded_views((reconstruction >= 0.5).numpy())
        truth = shaded_views(self.grid_labels().numpy())
        save_image(out_dir / "preview.png", np.concatenate([predicted, truth], axis=0))


# Grid planes per marching-cubes slab: a float32 copy of one slab, not of the whole grid.
MARCHING_SLAB = 64


def surface_at_half(grid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes at 0.5 over (R, R, R) occupancies, slab by slab along x so that memory
    beyond the mesh itself stays bounded. Slabs share a plane; vertices on the shared planes are
    duplicated (the mesh is a picture of the surface, not a watertight solid). Returns (vertices in
    grid index units, faces oriented outwards)."""
    from skimage.measure import marching_cubes

    vertex_parts, face_parts, count = [], [], 0
    for start in range(0, grid.shape[0] - 1, MARCHING_SLAB):
        slab = grid[start:start + MARCHING_SLAB + 1].float().numpy()
        if not slab.min() < 0.5 <= slab.max():
            continue
        vertices, faces, _, _ = marching_cubes(slab, level=0.5)
        vertices[:, 0] += start
        vertex_parts.append(vertices.astype(np.float32))
        # skimage orients faces towards increasing values (inwards here); reverse them.
        face_parts.append(faces[:, ::-1].astype(np.int32) + count)
        count += len(vertices)
    if not face_parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    return np.concatenate(vertex_parts), np.concatenate(face_parts)


def write_binary_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """A binary little-endian PLY written straight from the arrays (no in-memory copy of the file)."""
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    records = np.empty(len(faces), dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    records["count"] = 3
    records["indices"] = faces
    with path.open("wb") as handle:
        handle.write(header.encode("ascii"))
        np.ascontiguousarray(vertices, dtype="<f4").tofile(handle)
        records.tofile(handle)


def load_solid(path: Path | None):
    if path is None:
        return BumpySphere()
    vertices, faces = load_mesh(path)
    return MeshSolid(normalized_to_unit_cube(vertices, path), faces, name=path.stem)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mesh", type=Path,
                        help="mesh file (OBJ, PLY, OFF, STL, ...; open scans welcome); default: a procedural bumpy sphere")
    parser.add_argument("--eval-resolution", type=int, default=PAPER_EVAL_RESOLUTION,
                        help=f"IoU and marching-cubes grid per axis (default {PAPER_EVAL_RESOLUTION}, the paper's; smaller for CPU runs)")
    parser.add_argument("--points-per-iteration", type=int, default=PAPER_POINTS_PER_ITERATION,
                        help=f"training points per step (default {PAPER_POINTS_PER_ITERATION}, the paper's)")
    parser.add_argument("--pool-points", type=int, default=DEFAULT_POOL,
                        help=f"labelled training points drawn from (default {DEFAULT_POOL}; half uniform, half near the surface)")
    add_task_arguments(parser, PAPER_DEFAULTS, "outputs/occupancy")


def check_arguments(args: argparse.Namespace) -> None:
    """The checks of this command's own options that need no input read; `bn-inr sweep` runs them
    for every cell before any cell starts."""
    for flag in ("pool_points", "points_per_iteration", "eval_resolution"):
        positive(getattr(args, flag), "--" + flag.replace("_", "-"))


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    solid = load_solid(args.mesh)
    runs = plan_runs(args, PAPER_DEFAULTS, [solid.name])
    task = OccupancyTask(solid, args.pool_points, args.points_per_iteration, args.eval_resolution, seed=args.seed)
    fit_runs(args, runs, lambda planned: task, summary_keys=("iou",))
    return 0
