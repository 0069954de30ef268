"""A real compressed image file (`.bnr`): a coordinate network fitted to an image, BatchNorm folded,
weights quantized and entropy-coded. `format` is the file, `quantize` and `entropy` its two coding
stages, `compress` turns a fitted network into a file, `decode` a file into pixels (no training
code), `sizing` the net size `bn-inr encode` picks for an image when none is given, and `jpeg` the
JPEG it measures its files against.

Beneath the tasks: the image task codes every run it fits for its real rate, so the codec imports
nothing of bn_nerf.tasks, and the `bn-inr encode` command, which fits through the image task and
then compresses, lives with the tasks (bn_nerf/tasks/encode.py)."""
