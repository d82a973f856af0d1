"""The beamtime YAML: defaults merged, paths resolved, every problem reported with its file and key path."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline_core.cli import main
from pipeline_core.config import BeamtimeConfig, DetectorConfig, config_from_dict, load_config
from pipeline_core.errors import ConfigError
from pipeline_core.formats.mask import save_mask_file

from .helpers import REAL_DIR, REPO, SMALL_FRAME, write_small_acquisition


def _base(poni_file: Path, **integration):
    block = {"poni": poni_file.name, **integration}
    return {
        "data_root": "raw",
        "output_directory": "out",
        "detectors": {"lambda1": {"frame_shape": list(SMALL_FRAME), "integration": block}},
    }


def _problems(data, base_dir, **kwargs) -> str:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data, base_dir, origin="bt.yaml", **kwargs)
    return str(exc.value)


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_are_merged_and_paths_resolved(tmp_path, small_poni):
    data = _base(small_poni, bins=500)
    data["integration"] = {"unit": "q_nm^-1", "bins": 100, "polarization_factor": "none", "method": "bbox,csr,cython"}
    cfg = config_from_dict(data, tmp_path)
    det = cfg.detectors["lambda1"]
    assert isinstance(cfg, BeamtimeConfig) and isinstance(det, DetectorConfig)
    assert cfg.data_root == tmp_path / "raw" and cfg.output_directory == tmp_path / "out"
    assert det.integration.bins == 500  # the detector's own block wins
    assert det.integration.unit == "q_nm^-1"  # from the defaults
    assert det.integration.polarization_factor is None
    assert det.integration.method == ("bbox", "csr", "cython")
    assert det.integration.poni_path == small_poni.resolve() and det.integration.mask_path is None
    assert det.integration.error_model is None and det.integration.correct_solid_angle is True
    assert det.frame_shape == SMALL_FRAME and det.source == "lambda" and det.dataset is None
    assert cfg.workers == 1 and cfg.beamtime is None and cfg.path is None


def test_load_config_resolves_against_the_yaml_directory(tmp_path, small_poni, monkeypatch):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "cal").mkdir()
    (conf_dir / "cal" / "d.poni").write_text(small_poni.read_text())
    save_mask_file(conf_dir / "cal" / "m.edf", np.zeros(SMALL_FRAME))
    text = """
beamtime: 11012345      # unquoted: still kept as an id string
data_root: ../raw
output_directory: /abs/out
workers: 4
integration:
  poni: cal/d.poni
  error_model: null
detectors:
  lambda1:
    frame_shape: [67, 32]
    integration: {mask: cal/m.edf, error_model: poisson, solid_angle: false}
  lambda2:
    source: hdf5
    dataset: /entry/data/data
    integration: {bins: 17, unit: d_A, polarization_factor: -0.5}
