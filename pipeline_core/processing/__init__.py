"""Processing: stitching, pyFAI integration engines, and the one frame path (sources -> batches -> patterns)."""
