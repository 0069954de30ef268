"""The signals the tasks fit that are not user files: generated ones (the head phantom, procedural
solids) and the inside/outside labels of a mesh by winding numbers."""
