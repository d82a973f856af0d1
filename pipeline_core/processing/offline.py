"""Offline integration of a whole acquisition: read → stitch → integrate → merge, overlapped.

One reader thread reads chunks of module frames as decoded (Lambda: never stitched; DEFLATE
chunks are inflated by :func:`decode_threads` threads that release the GIL, since h5py
runs HDF5's own filters under one lock); ``workers`` integration threads integrate them: they share
one warm :class:`IntegrationEngine` when it is the csr engine (read-only matrices, scipy's product
releases the GIL), or own one each for pyFAI's path (pyFAI's kernels reuse their buffers); the
calling thread writes the merged file. Memory stays flat whatever the acquisition length: the
reader takes a slot before it reads a chunk and a worker gives it back once the chunk is
integrated, so at most ``workers + 1`` chunks exist at once (:func:`frames_in_flight` says how many
frames that is at most; :func:`chunk_frames` how many frames a chunk holds).

The run always ends the same way, whatever stops it: the threads are told to stop, the queues are
drained (what was integrated is written), every thread is joined, and the file is closed, before
this function returns or raises. An interruption (Ctrl-C, SIGTERM/SIGHUP through
:mod:`.signals`) leaves the file at ``<name>.part`` with status ``interrupted`` and raises
:class:`IntegrationInterrupted`, which says how far it got. A write the file refuses (a full disk:
:class:`~pipeline_core.errors.NoSpaceError`, checked before HDF5 could meet it) ends the run the same
way with status ``failed`` and raises it, saying where the partial file is — or that it was removed,
when not even its status could be written.
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec

import numpy as np

from ..errors import NoSpaceError, OutputError, PipelineError
from ..formats.hdf5_io import FreeBytes
from ..formats.nexus import MergedFileWriter
from ..formats.nexus_modules import record_modules
from ..messages import FailedFrames
from ..output import part_path, reserve_output
from ..science.tracker import PressureSettings
from ..signals import Interrupted, raise_if_stopped, signals_deferred
from .engine_choice import DEFAULT_ENGINE, validate_engine
from .frame_batch import BatchPatterns, integrate_batch
from .integrate import IntegrationEngine, IntegrationSettings
from .sources import FrameSource
from .stitch import StitchLayout

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (frames done, frames failed)


@dataclass
class RunReport:
    """What an integration run did: where the result is and what (if anything) failed."""

    #: the result file: its final name, or ``<name>.part`` when the run did not end by itself
    output: Path
    frames_integrated: int
    failures: list[FailedFrames] = field(default_factory=list)
    duplicates_ignored: int = 0
    elapsed_s: float = 0.0
    #: the file's status: complete, incomplete, interrupted (stopped) or failed (crashed)
    status: str = "complete"
    #: frames the source announced (None when it cannot tell cheaply)
    frames_expected: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def frames_failed(self) -> int:
        return sum(max(1, len(f.frame_numbers)) for f in self.failures)

    @property
    def frames_per_second(self) -> float:
        return self.frames_integrated / self.elapsed_s if self.elapsed_s else 0.0

    def describe_partial(self) -> str:
        """One line for an operator: how far a run got and where its partial file is."""
        of = f" of {self.frames_expected}" if self.frames_expected is not None else ""
        return f"{self.frames_integrated}{of} frames; partial result {self.output} (status {self.status})"


class IntegrationInterrupted(Interrupted):
    """A stop signal ended :func:`integrate_source`; ``report`` says what was written, and where."""

    def __init__(self, signum: int, report: RunReport):
        super().__init__(signum)
        self.report = report


#: Chunks that may wait between the reader and the integrators, per worker. One is enough to
#: keep a worker busy while the next chunk is read; each stitched Lambda 2M frame is 11 MB.
CHUNKS_QUEUED_PER_WORKER = 1
#: The most frames in one chunk (and the multiple at which job ranges are cut). Eight, because the
#: csr engine's product is cheapest in blocks of 8 frames (scipy's multi-vector kernel; bench_engine's
#: block probe, CPU ms a Lambda 2M frame on 2 cores: k = 1 5.6-8.6, k = 2 11-15, k = 4 6.3-9.9, k = 8 4.1-5.3), and
#: because the merged file is then written and flushed once per 8 frames instead of per 2 (the
#: writing thread took 1.6 ms a frame with chunks of 2). Fewer when the frames are wide (memory).
DEFAULT_CHUNK_SIZE = 8
#: What the frames in flight may take at once (:func:`chunk_frames`): 16 int16 Lambda 2M frames
#: (77 MB) with one worker, 24 with two; chunks of 4 for 4-byte counts.
FRAME_MEMORY_BYTES = 128 * 2**20
#: How long the shutdown waits for a thread stuck in a read (a hung file system) before giving up.
SHUTDOWN_TIMEOUT_S = 30.0


def chunk_frames(workers: int, frame_bytes: int, most: int = DEFAULT_CHUNK_SIZE) -> int:
    """Frames per chunk: ``most``, halved until the chunks in flight (:func:`chunks_in_flight`) fit
    :data:`FRAME_MEMORY_BYTES`, at least 1. Halving 8 gives divisors of 8, so the chunks never
    straddle the ranges jobs cut at multiples of :data:`DEFAULT_CHUNK_SIZE`."""
    chunk = max(1, int(most))
    while chunk > 1 and chunks_in_flight(workers) * chunk * frame_bytes > FRAME_MEMORY_BYTES:
        chunk //= 2
    return chunk


def chunks_in_flight(workers: int) -> int:
    """Most chunks alive at once: one per worker being integrated (or queued for it) and one being
    read. The reader takes a slot before it reads a chunk, a worker gives it back once the chunk is
    integrated, so a chunk waiting in the queue counts against the reader, not on top of it."""
    return workers + 1


def frames_in_flight(workers: int, frame_bytes: int, most: int = DEFAULT_CHUNK_SIZE) -> int:
    """Most frames alive at once (module frames as decoded for a Lambda source, stitched frames for
    the others), whatever the acquisition's length."""
    return chunks_in_flight(workers) * chunk_frames(workers, frame_bytes, most)


