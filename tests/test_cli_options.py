"""Explicit options always beat --config, even when the typed value equals the built-in default.

Every option --config can set is checked by running the CLI and reading what the written file
records in /processed/process, and what it holds: its rows equal pyFAI integrate1d run with the
typed values (and the config's for the rest). The config's PONI and mask differ from the typed
ones, so an engine built from the config instead gives other rows.
"""

import argparse
import shutil

import h5py
import numpy as np
import pytest
import yaml

from pipeline_core.cli import build_parser, main, resolve_integrate_options
from pipeline_core.formats.mask import save_mask_file

from .helpers import SMALL_FRAME, SMALL_OFFSETS, dioptas_stitch, write_small_acquisition
from .pyfai_reference import Reference, assert_rows_equal_pyfai

CONFIG_INTEGRATION = {
    "bins": 30,
    "unit": "q_nm^-1",
    "method": ["no", "histogram", "cython"],
    "polarization_factor": 0.5,
    "solid_angle": False,
    "error_model": "poisson",
}


def _stitched(acq) -> tuple[list[np.ndarray], np.ndarray]:
    """The acquisition's frames stitched by the Dioptas rule, and its gaps (what the CLI masks by itself)."""
    per_module = [acq["modules"][k][0] for k in (1, 2, 3)]
    frames = [dioptas_stitch([m[i] for m in per_module], SMALL_OFFSETS) for i in range(len(per_module[0]))]
    gaps = dioptas_stitch([np.ones_like(m[0]) for m in per_module], SMALL_OFFSETS) == 0
    return frames, gaps


def _rows_mask(rows: slice) -> np.ndarray:
    mask = np.zeros(SMALL_FRAME, bool)
    mask[rows] = True
    return mask


