"""``integrate --marker`` and ``pressure`` on a file: the same numbers, the input never touched.

The acquisition is pyFAI's gold at known pressures through the real Lambda geometry
(tests/pressure_patterns.py) written as one generic HDF5 frame stack, integrated by our CLI.
"""

from __future__ import annotations

import csv
import hashlib
import json

import h5py
import numpy as np
import pytest

from pipeline_core.cli import main
from pipeline_core.science import read_pressure

from .pressure_patterns import OVERLAP, PONI, make_patterns

MARKER = ["--marker", "au", "--reflections", "111,200,220"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """(merged file, true pressures): integrated once for the module, with --marker."""
    folder = tmp_path_factory.mktemp("pressure_cli")
    patterns = make_patterns()
    stack = folder / "gold_ramp.h5"
    with h5py.File(stack, "w") as h5:
        h5.create_dataset("entry/data/data", data=patterns.images)
    out = folder / "gold_ramp.nxs"
    assert main(["integrate", str(stack), "--poni", str(PONI), "-o", str(out), *MARKER]) == 0
    return out, patterns.pressure


def test_integrate_with_a_marker_writes_the_pressure_group(merged):
    out, truth = merged
    with h5py.File(out, "r") as h5:
        proc, group = h5["processed/pressure"], h5["processed/pressure/data"]
        assert proc.attrs["NX_class"] == "NXprocess" and group.attrs["NX_class"] == "NXdata"
        assert group.attrs["signal"] == "pressure" and list(group.attrs["axes"]) == ["frame_number"]
        assert group["pressure"].attrs["units"] == "GPa" and group["lattice_a"].attrs["units"] == "angstrom"
        got = read_pressure(h5)
        assert proc["marker"][()].decode() == "au"
        assert "10.1073/pnas.0609013104" in proc["scale_reference"][()].decode()  # Fei et al. 2007
        assert proc["start_pressure_gpa"][()] == 0.0
    assert got["frame_number"].tolist() == list(range(1, len(truth) + 1))
    assert np.all(np.abs(got["pressure"] - truth) < 0.05), np.round(got["pressure"] - truth, 3)
    assert np.all(got["pressure_errors"] > 0)
    assert {"d_111", "d_200", "d_220", "d_111_errors"} <= set(got)
    assert list(got["reflections"]) == ["111", "200", "220"]
    dropped = [k for k, text in enumerate(got["reflections_left_out"]) if text.startswith("200: off the others")]
    assert dropped and set(dropped) <= set(OVERLAP)
    assert all(got["reflections_used"][k] == "111,220" for k in dropped)
    assert all(reason == "" for reason in got["reason"])


def test_the_file_with_pressure_is_still_a_valid_nxazint1d_file(merged):
    validate = pytest.importorskip("nexusformat.nexus.validate", reason="nexusformat (the test extra) runs nxvalidate")
    out, _ = merged
    assert validate.validate_application(str(out), path="/processed", application="NXazint1d") == (0, 0)


def test_pressure_command_prints_the_same_numbers_and_never_touches_its_input(merged, tmp_path, capsys):
    out, _ = merged
    before = _sha(out)
    capsys.readouterr()
    assert main(["pressure", str(out), *MARKER, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    csv_path = tmp_path / "p.csv"
    assert main(["pressure", str(out), *MARKER, "-o", str(csv_path)]) == 0
    assert _sha(out) == before
    with h5py.File(out, "r") as h5:
        group = read_pressure(h5)
    assert [set(r) for r in records] == [
        {"frame_number", "pressure_gpa", "pressure_sigma_gpa", "lattice_a_angstrom", "reflections_used"}
    ] * len(records)
    assert [r["frame_number"] for r in records] == group["frame_number"].tolist()
    assert [r["pressure_gpa"] for r in records] == group["pressure"].tolist()
    assert [r["pressure_sigma_gpa"] for r in records] == group["pressure_errors"].tolist()
    assert [r["lattice_a_angstrom"] for r in records] == group["lattice_a"].tolist()
    assert [",".join(r["reflections_used"]) for r in records] == group["reflections_used"].tolist()
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["pressure_gpa"]) for r in rows] == group["pressure"].tolist()
    assert [r["reflections_left_out"] for r in rows] == group["reflections_left_out"].tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--marker", "zz"], "marker 'zz' is neither one of au, pt, nacl-b2, cu"),
        (["--marker", "au", "--reflections", "111,420"], "reflection(s) 420 of au: expected some of 111"),
        (["--marker", "au", "--pressure-scale", "fei"], "pressure scale 'fei' is not one of peritheos' Au scales"),
    ],
)
def test_bad_marker_options_exit_2_naming_the_value(merged, capsys, args, message):
    out, _ = merged
    capsys.readouterr()
    assert main(["pressure", str(out), *args]) == 2
    assert message in capsys.readouterr().err


