"""The live stages, without Tango: Stitcher (work queue, scans, part checks), Integrator, Merger, and their threads."""
