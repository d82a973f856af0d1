from pathlib import Path

import numpy as np
import pytest

from pipeline_core.cli import main
from pipeline_core.config import config_from_dict, load_config
from pipeline_core.errors import ConfigError
from pipeline_core.mask import save_mask_file

from .conftest import REPO, write_small_acquisition


def _base(poni: Path, **integration):
    return {
        "data_root": "raw",
        "output_directory": "out",
        "detectors": {"lambda1": {"frame_shape": [67, 32], "integration": {"poni": poni.name, **integration}}},
    }


def test_defaults_are_merged_and_paths_resolved(tmp_path, small_poni):
    data = _base(small_poni, bins=500)
    data["integration"] = {"unit": "q_nm^-1", "bins": 100, "polarization_factor": "none"}
    cfg = config_from_dict(data, tmp_path)
    det = cfg.detectors["lambda1"]
    assert cfg.data_root == tmp_path / "raw" and cfg.output_directory == tmp_path / "out"
    assert det.integration.bins == 500  # the detector's own block wins
    assert det.integration.unit == "q_nm^-1"  # from the defaults
    assert det.integration.polarization_factor is None
    assert det.integration.poni_path == small_poni
    assert det.frame_shape == (67, 32) and det.source == "lambda" and cfg.workers == 1


def test_every_problem_is_reported_with_its_key(tmp_path, small_poni):
    save_mask_file(tmp_path / "m.npy", np.zeros((5, 5)))
    data = _base(small_poni, bins=0, mask="m.npy")
    data["detectors"]["lambda2"] = {"integration": {"poni": "missing.poni", "unit": "furlong"}}
    data["workerz"] = 3
    data["workers"] = 0
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data, tmp_path, origin="bt.yaml")
    text = str(exc.value)
    lines = text.splitlines()
    assert "bt.yaml: workerz: unknown key; did you mean 'workers'?" in text
    assert "bt.yaml: workers: 0 is out of range" in text
    assert "detectors.lambda1.integration.mask: mask file" in text and "m.npy has shape (5, 5)" in text
    assert "detectors.lambda2.integration.poni: PONI file" in text and "missing.poni does not exist" in text
    assert len(lines) >= 4


@pytest.mark.parametrize(
    "change, key, message",
    [
        ({"bins": 0}, "bins", "bins 0 is out of range"),
        ({"unit": "furlong"}, "unit", "unit 'furlong' is unknown"),
        ({"error_model": "gauss"}, "error_model", "error model 'gauss' is unknown"),
    ],
)
def test_bad_integration_values(tmp_path, small_poni, change, key, message):
    with pytest.raises(ConfigError, match=rf"detectors.lambda1.integration.{key}: {message}"):
        config_from_dict(_base(small_poni, **change), tmp_path)


def test_missing_required_keys(tmp_path):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"detectors": {}}, tmp_path)
    assert "data_root: missing" in str(exc.value) and "detectors: expected at least one detector" in str(exc.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_root: raw\ndetectors: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load_config(bad)


def test_repository_example_configs_load(real_dir):
    cfg = load_config(REPO / "configs" / "beamtime.yaml")
    assert set(cfg.detectors) == {"lambda1", "lambda2"}
    assert cfg.detectors["lambda1"].integration.bins == 4038
    assert cfg.detectors["lambda2"].integration.bins == 2048
    assert cfg.detectors["lambda1"].integration.poni_path == (real_dir / "L2.poni").resolve()
    demo = load_config(REPO / "configs" / "demo.yaml", check_files=False)
    assert demo.detectors["lambda1"].integration.mask_path.name == "ramp_00001_mask.edf"


def test_cli_takes_settings_from_the_config(tmp_path, small_poni, capsys):
    import yaml

    write_small_acquisition(tmp_path / "raw", n_parts=1)
    (tmp_path / "bt.yaml").write_text(yaml.safe_dump(_base(small_poni, bins=17)))
    rc = main(
        ["integrate", str(tmp_path / "raw"), "--config", str(tmp_path / "bt.yaml"), "-o", str(tmp_path / "o.nxs")]
    )
    assert rc == 0, capsys.readouterr().err
    from pipeline_core.nexus import read_merged

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
