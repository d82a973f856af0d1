"""One home for each default (issue 8): the core's configuration.

A device property that configures a core stage takes its default from that stage's configuration;
the layout the demo registers (``tango_db_setup/pipeline.yaml``) restates no default; README's
device table shows the defaults the servers really have.
"""

from __future__ import annotations

import inspect
import re

import pytest
import yaml
from tango.server import device_property

from pipeline_core.jobs.config import DEFAULT_FRAMES_PER_TASK, LocalConfig, SlurmConfig
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.live.stitch_stage import StitchConfig
from pipeline_core.processing.engine_choice import DEFAULT_ENGINE
from pipeline_core.processing.integrate import DEFAULT_BINS, IntegrationSettings
from tango_servers.integrator import Integrator
from tango_servers.merger import Merger
from tango_servers.simulator import LambdaSimulator
from tango_servers.stitcher import Stitcher

from .helpers import REPO

DEVICES = {"Stitcher": Stitcher, "Integrator": Integrator, "Merger": Merger, "LambdaSimulator": LambdaSimulator}


def properties(cls) -> dict[str, device_property]:
    """Every device property of a device class, inherited ones included."""
    return {name: getattr(cls, name) for name in dir(cls) if isinstance(getattr(cls, name, None), device_property)}


def default(cls, name: str):
    return properties(cls)[name].default_value


def parameter_default(cls, name: str):
    return inspect.signature(cls).parameters[name].default


def test_the_devices_take_their_defaults_from_the_core():
    core = StitchConfig()
    expected = {
        (Stitcher, "ModuleCount"): core.module_count,
        (Stitcher, "FramesPerItem"): core.frames_per_item,
        (Stitcher, "ModuleTimeout"): core.module_timeout_s,
        (Stitcher, "LeaseTimeout"): core.lease_s,
        (Stitcher, "MaxPending"): core.max_pending,
        (Stitcher, "MaxReintegrations"): core.max_reintegrations,
        (Stitcher, "MaxRequeues"): core.max_requeues,
        (Stitcher, "MaxItems"): core.max_items,
        (Integrator, "Bins"): DEFAULT_BINS,
        (Integrator, "Unit"): IntegrationSettings("x.poni").unit,
        (Integrator, "PollInterval"): parameter_default(IntegrateStage, "poll_interval_s"),
        (Merger, "ScanTimeout"): parameter_default(MergeStage, "scan_timeout_s"),
        (Merger, "GapCheck"): parameter_default(MergeStage, "gap_check_s"),
        (Integrator, "Engine"): DEFAULT_ENGINE,
        (Stitcher, "JobWorkers"): LocalConfig.workers,
        (Stitcher, "JobFramesPerTask"): DEFAULT_FRAMES_PER_TASK,
        (Stitcher, "SlurmTimeLimit"): SlurmConfig.time_limit,
        (Stitcher, "SlurmCpusPerTask"): SlurmConfig.cpus_per_task,
    }
    wrong = {
        f"{cls.__name__}.{name}": (default(cls, name), value)
        for (cls, name), value in expected.items()
        if default(cls, name) != value
    }
    assert not wrong, f"device property default != core default: {wrong}"


def test_the_registered_layout_restates_no_default():
    layout = yaml.safe_load((REPO / "tango_db_setup" / "pipeline.yaml").read_text())
    restated = []
    for server in layout["servers"].values():
        for klass, devices in server.items():
            for device, props in devices.items():
                for name, value in (props or {}).items():
                    if value == default(DEVICES[klass], name):
                        restated.append(f"{device}.{name} = {value!r}")
    assert not restated, f"pipeline.yaml restates defaults (remove them): {restated}"


@pytest.mark.parametrize("klass", sorted(DEVICES))
def test_readme_shows_the_defaults_the_servers_have(klass):
    """README's device table: every ``Property`` (value[ unit]) it gives is the server's default."""
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| **{klass}** |"))
    shown = re.findall(r"`(\w+)` \(([^)`]+)\)", row.split("|")[2])
    assert shown or klass == "LambdaSimulator", f"no defaults found in README's {klass} row"
    for name, text in shown:
        value = default(DEVICES[klass], name)
        number = re.match(r"[\d.]+", text)
        if isinstance(value, bool):
            assert text == str(value).lower(), (klass, name, text, value)
        elif isinstance(value, (int, float)) and number:
            assert float(number.group()) == value, f"README says {klass}.{name} ({text}); the server's is {value}"
