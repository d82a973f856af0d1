import struct

import h5py
import numpy as np
import pytest

from pipeline_core.cli import main
from pipeline_core.formats.mask import save_mask_file
from pipeline_core.formats.nexus import read_merged

from .helpers import SMALL_FRAME, write_small_acquisition
from .pyfai_reference import Reference, assert_rows_equal_pyfai


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


#: The settings integrate uses when no option says otherwise (README's defaults).
_DEFAULTS = {"unit": "2th_deg", "method": ("bbox", "csr", "cython"), "polarization": 0.99, "solid_angle": True,
             "error_model": None}


@pytest.mark.parametrize(
    "options, typed, engine, why",
    [  # the default csr engine, with the corrections off, on a d and a q axis, with and without sigma
        (["--unit", "d_A", "--no-solid-angle", "--polarization", "none"],
         {"unit": "d_A", "polarization": None, "solid_angle": False}, "csr", ""),
        (["--unit", "d_A", "--error-model", "poisson", "--method", "no,csr,cython"],
         {"unit": "d_A", "error_model": "poisson", "method": ("no", "csr", "cython")}, "csr", ""),
        (["--unit", "q_nm^-1", "--polarization", "none", "--no-solid-angle", "--error-model", "poisson"],
         {"unit": "q_nm^-1", "polarization": None, "solid_angle": False, "error_model": "poisson"}, "csr", ""),
        # where the csr engine cannot be exact, pyFAI's own path runs and the file says why
        (["--unit", "d_A", "--no-solid-angle", "--polarization", "none", "--error-model", "azimuthal",
          "--method", "no,csr,cython"],
         {"unit": "d_A", "polarization": None, "solid_angle": False, "error_model": "azimuthal",
          "method": ("no", "csr", "cython")}, "pyfai", "azimuthal"),
        (["--error-model", "poisson", "--method", "bbox,histogram,cython"],
         {"error_model": "poisson", "method": ("bbox", "histogram", "cython")}, "pyfai", "bbox,histogram,cython"),
    ],
)  # fmt: skip
def test_integration_flags_give_what_pyfai_gives(tmp_path, small_poni, options, typed, engine, why):
    """A --dataset stack through the CLI: the rows equal pyFAI integrate1d with the typed flags, whichever
    engine ran, and the file records which one and why."""
    frames = _stack_file(tmp_path / "stack.h5")
    user = np.zeros(SMALL_FRAME, bool)
    user[30:34] = True
    save_mask_file(tmp_path / "user.edf", user)
    args = ["integrate", str(tmp_path / "stack.h5"), "--dataset", "/scan/detector/frames", "--poni", str(small_poni),
            "--mask", str(tmp_path / "user.edf"), "--bins", "40", "-o", str(tmp_path / "out.nxs")]
    assert main(args + options) == 0
    want = Reference(small_poni, 40, mask=user, **{**_DEFAULTS, **typed})
    with h5py.File(tmp_path / "out.nxs", "r") as h5:
        proc = h5["processed/process"]
        note = proc["engine_note"][()].decode()
        assert proc["engine"][()].decode() == engine, note
        assert why in note
        assert proc["int_method"][()].decode() == ",".join(want.method)
        assert proc["int_unit"][()].decode() == want.unit
        assert proc["error_model"][()].decode() == (want.error_model or "none")
        assert bool(proc["solid_angle_correction"][()]) is want.solid_angle
        stored = float(proc["polarization_factor"][()])
        assert np.isnan(stored) if want.polarization is None else stored == want.polarization
        result = h5["processed/result"]
        assert result["frame_number"][()].tolist() == [1, 2, 3]
        if want.unit == "d_A":  # README: result_d holds the same rows on a d axis, and is what viewers plot
            assert h5["processed"].attrs["default"] == "result_d"
            result_d = h5["processed/result_d"]
            assert result_d.attrs["NX_class"] == "NXdata" and result_d.attrs["signal"] == "I"
            np.testing.assert_array_equal(result_d["data"][()], result["data"][()])
    assert_rows_equal_pyfai(tmp_path / "out.nxs", frames, want)  # rows, sigma and the plotted axis


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
