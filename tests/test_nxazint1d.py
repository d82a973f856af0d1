"""The merged file is a NeXus NXazint1d file (issue 19): nexusformat's validator finds no error in
files written by ``integrate`` and by the Merger (also one resumed after a stop), the NXazint1d names
are hard links to Dioptas' datasets, the values are pyFAI's, and silx plots the default as an image."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyFAI
import pytest

from pipeline_core.cli import main
from pipeline_core.formats.nexus import read_merged
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import REPO, pattern_batch, readme_block, wait_for, write_small_acquisition

validate = pytest.importorskip("nexusformat.nexus.validate", reason="nexusformat (the test extra) runs nxvalidate")


def nxazint1d_errors(path) -> int:
    """Errors nexusformat's validator finds in ``/processed`` against NXazint1d (its warnings are
    counted too: they must be none either)."""
    warnings, errors = validate.validate_application(str(path), path="/processed", application="NXazint1d")
    assert warnings == 0, f"nxvalidate found {warnings} warning(s) in {path}"
    return errors


def _integrate(tmp_path, small_poni, *options) -> str:
    write_small_acquisition(tmp_path / "raw", n_parts=2)
    out = tmp_path / "out.nxs"
    options = ["--poni", str(small_poni), "--bins", "25", "-o", str(out), *options]
    assert main(["integrate", str(tmp_path / "raw"), *options]) == 0
    return out


@pytest.mark.parametrize(
    "options, view, axis",
    [
        ((), "result_2th", "two_theta"),
        (("--unit", "q_nm^-1", "--error-model", "poisson"), "result_q", "q"),
        (("--unit", "d_A", "--polarization", "none", "--no-solid-angle"), "result_d", "d_spacing"),
    ],
)
def test_integrate_writes_an_nxazint1d_file_whose_default_plot_is_an_image(tmp_path, small_poni, options, view, axis):
    from silx.io.nxdata import NXdata, get_default

    out = _integrate(tmp_path, small_poni, *options)
    assert nxazint1d_errors(out) == 0
    with h5py.File(out, "r") as h5:
        entry, result = h5["processed"], h5["processed/result"]
        assert entry["definition"][()] == b"NXazint1d"
        assert bool(entry["polarization_applied"][()]) is ("--polarization" not in options)
        assert bool(entry["solid_angle_applied"][()]) is ("--no-solid-angle" not in options)
        assert bool(entry["normalization_applied"][()]) and not bool(entry["monitor_applied"][()])
        # NXazint1d's names are Dioptas' datasets under a second name: hard links, not copies
        assert result.get("I", getlink=True).__class__ is h5py.HardLink and result["I"] == result["data"]
        assert ("I_errors" in result) is ("--error-model" in options)
        if "I_errors" in result:
            assert result["I_errors"] == result["data_errors"]
            assert result["I_errors"].attrs["long_name"] == "estimated intensity error"
        assert result["I"].attrs["long_name"] == "intensity" and result["I"].attrs["units"] == "arbitrary units"
        radial = result["radial_axis"]
        if axis == "d_spacing":  # NXazint1d's radial axis is q or 2θ: q = 2π/d of the same bins
            np.testing.assert_allclose(radial[()], 2 * np.pi / result["binning"][()], rtol=1e-12)
            assert (radial.attrs["long_name"], radial.attrs["units"]) == ("q", "1/angstrom")
        else:
            assert radial == result["binning"]
            assert radial.attrs["long_name"] == {"two_theta": "2theta", "q": "q"}[axis]
        # the default plot: an image of frames x bins, both axes labelled, in the chosen unit
        assert entry.attrs["default"] == view
        nxdata = get_default(h5)
        assert nxdata is not None and nxdata.is_valid and nxdata.group.name == f"/processed/{view}"
        assert nxdata.is_image and not nxdata.is_curve and nxdata.signal.shape == (6, 25)
        assert nxdata.signal == result["data"]
        assert nxdata.axes_dataset_names == ["frame_number", axis]
        unit = {"two_theta": "2θ (deg)", "q": "q (1/nm)", "d_spacing": "d (Å)"}[axis]
        assert nxdata.axes_names == ["frame number", unit] and nxdata.signal_name == "intensity"
        assert nxdata.axes[0][()].tolist() == list(range(1, 7))
        # result itself is NXazint1d's stack of spectra, as the definition says
        spectra = NXdata(result)
        assert spectra.is_valid and spectra.is_curve and spectra.axes_dataset_names == [None, "radial_axis"]
    m = read_merged(out)  # our readers find the plotted axis in the integration unit, as before
    assert m["default_axis_units"] == {"two_theta": "deg", "q": "1/nm", "d_spacing": "angstrom"}[axis]


def test_the_instrument_and_reduction_hold_pyfai_values(tmp_path, small_poni):
    out = _integrate(tmp_path, small_poni)
    ai = pyFAI.load(str(small_poni))
    with h5py.File(out, "r") as h5:
        mono = h5["processed/instrument/monochromator"]
        assert mono["wavelength"][()] == pytest.approx(ai.wavelength * 1e10, rel=1e-12)
        assert mono["energy"][()] == pytest.approx(ai.energy, rel=1e-9)  # pyFAI's keV from its hc
        assert (mono["wavelength"].attrs["units"], mono["energy"].attrs["units"]) == ("angstrom", "keV")
        source = h5["processed/instrument/source"]
        # the writer is not told the beamline or the facility: it says so rather than invent one
        assert h5["processed/instrument/name"][()] == source["name"][()] == source["type"][()] == b"unknown"
        assert source["probe"][()] == b"x-ray"
        reduction = h5["processed/reduction"]
        assert reduction.attrs["NX_class"] == "NXprocess" and b"pyFAI" in reduction["reference"][()]
        params, proc = reduction["input"], h5["processed/process"]
        assert params.attrs["NX_class"] == "NXparameters"
        assert (params["npt"][()], params["unit"][()], params["method"][()]) == (25, b"2th_deg", b"bbox,csr,cython")
        assert params["polarization_factor"][()] == pytest.approx(0.99) and bool(params["correctSolidAngle"][()])
        assert params["pyfai_version"][()].decode() == pyFAI.version
        assert params["poni"] == proc["poni"]  # links into Dioptas' process group: one value, two names
        assert (params["dark"][()], params["flat"][()]) == (b"none", b"none") and bool(params["mask_applied"][()])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("# Wavelength: 1.0\nDistance: 0.2\nwavelength: 3.1e-11\n", 3.1e-11),  # pyFAI's keys: any case
        ("Distance: 0.2\n", None),  # none in the PONI: not known, never invented
        ("Wavelength: abc\n", None),
        ("Wavelength: -1e-10\n", None),
    ],
)
def test_the_wavelength_is_the_poni_s_or_not_known(text, expected):
    from pipeline_core.formats.nexus_azint import poni_wavelength_m

    got = poni_wavelength_m(text)
    assert got == expected if expected is not None else np.isnan(got)


def test_the_validator_counts_what_is_missing(tmp_path, small_poni):
    """The checks above can fail: a file without NXazint1d's signal name gets errors."""
    out = _integrate(tmp_path, small_poni)
    broken = tmp_path / "broken.nxs"
    shutil.copy(out, broken)
    with h5py.File(broken, "r+") as h5:
        del h5["processed/result/I"], h5["processed/definition"]
    assert nxazint1d_errors(broken) == 2


