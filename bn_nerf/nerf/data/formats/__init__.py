"""One reader per scene format behind one detector (detect.py): blender.py (nerfstudio's Blender
parser, checked), transforms.py (nerfstudio / instant-ngp transforms.json), colmap.py, llff.py. Each
checks the whole scene first, ending bad input in one line that names the file; the capture readers
hand their frames (frames.py) to bn_nerf.nerf.data.dataparser, which derives the extent (extent.py)."""
