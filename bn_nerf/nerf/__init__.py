"""The nerfstudio plugin: bn-nerf and bn-diner (fields -> models -> method configs), offline-safe
metrics, a checked Blender parser and the procedural Blender-format scene writer."""
