"""Registering the pipeline's servers, devices and properties in a Tango database — idempotently.

The same code registers into the embedded sqlite database of the demo and into a beamline's
MariaDB-backed Tango DB: it only talks to whatever ``TANGO_HOST`` names. Running it twice changes
nothing the second time; properties listed in the file are (re)written, others are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tango
import yaml

from pipeline_core.errors import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "tango_db_setup" / "pipeline.yaml"


@dataclass(frozen=True)
class DeviceSpec:
    server: str  # "XrdStitcher/demo"
    klass: str
    name: str  # TRL "p02/xrd/stitcher"
    properties: dict[str, list[str]]


def load_layout(path: str | Path = DEFAULT_FILE, state: str | Path = ".") -> list[DeviceSpec]:
    """Read the YAML layout; ``{state}`` in property values becomes the given folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the Tango layout ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
        raise ConfigError(f"{path}: expected a mapping 'servers: {{Server/instance: {{Class: {{device: props}}}}}}'")
    specs = []
    for server, classes in data["servers"].items():
        if "/" not in server or not isinstance(classes, dict):
            raise ConfigError(f"{path}: servers.{server}: expected 'Executable/instance' mapping to classes")
        for klass, devices in classes.items():
            for name, props in (devices or {}).items():
                if name.count("/") != 2:
                    raise ConfigError(f"{path}: servers.{server}.{klass}.{name}: a device name is domain/family/member")
                specs.append(DeviceSpec(server, klass, name, {k: _prop(v, state) for k, v in (props or {}).items()}))
    return specs


def _prop(value, state) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v).replace("{state}", str(Path(state).absolute())) for v in values]


def register(specs: list[DeviceSpec], database: tango.Database | None = None) -> list[str]:
    """Add servers/devices and write their properties; returns what was done, one line each."""
    db = database or tango.Database()
    done = []
    for spec in specs:
        existing = db.get_device_info(spec.name) if _exists(db, spec.name) else None
        if existing is None or existing.ds_full_name != spec.server or existing.class_name != spec.klass:
            info = tango.DbDevInfo()
            info.server, info._class, info.name = spec.server, spec.klass, spec.name
            db.add_device(info)
            done.append(f"added {spec.name} ({spec.klass}) to server {spec.server}")
        if spec.properties:
            db.put_device_property(spec.name, spec.properties)
    return done


def _exists(db: tango.Database, name: str) -> bool:
    try:
        db.get_device_info(name)
        return True
    except tango.DevFailed:
        return False


def servers(specs: list[DeviceSpec]) -> list[str]:
    return list(dict.fromkeys(s.server for s in specs))
