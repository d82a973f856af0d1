"""Build pyFAI's CSR engine in a short-lived child process; integrate with it in this one.

Why: building pyFAI's bbox/csr engine for a Lambda 2M frame peaks at ~500 MB (corner arrays,
float64 temporaries, the CSR build itself) while the finished engine needs ~120 MB (the CSR
matrix, solid angle, polarization, mask, pyFAI's preprocessing buffer). A long-running process
(the offline CLI, a live Integrator that rebuilds when settings change) that builds in-process
keeps that peak as its RSS for good. Here a child (``python -m pipeline_core.processing.engine_build``)
loads the PONI, calls ``ai.integrate1d`` exactly as :class:`~pipeline_core.processing.integrate.IntegrationEngine`
always did, and streams back over a pipe what pyFAI's ``integrate1d`` hands to the engine's
``integrate_ng`` for the CSR/Cython path: the CSR matrix, bin centres, pixel mask, solid-angle and
polarization arrays. The parent rebuilds pyFAI's own ``CsrIntegrator`` from them and calls its
``integrate_ng`` with the arguments ``integrate1d`` would pass, so the arithmetic is pyFAI's and
the results are bit-identical (tests/test_engine_build.py).

Only pyFAI's ``csr``/``cython`` methods go this way (:func:`child_build_supported`); any other
method keeps building in-process.

Pipes, not files: nothing is left on disk if either process is killed, and stderr goes to an
anonymous temporary file so a chatty child can never block on a full pipe.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import ConfigError

#: Arrays the child sends, in this order, after its one-line JSON header.
_ARRAYS = ("data", "indices", "indptr", "bin_centers", "cmask", "solidangle", "polarization", "radial")


def child_build_supported(method: tuple[str, str, str]) -> bool:
    """True for the pyFAI methods whose engine is a Cython ``CsrIntegrator`` (bbox/full/no split, csr)."""
    return len(method) == 3 and str(method[1]).lower() == "csr" and str(method[2]).lower() == "cython"


@dataclass
class BuiltEngine:
    """What integration needs from pyFAI's built engine: the CSR matrix plus per-pixel corrections."""

    csr_module: str
    image_size: int
    empty: float
    weighted_average: bool
    check_mask: bool
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    bin_centers: np.ndarray
    cmask: np.ndarray | None
    solidangle: np.ndarray | None
    polarization: np.ndarray | None
    radial: np.ndarray

    def make_integrator(self):
        """pyFAI's own ``CsrIntegrator`` (from the module that built the engine) over these arrays.

        ``integrate_ng`` also reads ``bin_centers``, ``check_mask`` and ``cmask``, which only pyFAI's
        subclasses define; a plain Python subclass carries them as attributes.
        """
        integrator = _carrier_class(self.csr_module)((self.data, self.indices, self.indptr), self.image_size,
                                                      empty=self.empty)
        integrator.bin_centers = self.bin_centers
        integrator.check_mask = self.check_mask
        integrator.cmask = self.cmask
        return integrator


@functools.cache
def _carrier_class(module: str) -> type:
    base = importlib.import_module(module).CsrIntegrator
    return type("ChildBuiltCsrIntegrator", (base,), {"__module__": __name__})


def build_in_child(settings_dict: dict, frame_shape: tuple[int, int], mask: np.ndarray,
                   timeout_s: float | None = 600.0) -> BuiltEngine | None:
    """Run the build in ``python -m pipeline_core.processing.engine_build`` and read its arrays back.

    Returns None when the child finds a case this path does not reproduce exactly (a detector with
    its own dummy, dark or flat; a method that does not manage variance): build in-process then.
    Raises ConfigError for a bad PONI or method (the child's validation, same message as in-process),
    RuntimeError naming the exit status and the child's last stderr lines when it fails otherwise;
    a KeyboardInterrupt (or our Interrupted) here kills the child before propagating.
    """
    request = json.dumps({"settings": settings_dict, "frame_shape": list(frame_shape)}).encode() + b"\n"
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline_core.processing.engine_build"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdin is not None and proc.stdout is not None  # both are PIPEs
        try:
            try:
                proc.stdin.write(request)
                _write_array(proc.stdin, np.asarray(mask, dtype=bool))
                proc.stdin.close()
            except BrokenPipeError:  # the child died before reading its request: its exit status says why
                pass
            header_line = proc.stdout.readline()
            header = json.loads(header_line) if header_line.strip() else {}
            if "error" in header or "unsupported" in header:
                proc.wait(timeout_s)
                if header.get("config_error"):
                    raise ConfigError(header["error"])
                if "unsupported" in header:
                    return None
                raise RuntimeError(f"building the pyFAI engine in a child process failed: {header['error']}")
            arrays = {name: _read_array(proc.stdout) if name in header.get("arrays", ()) else None for name in _ARRAYS}
            rc = proc.wait(timeout_s)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        if rc != 0 or not header:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace").strip()
            raise RuntimeError(f"building the pyFAI engine in a child process failed (exit status {rc}): {tail}")
    return BuiltEngine(
        header["csr_module"],
        int(header["image_size"]),
        float(header["empty"]),
        bool(header["weighted_average"]),
        bool(header["check_mask"]),
        **arrays,  # type: ignore[arg-type]  # the header lists every required array
    )