def _frame_bytes(source: FrameSource) -> int:
    """What one frame of ``source`` takes in a chunk: its own figure, else 4 bytes a pixel of its
    (prepared) frame shape, the widest Lambda counts."""
    own = getattr(source, "frame_bytes", None)  # FrameSource's; a duck-typed source may lack it
    if own is not None:
        return int(own())
    rows, cols = source.frame_shape
    return int(rows) * int(cols) * 4


def decode_threads(workers: int) -> int:
    """Threads that inflate DEFLATE frames: at least two, so that with one integration worker both
    cores still decode (gzip costs ~15 ms a Lambda 2M frame, three times the csr engine's product)."""
    return max(2, workers)


_DONE = object()
_POLL_S = 0.05
_P = ParamSpec("_P")


def _stops_at_safe_points(run: Callable[_P, RunReport]) -> Callable[_P, RunReport]:
    """Run ``run`` with stop signals recorded, raised only where it calls ``raise_if_stopped``.

    Why: the calling thread waits in ``queue.get`` and joins threads, lock code that a raising handler
    can cut anywhere; Ctrl-C then SIGTERM 0.1 ms apart unwound it half-way ("release unlocked lock",
    the file marked failed, exit 1). A failure while a stop was recorded is that stop (the engine
    builder child gets the terminal's Ctrl-C too, and dies of it).
    """

    @functools.wraps(run)
    def stoppable(*args: _P.args, **kwargs: _P.kwargs) -> RunReport:
        with signals_deferred() as stops:
            try:
                return run(*args, **kwargs)
            except Exception as exc:
                if stops:
                    raise Interrupted(stops[0]) from exc
                raise

    return stoppable


