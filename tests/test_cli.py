import struct

import pytest

from pipeline_core.cli import main
from pipeline_core.nexus import read_merged

from .conftest import write_small_acquisition


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