class _Stream:
    """A pipe seen as a plain byte stream: numpy's ``tofile``/``fromfile`` shortcuts need a seekable file.

    Through ``read``/``write`` numpy moves arrays in bounded chunks (no second full copy).
    """

    def __init__(self, raw: IO[bytes]):
        self._raw = raw

    def read(self, size: int = -1, /) -> bytes:
        return self._raw.read(size)

    def write(self, data: bytes, /) -> int:
        return self._raw.write(data)


def _read_array(stream: IO[bytes]) -> np.ndarray:
    return np.lib.format.read_array(_Stream(stream), allow_pickle=False)


def _write_array(stream: IO[bytes], array: np.ndarray) -> None:
    np.lib.format.write_array(_Stream(stream), np.ascontiguousarray(array), allow_pickle=False)


# --------------------------------------------------------------------------- child side


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL us if the parent dies, so a killed CLI/server never leaves a builder behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main() -> int:
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the request was armed
        return 1
    stdin = sys.stdin.buffer
    out = sys.stdout.buffer
    try:
        request = json.loads(stdin.readline())
        mask = _read_array(stdin)
        from .integrate import (
            IntegrationSettings,
            build_pyfai_engine,
            check_method_available,
            integrate1d_kwargs,
            read_poni,
        )

        settings = IntegrationSettings.from_dict(request["settings"])
        shape = tuple(request["frame_shape"])
        try:
            ai = read_poni(settings.poni_path)
            check_method_available(settings.method)
        except ConfigError as exc:
            return _reply(out, {"error": str(exc), "config_error": True}, 2)
        reason = _unsupported(ai, settings)
        if reason:
            return _reply(out, {"unsupported": reason}, 0)
        warm = build_pyfai_engine(ai, settings, shape, integrate1d_kwargs(settings, mask))
        header, arrays = engine_arrays(ai, settings, shape, warm)
        sent = header["arrays"]
    except Exception as exc:  # reported to the parent, which raises it with this text
        return _reply(out, {"error": f"{type(exc).__name__}: {exc}"}, 2)
    out.write(json.dumps(header).encode() + b"\n")
    for name in sent:
        _write_array(out, np.asarray(arrays[name]))
    out.flush()
    return 0


def engine_arrays(ai, settings, shape: tuple[int, ...], warm) -> tuple[dict, dict]:
    """What :class:`BuiltEngine` holds, from pyFAI's warm engine (``warm``: the blank frame's result):
    a JSON-able header (``arrays`` lists the arrays that are not None) and the arrays by name."""
    engine = _cython_csr_engine(ai)
    solidangle, _ = ai._normalize_solidangle(shape, settings.correct_solid_angle)
    polarization, _ = ai._normalize_polarization(shape, settings.polarization_factor)
    data, indices, indptr = engine.lut
    cmask = getattr(engine, "cmask", None)
    csr_module = next(k.__module__ for k in type(engine).__mro__ if k.__name__ == "CsrIntegrator")
    arrays = {
        "data": data, "indices": indices, "indptr": indptr, "bin_centers": engine.bin_centers,
        "cmask": cmask, "solidangle": solidangle, "polarization": polarization, "radial": warm.radial,
    }
    header = {
        "csr_module": csr_module,
        "image_size": int(engine.input_size),
        "empty": float(engine.empty),
        "check_mask": bool(engine.check_mask),
        "weighted_average": bool(_method(ai, settings).weighted_average),
        "arrays": [name for name in _ARRAYS if arrays[name] is not None],
    }
    return header, arrays


def built_in_process(ai, settings, shape: tuple[int, ...], warm) -> BuiltEngine | None:
    """The same arrays as the child sends, from an engine built in this process (None where the child
    would answer unsupported)."""
    if _unsupported(ai, settings):
        return None
    header, arrays = engine_arrays(ai, settings, shape, warm)
    return BuiltEngine(
        header["csr_module"], header["image_size"], header["empty"], header["weighted_average"],
        header["check_mask"],
        **{name: None if arrays[name] is None else np.asarray(arrays[name]) for name in _ARRAYS},  # type: ignore[arg-type]
    )  # fmt: skip


def _reply(out: IO[bytes], header: dict, rc: int) -> int:
    out.write(json.dumps(header).encode() + b"\n")
    out.flush()
    return rc


def _method(ai, settings):
    return ai._normalize_method(settings.method, dim=1, default=ai.DEFAULT_METHOD_1D)


def _unsupported(ai, settings) -> str | None:
    """Why the parent could not pass ``integrate_ng`` exactly what ``integrate1d`` would, or None."""
    det = ai.detector
    if det.dummy is not None or det.darkcurrent is not None or det.flatfield is not None:
        return f"detector {det.name} has its own dummy, dark or flat"
    if settings.error_model and not _method(ai, settings).manage_variance:
        return f"method {settings.method} does not manage variance"
    return None


def _cython_csr_engine(ai):
    """The Cython CSR integrator pyFAI cached while ``integrate1d`` ran (refuses anything else)."""
    found = [h.engine for h in ai.engines.values() if getattr(h, "engine", None) is not None]
    csr = [e for e in found if any(k.__name__ == "CsrIntegrator" for k in type(e).__mro__) and hasattr(e, "lut")]
    if len(csr) != 1:
        raise RuntimeError(f"expected one Cython CSR engine in pyFAI's cache, found {[type(e) for e in found]}")
    return csr[0]


if __name__ == "__main__":
    sys.exit(_child_main())
