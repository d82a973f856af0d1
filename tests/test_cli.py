import struct

import h5py
import numpy as np
import pyFAI
import pytest

from pipeline_core.cli import main
from pipeline_core.formats.mask import save_mask_file
from pipeline_core.formats.nexus import read_merged

from .helpers import SMALL_FRAME, write_small_acquisition


def test_integrate_then_heatmap(tmp_path, small_poni, capsys):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2)
    rc = main(
        [
            "integrate",
            str(acq["files"][4]),
            "--poni",
            str(small_poni),
            "--bins",
            "25",
            "--unit",
            "q_nm^-1",
            "-o",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr()
    assert rc == 0
    merged = tmp_path / "out" / "scan_00001.nxs"
    assert out.out.strip() == str(merged)
    m = read_merged(merged)
    assert m["data"].shape == (6, 25) and m["int_unit"] == "q_nm^-1"
    for scale in ("linear", "log"):
        assert main(["heatmap", str(merged), "--scale", scale]) == 0
    pngs = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pngs == ["scan_00001.png", "scan_00001_v001.png"]  # the second did not overwrite the first
    head = (tmp_path / "out" / "scan_00001.png").read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (1000, 600)


def test_integrate_reports_failed_files_and_exits_nonzero(tmp_path, small_poni, capsys):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2)
    missing = tmp_path / "raw" / "scan_00001_m3_part00001.nxs"
    missing.unlink()
    rc = main(
        ["integrate", str(tmp_path / "raw"), "--poni", str(small_poni), "--bins", "10", "-o", str(tmp_path / "r.nxs")]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert f"FAILED {acq['files'][3]}" in err and "scan_00001_m3_part00001.nxs is missing" in err
    assert read_merged(tmp_path / "r.nxs")["frame_number"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bins", "0"], "bins 0 is out of range"),
        (["--poni", "/nonexistent.poni"], "PONI file /nonexistent.poni does not exist"),
        (["--workers", "0"], "--workers 0 is out of range"),
        (["--polarization", "3"], "polarization factor 3.0 is outside"),
    ],
)
def test_bad_arguments_give_a_clear_error(tmp_path, small_poni, capsys, args, message):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    base = ["integrate", str(acq["files"][0]), "--poni", str(small_poni), "-o", str(tmp_path / "o")]
    rc = main(base + args)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_unknown_unit_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["integrate", "x", "--poni", "p", "--unit", "furlong"])
    assert exc.value.code == 2
    assert "invalid choice: 'furlong'" in capsys.readouterr().err


