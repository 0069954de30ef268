"""What a scene is read from: the methods' dataparser (dataparser.py, also `bn-scene-data`), one
reader per format (formats/), the scene's extent derived from the data (extent.py), and the scenes
this package writes itself: the embedded Blender-format scene (scene.py, `bn-nerf-scene`) and the
same scene as a capture in a far background (capture.py, for tests). Imports no other part of the
plugin."""
