"""The beamtime configuration: one YAML file, loaded into frozen dataclasses, every problem named.

Validation collects *all* problems and reports them together, each with the file, the key path and
what was expected — an operator fixing a config at 3 a.m. wants the whole list at once::

    configs/beamtime.yaml: detectors.lambda1.integration.bins: bins 0 is out of range; expected 1 to 100000
    configs/beamtime.yaml: detectors.lambda2.integration.poni: PONI file /x/L2.poni does not exist

Relative paths are resolved against the YAML file's directory.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .integrate import DEFAULT_BINS, DEFAULT_METHOD, IntegrationSettings, read_poni
from .mask import check_mask_shape, load_mask_file

SOURCES = ("lambda", "hdf5", "image")
TOP_KEYS = {"beamtime", "data_root", "output_directory", "workers", "detectors", "integration"}
DETECTOR_KEYS = {"source", "dataset", "frame_shape", "integration"}
INTEGRATION_KEYS = {"poni", "mask", "bins", "unit", "method", "polarization_factor", "solid_angle", "error_model"}
MAX_WORKERS = 64


@dataclass(frozen=True)
class DetectorConfig:
    """One detector = one independent stream with its own calibration and mask."""

    name: str
    integration: IntegrationSettings
    source: str = "lambda"
    dataset: str | None = None
    frame_shape: tuple[int, int] | None = None


@dataclass(frozen=True)
class BeamtimeConfig:
    data_root: Path
    output_directory: Path
    detectors: dict[str, DetectorConfig]
    beamtime: str = ""
    workers: int = 1
    path: Path | None = None


@dataclass
class _Problems:
    origin: str
    items: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{self.origin}: {key}: {message}" if key else f"{self.origin}: {message}")

    def unknown_keys(self, where: str, given: dict, allowed: set[str]) -> None:
        for key in sorted(set(given) - allowed, key=str):
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.add(f"{where}{key}", f"unknown key{hint} (allowed: {', '.join(sorted(allowed))})")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError("\n".join(self.items))


def load_config(path: str | Path, check_files: bool = True) -> BeamtimeConfig:
    """Read and validate a beamtime YAML. ``check_files=False`` skips PONI/mask existence checks."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    return config_from_dict(data, path.parent, origin=str(path), check_files=check_files)


def config_from_dict(
    data: Any, base_dir: str | Path, origin: str = "<config>", check_files: bool = True
) -> BeamtimeConfig:
    base_dir = Path(base_dir)
    problems = _Problems(origin)
    if not isinstance(data, dict):
        problems.add("", f"expected a mapping of {', '.join(sorted(TOP_KEYS))}; got {type(data).__name__}")
        problems.raise_if_any()
    problems.unknown_keys("", data, TOP_KEYS)
    for key in ("data_root", "output_directory", "detectors"):
        if key not in data:
            problems.add(key, "missing (required)")
    paths = {}
    for key in ("data_root", "output_directory"):
        if key in data:
            if isinstance(data[key], str) and data[key]:
                paths[key] = _resolve(data[key], base_dir)
            else:
                problems.add(key, f"{data[key]!r} is not a path (expected a string)")
    workers = data.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        problems.add("workers", f"{workers!r} is out of range; expected an integer 1 to {MAX_WORKERS}")
    defaults = data.get("integration") or {}
    if not isinstance(defaults, dict):
        problems.add("integration", "expected a mapping of integration settings")
        defaults = {}
    problems.unknown_keys("integration.", defaults, INTEGRATION_KEYS)
    detectors_data = data.get("detectors")
    detectors: dict[str, DetectorConfig] = {}
    if "detectors" in data and (not isinstance(detectors_data, dict) or not detectors_data):
        problems.add("detectors", "expected at least one detector (name: {integration: ...})")
    elif isinstance(detectors_data, dict):
        for name, det in detectors_data.items():
            cfg = _detector(str(name), det, defaults, base_dir, problems, check_files)
            if cfg is not None:
                detectors[str(name)] = cfg
    problems.raise_if_any()
    return BeamtimeConfig(
        paths["data_root"],
        paths["output_directory"],
        detectors,
        str(data.get("beamtime", "")),
        workers,
        Path(origin) if origin != "<config>" else None,
    )


def _resolve(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and value.lower() == "none") else value


def _detector(name, det, defaults, base_dir, problems: _Problems, check_files: bool) -> DetectorConfig | None:
    where = f"detectors.{name}"
    if not isinstance(det, dict):
        problems.add(where, "expected a mapping with an integration block")
        return None
    problems.unknown_keys(f"{where}.", det, DETECTOR_KEYS)
    source = det.get("source", "lambda")
    if source not in SOURCES:
        problems.add(f"{where}.source", f"{source!r} is unknown; expected one of {', '.join(SOURCES)}")
    frame_shape = det.get("frame_shape")
    if frame_shape is not None:
        if (
            not isinstance(frame_shape, list)
            or len(frame_shape) != 2
            or not all(isinstance(n, int) and n > 0 for n in frame_shape)
        ):
            problems.add(f"{where}.frame_shape", f"{frame_shape!r}: expected [rows, columns] of positive integers")
            frame_shape = None
        else:
            frame_shape = (frame_shape[0], frame_shape[1])
    block = det.get("integration") or {}
    if not isinstance(block, dict):
        problems.add(f"{where}.integration", "expected a mapping of integration settings")
        return None
    problems.unknown_keys(f"{where}.integration.", block, INTEGRATION_KEYS)
    merged = {**defaults, **block}
    iwhere = f"{where}.integration"
    if "poni" not in merged:
        problems.add(f"{iwhere}.poni", "missing (required: the detector's pyFAI calibration)")
        return None
    n_before = len(problems.items)
    poni = _resolve(str(merged["poni"]), base_dir)
    mask = _none(merged.get("mask"))
    mask = _resolve(str(mask), base_dir) if mask else None
    if check_files:
        try:
            read_poni(poni)
        except ConfigError as exc:
            problems.add(f"{iwhere}.poni", str(exc))
        if mask is not None:
            try:
                m = load_mask_file(mask)
                if frame_shape is not None:
                    check_mask_shape(m, frame_shape, f"file {mask}")
            except ConfigError as exc:
                problems.add(f"{iwhere}.mask", str(exc))
    method = merged.get("method", list(DEFAULT_METHOD))
    if isinstance(method, str):
        method = method.split(",")
    try:
        settings = IntegrationSettings(
            poni_path=poni,
            bins=merged.get("bins", DEFAULT_BINS),
            unit=merged.get("unit", "2th_deg"),
            mask_path=mask,
            method=tuple(method),
            polarization_factor=_none(merged.get("polarization_factor", 0.99)),
            correct_solid_angle=bool(merged.get("solid_angle", True)),
            error_model=_none(merged.get("error_model")),
        )
    except ConfigError as exc:
        key = next((k for k in ("bins", "unit", "polarization", "error model", "method") if k in str(exc)), "")
        problems.add(f"{iwhere}.{key.replace(' ', '_').replace('polarization', 'polarization_factor')}", str(exc))
        return None
    except (TypeError, ValueError) as exc:
        problems.add(iwhere, f"invalid value ({exc})")
        return None
    if len(problems.items) > n_before:
        return None
    return DetectorConfig(name, settings, source, det.get("dataset"), frame_shape)
