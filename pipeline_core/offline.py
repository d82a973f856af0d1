"""Offline integration of a whole acquisition: read → stitch → integrate → merge, overlapped.

One reader thread reads and stitches chunks of frames (h5py decompression releases the GIL in
HDF5's filters); ``workers`` integration threads each own a warm :class:`IntegrationEngine` (pyFAI's
CSR kernels run in OpenMP without the GIL); the calling thread writes the merged file. Bounded
queues keep memory flat whatever the acquisition length.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PipelineError
from .integrate import IntegrationEngine, IntegrationSettings
from .nexus import MergedFileWriter
from .output import reserve_output
from .sources import FailedInput, FrameChunk, FrameSource

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (frames done, frames failed)


@dataclass
class RunReport:
    """What an integration run did: where the result is and what (if anything) failed."""

    output: Path
    frames_integrated: int
    failures: list[FailedInput] = field(default_factory=list)
    duplicates_ignored: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def frames_failed(self) -> int:
        return sum(max(1, len(f.frame_numbers)) for f in self.failures)

    @property
    def frames_per_second(self) -> float:
        return self.frames_integrated / self.elapsed_s if self.elapsed_s else 0.0


_DONE = object()


def integrate_source(
    source: FrameSource,
    settings: IntegrationSettings,
    output: str | Path,
    workers: int = 1,
    chunk_size: int = 8,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Integrate every frame of ``source`` into a new merged file at ``output`` (never overwritten).

    Frames that cannot be read or integrated are listed in the file and in the report; the run goes
    on with the others.
    """
    t0 = time.perf_counter()
    stop = stop or threading.Event()
    source.prepare()
    engine = IntegrationEngine(settings, source.frame_shape, source.detector_mask)  # validates PONI/mask first
    path = reserve_output(output)
    writer = MergedFileWriter(path, engine.radial, settings, source.raw_files, source.input_files, source.name)
    chunks: queue.Queue = queue.Queue(maxsize=2 * workers + 2)
    results: queue.Queue = queue.Queue(maxsize=4 * workers + 4)
    failures: list[FailedInput] = []

    def read() -> None:
        try:
            for chunk in source.chunks(chunk_size, lambda f: results.put(("failed", f))):
                if stop.is_set():
                    break
                chunks.put(chunk)
        except BaseException as exc:  # a bug, not bad input: surface it in the calling thread
            results.put(("crash", exc))
        finally:
            for _ in range(workers):
                chunks.put(_DONE)

    def work(own_engine: IntegrationEngine | None) -> None:
        try:
            eng = own_engine or IntegrationEngine(settings, source.frame_shape, source.detector_mask)
            while (chunk := chunks.get()) is not _DONE:
                results.put(("patterns", _integrate_chunk(eng, chunk)))
        except BaseException as exc:
            results.put(("crash", exc))
            stop.set()
            while chunks.get() is not _DONE:  # drain so the reader is never stuck on a full queue
                pass
        finally:
            results.put(("done", None))

    threads = [threading.Thread(target=read, name="xrd-reader", daemon=True)]
    threads += [
        threading.Thread(target=work, args=(engine if i == 0 else None,), name=f"xrd-integrator-{i}", daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    finished = 0
    crash: BaseException | None = None
    try:
        while finished < workers:
            kind, item = results.get()
            if kind == "patterns":
                chunk, intensities, sigma, failed = item
                good = np.ones(len(chunk.frame_numbers), bool)
                for f, i in failed:
                    good[i] = False
                    failures.append(f)
                    writer.add_failure(f)
                if good.any():
                    writer.add(
                        chunk.frame_numbers[good],
                        intensities[good],
                        None if sigma is None else sigma[good],
                        np.full(int(good.sum()), chunk.file_index),
                        chunk.index_in_file[good],
                    )
            elif kind == "failed":
                failures.append(item)
                writer.add_failure(item)
            elif kind == "crash":
                crash = crash or item
            elif kind == "done":
                finished += 1
            if progress is not None:
                progress(writer.n_frames, sum(max(1, len(f.frame_numbers)) for f in failures))
    except BaseException:
        stop.set()
        raise
    finally:
        writer.close()
    for t in threads:
        t.join(timeout=5)
    if crash is not None:
        if isinstance(crash, PipelineError):
            raise crash
        raise RuntimeError(f"integration of {source.name} crashed: {crash!r}") from crash
    return RunReport(path, writer.n_frames, failures, writer.duplicates_ignored, time.perf_counter() - t0)


def _integrate_chunk(engine: IntegrationEngine, chunk: FrameChunk):
    """Integrate every frame of a chunk; a frame that fails is reported, the others still count."""
    n = len(chunk.frame_numbers)
    intensities = np.zeros((n, engine.settings.bins), np.float32)
    sigma = np.zeros_like(intensities) if engine.settings.error_model else None
    failed: list[tuple[FailedInput, int]] = []
    for i in range(n):
        number = int(chunk.frame_numbers[i])
        try:
            pattern = engine.integrate(chunk.frames[i], number)
        except Exception as exc:
            failed.append((FailedInput(f"frame {number}", f"integration failed: {exc}", [number]), i))
            continue
        intensities[i] = pattern.intensity
        if pattern.invalid_pixels:
            log.warning("frame %d: %d pixel(s) with negative or NaN counts left out", number, pattern.invalid_pixels)
        if sigma is not None:
            sigma[i] = pattern.sigma
    return chunk, intensities, sigma, failed
