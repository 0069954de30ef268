"""A real compressed image file (`.bnr`): a coordinate network fitted to an image, BatchNorm folded,
weights quantized and entropy-coded. `format` is the file, `quantize` and `entropy` its two coding
stages, `compress` turns a fitted network into a file, `decode` a file into pixels (no training
code), `encode` is the `bn-inr encode` command that fits and compresses, `sizing` the net size
it picks for an image when none is given, and `jpeg` the JPEG it measures its files against."""
