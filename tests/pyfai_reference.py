"""pyFAI ``integrate1d`` as the reference for the rows a merged file holds (never our own code).

A merged file records its settings in /processed/process, but a test that reads only those proves
what was *written down*, not what was *integrated*: an engine built from other settings would still
pass. :func:`assert_rows_equal_pyfai` integrates the same frames with pyFAI and the settings the
user asked for, and compares them with the rows, the sigma and the radial axis in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pyFAI

#: The project's tolerance (README, tests/test_csr_engine.py): max |ours - pyFAI| <= 1e-5 x the pattern's maximum.
TOL = 1e-5


@dataclass(frozen=True)
class Reference:
    """The settings pyFAI integrates with: what the user asked for, spelled as integrate1d takes it."""

    poni: Path
    bins: int
    unit: str
    method: tuple[str, str, str]
    polarization: float | None
    solid_angle: bool
    error_model: str | None
    mask: np.ndarray | None

    def but(self, **changes) -> Reference:
        return replace(self, **changes)

    def __str__(self) -> str:
        """The settings as a message names them (the mask by its masked-pixel count, not its pixels)."""
        masked = "no mask" if self.mask is None else f"{int(np.count_nonzero(self.mask))} pixels masked"
        return (f"{self.poni.name}, {self.bins} bins, {self.unit}, {','.join(self.method)}, polarization "
                f"{self.polarization}, solid angle {self.solid_angle}, error model {self.error_model}, {masked}")


#: The NeXus ``units`` a viewer shows for each pyFAI unit (README: the default plot's axis is in the chosen unit).
AXIS_UNITS = {"2th_deg": "deg", "q_nm^-1": "1/nm", "q_A^-1": "1/angstrom", "d_A": "angstrom"}


def read_rows(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """Rows, their sigma (None when the file has none), and the default plot's radial axis with its units."""
    with h5py.File(path, "r") as h5:
        result = h5["processed/result"]
        sigma = result["data_errors"][()] if "data_errors" in result else None
        shown = h5["processed"][h5["processed"].attrs["default"]]  # what silx / h5web plot
        axis = shown[shown.attrs["axes"][-1]]
        return result["data"][()], sigma, axis[()], axis.attrs["units"]


def assert_rows_equal_pyfai(path: Path, frames, ref: Reference) -> None:
    """Every row of ``path`` equals pyFAI integrate1d of its frame with ``ref``'s settings, within TOL."""
    rows, sigma, radial, unit = read_rows(path)
    assert unit == AXIS_UNITS[ref.unit], f"radial axis in {unit!r} in {path}; expected {AXIS_UNITS[ref.unit]!r}"
    assert rows.shape == (len(frames), ref.bins), f"rows {rows.shape} in {path}; expected {(len(frames), ref.bins)}"
    ai = pyFAI.load(str(ref.poni))
    for i, frame in enumerate(frames):
        want = ai.integrate1d(frame, ref.bins, unit=ref.unit, method=ref.method, mask=ref.mask,
                              polarization_factor=ref.polarization, correctSolidAngle=ref.solid_angle,
                              error_model=ref.error_model)  # fmt: skip
        np.testing.assert_allclose(radial, want.radial, rtol=1e-9, err_msg=f"radial axis of {path}")
        peak = float(np.max(want.intensity))
        assert peak > 0, f"frame {i}: pyFAI's pattern is empty; the reference cannot tell anything apart"
        diff = float(np.max(np.abs(rows[i] - want.intensity)))
        assert diff <= TOL * peak, f"frame {i}: max |row - pyFAI| {diff:.3g} > {TOL} x max {peak:.3g} ({ref!s})"
        if ref.error_model is None:
            assert sigma is None, f"{path} holds data_errors, but no error model was asked for"
        else:
            assert sigma is not None, f"{path} holds no data_errors; expected {ref.error_model} sigma"
            top = float(np.max(want.sigma))
            off = float(np.max(np.abs(sigma[i] - want.sigma)))
            assert off <= TOL * top, f"frame {i}: max |sigma - pyFAI| {off:.3g} > {TOL} x max {top:.3g} ({ref!s})"