@_stops_at_safe_points
def integrate_source(
    source: FrameSource,
    settings: IntegrationSettings,
    output: str | Path,
    workers: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    *,
    engine: str = DEFAULT_ENGINE,
    free_bytes: FreeBytes | None = None,
    pressure: PressureSettings | None = None,
) -> RunReport:
    """Integrate every frame of ``source`` into a new merged file at ``output`` (never overwritten).

    Frames that cannot be read or integrated are listed in the file and in the report; the run goes
    on with the others. ``chunk_size``: the most frames read and integrated together (fewer for
    wide frames, :func:`chunk_frames`). The file gets its final name only when the run ends by itself; setting
    ``stop`` ends it early (status ``interrupted``, file left at ``<name>.part``, report returned),
    a stop signal does the same and raises :class:`IntegrationInterrupted`.

    ``engine``: auto, csr or pyfai (:mod:`.engine_choice`); the one used is recorded in the file's
    ``/processed/process/engine``. ``free_bytes(folder)``: the output folder's free space (default:
    the file system's; tests pass their own to simulate a full disk). ``pressure``: when given, the
    finished file also gets ``/processed/pressure`` (:func:`_add_pressure`).
    """
    t0 = time.perf_counter()
    requested = stop or threading.Event()  # set by the caller: stop early, cleanly
    halt = threading.Event()  # set by us: read and integrate nothing more
    abandon = threading.Event()  # set by us once nobody drains the results any more
    validate_engine(engine)
    source.prepare()
    first = IntegrationEngine(settings, source.frame_shape, source.detector_mask, engine=engine)
    layout = getattr(source, "layout", None)  # a Lambda source's: the csr engine folds it before any buffer exists
    if isinstance(layout, StitchLayout):
        first.prepare_layout(layout)
    release_build_memory(first)
    expected = source.expected_frames()
    chunk_size = chunk_frames(workers, _frame_bytes(source), chunk_size)
    raise_if_stopped()  # stopped while setting up: no file reserved yet
    path = reserve_output(output)
    try:
        writer = MergedFileWriter(
            path, first.radial, settings, source.raw_files, source.input_files, source.name, free_bytes=free_bytes
        )
        writer.record_engine(first.used.name, first.used.note)
        modules = source.module_record()
        if modules is not None:
            record_modules(writer.h5, *modules)
    except BaseException:  # a reserved name is a file written, never an empty .part left behind
        part_path(path).unlink(missing_ok=True)
        raise
    slots = threading.Semaphore(chunks_in_flight(workers))  # chunks read and not yet integrated
    failures: list[FailedFrames] = []
    crash: list[BaseException] = []
    refused: list[OutputError] = []  # the file refused a write (no space): nothing more goes into it
    threads: list[threading.Thread] = []
    try:
        chunks: queue.Queue = queue.Queue(maxsize=CHUNKS_QUEUED_PER_WORKER * workers)
        results: queue.Queue = queue.Queue(maxsize=4 * workers + 4)

        def put(q: queue.Queue, item, *unless: threading.Event) -> bool:
            """Put, waiting for room until one of ``unless`` is set (a full queue never blocks a stop)."""
            while not any(e.is_set() for e in unless):
                try:
                    q.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def failed(failure: FailedFrames) -> None:
            put(results, ("failed", failure), abandon)

        def slot() -> bool:
            """Wait for a chunk's room before reading it (False: stopped meanwhile)."""
            while not (halt.is_set() or requested.is_set()):
                if slots.acquire(timeout=_POLL_S):
                    return True
            return False

        def read() -> None:
            reading = None
            try:
                reading = iter(source.chunks(chunk_size, failed))
                while slot():
                    chunk = next(reading, None)
                    if chunk is None or halt.is_set() or requested.is_set():
                        break
                    queued = put(chunks, chunk, halt, requested)
                    del chunk  # the worker's now: held here through the next slot() and read, it would be one more
                    if not queued:
                        break
            except BaseException as exc:  # a bug, not bad input: surface it in the calling thread
                put(results, ("crash", exc), abandon)
            finally:
                try:
                    close = getattr(reading, "close", None)  # a generator's open files and decode threads, now
                    if close is not None:
                        close()
                finally:
                    for _ in range(workers):
                        put(chunks, _DONE, halt, requested)

        def work(eng: IntegrationEngine) -> None:
            try:
                while not halt.is_set() and not requested.is_set():  # a stop starts no new chunk
                    try:
                        chunk = chunks.get(timeout=_POLL_S)
                    except queue.Empty:
                        continue
                    if chunk is _DONE:
                        break
                    try:
                        result = integrate_batch(eng, chunk)
                    finally:
                        chunk.release()  # its buffer can be read into again while the patterns wait to be written
                        del chunk
                        slots.release()
                    if result.invalid_pixels:
                        log.warning(
                            "frames %d..%d: %d pixel(s) with negative or NaN counts left out",
                            result.frame_numbers[0], result.frame_numbers[-1], result.invalid_pixels,
                        )  # fmt: skip
                    if not put(results, ("patterns", result), abandon):
                        break
            except BaseException as exc:
                put(results, ("crash", exc), abandon)
            finally:
                put(results, ("done", None), abandon)

        def handle(kind, item) -> None:
            if kind == "crash":
                crash.append(item)
                halt.set()
            elif refused:
                return  # integrated after the file refused a write: dropped, the run ends failed
            try:
                if kind == "patterns":
                    _write_patterns(writer, item, failures)
                elif kind == "failed":
                    failures.append(item)
                    writer.add_failure(item)
            except OutputError as exc:
                refused.append(exc)
                halt.set()

        # the csr engine serves every worker; pyFAI's needs one per worker, built one after the other
        # (each build peaks at ~2x a warm engine)
        if first.thread_safe:
            engines = [first] * workers
        else:
            engines = [first] + [
                release_build_memory(
                    IntegrationEngine(settings, source.frame_shape, source.detector_mask, engine=engine)
                )
                for _ in range(workers - 1)
            ]
        set_threads = getattr(source, "set_decode_threads", None)  # FrameSource's; a duck-typed source may lack it
        if set_threads is not None:
            set_threads(decode_threads(workers))
        threads.append(threading.Thread(target=read, name="xrd-reader", daemon=True))
        threads += [
            threading.Thread(target=work, args=(eng,), name=f"xrd-integrator-{i}", daemon=True)
            for i, eng in enumerate(engines)
        ]
        for t in threads:
            t.start()
        finished = 0
        while finished < workers:
            raise_if_stopped()  # where a stop signal ends the run: between two batches
            try:
                kind, item = results.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind == "done":
                finished += 1
                continue
            with signals_deferred():  # a signal lands between two batches, never inside a write
                handle(kind, item)
            if progress is not None:
                progress(writer.n_frames, sum(max(1, len(f.frame_numbers)) for f in failures))
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        status = "interrupted" if interrupted else "failed"
        try:
            with signals_deferred():  # a second Ctrl-C must not cut the cleanup short
                halt.set()
                if threads:
                    _shut_down(threads, results, handle, abandon)
                _suspend(writer, status)
        except KeyboardInterrupt:
            if not interrupted:
                raise
        if interrupted:
            report = _report(writer, failures, status, expected, t0)
            raise IntegrationInterrupted(getattr(exc, "signum", signal.SIGINT), report) from exc
        raise
    _shut_down(threads, results, handle, abandon)
    if refused:
        _suspend(writer, "failed")
        raise _refused(refused[0], writer) from refused[0]
    if crash:
        _suspend(writer, "failed")
        if isinstance(crash[0], PipelineError):
            raise crash[0]
        raise RuntimeError(f"integration of {source.name} crashed: {crash[0]!r}; partial file {writer.file_path}")
    with signals_deferred():
        if requested.is_set():
            _suspend(writer, "interrupted")
            return _report(writer, failures, "interrupted", expected, t0)
        if pressure is not None:
            _add_pressure(writer, pressure)
        _finish(writer, source.name, expected, failures)
    return _report(writer, failures, "complete" if not failures else "incomplete", expected, t0)


