"""Frames as the detector's modules wrote them: one buffer row per frame, every module's pixels side by side.

Why: stitching a Lambda 2M frame (zero-filled gaps, flipped modules, a 2.85-Mpixel array per frame)
costs a full-frame pass and an allocation, and the sparse engine (:mod:`.csr_engine`) does not
need it: it folds the stitch into its column indices and reads the module pixels directly. A
:class:`ModuleFrames` is what the reader hands over instead; anything that wants stitched frames
still gets them (:meth:`ModuleFrames.stitched`, the same rule as :mod:`.stitch`).

Buffers come from a :class:`BufferPool` and go back to it only when the batch is released
explicitly, after its frames were integrated: a buffer still queued or being integrated is never
read into again, so overlapping reading with integration cannot mix frames.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from .stitch import StitchLayout


class BufferPool:
    """Module buffers ``(frames, module_pixels)`` kept for reuse: fresh large arrays per read are slower
    (page faults on every new page), and a reader produces chunks of the same size all along.

    Thread-safe; holds at most ``keep`` idle buffers.
    """

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._idle: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        with self._lock:
            for i, buf in enumerate(self._idle):
                if buf.shape == shape and buf.dtype == dtype:
                    return self._idle.pop(i)
        return np.empty(shape, dtype)

    def give_back(self, buf: np.ndarray) -> None:
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(buf)


@dataclass
class ModuleFrames:
    """``data[i]`` is frame i's module pixels as decoded (uint16/int16/uint32), modules in layout order."""

    data: np.ndarray  # (n, layout.module_pixels)
    layout: StitchLayout
    pool: BufferPool | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.layout.frame_shape

    def stitched(self) -> np.ndarray:
        """Every frame stitched ``(n, rows, cols)``, gaps 0 (a new array: the buffer stays as it is)."""
        return self.layout.stitch_buffer(self.data)

    def stitched_frame(self, i: int) -> np.ndarray:
        return self.layout.stitch_buffer(self.data[i])

    def release(self) -> None:
        """Hand the buffer back to its pool: call only when nothing reads these frames any more."""
        if self.pool is not None:
            self.pool.give_back(self.data)
            self.pool = None
