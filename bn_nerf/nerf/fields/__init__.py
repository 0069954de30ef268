"""The radiance fields, whose MLPs come from bn_nerf.networks (radiance_field.py: NeRF's and DINER's),
and DINER's learnable feature table (tables.py)."""
