"""The Batch-View-style picture of a merged file: frame number against the radial axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError
from .nexus import read_merged

SCALES = ("linear", "sqrt", "log")


def scaled(data: np.ndarray, scale: str) -> np.ndarray:
    if scale not in SCALES:
        raise ConfigError(f"scale {scale!r} is unknown; expected one of {', '.join(SCALES)}")
    data = np.nan_to_num(np.asarray(data, np.float64), nan=0.0)
    if scale == "sqrt":
        return np.sqrt(np.clip(data, 0, None))
    if scale == "log":
        positive = data[data > 0]
        floor = positive.min() if positive.size else 1.0
        return np.log10(np.clip(data, floor, None))
    return data


def render_heatmap(merged: str | Path, png: str | Path | None = None, scale: str = "sqrt") -> Path:
    """Write a PNG of the merged file's default plot (frames × radial axis) and return its path.

    The PNG is never written over an existing file: the name gets ``_v001``… like result files.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .output import reserve_output

    merged = Path(merged)
    m = read_merged(merged)
    if m["data"].size == 0:
        raise ConfigError(f"{merged} holds no patterns to draw")
    image = scaled(m["data"], scale)
    axis, frames = m["default_axis"], m["frame_number"]
    fig, ax = plt.subplots(figsize=(10, 6), dpi=100)
    extent = (float(axis[0]), float(axis[-1]), float(frames[-1]) + 0.5, float(frames[0]) - 0.5)
    lo, hi = np.percentile(image, [1, 99.8])
    mesh = ax.imshow(image, aspect="auto", extent=extent, cmap="viridis", interpolation="nearest", vmin=lo, vmax=hi)
    ax.set_xlabel(str(m["default_axis_label"]))
    ax.set_ylabel("frame number")
    ax.set_title(f"{merged.name} ({len(frames)} frames, {scale} scale)")
    fig.colorbar(mesh, ax=ax, label=f"intensity (counts, {scale})")
    fig.tight_layout()
    out = reserve_output(Path(png) if png else merged.with_suffix(".png"))
    fig.savefig(out, format="png")
    plt.close(fig)
    return out
