"""The one frame path's two values: a batch of frames in, its patterns out.

Every driver — the offline command's integration threads, the live Integrator working through an
item — hands a :class:`FrameBatch` to :func:`integrate_batch` and gets :class:`BatchPatterns`
back, so how frames become patterns (and how a frame that fails is reported without costing the
others) is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..messages import FailedFrames
from .integrate import IntegrationEngine
from .module_frames import ModuleFrames


class FrameBatch:
    """A few consecutive frames of one input file (stitched, for a Lambda acquisition).

    A Lambda reader hands over the module frames as decoded (``modules``) and no stitched copy:
    :attr:`frames` stitches them on first use only, and an engine that folds the stitch into its
    column indices (:mod:`.csr_engine`) never asks for it. ``frames`` or ``modules`` must be given.
    """

    def __init__(
        self,
        frame_numbers: np.ndarray,
        frames: np.ndarray | None = None,
        file_index: int = 0,
        index_in_file: np.ndarray | None = None,
        detector_mask: np.ndarray | None = None,
        file: str = "",
        modules: ModuleFrames | None = None,
        read_failures: list[FailedFrames] | None = None,
    ):
        if frames is None and modules is None:
            raise ValueError("a FrameBatch needs its frames or its module frames")
        self.frame_numbers = frame_numbers  # (n,) acquisition frame numbers
        self._frames = frames  # (n, rows, cols)
        self.file_index = file_index  # index into the source's ``raw_files`` (0 for a live work item)
        #: (n,) frame index inside that file
        self.index_in_file = np.arange(len(frame_numbers)) if index_in_file is None else index_in_file
        #: what the files know is bad (module gaps, pixel_mask) when the reader knows it; the offline
        #: source gives it once for all batches (``FrameSource.detector_mask``)
        self.detector_mask = detector_mask
        #: the file the frames came from, named in failure records ("" : the frame number is named)
        self.file = file
        #: the frames as the modules wrote them (Lambda readers), or None
        self.modules = modules
        #: frames of the range that could not be read (not in this batch), reported with its patterns
        self.read_failures = list(read_failures or [])

    @property
    def frames(self) -> np.ndarray:
        """The stitched frames ``(n, rows, cols)`` (stitched from the module frames on first use)."""
        if self._frames is None:
            assert self.modules is not None  # one of the two is always given
            self._frames = self.modules.stitched()
        return self._frames

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Shape of one stitched frame, without stitching anything."""
        if self.modules is not None:
            return self.modules.frame_shape
        rows, cols = self.frames.shape[-2:]
        return int(rows), int(cols)

    def release(self) -> None:
        """The frames were integrated: their module buffer may be read into again (see :class:`BufferPool`)."""
        if self.modules is not None:
            self.modules.release()


@dataclass
class BatchPatterns:
    """The patterns of one batch: rows for the frames that integrated, the others in ``failed``."""

    frame_numbers: np.ndarray  # (n,) of the frames integrated
    index_in_file: np.ndarray  # (n,)
    file_index: int
    intensities: np.ndarray  # (n, bins) float32
    sigma: np.ndarray | None  # (n, bins) float32 when the settings have an error model
    failed: list[FailedFrames]
    #: pixels left out because they held negative or NaN counts, over the whole batch
    invalid_pixels: int = 0


def integrate_batch(engine: IntegrationEngine, batch: FrameBatch) -> BatchPatterns:
    """Integrate every frame of ``batch``; a frame that fails is reported, the others still count.

    The csr engine takes the batch in blocks of frames (one sparse product per block); if that
    fails, frame by frame, so that the frame at fault is the only one reported."""
    n = len(batch.frame_numbers)
    if n:
        try:
            block = engine.integrate_block(None if batch.modules is not None else batch.frames, batch.modules)
        except Exception:  # noqa: BLE001  (each frame on its own below says which one fails, and why)
            block = None
        if block is not None:
            return BatchPatterns(batch.frame_numbers, batch.index_in_file, batch.file_index, block.intensity,
                                 block.sigma, list(batch.read_failures), int(block.invalid.sum()))
    intensities = np.zeros((n, engine.settings.bins), np.float32)
    sigma = np.zeros_like(intensities) if engine.settings.error_model else None
    failed: list[FailedFrames] = list(batch.read_failures)
    good = np.ones(n, bool)
    invalid = 0
    for i in range(n):
        number = int(batch.frame_numbers[i])
        try:
            if batch.modules is not None:  # the engine reads the module pixels (stitching only if it must)
                pattern = engine.integrate_modules(batch.modules, i, number)
            else:
                pattern = engine.integrate(batch.frames[i], number)
        except Exception as exc:  # one bad frame must not cost the others of its batch
            failed.append(FailedFrames(batch.file or f"frame {number}", f"integration failed: {exc}", [number]))
            good[i] = False
            continue
        intensities[i] = pattern.intensity
        invalid += pattern.invalid_pixels
        if sigma is not None:
            sigma[i] = pattern.sigma
    numbers, index_in_file = batch.frame_numbers, batch.index_in_file
    if failed:
        numbers, index_in_file, intensities = numbers[good], index_in_file[good], intensities[good]
        sigma = None if sigma is None else sigma[good]
    return BatchPatterns(numbers, index_in_file, batch.file_index, intensities, sigma, failed, invalid)
