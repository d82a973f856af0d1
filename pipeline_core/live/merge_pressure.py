"""The Merger's pressure: a :class:`PressureTracker` per open scan fed with the batches as they are
merged (on the stage's thread), and ``/processed/pressure`` written into the scan's file when it
closes — by :func:`nexus_pressure.compute_pressure` on the file's own rows, the function offline
``integrate --marker`` and ``xrd-pipeline pressure`` use, so the file's numbers are theirs.

What the operator sees (:class:`PressureReading`) is the live tracker's until the scan closes, then
the file's: after a close the attributes equal the file's last frame.

The compression rate needs the frames' times. Lambda files carry no per-frame timestamps (only a
``sequence_number``), so a frame's time is ``(frame_number - 1) × period`` with the detector's frame
period: ``count_time + detector_readout_time`` of the scan's raw file where it records them (real
P02.2 files do), else the ``frame_period_s`` the Merger is configured with; without either the rate
is NaN. The file says which (``/processed/pressure/frame_period`` and its ``source``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..errors import ConfigError, NoSpaceError
from ..messages import PatternBatch
from ..science.nexus_pressure import BLOCK_FRAMES, compute_pressure, pressure_bytes, wavelength_of, write_pressure
from ..science.series import PressureSeries
from ..science.tracker import PressureSettings, PressureTracker, parse_reflections

log = logging.getLogger(__name__)

_FALLBACK = "the Merger's FramePeriod property (the files record no frame time)"

#: frames (the last ones with a value) the compression rate is fitted over
RATE_FRAMES = 20
#: rows of the live trace (the last frames of the scan): what one change event carries at most
MAX_TRACE_ROWS = 10_000
_SECONDS = {"s": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3,
            "us": 1e-6, "microsecond": 1e-6, "microseconds": 1e-6}  # fmt: skip


def settings_from_properties(marker: str, scale: str, reflections: str, start_gpa: float) -> PressureSettings | None:
    """The Merger's ``Marker``/``PressureScale``/``MarkerReflections``/``StartPressure`` as settings;
    None when ``Marker`` is empty (no pressure). ConfigError naming the value refused otherwise:
    the marker, scale and reflections are loaded here, before any scan."""
    marker = marker.strip()
    if not marker:
        return None
    refl = parse_reflections(reflections) if reflections.strip() else None
    settings = PressureSettings(marker, scale.strip() or None, refl, float(start_gpa))
    try:
        settings.load()
    except (OSError, ValueError, KeyError) as exc:  # e.g. a JCPDS file that cannot be read
        raise ConfigError(f"Marker {marker!r}: {exc}") from exc
    return settings


def detector_frame_period(raw_file: str) -> float | None:
    """``count_time + detector_readout_time`` (s) of a Lambda file; None when it records neither (the
    simulator's files) or in a unit not known here."""
    try:
        with h5py.File(raw_file, "r") as h5:
            det = h5["entry/instrument/detector"]
            total = 0.0
            for name in ("count_time", "detector_readout_time"):
                if name not in det:
                    continue
                unit = det[name].attrs.get("units", "s")
                unit = unit.decode() if isinstance(unit, bytes) else str(unit)
                if unit not in _SECONDS:
                    return None
                total += float(np.ravel(det[name][()])[0]) * _SECONDS[unit]
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        return None
    return total if np.isfinite(total) and total > 0 else None


def compression_rate(numbers: np.ndarray, pressure: np.ndarray, period_s: float | None) -> float:
    """GPa/s: the slope of pressure against time over the last :data:`RATE_FRAMES` frames with a
    value (time = frame number × period); NaN without a period or two frames."""
    good = np.isfinite(pressure)
    n, p = numbers[good][-RATE_FRAMES:], pressure[good][-RATE_FRAMES:]
    if not period_s or len(n) < 2 or n[0] == n[-1]:
        return float("nan")
    return float(np.polyfit(n.astype(np.float64) * period_s, p, 1)[0])


@dataclass(frozen=True)
class PressureReading:
    """What the Merger shows: the pressure of the scan's last frame (NaN when it has none), its
    sigma, the compression rate and the trace (rows of frame number, pressure)."""

    scan: str = ""
    pressure_gpa: float = float("nan")
    sigma_gpa: float = float("nan")
    rate_gpa_s: float = float("nan")
    trace: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @classmethod
    def of(cls, scan: str, numbers: np.ndarray, pressure: np.ndarray, sigma: np.ndarray, period_s: float | None):
        """The reading of a scan's frames (sorted by frame number)."""
        if not len(numbers):
            return cls(scan)
        trace = np.column_stack([numbers[-MAX_TRACE_ROWS:].astype(np.float64), pressure[-MAX_TRACE_ROWS:]])
        rate = compression_rate(numbers, pressure, period_s)
        return cls(scan, float(pressure[-1]), float(sigma[-1]), rate, trace)


class ScanPressure:
    """One open scan's tracker and its frames so far (sorted, each once)."""

    def __init__(self, scan: str, tracker: PressureTracker, period_s: float | None, period_source: str):
        self.scan, self.tracker = scan, tracker
        self.period_s, self.period_source = period_s, period_source
        self.numbers = np.empty(0, np.int64)
        self.pressure = np.empty(0)
        self.sigma = np.empty(0)

    def feed(self, batch: PatternBatch) -> PressureReading:
        """Fit a batch in blocks of :data:`BLOCK_FRAMES` sorted frames, as the offline code reads a file:
        each block's windows follow the frames before it (a part of 50 frames may span 100 GPa)."""
        numbers = np.asarray(batch.frame_numbers, np.int64)
        order = np.argsort(numbers, kind="stable")
        rows = np.asarray(batch.intensities, np.float64)[order]
        for start in range(0, len(order), BLOCK_FRAMES):
            part = self.tracker.feed(numbers[order][start : start + BLOCK_FRAMES], rows[start : start + BLOCK_FRAMES])
            self._add(part)
        return PressureReading.of(self.scan, self.numbers, self.pressure, self.sigma, self.period_s)

    def _add(self, part: PressureSeries) -> None:
        new = ~np.isin(part.frame_number, self.numbers)
        numbers = np.concatenate([self.numbers, part.frame_number[new]])
        order = np.argsort(numbers, kind="stable")
        self.numbers = numbers[order]
        self.pressure = np.concatenate([self.pressure, part.pressure[new]])[order]
        self.sigma = np.concatenate([self.sigma, part.pressure_sigma[new]])[order]


class LivePressure:
    """The merge stage's pressure (``settings`` None: off). Runs on the stage's thread; :attr:`reading`
    is replaced whole, so any thread may read it."""

    def __init__(
        self,
        settings: PressureSettings | None,
        on_error: Callable[[str], None],
        frame_period_s: float | None = None,
    ):
        self.settings = settings
        self.marker = settings.load() if settings is not None else None
        self.frame_period_s = frame_period_s if frame_period_s and frame_period_s > 0 else None
        self._on_error = on_error
        self._scans: dict[str, ScanPressure] = {}
        self._refused: set[str] = set()  # scans whose live pressure failed (said once; the file still gets it)
        self._lock = threading.Lock()
        self._reading = PressureReading()

    @property
    def reading(self) -> PressureReading:
        with self._lock:
            return self._reading

    def _show(self, reading: PressureReading) -> None:
        with self._lock:
            self._reading = reading

    def merged(self, h5: h5py.File, unit: str, batch: PatternBatch) -> None:
        """Feed a batch just merged into ``h5`` (the scan's open file, whose PONI text gives the
        wavelength). A failure is said once per scan: merging goes on, the file gets its pressure at close.
        A new scan, or one whose fit failed, shows an empty reading (NaN): never the previous scan's."""
        if self.settings is None or not len(batch.frame_numbers) or batch.scan in self._refused:
            return
        try:
            scan = self._scans.get(batch.scan)
            if scan is None:
                self._show(PressureReading(batch.scan))
                scan = self._start(batch, h5, unit)
            self._show(scan.feed(batch))
        except Exception as exc:  # noqa: BLE001 - a fit problem must never stop the merging
            self._refused.add(batch.scan)
            self._show(PressureReading(batch.scan))
            self._on_error(f"scan {batch.scan}: no live pressure ({exc}); the file gets it when the scan closes")

    def _start(self, batch: PatternBatch, h5: h5py.File, unit: str) -> ScanPressure:
        assert self.settings is not None
        tracker = PressureTracker(self.settings, np.asarray(batch.radial), unit, wavelength_of(h5))
        period = detector_frame_period(batch.raw_file) if batch.raw_file else None
        if period is None:
            period, source = self._fallback_period()
        else:
            source = f"count_time + detector_readout_time of {batch.raw_file}"
        self._scans[batch.scan] = scan = ScanPressure(batch.scan, tracker, period, source)
        return scan

    def _fallback_period(self) -> tuple[float | None, str]:
        return self.frame_period_s, _FALLBACK if self.frame_period_s else "none known (rate NaN)"

    def write(
        self,
        scan_id: str,
        h5: h5py.File,
        require: Callable[[int, str], None],
        writing: Callable[[str], AbstractContextManager[None]] = lambda what: nullcontext(),
    ) -> None:
        """Write ``/processed/pressure`` into the closing scan's open file from its own rows (the
        offline code path), then show the file's numbers. ``require(bytes, what)``: the file's
        room for it (:meth:`MergedFileWriter.reserve`); ``writing(what)``: the file's context that
        turns an ENOSPC HDF5 meets all the same into a NoSpaceError (:meth:`MergedFileWriter.writing`).
        NoSpaceError propagates: the scan waits for room like any other write, and keeps its live
        tracker (the frame period) for the write once room is back."""
        live = self._scans.get(scan_id)
        if self.settings is None or self.marker is None or not len(h5["processed/result/frame_number"]):
            self._forget(scan_id)
            return
        try:
            series = compute_pressure(h5, self.settings)
            what = f"the pressure of {h5.filename}"
            require(pressure_bytes(series), what)
            period, source = (live.period_s, live.period_source) if live else self._fallback_period()
            with writing(what):
                write_pressure(h5, series, self.marker, self.settings)
                rate = _record_rate(h5, series, period, source)
                h5.flush()
        except NoSpaceError:
            raise  # tried again once there is room: the scan's tracker stays for it
        except BaseException:
            self._forget(scan_id)
            raise
        self._forget(scan_id)
        reading = PressureReading.of(scan_id, series.frame_number, series.pressure, series.pressure_sigma, period)
        self._show(reading)
        log.info("scan %s: pressure written, last %.3f GPa, rate %.4g GPa/s", scan_id, reading.pressure_gpa, rate)

    def _forget(self, scan_id: str) -> None:
        self._scans.pop(scan_id, None)
        self._refused.discard(scan_id)


def _record_rate(h5: h5py.File, series: PressureSeries, period: float | None, source: str) -> float:
    """The frame period the rate was computed with, where it came from, and the rate, in the file."""
    proc = h5["processed/pressure"]  # the NXprocess of write_pressure (its provenance)
    ds = proc.create_dataset("frame_period", data=float(period or np.nan))
    ds.attrs.update(units="s", source=source)
    rate = compression_rate(series.frame_number, series.pressure, period)
    proc.create_dataset("compression_rate", data=rate).attrs.update(
        units="GPa/s", long_name=f"slope of pressure over the last {RATE_FRAMES} frames with a value"
    )
    return rate
