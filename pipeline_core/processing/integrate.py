"""Azimuthal integration with pyFAI: settings, validation and a warm engine reused for every frame.

Why an engine object: building pyFAI's CSR look-up matrix for a 2.8-Mpixel frame takes about a
second, integrating one frame afterwards tens of milliseconds. The engine is built once per
(geometry, mask, bins, unit, method, corrections) — an :class:`IntegrationSettings` value plus the
detector mask — and every frame is integrated with pyFAI's own coefficients: by the csr engine
(:mod:`.csr_engine`, one sparse product per frame, the default where it is exact) or by pyFAI's own
``integrate1d`` path (:mod:`.engine_choice` says which, and why), so results are those of pyFAI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..formats.mask import check_mask_shape, load_mask_file
from .csr_engine import CsrEngine
from .engine_build import BuiltEngine, build_in_child, built_in_process, child_build_supported
from .engine_choice import DEFAULT_ENGINE, EngineUsed, csr_refusal, csr_used, pyfai_used, validate_engine
from .engine_store import EngineStore, default_store, engine_key
from .module_frames import ModuleFrames
from .stitch import StitchLayout
from .units import DEFAULT_UNIT, UNITS

DEFAULT_METHOD = ("bbox", "csr", "cython")
DEFAULT_BINS = 2048
#: Above this a 1-D pattern has more bins than any detector has pixels along a radius.
MAX_BINS = 100_000
ERROR_MODELS = ("poisson", "azimuthal")


@dataclass(frozen=True)
class IntegrationSettings:
    """Everything that defines an integration result. Frozen: change it with ``dataclasses.replace``."""

    poni_path: Path
    bins: int = DEFAULT_BINS
    unit: str = DEFAULT_UNIT
    mask_path: Path | None = None
    method: tuple[str, str, str] = DEFAULT_METHOD
    #: 0.99 is P02.2's setting; None switches the polarization correction off.
    polarization_factor: float | None = 0.99
    correct_solid_angle: bool = True
    #: None (no sigma), "poisson" or "azimuthal" (pyFAI error models).
    error_model: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "poni_path", Path(self.poni_path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))
        object.__setattr__(self, "method", tuple(self.method))
        validate_bins(self.bins)
        validate_unit(self.unit)
        if self.polarization_factor is not None and not -1.0 <= float(self.polarization_factor) <= 1.0:
            raise ConfigError(
                f"polarization factor {self.polarization_factor} is outside [-1, 1] (use none to switch it off)"
            )
        if self.error_model not in (None, *ERROR_MODELS):
            raise ConfigError(f"error model {self.error_model!r} is unknown; expected one of none, poisson, azimuthal")
        if len(self.method) != 3:
            raise ConfigError(f"method {self.method!r} must be (splitting, algorithm, implementation)")

    def replace(self, **changes) -> IntegrationSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain-JSON form, for messages and provenance."""
        d = dataclasses.asdict(self)
        d["poni_path"] = str(self.poni_path)
        d["mask_path"] = None if self.mask_path is None else str(self.mask_path)
        d["method"] = list(self.method)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> IntegrationSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown integration setting(s) {sorted(unknown)}; expected {sorted(names)}")
        return cls(**data)

    def fingerprint(self) -> str:
        """Identifies the result: the settings plus what integration reads from the PONI and mask
        files (their values and pixels, :func:`poni_digest`, :func:`mask_digest`), not their bytes: a
        PONI written again with a new date in its comment (``demo`` resumed in the same folder) must
        not make a scan refuse its own frames as "integrated with other settings"."""
        parts = [json.dumps(self.to_dict(), sort_keys=True), poni_digest(self.poni_path)]
        if self.mask_path is not None:
            parts.append(mask_digest(self.mask_path))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def poni_digest(path: str | Path) -> str:
    """Digest of a PONI file's values as pyFAI reads them (``pyFAI.io.ponifile``: a line is ``key: value``;
    lines that start with ``#`` or hold no colon are not read), normalised: numbers by value (``0.30`` is
    ``3e-1``), JSON (``Detector_config``: pixel sizes, shape, orientation) with sorted keys, other text as
    written. Geometry, wavelength, detector and every key pyFAI would read count; comments do not. The
    files the PONI names (a NexusDetector's ``filename``, a ``splineFile``: :mod:`.poni_files`) count by
    their content: recalibrated in place, they are another geometry.
    ``missing`` when the file cannot be read (the engine build refuses it with the reason)."""
    from .poni_files import referenced_file_digests  # here: only this function reads the files a PONI names

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return "missing"
    except UnicodeDecodeError:  # not a PONI: read_poni refuses it; its bytes identify it meanwhile
        return "bytes " + _content_digest(Path(path))
    values: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        values[key.strip().lower()] = _poni_value(value.strip())
    files = referenced_file_digests(values)
    if files:  # a key no PONI line can make (keys are stripped); PONIs naming no file keep their digest
        values[" referenced files"] = files
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _poni_value(text: str) -> Any:
    """A PONI value normalised: a float, parsed JSON, or the text itself."""
    try:
        return repr(float(text))
    except ValueError:
        pass
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def mask_digest(path: str | Path) -> str:
    """Digest of a mask file's pixels (shape + which are masked), whatever its format or header: the
    same mask saved again, or as ``.npy`` instead of EDF, integrates alike. A file that cannot be read
    as a mask is identified by its bytes (``missing`` when absent); the engine build refuses it."""
    if not Path(path).is_file():
        return "missing"
    try:
        mask = load_mask_file(path)
    except ConfigError:
        return "bytes " + _content_digest(Path(path))
    digest = hashlib.sha256(repr(tuple(mask.shape)).encode())
    digest.update(np.packbits(mask).tobytes())
    return digest.hexdigest()


