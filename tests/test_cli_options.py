"""Explicit options always beat --config, even when the typed value equals the built-in default.

Every option --config can set is checked by running the CLI and reading what the written file
records in /processed/process.
"""

import argparse
import shutil

import h5py
import numpy as np
import pytest
import yaml

from pipeline_core.cli import build_parser, main, resolve_integrate_options
from pipeline_core.formats.mask import save_mask_file

from .helpers import SMALL_FRAME, write_small_acquisition

CONFIG_INTEGRATION = {
    "bins": 30,
    "unit": "q_nm^-1",
    "method": ["no", "histogram", "cython"],
    "polarization_factor": 0.5,
    "solid_angle": False,
    "error_model": "poisson",
}


@pytest.fixture
def setup(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    shutil.copy(small_poni, cfg_dir / "config.poni")
    save_mask_file(cfg_dir / "config_mask.edf", np.zeros(SMALL_FRAME, bool))
    save_mask_file(tmp_path / "cli_mask.edf", np.zeros(SMALL_FRAME, bool))
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
    return {"acq": acq, "config": cfg_dir / "bt.yaml", "tmp": tmp_path, "cli_poni": small_poni}


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


def _run(setup, *options, output=True) -> dict:
    """Run integrate into a fresh folder (-o, or the config's output_directory) and read the file."""
    setup["runs"] = setup.get("runs", 0) + 1
    directory = setup["tmp"] / f"out{setup['runs']}" if output else setup["config"].parent / "from_config"
    out = ["-o", str(directory)] if output else []
    argv = ["integrate", str(setup["acq"]["directory"]), "--config", str(setup["config"]), *out, *options]
    assert main(argv) == 0
    return _process(directory / "scan_00001.nxs")


def test_the_config_applies_when_no_option_is_given_and_its_output_directory_is_used(setup):
    p = _run(setup, output=False)  # no -o: the config's output_directory
    cfg = setup["config"].parent
    assert p["cal_file"] == str(cfg / "config.poni") and p["mask_file"] == str(cfg / "config_mask.edf")
    assert (p["num_points"], p["int_unit"], p["int_method"]) == (30, "q_nm^-1", "no,histogram,cython")
    assert (p["polarization_factor"], p["solid_angle_correction"], p["error_model"]) == (0.5, False, "poisson")
    assert p["status"] == "complete"


@pytest.mark.parametrize(
    ("options", "key", "expected"),
    [
        (["--bins", "2048"], "num_points", 2048),  # the built-in default, typed: still wins
        (["--unit", "2th_deg"], "int_unit", "2th_deg"),
        (["--method", "bbox,csr,cython"], "int_method", "bbox,csr,cython"),
        (["--polarization", "0.99"], "polarization_factor", 0.99),
        (["--error-model", "none"], "error_model", "none"),
        (["--error-model", "azimuthal"], "error_model", "azimuthal"),
    ],
)
def test_an_explicit_option_beats_the_config_even_at_its_default_value(setup, options, key, expected):
    p = _run(setup, *options)
    assert p[key] == expected
    others = {"num_points": 30, "int_unit": "q_nm^-1", "polarization_factor": 0.5, "error_model": "poisson"}
    for other, value in others.items():  # and only that option changes
        if other != key:
            assert p[other] == value, other


def test_polarization_none_and_no_solid_angle_beat_the_config(setup):
    config = yaml.safe_load(setup["config"].read_text())
    config["integration"] = {**CONFIG_INTEGRATION, "solid_angle": True}
    setup["config"].write_text(yaml.safe_dump(config))
    assert _run(setup)["solid_angle_correction"] is True
    p = _run(setup, "--polarization", "none", "--no-solid-angle")
    assert np.isnan(p["polarization_factor"]) and p["solid_angle_correction"] is False


def test_explicit_poni_and_mask_beat_the_config(setup):
    p = _run(setup, "--poni", str(setup["cli_poni"]), "--mask", str(setup["tmp"] / "cli_mask.edf"))
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
