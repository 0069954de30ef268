"""What crosses the package's boundary: user files in (images, meshes, volumes) with one-line
errors naming the file, and the figures a user looks at out."""