def _add_pressure(writer: MergedFileWriter, settings: PressureSettings) -> None:
    """The pressure hook: ``/processed/pressure`` from the rows just written (the same code as the
    ``pressure`` command and the live Merger: :mod:`pipeline_core.science`); a failure ends the run
    failed, never a result without the pressure asked for."""
    from ..science.nexus_pressure import add_pressure

    what = f"the pressure of {writer.file_path}"
    try:
        writer.reserve(8 << 20, what)  # the room taken, not only checked: HDF5 must never meet ENOSPC
        with writer.writing(what):
            add_pressure(writer.h5, settings)
            writer.h5.flush()
    except BaseException:
        _suspend(writer, "failed")
        raise


def _suspend(writer: MergedFileWriter, status: str) -> None:
    """Leave the partial file with ``status``; when not even that can be written (no space), remove
    it rather than leave a file that says ``running`` for a run that is over, and say so."""
    try:
        writer.suspend(status)
    except NoSpaceError as exc:
        raise _removed(exc, writer) from exc


def _removed(exc: NoSpaceError, writer: MergedFileWriter) -> NoSpaceError:
    """Remove a partial result whose status could not be written, and say so."""
    writer.file_path.unlink(missing_ok=True)
    return exc.with_detail(f"not even its status could be written: the partial result {writer.file_path} was removed")


def _refused(exc: OutputError, writer: MergedFileWriter) -> OutputError:
    """The error a refused write ends the run with, saying where the partial result is."""
    where = f"the partial result {writer.file_path} is left with status failed ({writer.n_frames} frames)"
    if isinstance(exc, NoSpaceError):
        return exc.with_detail(where)
    return OutputError(f"{exc}; {where}")


def _report(writer: MergedFileWriter, failures, status: str, expected: int | None, t0: float) -> RunReport:
    return RunReport(
        writer.file_path,
        writer.n_frames,
        failures,
        writer.duplicates_ignored,
        time.perf_counter() - t0,
        status,
        expected,
    )


