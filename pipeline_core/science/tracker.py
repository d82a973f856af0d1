"""Follow the marker through a ramp, batch by batch: the one code path of offline, live and ``pressure``.

For each batch: (1) predict every reflection's position from the lattice of the frames already
done around it (the start pressure for the first), find each reflection's highest bin within
``search_bins`` (none when it is the window's edge: the peak is beyond) and take the median ratio
over reflections per frame (a sample peak lying on one reflection cannot move a median); (2) fit
each reflection in a narrow window around the position that ratio predicts; (3) combine the
reflections (:mod:`.lattice`: one reflection alone among several in range is no value) and turn the
ratio into pressure; (4) frames that missed peaks are fitted again from the guesses the batch's
other frames now give, round after round while that brings frames in, and frames still without a
value are scanned over lattice ratios 1.02 to 0.80 at once. Every step works on whole arrays of
frames × reflections. Batches may come in any order (live Integrators finish out of order).

Ramp speed: with two or more reflections, none matters (the scan finds any frame whose reflections
agree); with one, a frame must lie within the search window of where its neighbours put it, else
it gets NaN. On clean data a frame gets the right value or NaN with a reason, never a wrong one.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from . import radial as R
from .lattice import combine
from .markers import Marker, load_marker
from .peaks import MIN_FIT_BINS, FitSettings, fit_peaks, search_maxima
from .series import PressureSeries


@dataclass(frozen=True)
class PressureSettings:
    """What to compute pressure from: marker (a built-in name or a JCPDS path), scale, reflections,
    start. Versioned: it travels to the live Merger as a property/JSON."""

    VERSION: ClassVar[int] = 1
    marker: str = "au"
    #: a peritheos identifier (``--list-scales``); None: the marker's published default
    scale: str | None = None
    #: labels such as ``("111", "200")``; None: all of the marker's
    reflections: tuple[str, ...] | None = None
    #: pressure (GPa) of the first frame's starting guess
    start_pressure_gpa: float = 0.0
    reject_sigma: float = 3.0
    fit: FitSettings = field(default_factory=FitSettings)

    def load(self) -> Marker:
        if not (self.reject_sigma > 0 and np.isfinite(self.start_pressure_gpa)):
            raise ConfigError(f"reject_sigma {self.reject_sigma} must be > 0, start pressure finite")
        return load_marker(self.marker, self.scale, self.reflections)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["version"] = self.VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PressureSettings:
        data = dict(data)
        version = data.pop("version", None)
        if version != cls.VERSION:
            raise ConfigError(f"pressure settings version {version!r} is unknown; expected {cls.VERSION}")
        try:
            fit = FitSettings(**data.pop("fit", {}))
            refl = data.pop("reflections", None)
            return cls(**data, reflections=tuple(refl) if refl is not None else None, fit=fit)
        except (TypeError, ValueError) as exc:  # an unknown key or a bad value, from a client
            raise ConfigError(f"pressure settings {data!r}: {exc}") from None


def parse_reflections(text: str) -> tuple[str, ...]:
    """``--reflections 111,200``: labels, each once."""
    labels = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not labels:
        raise ConfigError(f"--reflections {text!r}: expected labels such as 111,200")
    return labels


#: the widest gap between done frames a ramp's rate is measured across, or interpolated over
MAX_EXTRAPOLATION_GAP = 64
#: frames beyond the nearest done one a ramp's rate is carried (further off: the retries reach them)
MAX_AHEAD = 4
#: lattice ratios a = s a0 tried when the first frames match nothing near the start (s 1.02 to 0.80:
#: beyond 300 GPa for gold), 0.4 % apart: a reflection moves less than its search window between two
SCAN_RATIOS = np.arange(1.02, 0.799, -0.004)


def _peaks_missed(series: PressureSeries) -> np.ndarray:
    """Per frame: reflections whose fit found no peak (or a peak at its window's edge or of a width
    out of range), plus all of them when the frame has no value: what a better guess might fix."""
    missed = ((series.left_out >= 1) & (series.left_out <= 3)).sum(axis=1)
    return np.where(np.isfinite(series.lattice_a), missed, len(series.labels) + 1)


class _DoneFrames:
    """Frame numbers (sorted) and lattice ratios of the frames with a value: appended in place when
    frames come in order (amortised O(1)), inserted when they do not."""

    def __init__(self) -> None:
        self._numbers = np.empty(1024, np.int64)
        self._ratio = np.empty(1024)
        self._n = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._numbers[: self._n], self._ratio[: self._n]

    def add(self, numbers: np.ndarray, ratio: np.ndarray) -> None:
        if not len(numbers):
            return
        if self._n and numbers[0] <= self._numbers[self._n - 1]:  # out of order: rebuild, sorted
            all_numbers = np.concatenate([self._numbers[: self._n], numbers])
            all_ratio = np.concatenate([self._ratio[: self._n], ratio])
            order = np.argsort(all_numbers, kind="stable")
            self._numbers, self._ratio, self._n = all_numbers[order], all_ratio[order], len(order)
            return
        need = self._n + len(numbers)
        if need > len(self._numbers):
            size = max(need, 2 * len(self._numbers))
            self._numbers = np.resize(self._numbers, size)
            self._ratio = np.resize(self._ratio, size)
        self._numbers[self._n : need], self._ratio[self._n : need] = numbers, ratio
        self._n = need


class PressureTracker:
    """Fed batches of 1-D patterns (``feed``), keeps every frame's result (``series``)."""

    def __init__(self, settings: PressureSettings, radial: np.ndarray, unit: str, wavelength_a: float | None):
        self.settings = settings
        self.marker = settings.load()
        self.unit, self.wavelength_a = unit, wavelength_a
        axis = np.asarray(radial, dtype=np.float64)
        #: a decreasing axis (d) is turned round, and every batch's rows with it
        self._flip = axis.ndim == 1 and len(axis) > 1 and bool(np.all(np.diff(axis) < 0))
        axis = axis[::-1] if self._flip else axis
        if axis.ndim != 1 or len(axis) < 4 * MIN_FIT_BINS or not np.all(np.diff(axis) > 0):
            raise ConfigError(
                f"radial axis of {axis.shape} bins: expected at least {4 * MIN_FIT_BINS} values, strictly monotonic"
            )
        R.to_d(axis[:1], unit, wavelength_a)  # checks unit and wavelength
        self.axis = axis
        self.start_ratio = self.marker.ratio_at(settings.start_pressure_gpa)
        self._d0 = self.marker.d0
        self._done = _DoneFrames()
        self._fwhm = float("nan")  # the peaks' FWHM in bins, as last measured
        self._parts: list[PressureSeries] = []

    # -- positions --------------------------------------------------------------------------------
    def _index_of_ratio(self, ratio: np.ndarray) -> np.ndarray:
        """Fractional bin index (n, r) of each reflection for lattice ratio(s) ``ratio`` (n,)."""
        x = R.from_d(ratio[:, None] * self._d0[None, :], self.unit, self.wavelength_a)
        idx = np.interp(x, self.axis, np.arange(len(self.axis)), left=np.nan, right=np.nan)
        return np.where(np.isfinite(x), idx, np.nan)

    def _guess(self, numbers: np.ndarray) -> np.ndarray:
        """Each frame's expected ratio: on the line between the nearest frames done on either side
        (out-of-order batches); else the nearest done frame on one side moved on along the line
        through it and its neighbour (a ramp keeps its rate), at most :data:`MAX_AHEAD` frames on: a
        rate from two frames, carried far, puts the windows on the wrong peaks (gold 111 on 200 at
        100 GPa, from the rate at 2 GPa); frames further off are reached by the retries; else the start."""
        done_n, done_s = self._done.arrays()
        if not len(done_n):
            return np.full(len(numbers), self.start_ratio)
        last = len(done_n) - 1
        k = np.searchsorted(done_n, numbers)
        before, after = np.clip(k - 1, 0, last), np.clip(k, 0, last)
        inner = np.where(k > 0, before, after)  # the nearest done frame, and its neighbour further off
        outer = np.where(k > 0, np.maximum(before - 1, 0), np.minimum(after + 1, last))
        n1, s1, n0, s0 = done_n[inner], done_s[inner], done_n[outer], done_s[outer]
        rated = (n1 != n0) & (np.abs(n1 - n0) <= MAX_EXTRAPOLATION_GAP)
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = np.where(rated, (s1 - s0) / np.where(rated, n1 - n0, 1), 0.0)
            ahead = np.clip(numbers - n1, -MAX_AHEAD, MAX_AHEAD)
            guess = s1 + slope * ahead
            nb, sb, na, sa = done_n[before], done_s[before], done_n[after], done_s[after]
            between = (k > 0) & (k <= last) & (na > nb) & (na - nb <= MAX_EXTRAPOLATION_GAP)
            inside = sb + (sa - sb) * (numbers - nb) / np.where(between, na - nb, 1)
        return np.where(between, inside, guess)

    def feed(self, frame_numbers, rows: np.ndarray, errors: np.ndarray | None = None) -> PressureSeries:
        """Pressure of a batch (frames × bins); returns the batch's results, sorted by frame number.

        Frames that found nothing are tried again from what the batch's other frames found (a batch
        that spans a fast stretch of the ramp), as long as that brings new frames in; frames still
        without a value are then scanned over a range of lattice parameters (:meth:`_scan`)."""
        numbers = np.asarray(frame_numbers, dtype=np.int64)
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape != (len(numbers), len(self.axis)):
            raise ConfigError(f"rows {rows.shape}: expected ({len(numbers)} frames, {len(self.axis)} bins)")
        if len(numbers) == 0:
            return PressureSeries.empty(self.marker.labels)
        order = np.argsort(numbers, kind="stable")
        turn = slice(None, None, -1) if self._flip else slice(None)
        numbers, rows = numbers[order], rows[order][:, turn]
        errors = None if errors is None else np.asarray(errors)[order][:, turn]
        series = self._retry(self._fit(numbers, rows, errors), numbers, rows, errors)
        bad = np.flatnonzero(~np.isfinite(series.lattice_a))
        if len(bad) and len(self.marker.reflections) >= 2:
            lock = self._scan(rows[bad])
            found = np.flatnonzero(np.isfinite(lock))
            if len(found):
                idx = bad[found]
                errs = None if errors is None else errors[idx]
                refit = self._fit(numbers[idx], rows[idx], errs, lock[found])
                got = np.flatnonzero(np.isfinite(refit.lattice_a))
                series = self._retry(series.with_rows(idx[got], refit.take(got)), numbers, rows, errors)
        self._parts.append(series)
        return series

    def _retry(self, series: PressureSeries, numbers, rows, errors) -> PressureSeries:
        """Fit again the frames that missed peaks, from the guesses the others now give."""
        for _ in range(len(numbers)):  # every round brings a frame in, or stops
            missed = _peaks_missed(series)
            bad = np.flatnonzero(missed > 0)
            if not len(bad) or len(bad) == len(numbers):
                break
            retry = self._fit(numbers[bad], rows[bad], None if errors is None else errors[bad])
            fixed = np.flatnonzero(_peaks_missed(retry) < missed[bad])
            if not len(fixed):
                break
            series = series.with_rows(bad[fixed], retry.take(fixed))
        return series

    def _scan(self, rows: np.ndarray) -> np.ndarray:
        """Each frame's lattice ratio found by trying every :data:`SCAN_RATIOS` at once (frames ×
        ratios fitted as one stack): the try that uses the most reflections, at least two that agree,
        then has the smallest uncertainty; NaN where none does."""
        k = len(SCAN_RATIOS)
        trial = self._fit(np.arange(len(rows) * k), np.repeat(rows, k, axis=0), None, np.tile(SCAN_RATIOS, len(rows)),
                          remember=False)  # fmt: skip
        used = np.where(trial.frame_problem == 0, (trial.left_out == 0).sum(axis=1), 0).reshape(len(rows), k)
        sigma = np.nan_to_num(trial.lattice_a_sigma, nan=np.inf).reshape(len(rows), k)
        finite = np.isfinite(sigma)
        rank = np.where(finite, sigma / (sigma[finite].max(initial=0.0) + 1.0), 1.0)  # in [0, 1)
        best = np.argmax(used - rank, axis=1)
        ratio = (trial.lattice_a / self.marker.cell.a).reshape(len(rows), k)[np.arange(len(rows)), best]
        return np.where(used[np.arange(len(rows)), best] >= 2, ratio, np.nan)

    def _fit(
        self,
        numbers: np.ndarray,
        rows: np.ndarray,
        errors: np.ndarray | None,
        guess: np.ndarray | None = None,
        remember: bool = True,
    ) -> PressureSeries:
        """Search, fit, combine (module docstring); frames with a value are remembered for the next."""
        fit = self.settings.fit
        guess = self._guess(numbers) if guess is None else guess
        search = max(fit.search_bins, int(3 * self._fwhm)) if np.isfinite(self._fwhm) else fit.search_bins
        found, fwhm = search_maxima(rows, self._index_of_ratio(guess), search)
        if np.isfinite(fwhm) and remember:
            self._fwhm = fwhm
        coarse = self._ratio_at_index(found)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a frame whose windows all found no peak
            median = np.nanmedian(coarse, axis=1)
        median = np.where(np.isfinite(median), median, guess)
        width = self._fwhm if np.isfinite(self._fwhm) else 8.0
        fits = fit_peaks(rows, self._index_of_ratio(median), fit, errors, width)
        series = self._series(numbers, fits.index, fits.sigma, fits.problem)
        if remember:
            good = np.isfinite(series.lattice_a)
            self._done.add(series.frame_number[good], series.lattice_a[good] / self.marker.cell.a)
        return series

    def _ratio_at_index(self, index: np.ndarray) -> np.ndarray:
        x = np.interp(index, np.arange(len(self.axis)), self.axis)
        return np.where(np.isfinite(index), R.to_d(x, self.unit, self.wavelength_a) / self._d0, np.nan)

    def _series(self, numbers, index, index_sigma, problem) -> PressureSeries:
        x = np.interp(index, np.arange(len(self.axis)), self.axis)
        spacing = np.interp(index, np.arange(len(self.axis)), np.gradient(self.axis))
        d = R.to_d(x, self.unit, self.wavelength_a)
        d_sigma = R.d_slope(x, self.unit, self.wavelength_a) * spacing * index_sigma
        lat = combine(d / self._d0, d_sigma / self._d0, problem, self.settings.reject_sigma)
        m = self.marker
        with np.errstate(invalid="ignore"):
            pressure = m.pressure(lat.ratio)
            sigma = m.pressure_sigma(lat.ratio, lat.sigma)
        a0 = m.cell.a
        return PressureSeries(m.labels, numbers, pressure, sigma, a0 * lat.ratio, a0 * lat.sigma, d, d_sigma,
                              lat.left_out, lat.outlier_sigma, lat.frame_problem)  # fmt: skip

    @property
    def series(self) -> PressureSeries:
        """Every frame fed so far, sorted by frame number."""
        return PressureSeries.concat(self._parts) if self._parts else PressureSeries.empty(self.marker.labels)