def test_nxvalidate_as_readme_shows_it_finds_no_error(tmp_path, small_poni):
    """README's command (``nxvalidate -a NXazint1d scan.nxs``) as users run it, its summary read from
    its output; and every group README's output layout names is in the file, of the class it says."""
    out = _integrate(tmp_path, small_poni, "--error-model", "poisson")
    readme = (REPO / "README.md").read_text()
    command = re.search(r"`(nxvalidate [^`]*scan\.nxs)`", readme).group(1).split()
    assert command == ["nxvalidate", "-a", "NXazint1d", "scan.nxs"]
    nxvalidate = shutil.which("nxvalidate", path=str(Path(sys.executable).parent)) or "nxvalidate"
    run = subprocess.run([nxvalidate, *command[1:-1], str(out)], capture_output=True, text=True, timeout=120)
    text = run.stdout + run.stderr
    assert "Total number of errors: 0" in text and "Total number of warnings: 0" in text, text
    layout = readme_block("## Output layout", "")
    groups = re.findall(r"^(/processed/\S+)\s+(NX\w+)", layout, re.M)
    assert len(groups) == 5, groups
    with h5py.File(out, "r") as h5:
        for path, nx_class in groups:
            path = path.replace("|_q|_d", "")  # integrate's default unit is 2θ: result_2th
            assert h5[path].attrs["NX_class"] == nx_class, path


def test_a_merger_file_resumed_after_a_stop_validates(tmp_path, small_poni):
    """The Merger writes through the same layout, also when it rebuilds a stopped scan from its row
    log: the published file is an NXazint1d file holding every frame."""
    settings = IntegrationSettings(small_poni, bins=4)
    first = MergeStage(tmp_path, print, print)
    first.add_batch(pattern_batch(settings, [1, 2]))
    first.add_batch(pattern_batch(settings, [3, 4]))
    wait_for(lambda: first.counters.frames_processed == 4, timeout_s=60)
    first.stop()
    assert read_merged(tmp_path / "scan.nxs.part")["status"] == "interrupted"
    closed, errors = [], []
    second = MergeStage(tmp_path, closed.append, errors.append)
    second.add_batch(pattern_batch(settings, [5, 6, 7, 8], part=1))
    wait_for(lambda: len(closed) == 1, timeout_s=60)
    second.stop()
    path = closed[0].path
    assert path == tmp_path / "scan.nxs"  # the stopped file continued, not a new one
    assert read_merged(path)["frame_number"].tolist() == list(range(1, 9)) and errors == []
    assert nxazint1d_errors(path) == 0
    with h5py.File(path, "r") as h5:
        assert h5["processed/result_2th/I"] == h5["processed/result/data"]


def test_a_file_with_the_marker_s_pressure_still_validates(tmp_path, small_poni):
    out = _integrate(tmp_path, small_poni, "--marker", "au")
    with h5py.File(out, "r") as h5:  # the pressure's NXdata sits inside an NXprocess, not beside result
        assert h5["processed/pressure"].attrs["NX_class"] == "NXprocess"
        assert h5["processed/pressure/data"].attrs["NX_class"] == "NXdata"
    assert nxazint1d_errors(out) == 0