def _content_digest(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return "missing"


def validate_bins(bins: int) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
        raise ConfigError(f"bins {bins!r} is not an integer; expected a number of bins between 1 and {MAX_BINS}")
    if not 1 <= int(bins) <= MAX_BINS:
        raise ConfigError(f"bins {bins} is out of range; expected 1 to {MAX_BINS}")
    return int(bins)


def validate_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ConfigError(f"unit {unit!r} is unknown; expected one of {', '.join(UNITS)}")
    return unit


_PONI_KEYS = ("distance", "poni1", "poni2")


def read_poni(path: str | Path):
    """Load a PONI file into a pyFAI ``AzimuthalIntegrator``, refusing files that are not PONI.

    pyFAI's own loader silently returns a default geometry for a file it cannot parse, which would
    integrate everything against a 1 m distance without anyone noticing; we check the keys first.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"PONI file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"PONI file {path} cannot be read as text ({exc})") from exc
    keys = {m.group(1).lower() for m in re.finditer(r"^\s*([A-Za-z_0-9]+)\s*[:=]", text, re.MULTILINE)}
    missing = [k for k in _PONI_KEYS if k not in keys]
    if missing:
        raise ConfigError(
            f"PONI file {path} is not a pyFAI calibration: missing {', '.join(k.capitalize() for k in missing)}"
        )
    import pyFAI

    try:
        ai = pyFAI.load(str(path))
    except Exception as exc:
        raise ConfigError(f"PONI file {path} cannot be parsed by pyFAI ({exc})") from exc
    if not ai.wavelength:
        raise ConfigError(f"PONI file {path} has no Wavelength; it is needed for 2θ, q and d units")
    check_geometry(path, ai)
    return ai


#: Bounds of a geometry any diffraction set-up can have (SI units, as in the PONI file). Values
#: outside them (nan, inf, 1e300, a distance in mm typed as m...) integrate to a file of zeros or
#: nonsense that looks like a result, so they are refused.
GEOMETRY_BOUNDS = {
    "Distance": ("dist", 1e-4, 100.0, "m"),
    "Poni1": ("poni1", -10.0, 10.0, "m"),
    "Poni2": ("poni2", -10.0, 10.0, "m"),
    "Rot1": ("rot1", -2 * np.pi, 2 * np.pi, "rad"),
    "Rot2": ("rot2", -2 * np.pi, 2 * np.pi, "rad"),
    "Rot3": ("rot3", -2 * np.pi, 2 * np.pi, "rad"),
    "Wavelength": ("wavelength", 1e-13, 1e-8, "m"),
}


def check_geometry(path: str | Path, ai) -> None:
    """Refuse non-finite or absurd geometry, naming the key, its value and the accepted range."""
    for key, (attr, low, high, unit) in GEOMETRY_BOUNDS.items():
        value = getattr(ai, attr)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"PONI file {path}: {key} = {value!r} is not a number") from None
        if not np.isfinite(value) or not low <= value <= high:
            raise ConfigError(
                f"PONI file {path}: {key} = {value!r} {unit} is not a usable geometry; expected a finite value "
                f"between {low:g} and {high:g} {unit}"
            )


def check_method_available(method: tuple[str, ...], available_here: bool = True) -> None:
    """Refuse a pyFAI method this machine cannot run (e.g. ``opencl`` without an OpenCL device).

    pyFAI would silently fall back to another implementation and, because the fallback does not
    match the cached engine, rebuild it for every frame: 100x slower, and not what was asked for.
    ``available_here`` False checks only the names (a configuration may be checked on a machine
    other than the one that integrates).
    """
    import pyFAI.integrator.azimuthal  # noqa: F401  (fills pyFAI's method registry)
    from pyFAI.method_registry import IntegrationMethod

    try:
        found = IntegrationMethod.select_one_available(tuple(method), dim=1, degradable=False)
    except ValueError as exc:  # an unknown splitting/algorithm/implementation name
        raise ConfigError(f"integration method {','.join(method)}: {exc}") from exc
    if found is None and available_here:
        raise ConfigError(
            f"integration method {','.join(method)} is not available on this machine "
            "(opencl needs pyopencl and an OpenCL device); the default is bbox,csr,cython"
        )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Pattern:
    """One integrated frame."""

    frame_number: int
    intensity: np.ndarray
    sigma: np.ndarray | None = None
    #: pixels of this frame that held no valid count (negative or NaN) and were left out
    invalid_pixels: int = 0


#: From this frame size up the engine is built in a child process. Below it pyFAI's build peak is
#: small (~130 bytes per pixel: < 70 MB) and the child's start (~1.3 s, mostly importing pyFAI)
#: would cost more than it saves. A Lambda 750k (0.8 Mpixel) and 2M (2.85 Mpixel) are above it.
CHILD_BUILD_MIN_PIXELS = 500_000

#: Value given to invalid pixels so that pyFAI's dummy handling leaves them out.
_DUMMY = -1.0e30


def invalid_pixels(frame: np.ndarray) -> np.ndarray | None:
    """Where a frame holds no valid count (negative, NaN, inf), or None when every pixel is valid.

    Unsigned frames cannot hold such values and cost nothing here.
    """
    if frame.dtype.kind == "u":
        return None
    bad = frame < 0 if frame.dtype.kind in "ib" else ~np.isfinite(frame) | (frame < 0)
    return bad if bad.any() else None


def integrate1d_kwargs(settings: IntegrationSettings, mask: np.ndarray) -> dict:
    """The keyword arguments of every pyFAI ``integrate1d`` call made for these settings."""
    return dict(
        unit=settings.unit,
        method=settings.method,
        mask=mask,
        polarization_factor=settings.polarization_factor,
        correctSolidAngle=settings.correct_solid_angle,
        error_model=settings.error_model,
    )


def build_pyfai_engine(ai, settings: IntegrationSettings, frame_shape: tuple[int, int], kwargs: dict):
    """Build pyFAI's engine by integrating a blank frame; returns that (warm) result.

    The one place the engine is built, whether in this process or in the builder child
    (:mod:`pipeline_core.processing.engine_build`), so both paths build the very same engine.
    """
    return ai.integrate1d(np.zeros(frame_shape, np.float32), settings.bins, **kwargs)


def _csr_refused(why: str) -> ConfigError:
    return ConfigError(f"engine csr cannot integrate these settings exactly: {why}; use engine auto or pyfai")


@dataclass
class IntegrationEngine:
    """A pyFAI integrator fixed to one settings value, one frame shape and one mask.

    ``detector_mask`` is what the source knows is bad (module gaps, the files' pixel_mask); the user's
    mask file from the settings is added on top. Construction builds and warms pyFAI's engine.

    For pyFAI's ``csr``/``cython`` methods (the default) and frames of at least
    ``CHILD_BUILD_MIN_PIXELS``, the engine is built in a short-lived child process (``isolate_build``,
    see :mod:`pipeline_core.processing.engine_build`): this process then holds only
    the CSR matrix and the per-pixel corrections instead of pyFAI's ~500 MB build peak.
    Other methods build in-process.

    ``engine`` (:mod:`.engine_choice`) says who integrates with pyFAI's coefficients: ``auto`` (the
    default) and ``csr`` use :class:`~.csr_engine.CsrEngine` (one sparse product per frame, the stitch
    folded into its columns; ~4x less CPU a frame, equal to pyFAI within float32 summation), ``auto`` falling
    back to pyFAI's own path where that is not exact (azimuthal error model, non-csr methods) and
    ``csr`` refusing there; ``pyfai`` always calls pyFAI's own ``CsrIntegrator.integrate_ng`` with the
    arguments ``integrate1d`` passes (bit-identical to it). :attr:`used` says which ran, and why.
    """

    settings: IntegrationSettings
    frame_shape: tuple[int, int]
    detector_mask: np.ndarray | None = None
    #: build pyFAI's engine in a child process: None = when the method allows it and the frame has at
    #: least CHILD_BUILD_MIN_PIXELS; True = whenever the method allows it; False = never
    isolate_build: bool | None = None
    #: auto, csr or pyfai (see :mod:`.engine_choice`)
    engine: str = DEFAULT_ENGINE
    #: where pyFAI's built coefficients are kept between processes (:mod:`.engine_store`); None: build
    #: every time. Default: the process's choice (``--engine-cache``, ``$XRD_PIPELINE_ENGINE_CACHE``).
    engine_store: EngineStore | None = field(default_factory=default_store)
    mask: np.ndarray = field(init=False)
    radial: np.ndarray = field(init=False)
    #: the engine that integrates (csr or pyfai) and why, for the provenance
    used: EngineUsed = field(init=False)

    def __post_init__(self) -> None:
        rows, cols = (int(n) for n in self.frame_shape)
        self.frame_shape = (rows, cols)
        validate_engine(self.engine)
        refusal = None if self.engine == "pyfai" else csr_refusal(self.settings)
        if refusal and self.engine == "csr":
            raise _csr_refused(refusal)
        self.mask = self.build_mask()
        self._kwargs = integrate1d_kwargs(self.settings, self.mask)
        self._csr: Any = None  # pyFAI CsrIntegrator rebuilt from the child's arrays
        self._sparse: CsrEngine | None = None
        #: pyFAI's AzimuthalIntegrator for an engine built in-process; None when built in the child
        #: (this process then never imports pyFAI's geometry stack: scipy & co, ~70 MB)
        self.ai: Any = None
        built = None
        self._built_in_child = False
        key = self._store_key(refusal)
        #: True when pyFAI's coefficients came from the engine store instead of a build
        self.from_store = False
        if key is not None:
            assert self.engine_store is not None
            built = self.engine_store.load(key).built
            self.from_store = built is not None
        if built is None and self._build_in_child():
            # the child validates the PONI and the method too (ConfigError relayed), so nothing is skipped
            built = build_in_child(self.settings.to_dict(), self.frame_shape, self.mask)
            self._built_in_child = built is not None
        if built is None:  # in-process: other methods, small frames, or a detector the child path does not cover
            self.ai = read_poni(self.settings.poni_path)
            check_method_available(self.settings.method)
            warm = build_pyfai_engine(self.ai, self.settings, self.frame_shape, self._kwargs)
            self.radial = np.asarray(warm.radial, dtype=np.float64)
            if self.engine != "pyfai" and not refusal:
                built = built_in_process(self.ai, self.settings, self.frame_shape, warm)
                if built is None:
                    refusal = "the detector has its own dummy, dark or flat, which only pyFAI's path applies"
                elif built.weighted_average:  # the csr engine takes over: pyFAI's copy of the matrix can go
                    self.ai.reset_engines()
        if key is not None and built is not None and not self.from_store:
            assert self.engine_store is not None
            self.engine_store.save(key, built)
        if built is not None and not built.weighted_average and not refusal:
            refusal = f"method {','.join(self.settings.method)} averages without weights (pyFAI's legacy mean)"
        if refusal and self.engine == "csr":
            raise _csr_refused(refusal)
        if self.engine != "pyfai" and not refusal:
            assert built is not None
            self._sparse = CsrEngine(built, self.frame_shape, poisson=self.settings.error_model == "poisson")
            self.radial = np.asarray(built.radial, dtype=np.float64)
            self.used = csr_used(self.settings)
        else:
            if built is not None and self.ai is None:
                self._adopt(built)
            self.used = pyfai_used(self.settings, f"chosen by engine {self.engine}" if not refusal else
                                   f"the csr engine is not exact here: {refusal}")
        #: What the Merger compares so patterns integrated differently never land in one file.
        self.fingerprint = self.settings.fingerprint()

    def _store_key(self, refusal: str | None) -> dict | None:
        """The engine store's key when an engine built for these settings would be a :class:`BuiltEngine`
        (pyFAI's csr/cython methods, applied by the csr engine or by pyFAI's ``integrate_ng``); None
        when there is no store, nothing to store, or a PONI file that cannot be read (the build says why)."""
        if self.engine_store is None or not child_build_supported(self.settings.method):
            return None
        if not (self._build_in_child() or (self.engine != "pyfai" and not refusal)):
            return None
        poni = poni_digest(self.settings.poni_path)
        if poni == "missing" or poni.startswith("bytes "):
            return None
        return engine_key(self.settings.to_dict(), poni, self.mask, self.frame_shape)

    def _build_in_child(self) -> bool:
        if self.isolate_build is False or not child_build_supported(self.settings.method):
            return False
        return self.isolate_build or int(np.prod(self.frame_shape)) >= CHILD_BUILD_MIN_PIXELS

    @property
    def built_in_child(self) -> bool:
        """True when pyFAI's engine was built by the child and this process integrates with its arrays."""
        return self._built_in_child

    @property
    def thread_safe(self) -> bool:
        """One engine may serve several threads at once (the csr engine); pyFAI's reuses its buffers."""
        return self._sparse is not None

    def _adopt(self, built: BuiltEngine) -> None:
        from pyFAI.containers import ErrorModel

        self._csr = built.make_integrator()
        self._solidangle = built.solidangle
        self._polarization = built.polarization
        self._weighted_average = built.weighted_average
        # pyFAI's _normalize_error_model_variance: parse the name; csr/cython manages variance itself
        self._error_model = ErrorModel.parse(self.settings.error_model) if self.settings.error_model else ErrorModel.NO
        self.radial = np.asarray(built.radial, dtype=np.float64)

    def build_mask(self) -> np.ndarray:
        mask = np.zeros(self.frame_shape, dtype=bool)
        if self.detector_mask is not None:
            check_mask_shape(self.detector_mask, self.frame_shape, "from the detector (gaps + pixel_mask)")
            mask |= self.detector_mask.astype(bool)
        if self.settings.mask_path is not None:
            user = load_mask_file(self.settings.mask_path)
            check_mask_shape(user, self.frame_shape, f"file {self.settings.mask_path}")
            mask |= user
        return mask

    def integrate(self, frame: np.ndarray, frame_number: int = 0) -> Pattern:
        if frame.shape != self.frame_shape:
            raise ConfigError(
                f"frame {frame_number} has shape {frame.shape}; the engine was built for {self.frame_shape}"
            )
        if self._sparse is not None:
            return Pattern(frame_number, *self._sparse.integrate(frame))
        bad = invalid_pixels(frame)
        dummy = {} if bad is None else {"dummy": _DUMMY, "delta_dummy": 1.0}
        if bad is not None:  # leave them out of this frame only (pyFAI's dummy value), never average them in
            frame = np.where(bad, _DUMMY, frame).astype(np.float32)
        if self._csr is not None:
            intensity, sigma = self._integrate_csr(frame, dummy.get("dummy"), dummy.get("delta_dummy"))
        else:
            res = self.ai.integrate1d(frame, self.settings.bins, **dummy, **self._kwargs)
            intensity, sigma = res.intensity, res.sigma
        sigma = None if self.settings.error_model is None else np.asarray(sigma, dtype=np.float32)
        n_bad = 0 if bad is None else int(bad.sum())
        return Pattern(frame_number, np.asarray(intensity, dtype=np.float32), sigma, n_bad)

    def prepare_layout(self, layout: StitchLayout) -> None:
        """Fold ``layout``'s stitch into the csr engine's columns now (nothing for pyFAI's path): done
        before any frame buffer exists, the fold's temporaries leave room the buffers then reuse, rather
        than adding to them at the first batch (the run's peak memory)."""
        if self._sparse is not None:
            self._sparse.columns_for(layout)

    def integrate_modules(self, modules: ModuleFrames, i: int, frame_number: int = 0) -> Pattern:
        """Frame ``i`` of a module buffer: the csr engine reads its module pixels, pyFAI's path stitches it."""
        if modules.frame_shape != self.frame_shape:
            raise ConfigError(
                f"frame {frame_number} stitches to {modules.frame_shape}; the engine was built for {self.frame_shape}"
            )
        if self._sparse is not None:
            return Pattern(frame_number, *self._sparse.integrate_modules(modules.data[i], modules.layout))
        return self.integrate(modules.stitched_frame(i), frame_number)

    def integrate_block(self, frames: np.ndarray | None, modules: ModuleFrames | None):
        """Every frame of a batch in blocks (the csr engine's :meth:`~.csr_engine.CsrEngine.integrate_block`):
        module frames when given, else stitched ``frames`` (n, rows, cols). None when pyFAI's path
        integrates (frame by frame). Raises on any frame it cannot integrate; the caller then goes
        frame by frame, so that only that frame fails."""
        if self._sparse is None:
            return None
        if modules is not None:
            if modules.frame_shape != self.frame_shape:
                raise ConfigError(
                    f"frames stitch to {modules.frame_shape}; the engine was built for {self.frame_shape}"
                )
            return self._sparse.integrate_block(modules.data, modules.layout)
        assert frames is not None
        if tuple(frames.shape[1:]) != self.frame_shape:
            raise ConfigError(f"frames of shape {frames.shape[1:]}; the engine was built for {self.frame_shape}")
        return self._sparse.integrate_block(frames)

    def _integrate_csr(self, frame: np.ndarray, dummy: float | None, delta_dummy: float | None):
        """What pyFAI's ``integrate1d`` does for a csr/cython method once its engine exists.

        Same call, same arguments as ``integrate1d`` (pyFAI 2026.9, ``pyFAI/integrator/azimuthal.py``)
        for a detector without dummy, dark or flat (the child refuses others, see
        :mod:`pipeline_core.processing.engine_build`): ``_normalize_dummies`` makes the given dummy float32,
        dark/flat/absorption are None, and a csr/cython method needs no variance array for poisson.
        """
        dummy32 = None if dummy is None else np.float32(dummy)
        delta32 = delta_dummy if dummy is None or delta_dummy is None else np.float32(delta_dummy)
        res = self._csr.integrate_ng(
            frame,
            variance=None,
            error_model=self._error_model,
            dummy=dummy32,
            delta_dummy=delta32,
            dark=None,
            flat=None,
            solidangle=self._solidangle,
            polarization=self._polarization,
            absorption=None,
            normalization_factor=1.0,
            weighted_average=self._weighted_average,
        )
        return res.intensity, (res.sigma if self._error_model.do_variance else None)