def _shut_down(threads: list[threading.Thread], results: queue.Queue, handle, abandon: threading.Event) -> None:
    """Drain the results (writing what was integrated) until every thread has ended, then join them.

    Deterministic: nothing is left running that could hold h5py's lock when the interpreter exits.
    """
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        try:
            kind, item = results.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if kind != "done":
            handle(kind, item)
    while True:
        try:
            kind, item = results.get_nowait()
        except queue.Empty:
            break
        if kind != "done":
            handle(kind, item)
    abandon.set()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        log.error("threads %s did not stop within %.0f s (a read hanging?)", ", ".join(stuck), SHUTDOWN_TIMEOUT_S)


def _finish(writer: MergedFileWriter, name: str, expected: int | None, failures: list[FailedFrames]) -> None:
    """Publish the result; a write refused on the way (no space) ends it failed instead."""
    try:
        check_all_frames_accounted(writer, name, expected, failures)
    except OutputError as exc:
        _suspend(writer, "failed")
        raise _refused(exc, writer) from exc
    try:
        writer.close()
    except NoSpaceError as exc:
        raise _removed(exc, writer) from exc


def check_all_frames_accounted(writer: MergedFileWriter, name: str, expected: int | None, failures) -> None:
    """``complete`` only when every frame the source announced is in the file or listed as failed."""
    if expected is None:
        return
    listed = {n for f in failures for n in f.frame_numbers}
    whole_files = sum(1 for f in failures if not f.frame_numbers)
    accounted = writer.n_frames + len(listed - set(writer.frame_numbers.tolist())) + whole_files
    if accounted < expected:
        # frames are numbered 1..expected across the parts: the ones neither integrated nor listed are
        # named (a missing part's frames), unless a failure of a whole file may hold them already
        have = set(writer.frame_numbers.tolist()) | listed
        missing = [] if whole_files else sorted(set(range(1, expected + 1)) - have)
        failure = FailedFrames(
            name,
            f"the files announce {expected} frames but only {accounted} were integrated or reported as failed"
            + (" (never read: their part files are not in the folder)" if missing else ""),
            missing,
        )
        failures.append(failure)
        writer.add_failure(failure)


#: pyFAI arrays needed only to *build* the CSR engine (pixel positions, corners); 20-90 MB each for
#: a Lambda 2M. pyFAI recomputes them if it ever has to rebuild the engine.
_BUILD_ONLY_CACHES = ("2th_corner", "2th_delta", "2th_center", "chi_center", "q_corner", "q_delta", "q_center",
                      "r_corner", "r_delta", "r_center", "d*2_corner", "d*2_delta", "d*2_center", "cos_incidence")
_BUILD_ONLY_ENGINE_ARRAYS = ("cpos0", "dpos0", "cpos1", "dpos1", "pos")


def release_build_memory(engine: IntegrationEngine) -> IntegrationEngine:
    """Free what pyFAI keeps from building the engine but never reads again (~230 MB per engine for
    a Lambda 2M), and hand freed heap pages back to the system (glibc keeps them otherwise).

    Measured: a warm engine drops from ~440 MB to ~200 MB RSS; results and speed are unchanged
    (the engine, its mask and the solid-angle/polarization arrays used at each frame stay).
    """
    ai = engine.ai
    cache = getattr(ai, "_cached_array", None)
    if isinstance(cache, dict):
        for key in _BUILD_ONLY_CACHES:
            cache.pop(key, None)
    for holder in getattr(ai, "engines", {}).values():
        sparse = getattr(holder, "engine", None)
        for name in _BUILD_ONLY_ENGINE_ARRAYS:
            if isinstance(getattr(sparse, name, None), np.ndarray):
                try:
                    setattr(sparse, name, None)
                except (AttributeError, TypeError):  # read-only in this pyFAI build: keep it
                    pass
    _malloc_trim()
    return engine


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back this way
        pass


def _write_patterns(writer: MergedFileWriter, patterns: BatchPatterns, failures: list[FailedFrames]) -> None:
    """Failures of the batch first (listed in the file), then the rows that integrated."""
    for f in patterns.failed:
        failures.append(f)
        writer.add_failure(f)
    n = len(patterns.frame_numbers)
    if n:
        writer.add(
            patterns.frame_numbers,
            patterns.intensities,
            patterns.sigma,
            np.full(n, patterns.file_index),
            patterns.index_in_file,
        )