@pytest.fixture
def setup(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    shutil.copy(small_poni, cfg_dir / "config.poni")
    config_poni = (cfg_dir / "config.poni").read_text().replace("Distance: 0.01", "Distance: 0.012")
    (cfg_dir / "config.poni").write_text(config_poni)  # another geometry than --poni's: other rows
    config_mask, cli_mask = _rows_mask(slice(5, 9)), _rows_mask(slice(40, 46))
    save_mask_file(cfg_dir / "config_mask.edf", config_mask)
    save_mask_file(tmp_path / "cli_mask.edf", cli_mask)
    frames, gaps = _stitched(acq)
    config_ref = Reference(cfg_dir / "config.poni", 30, "q_nm^-1", ("no", "histogram", "cython"), 0.5, False,
                           "poisson", gaps | config_mask)  # fmt: skip
    config = {
        "data_root": str(tmp_path / "raw"),
        "output_directory": "from_config",
        "workers": 2,
        "detectors": {
            "lambda1": {"source": "lambda", "integration": {"poni": "config.poni", "mask": "config_mask.edf"}}
        },
        "integration": CONFIG_INTEGRATION,
    }
    (cfg_dir / "bt.yaml").write_text(yaml.safe_dump(config))
    return {"acq": acq, "config": cfg_dir / "bt.yaml", "tmp": tmp_path, "cli_poni": small_poni, "frames": frames,
            "config_ref": config_ref, "cli_mask": gaps | cli_mask}


def _process(path) -> dict:
    with h5py.File(path, "r") as h5:
        proc = h5["processed/process"]
        text = {k: proc[k][()].decode() for k in ("cal_file", "mask_file", "int_unit", "int_method", "error_model")}
        return {
            **text,
            "num_points": int(proc["num_points"][()]),
            "polarization_factor": float(proc["polarization_factor"][()]),
            "solid_angle_correction": bool(proc["solid_angle_correction"][()]),
            "status": proc["status"][()].decode(),
        }


def _run(setup, *options, output=True, integrated: Reference) -> dict:
    """Run integrate into a fresh folder (-o, or the config's output_directory) and read the file.

    Its rows must equal pyFAI integrate1d with the ``integrated`` settings.
    """
    setup["runs"] = setup.get("runs", 0) + 1
    directory = setup["tmp"] / f"out{setup['runs']}" if output else setup["config"].parent / "from_config"
    out = ["-o", str(directory)] if output else []
    argv = ["integrate", str(setup["acq"]["directory"]), "--config", str(setup["config"]), *out, *options]
    assert main(argv) == 0
    assert_rows_equal_pyfai(directory / "scan_00001.nxs", setup["frames"], integrated)
    return _process(directory / "scan_00001.nxs")


def test_the_config_applies_when_no_option_is_given_and_its_output_directory_is_used(setup):
    p = _run(setup, output=False, integrated=setup["config_ref"])  # no -o: the config's output_directory
    cfg = setup["config"].parent
    assert p["cal_file"] == str(cfg / "config.poni") and p["mask_file"] == str(cfg / "config_mask.edf")
    assert (p["num_points"], p["int_unit"], p["int_method"]) == (30, "q_nm^-1", "no,histogram,cython")
    assert (p["polarization_factor"], p["solid_angle_correction"], p["error_model"]) == (0.5, False, "poisson")
    assert p["status"] == "complete"


@pytest.mark.parametrize(
    ("options", "key", "expected", "typed"),
    [
        (["--bins", "2048"], "num_points", 2048, {"bins": 2048}),  # the built-in default, typed: still wins
        (["--unit", "2th_deg"], "int_unit", "2th_deg", {"unit": "2th_deg"}),
        (["--method", "bbox,csr,cython"], "int_method", "bbox,csr,cython", {"method": ("bbox", "csr", "cython")}),
        (["--polarization", "0.99"], "polarization_factor", 0.99, {"polarization": 0.99}),
        (["--error-model", "none"], "error_model", "none", {"error_model": None}),
        (["--error-model", "azimuthal"], "error_model", "azimuthal", {"error_model": "azimuthal"}),
    ],
)
def test_an_explicit_option_beats_the_config_even_at_its_default_value(setup, options, key, expected, typed):
    p = _run(setup, *options, integrated=setup["config_ref"].but(**typed))  # the rows: pyFAI with the typed value
    assert p[key] == expected
    others = {"num_points": 30, "int_unit": "q_nm^-1", "polarization_factor": 0.5, "error_model": "poisson"}
    for other, value in others.items():  # and only that option changes
        if other != key:
            assert p[other] == value, other


def test_polarization_none_and_no_solid_angle_beat_the_config(setup):
    config = yaml.safe_load(setup["config"].read_text())
    config["integration"] = {**CONFIG_INTEGRATION, "solid_angle": True}
    setup["config"].write_text(yaml.safe_dump(config))
    assert _run(setup, integrated=setup["config_ref"].but(solid_angle=True))["solid_angle_correction"] is True
    p = _run(setup, "--polarization", "none", "--no-solid-angle",
             integrated=setup["config_ref"].but(polarization=None, solid_angle=False))  # fmt: skip
    assert np.isnan(p["polarization_factor"]) and p["solid_angle_correction"] is False


def test_explicit_poni_and_mask_beat_the_config(setup):
    p = _run(setup, "--poni", str(setup["cli_poni"]), "--mask", str(setup["tmp"] / "cli_mask.edf"),
             integrated=setup["config_ref"].but(poni=setup["cli_poni"], mask=setup["cli_mask"]))  # fmt: skip
    assert p["cal_file"] == str(setup["cli_poni"]) and p["mask_file"] == str(setup["tmp"] / "cli_mask.edf")


def _args(*argv) -> argparse.Namespace:
    return build_parser().parse_args(["integrate", "x", *argv])


def test_workers_output_and_dataset_resolution(setup, tmp_path):
    run = resolve_integrate_options(_args("--config", str(setup["config"])))
    assert run.workers == 2 and run.output == setup["config"].parent / "from_config"
    run = resolve_integrate_options(_args("--config", str(setup["config"]), "--workers", "1", "-o", "o"))
    assert run.workers == 1 and str(run.output) == "o"
    config = yaml.safe_load(setup["config"].read_text())
    config["detectors"]["lambda1"].update(source="hdf5", dataset="/entry/cfg/data")
    setup["config"].write_text(yaml.safe_dump(config))
    assert resolve_integrate_options(_args("--config", str(setup["config"]))).dataset == "/entry/cfg/data"
    run = resolve_integrate_options(_args("--config", str(setup["config"]), "--dataset", "/entry/data/data"))
    assert run.dataset == "/entry/data/data"
    no_config = resolve_integrate_options(_args("--poni", str(setup["cli_poni"])))
    assert (no_config.workers, str(no_config.output), no_config.dataset) == (1, ".", None)
    assert no_config.settings.polarization_factor == 0.99 and no_config.settings.correct_solid_angle
