"""Gold patterns made by pyFAI, not by us: ``Calibrant.fake_calibration_image`` of gold at known
lattice parameters (pyFAI's ``Cell.cubic(a, "F")`` gives the d-spacings) through the real P02.2
Lambda geometry (``L2.poni``) on a detector crop, plus a sample line sitting on the flank of gold
200 in some frames. The pressure each lattice parameter means comes from the Fei 2007 Vinet
equation written out here with the paper's numbers, independent of pipeline_core."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_NEAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "p02_2_lambda_2020" / "L2.poni"
PONI = _NEAR if _NEAR.exists() else Path("/work/shared/data/p02_2_lambda_2020/L2.poni")
#: a crop of the Lambda 2M where gold 111, 200 and 220 stay from 0 to 100 GPa (2θ 4.3°-24.9°)
CROP = (200, 2400)
BINS = 1500
#: Fei et al. 2007 gold: V0 67.850 Å³, K0 167 GPa, K0' 6.00
V0, K0, K0P = 67.850, 167.0, 6.00
#: frames whose gold 200 a sample line overlaps part of the way (+0.4 % in d: on its flank)
OVERLAP = range(6, 15)


def fei_gold_pressure(a: float) -> float:
    x = (a**3 / V0) ** (1 / 3)
    return 3 * K0 * (1 - x) / x**2 * math.exp(1.5 * (K0P - 1) * (1 - x))


def fei_gold_a(pressure: float) -> float:
    """Lattice parameter at a pressure: bisection on the equation above."""
    lo, hi = 3.0, V0 ** (1 / 3)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fei_gold_pressure(mid) > pressure else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass
class Patterns:
    ai: object
    pressure: np.ndarray
    images: np.ndarray
    wavelength_a: float

    def integrate(self, images: np.ndarray | None = None, unit: str = "2th_deg") -> tuple[np.ndarray, np.ndarray]:
        """(radial axis, rows) of ``images`` (default: the clean ones) by pyFAI's integrate1d."""
        rows, radial = [], None
        for img in self.images if images is None else images:
            res = self.ai.integrate1d(img, BINS, unit=unit, method=("bbox", "csr", "cython"), correctSolidAngle=False)
            rows.append(res.intensity)
            radial = res.radial
        return np.asarray(radial), np.array(rows)


RAMP = tuple(np.linspace(0.0, 100.0, 21))


def make_patterns(pressures=RAMP) -> Patterns:
    import pyFAI
    from pyFAI.calibrant import Calibrant, Cell
    from pyFAI.detectors import Detector

    ai = pyFAI.load(str(PONI))
    ai.detector = Detector(pixel1=55e-6, pixel2=55e-6, max_shape=CROP)
    wavelength = ai.wavelength
    images = []
    for k, p in enumerate(pressures):
        a = fei_gold_a(p)
        d = sorted(Cell.cubic(a, "F").calculate_dspacing(0.9), reverse=True)
        img = Calibrant(dspacing=d, wavelength=wavelength).fake_calibration_image(ai, Imax=1000.0, resolution=0.05)
        if k in OVERLAP:
            sample = Calibrant(dspacing=[a / 2 * 1.004], wavelength=wavelength)
            img = img + sample.fake_calibration_image(ai, Imax=700.0, resolution=0.06)
        images.append(img + 50.0)
    return Patterns(ai, np.asarray(pressures, float), np.array(images, np.float32), wavelength * 1e10)