def test_a_directory_with_earlier_results_integrates_only_the_raw_files(tmp_path, small_poni, capsys):
    acq = write_small_acquisition(tmp_path, n_parts=1)
    args = ["integrate", str(tmp_path), "--poni", str(small_poni), "--bins", "10", "-o", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 0, capsys.readouterr().err  # scan_00001.nxs now lies among the raw files
    assert read_merged(tmp_path / "scan_00001_v001.nxs")["frame_number"].tolist() == [1, 2, 3]
    assert len(acq["files"]) == 3


def _stack_file(path, n=3):
    """A generic HDF5 frame stack at a dataset path that is not the default one."""
    frames = np.random.default_rng(5).poisson(150, (n, *SMALL_FRAME)).astype(np.int32)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("scan/detector/frames", data=frames)
    return frames


@pytest.mark.parametrize(
    "options, unit, method, polarization, solid_angle, error_model",
    [
        (
            ["--unit", "d_A", "--no-solid-angle", "--polarization", "none", "--error-model", "azimuthal",
             "--method", "no,csr,cython"],
            "d_A", ("no", "csr", "cython"), None, False, "azimuthal",
        ),
        (["--error-model", "poisson", "--method", "bbox,histogram,cython"], "2th_deg", ("bbox", "histogram", "cython"),
         0.99, True, "poisson"),
    ],
)
def test_integration_flags_give_what_pyfai_gives(
    tmp_path, small_poni, options, unit, method, polarization, solid_angle, error_model
):
    frames = _stack_file(tmp_path / "stack.h5")
    user = np.zeros(SMALL_FRAME, bool)
    user[30:34] = True
    save_mask_file(tmp_path / "user.edf", user)
    args = ["integrate", str(tmp_path / "stack.h5"), "--dataset", "/scan/detector/frames", "--poni", str(small_poni),
            "--mask", str(tmp_path / "user.edf"), "--bins", "40", "-o", str(tmp_path / "out.nxs")]
    assert main(args + options) == 0
    ai = pyFAI.load(str(small_poni))
    with h5py.File(tmp_path / "out.nxs", "r") as h5:
        proc = h5["processed/process"]
        assert proc["int_method"][()].decode() == ",".join(method)
        assert proc["int_unit"][()].decode() == unit
        assert proc["error_model"][()].decode() == error_model
        assert bool(proc["solid_angle_correction"][()]) is solid_angle
        stored = float(proc["polarization_factor"][()])
        assert np.isnan(stored) if polarization is None else stored == polarization
        result = h5["processed/result"]
        assert result["frame_number"][()].tolist() == [1, 2, 3]
        rows, sigma = result["data"][()], result["data_errors"][()]
        if unit == "d_A":  # README: result_d holds the same rows on a d axis, and is what viewers plot
            assert h5["processed"].attrs["default"] == "result_d"
            result_d = h5["processed/result_d"]
            assert result_d.attrs["NX_class"] == "NXdata" and result_d.attrs["signal"] == "data"
            axis = result_d[result_d.attrs["axes"][-1]]
            assert axis.attrs["units"] == "angstrom"
            np.testing.assert_array_equal(result_d["data"][()], rows)
            d_axis = axis[()]
        else:
            assert h5["processed"].attrs["default"] == "result"
    for frame, row, err in zip(frames, rows, sigma, strict=True):
        ref = ai.integrate1d(frame, 40, unit=unit, method=method, mask=user, polarization_factor=polarization,
                             correctSolidAngle=solid_angle, error_model=error_model)
        assert np.max(np.abs(row - ref.intensity)) <= 1e-5 * np.max(ref.intensity)
        np.testing.assert_allclose(err, ref.sigma, rtol=1e-5, atol=1e-6 * np.nanmax(ref.sigma))
        if unit == "d_A":
            np.testing.assert_allclose(d_axis, ref.radial, rtol=1e-12)


def test_a_stack_at_another_dataset_path_needs_dataset(tmp_path, small_poni, capsys):
    _stack_file(tmp_path / "stack.h5")
    rc = main(["integrate", str(tmp_path / "stack.h5"), "--poni", str(small_poni), "-o", str(tmp_path / "o.nxs")])
    assert rc == 2
    assert "has no frame dataset at /entry/data/data" in capsys.readouterr().err
    assert not (tmp_path / "o.nxs").exists()


@pytest.mark.parametrize(
    "command, option, address, message",
    [
        ("database", "--host", "0.0.0.0", "address '0.0.0.0' means every interface"),
        ("database", "--host", "203.0.113.7", "address '203.0.113.7' is not an address of this host"),
        ("demo", "--endpoint", "0.0.0.0", "address '0.0.0.0' means every interface"),
        ("demo", "--endpoint", "203.0.113.7", "address '203.0.113.7' is not an address of this host"),
    ],
)
def test_an_address_other_hosts_cannot_reach_is_refused_before_anything_starts(
    tmp_path, capsys, command, option, address, message
):
    """`database --host` / `demo --endpoint` publish the address to other hosts: a wildcard or a foreign one
    is refused with the reason, and no database or server is started (tests/test_multihost.py runs good ones)."""
    from tango_servers.cli import main as tango_main

    folder = tmp_path / "state"
    rc = tango_main([command, option, address, "--state" if command == "database" else "--workdir", str(folder)])
    assert rc == 2
    assert f"xrd-pipeline {command}: error: {message}" in capsys.readouterr().err
    assert not folder.exists()
