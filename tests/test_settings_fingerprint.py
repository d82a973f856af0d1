"""The settings fingerprint identifies what integration reads (geometry, detector, mask pixels), not
the bytes of the PONI and mask files: a resumed scan whose PONI was written again with a new date in
its comment still merges its own frames; a real change of calibration is still refused."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_core.formats.mask import save_mask_file
from pipeline_core.processing.integrate import IntegrationSettings, mask_digest, poni_digest

from .helpers import SMALL_PONI


@pytest.fixture
def poni(tmp_path):
    path = tmp_path / "cal.poni"
    path.write_text("# Calibration done on Mon Dec  7 15:16:28 2026\n" + SMALL_PONI)
    return path


def _fingerprint_after(poni, text: str) -> str:
    poni.write_text(text)
    return IntegrationSettings(poni, bins=100).fingerprint()


def test_a_new_comment_or_timestamp_leaves_the_fingerprint_unchanged(poni):
    before = IntegrationSettings(poni, bins=100).fingerprint()
    rewritten = "# Calibration done on Tue Dec  8 09:00:01 2026\n# written again by the demo\n" + SMALL_PONI
    assert _fingerprint_after(poni, rewritten) == before
    # numbers by value and JSON by content: the same geometry written by another tool
    reformatted = rewritten.replace("Distance: 0.01", "Distance:   1.0e-2").replace(
        '{"pixel1": 5.5e-05, "pixel2": 5.5e-05, "max_shape": null}',
        '{"max_shape": null, "pixel2": 0.000055, "pixel1": 5.5e-5}',
    )
    assert reformatted != rewritten
    assert _fingerprint_after(poni, reformatted) == before


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Distance: 0.01", "Distance: 0.011"),
        ("Poni1: 0.0018", "Poni1: 0.0019"),
        ("Rot2: 0.0", "Rot2: 0.001"),
        ("Wavelength: 4.836e-11", "Wavelength: 4.9e-11"),
        ('"pixel1": 5.5e-05', '"pixel1": 7.5e-05'),  # the detector's pixel size
        ('"max_shape": null', '"max_shape": [67, 32]'),  # its shape
    ],
)
def test_a_change_of_geometry_or_detector_changes_the_fingerprint(poni, old, new):
    before = IntegrationSettings(poni, bins=100).fingerprint()
    assert old in SMALL_PONI
    assert _fingerprint_after(poni, SMALL_PONI.replace(old, new)) != before


def test_the_mask_counts_by_its_pixels_not_its_bytes(tmp_path, poni):
    mask = np.zeros((67, 32), bool)
    mask[10:20, 3:5] = True
    path = save_mask_file(tmp_path / "m.npy", mask)  # int8 on disk
    settings = IntegrationSettings(poni, bins=100, mask_path=path)
    before = settings.fingerprint()
    np.save(path, mask.astype(np.uint16))  # other bytes, the same pixels
    assert settings.fingerprint() == before
    mask[0, 0] = True
    save_mask_file(path, mask)
    assert settings.fingerprint() != before
    assert mask_digest(tmp_path / "absent.npy") == "missing" and poni_digest(tmp_path / "absent.poni") == "missing"


def test_other_settings_change_the_fingerprint(poni):
    base = IntegrationSettings(poni, bins=100)
    assert base.replace(bins=101).fingerprint() != base.fingerprint()
    assert base.replace(unit="q_nm^-1").fingerprint() != base.fingerprint()
