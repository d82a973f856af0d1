"""One range of an acquisition as a frame source, for :func:`~pipeline_core.processing.offline.integrate_source`.

A wrapper, not a new reader: the frames come from the acquisition's own source (the one
``integrate`` uses), so stitching, masks, checks and failure records are those of the one frame
path. It only (1) opens no more parts than the range needs (a Lambda acquisition narrowed to the
range's parts, with the whole acquisition's layout, so a part that differs is refused exactly as
``integrate`` refuses it), (2) keeps the frames whose numbers lie in the range, (3) keeps file
indices those of the whole acquisition (``pos_map`` of the merged file points at the right part),
and (4) passes on the failures of its own frames. Batches pass through untouched (ranges are cut
at chunk boundaries): the engine sees exactly what ``integrate`` gives it, so the result file of a
range is a slice of the file ``integrate`` writes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np

from ..messages import FailedFrames
from ..processing.frame_batch import FrameBatch
from ..processing.sources import ErrorSink, FrameSource, LambdaSource
from .spec import FrameRange

log = logging.getLogger(__name__)


class RangeSource(FrameSource):
    """The frames of ``source`` whose numbers lie in ``frame_range``."""

    def __init__(self, source: FrameSource, frame_range: FrameRange):
        self.inner = source
        self.range = frame_range
        self.name = source.name
        self.raw_files = source.raw_files
        self.input_files = source.input_files
        self.detector_mask = None
        #: frames of the range read (integrated or not) and frames of it listed as failed
        self.frames_read = 0
        self.frames_failed = 0
        self._decode_threads: int | None = None

    def set_decode_threads(self, threads: int) -> None:
        """Passed on to the reader (integrate_source sets it as for the whole acquisition)."""
        self._decode_threads = threads
        _set_decode_threads(self.inner, threads)

    def prepare(self) -> None:
        self.inner.prepare()
        self.frame_shape = self.inner.frame_shape
        self.detector_mask = self.inner.detector_mask

    def frame_bytes(self) -> int:
        """The wrapped source's: a task's chunks are then the ones ``integrate`` reads."""
        return self.inner.frame_bytes()

    def expected_frames(self) -> int | None:
        """None: a range's count is checked by the job's merge, against the whole acquisition."""
        return None

    def _reader(self) -> tuple[FrameSource, list[int] | None]:
        """The source to read and the map from its file indices to the acquisition's (None: same)."""
        parts = self.range.parts
        inner = self.inner
        if parts is None or not isinstance(inner, LambdaSource):
            return inner, None
        acquisition = inner.acquisition
        narrowed = LambdaSource(
            acquisition=dataclasses.replace(acquisition, parts=tuple(acquisition.parts[i] for i in parts)),
            retries=inner.retries,
            retry_delay_s=inner.retry_delay_s,
        )
        if self._decode_threads is not None:
            _set_decode_threads(narrowed, self._decode_threads)
        # the whole acquisition's layout: a part unlike the first part of the acquisition is refused as integrate does
        narrowed.layout = inner.layout
        narrowed.frame_shape = inner.frame_shape
        narrowed.detector_mask = inner.detector_mask
        return narrowed, list(parts)

    def _in_range(self, numbers: np.ndarray) -> np.ndarray:
        return (numbers >= self.range.first) & (numbers <= self.range.last)

    def chunks(self, chunk_size: int, on_error: ErrorSink) -> Iterator[FrameBatch]:
        if getattr(self, "frame_shape", None) is None:
            self.prepare()
        reader, index_map = self._reader()

        def failed(failure: FailedFrames) -> None:
            if not failure.frame_numbers:  # a file whose frames are unknown: every range reports it (merged once)
                on_error(failure)
                return
            mine = [n for n in failure.frame_numbers if self.range.first <= n <= self.range.last]
            if mine:
                self.frames_failed += len(mine)
                on_error(dataclasses.replace(failure, frame_numbers=mine))

        for batch in reader.chunks(chunk_size, failed):
            numbers = np.asarray(batch.frame_numbers)
            keep = self._in_range(numbers)
            if not keep.any():
                _release(batch)
                continue
            self.frames_read += int(keep.sum())
            if index_map is not None:
                batch.file_index = index_map[batch.file_index]
            if keep.all():  # the common case: ranges are cut at chunk boundaries (see ranges.plan_ranges)
                yield batch
                continue
            log.warning("%s: a chunk straddles %s; its frames are stitched here", self.name, self.range.describe())
            sliced = FrameBatch(
                frame_numbers=numbers[keep],
                frames=batch.frames[keep],
                file_index=batch.file_index,
                index_in_file=np.asarray(batch.index_in_file)[keep],
                detector_mask=batch.detector_mask,
                file=batch.file,
            )
            _release(batch)
            yield sliced


def _set_decode_threads(source: FrameSource, threads: int) -> None:
    setter = getattr(source, "set_decode_threads", None)  # sources of this version have it
    if setter is not None:
        setter(threads)


def _release(batch: FrameBatch) -> None:
    """Hand a batch's read buffer back to its source (readers that pool their buffers)."""
    release = getattr(batch, "release", None)
    if release is not None:
        release()
