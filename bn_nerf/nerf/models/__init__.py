"""The nerfstudio models: what every model adds for BatchNorm (batchnorm_model.py), one field rendered
through the occupancy grid (grid_model.py), bn-nerf with either sampler (nerf_model.py) and bn-diner
(diner_model.py)."""

import importlib

# Before issue 32 this package was one module, bn_nerf/nerf/models.py, and the config.yml of a run
# trained then names bn-nerf's model configuration under it; this package answers for those names so
# that such runs still load (bn_nerf/nerf/__init__.py maps the other modules that moved).
_NAMED_BY_EARLIER_RUNS = ("BNNeRFModelConfig", "bn_nerf_model")


def __getattr__(name: str):
    if name in _NAMED_BY_EARLIER_RUNS:
        return getattr(importlib.import_module("bn_nerf.nerf.models.nerf_model"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