"""
    path = _write(conf_dir / "bt.yaml", text)
    monkeypatch.chdir(tmp_path)  # relative to the file, not to the working directory
    cfg = load_config(Path("conf") / "bt.yaml")
    assert cfg.path == path and cfg.beamtime == "11012345" and cfg.workers == 4
    assert cfg.data_root == (tmp_path / "raw").resolve() and cfg.output_directory == Path("/abs/out")
    d1, d2 = cfg.detectors["lambda1"], cfg.detectors["lambda2"]
    assert list(cfg.detectors) == ["lambda1", "lambda2"]
    assert d1.integration.poni_path == d2.integration.poni_path == (conf_dir / "cal" / "d.poni").resolve()
    assert d1.integration.mask_path == (conf_dir / "cal" / "m.edf").resolve()
    assert d1.integration.error_model == "poisson" and d1.integration.correct_solid_angle is False
    assert d2.integration.error_model is None and d2.integration.bins == 17 and d2.integration.unit == "d_A"
    assert d2.integration.polarization_factor == -0.5
    assert d2.source == "hdf5" and d2.dataset == "/entry/data/data" and d2.frame_shape is None


def test_every_problem_is_reported_with_its_key(tmp_path, small_poni):
    save_mask_file(tmp_path / "m.npy", np.zeros((5, 5)))
    data = _base(small_poni, bins=0, mask="m.npy")
    data["detectors"]["lambda2"] = {"integration": {"poni": "missing.poni", "unit": "furlong"}}
    data["workerz"] = 3
    data["workers"] = 0
    text = _problems(data, tmp_path)
    lines = text.splitlines()
    assert all(line.startswith("bt.yaml: ") for line in lines)
    assert "bt.yaml: workerz: unknown key; did you mean 'workers'?" in text
    assert "bt.yaml: workers: 0 is out of range" in text
    assert "detectors.lambda1.integration.bins: bins 0 is out of range" in text
    assert "detectors.lambda1.integration.mask: mask file" in text and "m.npy has shape (5, 5)" in text
    assert "detectors.lambda2.integration.poni: PONI file" in text and "missing.poni does not exist" in text
    assert "detectors.lambda2.integration.unit: unit 'furlong' is unknown" in text
    assert len(lines) == 6, text


@pytest.mark.parametrize(
    "change, key, message",
    [
        ({"bins": 0}, "bins", "bins 0 is out of range"),
        ({"bins": -5}, "bins", "bins -5 is out of range"),
        ({"bins": "many"}, "bins", "bins 'many' is not an integer"),
        ({"bins": 12.5}, "bins", "bins 12.5 is not an integer"),
        ({"unit": "furlong"}, "unit", r"unit 'furlong' is unknown; expected one of 2th_deg, q_nm\^-1"),
        ({"unit": ["q"]}, "unit", r"\['q'\] is a list"),
        ({"unit": "q_nm-1"}, "unit", r"unit 'q_nm-1' is unknown; .*; did you mean 'q_nm\^-1'\?"),
        ({"error_model": "gauss"}, "error_model", "error model 'gauss' is unknown"),
        ({"error_model": "poison"}, "error_model", "error model 'poison' is unknown; .*did you mean 'poisson'"),
        ({"error_model": 3}, "error_model", "3 is an integer"),
        ({"polarization_factor": 1.5}, "polarization_factor", "polarization factor 1.5 is outside"),
        ({"polarization_factor": "high"}, "polarization_factor", "'high' is a string; expected a number"),
        ({"solid_angle": "yes"}, "solid_angle", "'yes' is a string; expected true or false"),
        ({"method": ["bbox", "csr"]}, "method", r"method \('bbox', 'csr'\) must be"),
        ({"method": ["bbox", "csrr", "cython"]}, "method", "integration method bbox,csrr,cython: .*csrr"),
        ({"method": 7}, "method", r"7: expected \[splitting, algorithm, implementation\]"),
        ({"mask": 5}, "mask", "5 is an integer; expected a file path"),
        ({"mask": "nope.edf"}, "mask", "mask file .*nope.edf does not exist"),
        ({"poni": "nope.poni"}, "poni", "PONI file .*nope.poni does not exist"),
        ({"poni": ["a"]}, "poni", r"\['a'\] is a list; expected a file path"),
    ],
)
def test_bad_integration_values(tmp_path, small_poni, change, key, message):
    with pytest.raises(ConfigError, match=rf"^bt.yaml: detectors\.lambda1\.integration\.{key}: {message}"):
        config_from_dict(_base(small_poni, **change), tmp_path, origin="bt.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"workers": 0}, "workers: 0 is out of range; expected an integer 1 to 64"),
        ({"workers": 65}, "workers: 65 is out of range"),
        ({"workers": "many"}, "workers: 'many' is a string; expected an integer"),
        ({"workers": True}, "workers: True is a boolean"),
        ({"data_root": 5}, "data_root: 5 is an integer; expected a directory path"),
        ({"output_directory": None}, "output_directory: None is null; expected a directory path"),
        ({"beamtime": [1]}, r"beamtime: \[1\] is a list; expected the beamtime id"),
        ({"integration": [1]}, "integration: a list; expected a mapping"),
        ({"integration": {"binz": 3}}, "integration.binz: unknown key; did you mean 'bins'?"),
        ({"detectors": {}}, "detectors: expected at least one detector .*got an empty mapping"),
        ({"detectors": ["lambda1"]}, r"detectors: expected at least one detector .*\['lambda1'\] \(a list\)"),
        ({"detectors": {"lambda1": None}}, "detectors.lambda1: null; expected a mapping"),
    ],
)
def test_bad_top_level_values(tmp_path, small_poni, change, message):
    data = {**_base(small_poni), **change}
    with pytest.raises(ConfigError, match=rf"bt.yaml: {message}"):
        config_from_dict(data, tmp_path, origin="bt.yaml")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"source": "eiger"}, "source: 'eiger' is unknown; expected one of lambda, hdf5, image$"),
        ({"source": "lamda"}, "source: 'lamda' is unknown; expected .*; did you mean 'lambda'\\?"),
        ({"dataset": "/entry/data"}, "dataset: '/entry/data' is only used with source hdf5"),
        ({"source": "hdf5", "dataset": 3}, "dataset: 3 is an integer; expected an HDF5 path"),
        ({"frame_shape": [0, 32]}, r"frame_shape: \[0, 32\]: expected \[rows, columns\]"),
        ({"frame_shape": [1, 2, 3]}, r"frame_shape: \[1, 2, 3\]: expected"),
        ({"frame_shape": "67x32"}, "frame_shape: '67x32': expected"),
        ({"integration": "L2.poni"}, "integration: a string; expected a mapping"),
        ({"intergration": {}}, "intergration: unknown key; did you mean 'integration'?"),
    ],
)
def test_bad_detector_values(tmp_path, small_poni, change, message):
    data = _base(small_poni)
    data["detectors"]["lambda1"].update(change)
    with pytest.raises(ConfigError, match=rf"bt.yaml: detectors\.lambda1\.{message}"):
        config_from_dict(data, tmp_path, origin="bt.yaml")


def test_unknown_keys_list_the_allowed_ones(tmp_path, small_poni):
    data = _base(small_poni, polarisation=0.9, frobnicate=1)
    text = _problems(data, tmp_path)
    assert (
        "detectors.lambda1.integration.polarisation: unknown key; did you mean 'polarization_factor'? "
        "(allowed: bins, error_model, mask, method, polarization_factor, poni, solid_angle, unit)"
    ) in text
    assert "detectors.lambda1.integration.frobnicate: unknown key (allowed: bins," in text  # nothing close


def test_missing_required_keys(tmp_path):
    text = _problems({"detectors": {"d": {"integration": {"bins": 10}}}}, tmp_path)
    assert "bt.yaml: data_root: missing (required)" in text
    assert "bt.yaml: output_directory: missing (required)" in text
    assert "bt.yaml: detectors.d.integration.poni: missing (required" in text
    text = _problems({"data_root": "r", "output_directory": "o"}, tmp_path)
    assert text == "bt.yaml: detectors: missing (required)"


def test_a_bad_default_is_reported_once_under_its_own_key(tmp_path, small_poni):
    data = _base(small_poni)
    data["detectors"]["lambda2"] = {"integration": {"poni": small_poni.name}}
    data["integration"] = {"bins": 0, "mask": "absent.edf"}
    lines = _problems(data, tmp_path).splitlines()
    assert sum("integration.bins: bins 0 is out of range" in line for line in lines) == 1
    assert any(line.startswith("bt.yaml: integration.bins:") for line in lines)
    assert sum("integration.mask: mask file" in line and "absent.edf does not exist" in line for line in lines) == 1
    assert len(lines) == 2, lines


def test_mask_shape_is_checked_against_each_detectors_frame_shape(tmp_path, small_poni):
    save_mask_file(tmp_path / "m.edf", np.zeros(SMALL_FRAME))
    data = _base(small_poni)
    data["integration"] = {"mask": "m.edf"}
    data["detectors"]["lambda2"] = {"frame_shape": [10, 10], "integration": {"poni": small_poni.name}}
    data["detectors"]["lambda3"] = {"integration": {"poni": small_poni.name}}  # no frame_shape: not checked
    text = _problems(data, tmp_path)
    assert text.splitlines() == [
        f"bt.yaml: detectors.lambda2.integration.mask (inherited from integration.mask): mask file "
        f"{(tmp_path / 'm.edf').resolve()} has shape (67, 32) but the frames are (10, 10) (rows, columns); "
        "draw the mask on a stitched frame of this detector"
    ]
    del data["detectors"]["lambda2"]
    cfg = config_from_dict(data, tmp_path)
    assert cfg.detectors["lambda1"].integration.mask_path == cfg.detectors["lambda3"].integration.mask_path


def test_a_mask_of_none_overrides_a_default_mask(tmp_path, small_poni):
    data = _base(small_poni, mask="none")
    data["integration"] = {"mask": "absent.edf"}
    assert config_from_dict(data, tmp_path).detectors["lambda1"].integration.mask_path is None


def test_a_file_that_is_not_a_poni_is_refused(tmp_path, small_poni):
    (tmp_path / "notes.poni").write_text("just some notes\n")
    text = _problems(_base(tmp_path / "notes.poni"), tmp_path)
    assert "detectors.lambda1.integration.poni: PONI file" in text and "is not a pyFAI calibration" in text


def test_check_files_false_defers_the_file_checks_only(tmp_path):
    data = _base(tmp_path / "later.poni", mask="later_mask.edf")
    cfg = config_from_dict(data, tmp_path, check_files=False)
    assert cfg.detectors["lambda1"].integration.poni_path == tmp_path / "later.poni"
    assert cfg.detectors["lambda1"].integration.mask_path == tmp_path / "later_mask.edf"
    data["detectors"]["lambda1"]["integration"]["bins"] = 0
    assert "detectors.lambda1.integration.bins: bins 0" in _problems(data, tmp_path, check_files=False)
    with pytest.raises(ConfigError, match="later.poni does not exist"):
        config_from_dict(data, tmp_path)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "data_root: raw\ndetectors: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load_config(bad)
    tabs = _write(tmp_path / "tabs.yaml", "data_root: raw\ndetectors:\n\tlambda1: {}\n")
    with pytest.raises(ConfigError, match=r"tabs.yaml: line 3, column 1: not valid YAML"):
        load_config(tabs)


def test_duplicate_keys_are_reported_with_their_lines(tmp_path, small_poni):
    text = f"data_root: raw\noutput_directory: out\ndetectors:\n  d:\n    integration:\n      poni: {small_poni.name}\n"
    path = _write(tmp_path / "dup.yaml", text + "      bins: 10\n      bins: 0\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    lines = str(exc.value).splitlines()
    assert f"{path}: line 8: duplicate key 'bins' (first on line 7); only one value may be given" in lines
    assert f"{path}: detectors.d.integration.bins: bins 0 is out of range; expected 1 to 100000" in lines


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the configuration is empty"),
        ("# only a comment\n", "the configuration is empty"),
        ("- a\n- b\n", "a list at the top; expected a mapping with"),
    ],
)
def test_a_file_that_is_not_a_mapping(tmp_path, text, message):
    with pytest.raises(ConfigError, match=f"c.yaml: {message}"):
        load_config(_write(tmp_path / "c.yaml", text))


def test_a_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml: cannot read the configuration"):
        load_config(tmp_path / "absent.yaml")


def test_repository_beamtime_config_loads():
    if not (REAL_DIR / "L2.poni").is_file():
        pytest.skip(f"the P02.2 calibration {REAL_DIR / 'L2.poni'} is not there (../shared beside the checkout)")
    cfg = load_config(REPO / "configs" / "beamtime.yaml")
    assert cfg.beamtime == "11012345" and cfg.workers == 1
    assert set(cfg.detectors) == {"lambda1", "lambda2"}
    l1, l2 = cfg.detectors["lambda1"], cfg.detectors["lambda2"]
    assert l1.integration.bins == 4038 and l2.integration.bins == 2048
    assert l1.frame_shape == l2.frame_shape == (1833, 1556)
    assert l1.integration.polarization_factor == 0.99 and l1.integration.error_model is None
    assert l1.integration.poni_path == (REAL_DIR / "L2.poni").resolve()


def test_repository_demo_config_loads_without_its_files():
    demo = load_config(REPO / "configs" / "demo.yaml", check_files=False)
    det = demo.detectors["lambda1"]
    assert det.integration.poni_path == (REPO / "demo-output" / "raw" / "ramp_00001.poni").resolve()
    assert det.integration.mask_path.name == "ramp_00001_mask.edf"
    assert demo.data_root == (REPO / "demo-output" / "raw").resolve()


def test_cli_takes_settings_from_the_config(tmp_path, small_poni, capsys):
    write_small_acquisition(tmp_path / "raw", n_parts=1)
    _write(tmp_path / "bt.yaml", _base(small_poni, bins=17))
    rc = main(
        ["integrate", str(tmp_path / "raw"), "--config", str(tmp_path / "bt.yaml"), "-o", str(tmp_path / "o.nxs")]
    )
    assert rc == 0, capsys.readouterr().err
    from pipeline_core.formats.nexus import read_merged

    assert read_merged(tmp_path / "o.nxs")["data"].shape == (3, 17)
    rc = main(
        [
            "integrate",
            str(tmp_path / "raw"),
            "--config",
            str(tmp_path / "bt.yaml"),
            "--bins",
            "9",
            "-o",
            str(tmp_path / "o.nxs"),
        ]
    )
    assert rc == 0 and read_merged(tmp_path / "o_v001.nxs")["data"].shape == (3, 9)
