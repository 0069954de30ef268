"""Solid shapes for the occupancy task: which points are inside, and points on the surface."""
