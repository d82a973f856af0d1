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


@dataclass
class FrameBatch:
    """A few consecutive frames of one input file (stitched, for a Lambda acquisition)."""

    frame_numbers: np.ndarray  # (n,) acquisition frame numbers
    frames: np.ndarray  # (n, rows, cols)
    file_index: int  # index into the source's ``raw_files`` (0 for a live work item)
    index_in_file: np.ndarray  # (n,) frame index inside that file
    #: what the files know is bad (module gaps, pixel_mask) when the reader knows it; the offline
    #: source gives it once for all batches (``FrameSource.detector_mask``)
    detector_mask: np.ndarray | None = None
    #: the file the frames came from, named in failure records ("" : the frame number is named)
    file: str = ""


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
    """Integrate every frame of ``batch``; a frame that fails is reported, the others still count."""
    n = len(batch.frame_numbers)
    intensities = np.zeros((n, engine.settings.bins), np.float32)
    sigma = np.zeros_like(intensities) if engine.settings.error_model else None
    failed: list[FailedFrames] = []
    good = np.ones(n, bool)
    invalid = 0
    for i in range(n):
        number = int(batch.frame_numbers[i])
        try:
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
