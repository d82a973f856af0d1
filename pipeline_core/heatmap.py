"""The Batch-View-style picture of a merged file: frame number against the radial axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError
from .formats.nexus import read_merged

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


def render_heatmap(
    merged: str | Path, png: str | Path | None = None, scale: str = "sqrt", allow_partial: bool = False
) -> Path:
    """Write a PNG of the merged file's default plot (frames × radial axis) and return its path.

    The PNG is never written over an existing file: the name gets ``_v001``… like result files.
    A file whose status is not complete/incomplete (``running``: still written or its writer was
    killed; ``interrupted``; ``failed``) is not a result: it is refused, unless ``allow_partial``,
    and then the picture's title says its status in capitals.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .output import part_path, publish, reserve_output

    merged = Path(merged)
    m = read_merged(merged)
    if not m["finished"] and not allow_partial:
        raise ConfigError(
            f"{merged} has status {m['status']!r}, not complete/incomplete: it is not a finished result "
            "(a run stopped, crashed or still being written); draw it anyway with --partial"
        )
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
    warning = "" if m["finished"] else f" — {str(m['status']).upper()}, NOT A FINISHED RESULT"
    ax.set_title(f"{merged.name} ({len(frames)} frames, {scale} scale){warning}", color="k" if m["finished"] else "r")
    fig.colorbar(mesh, ax=ax, label=f"intensity (counts, {scale})")
    fig.tight_layout()
    default = merged.with_name(merged.name.removesuffix(".part")).with_suffix(".png")
    out = reserve_output(Path(png) if png else default)
    try:
        fig.savefig(part_path(out), format="png")
    except BaseException:
        part_path(out).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return publish(out)
