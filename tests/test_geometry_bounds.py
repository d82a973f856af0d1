"""A PONI with non-finite or absurd geometry is refused offline and on a device (issue 7, item 4).

pyFAI accepts ``Distance: nan`` and integrates every frame to zeros; the file would say complete.
"""

from pathlib import Path

import pytest
import tango
from tango.test_context import MultiDeviceTestContext

from pipeline_core.cli import main as cli_main
from pipeline_core.errors import ConfigError
from pipeline_core.processing.integrate import read_poni
from tango_servers.integrator import Integrator

from .helpers import SMALL_PONI, write_small_acquisition

BAD_VALUES = [
    ("Distance", "nan"),
    ("Distance", "inf"),
    ("Distance", "1e300"),
    ("Distance", "-0.1"),
    ("Poni1", "nan"),
    ("Poni2", "1e300"),
    ("Rot1", "inf"),
    ("Rot3", "100"),
    ("Wavelength", "nan"),
    ("Wavelength", "1e-3"),
]


def poni_with(tmp_path: Path, key: str, value: str) -> Path:
    lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in SMALL_PONI.splitlines()]
    path = tmp_path / f"bad_{key}_{value}.poni"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_absurd_geometry_is_refused_naming_key_and_value(tmp_path, key, value):
    path = poni_with(tmp_path, key, value)
    with pytest.raises(ConfigError) as info:
        read_poni(path)
    text = str(info.value)
    assert key in text and "expected a finite value between" in text and str(path) in text


def test_the_shipped_geometry_is_accepted(small_poni):
    ai = read_poni(small_poni)
    assert ai.dist == pytest.approx(0.01) and ai.wavelength == pytest.approx(4.836e-11)


def test_offline_command_refuses_nan_distance_and_writes_nothing(tmp_path, capsys):
    acq = write_small_acquisition(tmp_path / "raw")
    poni = poni_with(tmp_path, "Distance", "nan")
    out = tmp_path / "out"
    status = cli_main(["integrate", str(acq["files"][0]), "--poni", str(poni), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert "Distance = nan m is not a usable geometry" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="module")
def integrator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geometry")
    good = tmp / "good.poni"
    good.write_text(SMALL_PONI)
    devices = [
        {
            "class": Integrator,
            "devices": [{"name": "test/xrd/geom-integrator", "properties": {"PoniPath": str(good), "Bins": 20}}],
        }
    ]
    with MultiDeviceTestContext(devices, process=True) as ctx:
        yield ctx.get_device("test/xrd/geom-integrator"), tmp, good


@pytest.mark.parametrize(("key", "value"), [("Distance", "nan"), ("Distance", "1e300"), ("Wavelength", "inf")])
def test_device_refuses_absurd_geometry_and_keeps_serving(integrator, key, value):
    dev, tmp, good = integrator
    status_before = dev.status()
    bad = poni_with(tmp, key, value)
    with pytest.raises(tango.DevFailed) as info:
        dev.poniPath = str(bad)
    assert info.value.args[0].reason == "XRD_InvalidValue"
    assert f"{key} = " in info.value.args[0].desc and "not a usable geometry" in info.value.args[0].desc
    assert dev.poniPath == str(good)  # the old value stays in force
    # the refusal is the writer's answer, not a problem of the device: State and Status stay what they
    # were, FAULT for the one reason this lone Integrator has (no Stitcher to work for)
    assert dev.state() == tango.DevState.FAULT
    assert dev.status() == status_before and "no StitcherDevice property" in status_before
    assert "good.poni" in status_before and bad.name not in status_before