def test_pressure_refuses_its_input_as_output_and_a_missing_file(merged, tmp_path, capsys):
    out, _ = merged
    before = _sha(out)
    assert main(["pressure", str(out), *MARKER, "-o", str(out)]) == 2
    assert "is the input file: pressure never modifies its input" in capsys.readouterr().err
    assert _sha(out) == before
    assert main(["pressure", str(tmp_path / "none.nxs"), "--marker", "au"]) == 2
    assert "none.nxs cannot be read as a merged file" in capsys.readouterr().err
    assert main(["integrate", str(out), "--poni", str(PONI), "--reflections", "111"]) == 2
    assert "--reflections given without --marker" in capsys.readouterr().err


def test_list_scales_marks_the_default(capsys):
    assert main(["pressure", "--list-scales", "pt"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "platinum_fei_2007_vinet_300k  (default)" in lines and "platinum_dewaele_2019_mao_vinet" in lines


def test_readme_examples_run_as_written(merged, tmp_path, monkeypatch, capsys):
    """README's "Pressure from the marker" commands, each line's arguments as written given to the
    command line's ``main`` (in this process: no interpreter start per line), on a copy named scan.nxs."""
    import shlex
    import shutil

    from .helpers import readme_block

    out, _ = merged
    shutil.copy(out, tmp_path / "scan.nxs")
    monkeypatch.chdir(tmp_path)
    outputs = []
    for line in readme_block("## Pressure from the marker", "bash").strip().splitlines():
        program, *args = shlex.split(line)
        assert program == "xrd-pipeline"
        capsys.readouterr()
        assert main(args) == 0, (line, capsys.readouterr().err)
        outputs.append(capsys.readouterr().out)
    assert "gold_fei_2007_vinet_2  (default)" in outputs[0].splitlines()
    records = json.loads(outputs[1])
    with h5py.File(out, "r") as h5:
        assert [r["pressure_gpa"] for r in records] == read_pressure(h5)["pressure"].tolist()
    with open(tmp_path / "pressure.csv", newline="") as fh:  # another scale: Dewaele 2004, close to Fei 2007
        rows = list(csv.DictReader(fh))
    dewaele = np.array([float(r["pressure_gpa"]) for r in rows])
    assert len(rows) == len(records) and np.all(np.abs(dewaele - [r["pressure_gpa"] for r in records]) < 3.0)


def test_a_file_in_dioptas_batch_layout_gives_the_same_pressures(merged, tmp_path, capsys):
    """Dioptas' BatchModel.save_proc_data layout: result/data and binning (no frame_number, no
    @radial_unit), process/int_unit and cal_file (a PONI path: the wavelength is read from it)."""
    out, _ = merged
    dioptas = tmp_path / "dioptas_batch.nxs"
    with h5py.File(out, "r") as ours, h5py.File(dioptas, "w") as h5:
        h5.attrs["default"] = "processed"
        h5["processed/result/data"] = ours["processed/result/data"][()]
        h5["processed/result/binning"] = ours["processed/result/binning"][()]
        h5["processed/result/binning"].attrs["unit"] = "deg"
        h5["processed/process/cal_file"] = str(PONI)
        h5["processed/process/int_unit"] = "2th_deg"
        expected = read_pressure(ours)["pressure"].tolist()
    capsys.readouterr()
    assert main(["pressure", str(dioptas), *MARKER, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["frame_number"] for r in records] == list(range(1, len(expected) + 1))
    assert [r["pressure_gpa"] for r in records] == expected


def test_wavelength_only_stands_in_where_the_file_records_none(merged, tmp_path, capsys):
    """The file records 0.4836 Å (its PONI text): another ``--wavelength`` is refused naming both (it
    gave 463-819 GPa for a 0-100 GPa ramp), the same one changes nothing; a Dioptas file whose PONI
    is gone needs it, and gets the file's pressures with it."""
    out, truth = merged
    with h5py.File(out, "r") as h5:
        expected = read_pressure(h5)["pressure"].tolist()
    capsys.readouterr()
    assert main(["pressure", str(out), *MARKER, "--wavelength", "0.40", "--json"]) == 2
    captured = capsys.readouterr()
    assert "--wavelength 0.4 Å differs from the 0.4836 Å" in captured.err and str(out) in captured.err
    assert captured.out == ""
    assert main(["pressure", str(out), *MARKER, "--wavelength", "0.4836", "--json"]) == 0
    assert [r["pressure_gpa"] for r in json.loads(capsys.readouterr().out)] == expected
    dioptas = tmp_path / "no_poni.nxs"
    with h5py.File(out, "r") as ours, h5py.File(dioptas, "w") as h5:
        h5["processed/result/data"] = ours["processed/result/data"][()]
        h5["processed/result/binning"] = ours["processed/result/binning"][()]
        h5["processed/process/cal_file"] = str(tmp_path / "gone.poni")
        h5["processed/process/int_unit"] = "2th_deg"
    assert main(["pressure", str(dioptas), *MARKER, "--json"]) == 2
    assert "records no wavelength (no PONI text): give --wavelength in Å" in capsys.readouterr().err
    assert main(["pressure", str(dioptas), *MARKER, "--wavelength", "0.4836", "--json"]) == 0
    got = np.array([r["pressure_gpa"] for r in json.loads(capsys.readouterr().out)])
    assert np.all(np.abs(got - truth) < 0.05), np.round(got - truth, 3)


def test_wavelength_is_refused_for_a_q_axis_that_never_uses_it(merged, tmp_path, capsys):
    out, _ = merged
    q_file = tmp_path / "q_axis.nxs"
    with h5py.File(out, "r") as ours, h5py.File(q_file, "w") as h5:
        h5["processed/result/data"] = ours["processed/result/data"][()]
        h5["processed/result/binning"] = ours["processed/result/binning"][()]
        h5["processed/result/binning"].attrs["radial_unit"] = "q_nm^-1"
    capsys.readouterr()
    assert main(["pressure", str(q_file), *MARKER, "--wavelength", "0.4836"]) == 2
    err = capsys.readouterr().err
    assert "--wavelength 0.4836 Å given for" in err and "'q_nm^-1'" in err and "leave --wavelength out" in err


def test_a_jcpds_marker_without_k0p_exits_2_naming_the_key(merged, tmp_path, capsys):
    out, _ = merged
    jcpds = tmp_path / "gold_no_k0p.jcpds"
    jcpds.write_text("VERSION: 4\nK0: 167.0\nSYMMETRY: CUBIC\nA: 4.0786\n"
                     "DIHKL: 2.3548 100.0 1 1 1\nDIHKL: 2.0393 52.0 2 0 0\nDIHKL: 1.4420 32.0 2 2 0\n")  # fmt: skip
    capsys.readouterr()
    assert main(["pressure", str(out), "--marker", str(jcpds), "--json"]) == 2
    captured = capsys.readouterr()
    assert f"{jcpds}: no K0P line" in captured.err and "expected 'K0P: value'" in captured.err
    assert captured.out == ""


def test_the_csv_never_replaces_a_file_that_appeared_during_the_fit_nor_a_part_file(merged, tmp_path):
    """``-o`` is checked before the fit; a file created at that name meanwhile (here: before the
    write itself) is kept byte for byte and the write refused naming it, and a ``NAME.part`` someone
    else owns is never opened: the temporary is a fresh mkstemp name, gone afterwards."""
    from pipeline_core.errors import OutputError
    from pipeline_core.science import PressureSettings, compute_pressure
    from pipeline_core.science.cli_pressure import CSV_COLUMNS, write_csv

    out, _ = merged
    with h5py.File(out, "r") as h5:
        series = compute_pressure(h5, PressureSettings("au", reflections=("111", "200", "220")))
    target, part = tmp_path / "pressure.csv", tmp_path / "pressure.csv.part"
    target.write_text("someone else's results\n")
    part.write_text("someone else's part file\n")
    with pytest.raises(OutputError, match=f"{target} exists already"):
        write_csv(target, series)
    assert target.read_text() == "someone else's results\n" and part.read_text() == "someone else's part file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pressure.csv", "pressure.csv.part"]
    fresh = tmp_path / "fresh.csv"
    write_csv(fresh, series)
    with open(fresh, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1 + len(series)
    assert part.read_text() == "someone else's part file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.csv", "pressure.csv", "pressure.csv.part"]
