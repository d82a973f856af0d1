"""User mask files: whatever fabio reads (EDF, TIFF, Dioptas ``.mask``) plus NumPy ``.npy``.

Convention (pyFAI's and Dioptas'): non-zero = masked pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError


def load_mask_file(path: str | Path) -> np.ndarray:
    """Read a mask file into a 2-D boolean array (True = masked).

    Raises ConfigError naming the file when it is missing, unreadable or not 2-D.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mask file {path} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            import fabio

            with fabio.open(str(path)) as img:
                data = img.data
    except Exception as exc:  # fabio raises many unrelated types for unknown formats
        raise ConfigError(f"mask file {path} cannot be read ({exc}); expected EDF, TIFF, .mask or .npy") from exc
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ConfigError(f"mask file {path} holds a {data.ndim}-D array {data.shape}; expected a 2-D image")
    return data != 0


def check_mask_shape(mask: np.ndarray, frame_shape: tuple[int, int], origin: str) -> None:
    """Refuse a mask whose shape differs from the frame's: a silent crop would mask the wrong pixels."""
    if tuple(mask.shape) != tuple(frame_shape):
        raise ConfigError(
            f"mask {origin} has shape {tuple(mask.shape)} but the frames are {tuple(frame_shape)} "
            "(rows, columns); draw the mask on a stitched frame of this detector"
        )


def save_mask_file(path: str | Path, mask: np.ndarray) -> Path:
    """Write a mask as EDF (pyFAI-calib2/Dioptas open it) or ``.npy`` by the file's suffix."""
    path = Path(path)
    data = np.asarray(mask).astype(np.int8)
    if path.suffix.lower() == ".npy":
        np.save(path, data)
    else:
        import fabio.edfimage

        fabio.edfimage.EdfImage(data=data).write(str(path))
    return path
