"""The nerfstudio plugin: bn-nerf and bn-diner (fields -> models -> method configs), offline-safe
metrics, a checked Blender parser, the procedural Blender-format scene writer and `bn-nerf-demo`."""

from bn_nerf.upstream_warnings import silence_known_upstream_warnings

# nerfstudio imports this package to load the plugin's methods (ns-train, ns-eval, ns-render,
# ns-viewer), so this is the one hook into their processes: from here on nerfstudio's known
# deprecation warnings stay off the console (bn_nerf/upstream_warnings.py lists them).
silence_known_upstream_warnings()
