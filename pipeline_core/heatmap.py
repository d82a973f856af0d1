"""The Batch-View-style picture of a merged file: frame number against the radial axis; with
``pressure``, the marker's pressure of each frame beside it, on the same frame axis (issue 19)."""

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


def file_pressure(merged: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(frame numbers, pressure, sigma in GPa, axis label) of the file's ``/processed/pressure``;
    ConfigError naming the file when it has none (pressure is never computed here: it is the file's)."""
    import h5py

    from .science.nexus_pressure import read_pressure

    with h5py.File(merged, "r") as h5:
        if "processed/pressure" not in h5:
            raise ConfigError(
                f"--pressure: {merged} has no /processed/pressure; integrate with --marker (or a Merger with a "
                "Marker) to write it, or see `xrd-pipeline pressure` for the numbers"
            )
        p = read_pressure(h5)
        label = h5["processed/pressure/data/pressure"].attrs.get("long_name", "pressure (GPa)")
    label = label.decode() if isinstance(label, bytes) else str(label)
    return p["frame_number"], p["pressure"], p["pressure_errors"], label


def render_heatmap(
    merged: str | Path,
    png: str | Path | None = None,
    scale: str = "sqrt",
    allow_partial: bool = False,
    pressure: bool = False,
) -> Path:
    """Write a PNG of the merged file's default plot (frames × radial axis) and return its path.

    The PNG is never written over an existing file: the name gets ``_v001``… like result files.
    A file whose status is not complete/incomplete (``running``: still written or its writer was
    killed; ``interrupted``; ``failed``) is not a result: it is refused, unless ``allow_partial``,
    and then the picture's title says its status in capitals. ``pressure``: the file's pressure per
    frame in a panel beside the picture, sharing its frame axis (:func:`heatmap_figure`).
    """
    from .output import part_path, publish, reserve_output

    merged = Path(merged)
    fig = heatmap_figure(merged, scale, allow_partial, pressure)
    import matplotlib.pyplot as plt

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


def heatmap_figure(merged: Path, scale: str = "sqrt", allow_partial: bool = False, pressure: bool = False):
    """The matplotlib figure :func:`render_heatmap` saves (tests read its axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    p_axis = None
    if pressure:
        trace = file_pressure(merged)  # refused before anything is drawn
        fig, (ax, p_axis) = plt.subplots(1, 2, figsize=(13, 6), dpi=100, sharey=True, width_ratios=(4, 1))
    else:
        fig, ax = plt.subplots(figsize=(10, 6), dpi=100)
    extent = (float(axis[0]), float(axis[-1]), float(frames[-1]) + 0.5, float(frames[0]) - 0.5)
    lo, hi = np.percentile(image, [1, 99.8])
    mesh = ax.imshow(image, aspect="auto", extent=extent, cmap="viridis", interpolation="nearest", vmin=lo, vmax=hi)
    ax.set_xlabel(str(m["default_axis_label"]))
    ax.set_ylabel("frame number")
    warning = "" if m["finished"] else f" — {str(m['status']).upper()}, NOT A FINISHED RESULT"
    ax.set_title(f"{merged.name} ({len(frames)} frames, {scale} scale){warning}", color="k" if m["finished"] else "r")
    fig.colorbar(mesh, ax=ax, label=f"intensity (counts, {scale})")
    if p_axis is not None:
        numbers, values, sigma, label = trace
        p_axis.errorbar(values, numbers, xerr=sigma, fmt=".-", color="C3", ms=3, lw=1, elinewidth=0.8)
        p_axis.set_xlabel(label)
        p_axis.set_title("pressure per frame (gaps: no value)", fontsize=9)
        p_axis.grid(alpha=0.3)
    fig.tight_layout()
    return fig
