"""File formats: the Lambda detector's module files (names, parts, chunk checks) and the merged NeXus result."""
