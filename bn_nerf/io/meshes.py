"""Loading triangle meshes (OBJ, PLY, OFF, STL, ... via trimesh) with one-line errors, and
placing them in the occupancy task's unit cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bn_nerf.io.errors import InputError
from bn_nerf.io.images import require_file

# The formats a folder of meshes is read for; trimesh reads these and more, named one by one.
MESH_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")

# The mesh's longest side spans this share of the unit cube, leaving a margin so that the surface
# never touches the grid's boundary (marching cubes then closes it) and near-surface samples stay inside.
FILL = 0.9


def load_mesh(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int64) of a mesh file, every part merged."""
    import trimesh

    path = require_file(path)
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh raises many kinds for unreadable or unknown files
        raise InputError(f"{path}: not a readable mesh ({type(error).__name__}: {error})") from None
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    if len(faces) == 0 or len(vertices) == 0:
        raise InputError(f"{path}: mesh has no triangles")
    if not np.isfinite(vertices).all():
        raise InputError(f"{path}: vertex coordinates are not all finite")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError(f"{path}: faces refer to missing vertices")
    return vertices, faces


def normalized_to_unit_cube(vertices: np.ndarray, source: Path | str) -> np.ndarray:
    """Vertices centred and scaled uniformly into [-0.5, 0.5]^3 (longest side FILL)."""
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    extent = high - low
    if extent.max() <= 0 or extent.min() <= 1e-9 * extent.max():
        raise InputError(f"{source}: mesh is flat (extent {extent.round(6).tolist()}); it encloses no volume")
    return (vertices - (low + high) / 2) * (FILL / extent.max())
