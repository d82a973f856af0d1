"""The beamtime configuration: one YAML file, loaded into frozen dataclasses, every problem named.

Validation collects *all* problems and reports them together in one :class:`ConfigError`, one per
line, each with the file, the key path and what was expected — an operator fixing a config at
3 a.m. wants the whole list at once::

    configs/beamtime.yaml: detectors.lambda1.integration.bins: bins 0 is out of range; expected 1 to 100000
    configs/beamtime.yaml: detectors.lambda2.integration.poni: PONI file /x/L2.poni does not exist

Layout (keys snake_case; see ``configs/beamtime.yaml`` for a commented example)::

    beamtime: "11012345"            # optional id
    data_root: /gpfs/current/raw    # required
    output_directory: /gpfs/current/processed   # required
    workers: 1                      # 1..64
    engine_cache: /gpfs/cache/engines  # optional: where built engines are kept, or off (default ~/.cache/...)
    engine_cache_shared: false      # optional: true trusts every user who can write engine_cache
    integration: {...}              # optional defaults, merged under each detector's block
    detectors:                      # required, at least one
      lambda1:
        source: lambda              # lambda | hdf5 | image
        dataset: /entry/data/data   # source hdf5 only
        frame_shape: [1833, 1556]   # optional; lets the mask shape be checked now
        integration: {poni: L2.poni, mask: m.edf, bins: 4038, unit: 2th_deg, method: [bbox, csr, cython],
                      polarization_factor: 0.99, solid_angle: true, error_model: none}

Relative paths are resolved against the YAML file's directory. ``data_root`` and
``output_directory`` need not exist yet; PONI and mask files must, unless ``check_files=False``
(e.g. for a demo whose calibration the simulator writes later).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import ConfigError
from .formats.mask import check_mask_shape, load_mask_file
from .processing.integrate import (
    DEFAULT_BINS,
    DEFAULT_METHOD,
    ERROR_MODELS,
    IntegrationSettings,
    check_method_available,
    read_poni,
)
from .processing.units import DEFAULT_UNIT, UNITS

SOURCES = ("lambda", "hdf5", "image")
TOP_KEYS = frozenset(
    {"beamtime", "data_root", "output_directory", "workers", "detectors", "integration", "engine_cache",
     "engine_cache_shared"}
)
DETECTOR_KEYS = frozenset({"source", "dataset", "frame_shape", "integration"})
INTEGRATION_KEYS = frozenset(
    {"poni", "mask", "bins", "unit", "method", "polarization_factor", "solid_angle", "error_model"}
)
MAX_WORKERS = 64
#: integration threads when neither --workers nor the config says
DEFAULT_WORKERS = 1

#: YAML key -> IntegrationSettings field, for the keys whose values the settings' constructor checks.
_SETTING_FIELDS = {
    "bins": "bins",
    "unit": "unit",
    "method": "method",
    "polarization_factor": "polarization_factor",
    "error_model": "error_model",
}


@dataclass(frozen=True)
class DetectorConfig:
    """One detector = one independent stream with its own calibration, mask and integration settings."""

    #: the key under ``detectors`` (the stream's name, e.g. ``lambda1``)
    name: str
    #: how its frames are read: ``lambda`` (module files stitched), ``hdf5`` (one frame stack), ``image``
    source: str
    #: HDF5 path of the frame stack for ``source: hdf5``; None = the reader's default search
    dataset: str | None
    #: (rows, columns) of a stitched frame when given; the mask was checked against it
    frame_shape: tuple[int, int] | None
    #: the top-level ``integration`` defaults merged with the detector's own block (which wins)
    integration: IntegrationSettings


@dataclass(frozen=True)
class BeamtimeConfig:
    """A validated beamtime configuration; paths are absolute."""

    #: the beamtime id, None when not given
    beamtime: str | None
    #: where acquisitions are read from (need not exist when the config is loaded)
    data_root: Path
    #: where results are written (created later)
    output_directory: Path
    #: integration threads per process, 1 to MAX_WORKERS
    workers: int
    #: detectors by name, in the file's order
    detectors: dict[str, DetectorConfig]
    #: the YAML file this was loaded from; None for :func:`config_from_dict`
    path: Path | None = None
    #: the engine cache folder (``engine_cache``; None: not given, the process's default applies)
    engine_cache: Path | None = None
    #: False when the config says ``engine_cache: off`` (every engine is built)
    engine_cache_enabled: bool = True
    #: ``engine_cache_shared: true``: the folder is shared on purpose, entries other users wrote are used
    engine_cache_shared: bool = False


@dataclass
class _Problems:
    """Every problem found, as ``origin: key.path: message`` lines, each once, in the order found."""

    origin: str
    items: list[str] = field(default_factory=list)
    #: problems found, repeats included: tells whether a part of the config had any
    found: int = 0

    def add(self, key: str, message: str) -> None:
        self.found += 1
        line = f"{self.origin}: {key}: {message}" if key else f"{self.origin}: {message}"
        if line not in self.items:  # a bad top-level default is reported once, not once per detector
            self.items.append(line)

    def unknown_keys(self, where: str, given: dict, allowed: frozenset[str]) -> None:
        for key in sorted(set(given) - allowed, key=str):
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.add(f"{where}{key}", f"unknown key{hint} (allowed: {', '.join(sorted(allowed))})")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError("\n".join(self.items))


def load_config(path: str | Path, check_files: bool = True) -> BeamtimeConfig:
    """Read and validate a beamtime YAML file.

    Relative paths in it resolve against the file's directory. ``check_files=False`` skips the
    checks that need the PONI and mask files (existence, PONI content, mask shape, method names),
    for a configuration whose calibration is written later. Raises ConfigError listing every problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({exc})") from exc
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    finally:
        loader.dispose()
    problems = _Problems(str(path))
    for line, message in loader.duplicates:
        problems.add(f"line {line}", message)
    config = _validate(data, path.parent, problems, check_files)
    return dataclasses.replace(config, path=path.absolute())


def config_from_dict(
    data: Any, base_dir: str | Path, origin: str = "<config>", check_files: bool = True
) -> BeamtimeConfig:
    """Validate an already-parsed configuration; relative paths resolve against ``base_dir``.

    ``origin`` names the configuration in messages (load_config passes the file's path).
    Raises ConfigError listing every problem, one per line.
    """
    return _validate(data, Path(base_dir), _Problems(origin), check_files)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, noting duplicate keys (PyYAML silently keeps the last one)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first_line.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if line != key_node.start_mark.line + 1:
                    self.duplicates.append(
                        (
                            key_node.start_mark.line + 1,
                            f"duplicate key {key!r} (first on line {line}); only one value may be given",
                        )
                    )
        return super().construct_mapping(node, deep=deep)


def _validate(data: Any, base_dir: Path, problems: _Problems, check_files: bool) -> BeamtimeConfig:
    if data is None:
        problems.add("", f"the configuration is empty; expected a mapping with {', '.join(sorted(TOP_KEYS))}")
        problems.raise_if_any()
    if not isinstance(data, dict):
        problems.add("", f"{_kind(data)} at the top; expected a mapping with {', '.join(sorted(TOP_KEYS))}")
        problems.raise_if_any()
    problems.unknown_keys("", data, TOP_KEYS)
    for key in ("data_root", "output_directory", "detectors"):
        if key not in data:
            problems.add(key, "missing (required)")

    beamtime = data.get("beamtime")
    if beamtime is not None:
        if isinstance(beamtime, str) or (isinstance(beamtime, int) and not isinstance(beamtime, bool)):
            beamtime = str(beamtime)
        else:
            problems.add("beamtime", f"{beamtime!r} is {_kind(beamtime)}; expected the beamtime id as a string")

    paths: dict[str, Path] = {}
    for key in ("data_root", "output_directory"):
        if key in data:
            value = data[key]
            if isinstance(value, str) and value.strip():
                paths[key] = _resolve(value, base_dir)
            else:
                problems.add(key, f"{value!r} is {_kind(value)}; expected a directory path (a string)")

    workers = data.get("workers", DEFAULT_WORKERS)
    if isinstance(workers, bool) or not isinstance(workers, int):
        problems.add("workers", f"{workers!r} is {_kind(workers)}; expected an integer 1 to {MAX_WORKERS}")
    elif not 1 <= workers <= MAX_WORKERS:
        problems.add("workers", f"{workers} is out of range; expected an integer 1 to {MAX_WORKERS}")

    engine_cache, engine_cache_enabled = _engine_cache(data.get("engine_cache"), base_dir, problems)
    engine_cache_shared = _engine_cache_shared(data.get("engine_cache_shared", False), engine_cache, problems)

    defaults = data.get("integration")
    if defaults is None:
        defaults = {}
    elif not isinstance(defaults, dict):
        problems.add("integration", f"{_kind(defaults)}; expected a mapping of integration settings")
        defaults = {}
    problems.unknown_keys("integration.", defaults, INTEGRATION_KEYS)
    defaults = {k: v for k, v in defaults.items() if k in INTEGRATION_KEYS}

    detectors: dict[str, DetectorConfig] = {}
    detectors_data = data.get("detectors")
    if "detectors" in data:
        if not isinstance(detectors_data, dict) or not detectors_data:
            got = "an empty mapping" if detectors_data == {} else f"{detectors_data!r} ({_kind(detectors_data)})"
            problems.add("detectors", f"expected at least one detector (name: {{integration: ...}}); got {got}")
        else:
            checker = _FileChecker(check_files)
            for name, det in detectors_data.items():
                cfg = _detector(str(name), det, defaults, base_dir, problems, checker)
                if cfg is not None:
                    detectors[str(name)] = cfg
    problems.raise_if_any()
    return BeamtimeConfig(
        beamtime=beamtime,
        data_root=paths["data_root"],
        output_directory=paths["output_directory"],
        workers=workers,
        detectors=detectors,
        engine_cache=engine_cache,
        engine_cache_enabled=engine_cache_enabled,
        engine_cache_shared=engine_cache_shared,
    )


def _engine_cache(value: Any, base_dir: Path, problems: _Problems) -> tuple[Path | None, bool]:
    """``engine_cache``: a folder (relative to the YAML file), or off (YAML reads ``off``/``false`` as False)."""
    if value is None:
        return None, True
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None, False
    if isinstance(value, str) and value.strip():
        return _resolve(value, base_dir), True
    problems.add("engine_cache", f"{value!r} is {_kind(value)}; expected a folder path (a string) or off")
    return None, True


def _engine_cache_shared(value: Any, folder: Path | None, problems: _Problems) -> bool:
    """``engine_cache_shared``: true or false; true says of the ``engine_cache`` folder that everyone who
    can write it is trusted, so it needs that folder (it never marks a default folder shared)."""
    if not isinstance(value, bool):
        problems.add("engine_cache_shared", f"{value!r} is {_kind(value)}; expected true or false")
        return False
    if value and folder is None:
        problems.add("engine_cache_shared", "true needs an engine_cache folder (the one shared); "
                     "expected engine_cache: <folder> beside it")
        return False
    return value


def _detector(
    name: str, det: Any, defaults: dict, base_dir: Path, problems: _Problems, checker: _FileChecker
) -> DetectorConfig | None:
    where = f"detectors.{name}"
    if not isinstance(det, dict):
        problems.add(where, f"{_kind(det)}; expected a mapping with at least an integration block")
        return None
    n_before = problems.found
    problems.unknown_keys(f"{where}.", det, DETECTOR_KEYS)

    source = det.get("source", "lambda")
    if source not in SOURCES:
        problems.add(
            f"{where}.source",
            f"{source!r} is unknown; expected one of {', '.join(SOURCES)}{_did_you_mean(source, SOURCES)}",
        )
    dataset = det.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, str) or not dataset.strip():
            problems.add(f"{where}.dataset", f"{dataset!r} is {_kind(dataset)}; expected an HDF5 path (a string)")
        elif source != "hdf5":
            problems.add(f"{where}.dataset", f"{dataset!r} is only used with source hdf5 (source is {source!r})")

    frame_shape = det.get("frame_shape")
    if frame_shape is not None:
        if (
            isinstance(frame_shape, (list, tuple))
            and len(frame_shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in frame_shape)
        ):
            frame_shape = (frame_shape[0], frame_shape[1])
        else:
            problems.add(f"{where}.frame_shape", f"{frame_shape!r}: expected [rows, columns], two positive integers")
            frame_shape = None

    block = det.get("integration")
    if block is None:
        block = {}
    elif not isinstance(block, dict):
        problems.add(f"{where}.integration", f"{_kind(block)}; expected a mapping of integration settings")
        return None
    problems.unknown_keys(f"{where}.integration.", block, INTEGRATION_KEYS)
    settings = _integration(where, defaults, block, frame_shape, base_dir, problems, checker)
    if settings is None or problems.found > n_before:
        return None
    return DetectorConfig(name, source, dataset, frame_shape, settings)


def _integration(
    where: str,
    defaults: dict,
    block: dict,
    frame_shape: tuple[int, int] | None,
    base_dir: Path,
    problems: _Problems,
    checker: _FileChecker,
) -> IntegrationSettings | None:
    """The merged settings of one detector, or None after adding its problems.

    A problem with a value inherited from the top-level ``integration`` block is reported under
    ``integration.<key>`` (once), one with the detector's own value under its own key path.
    """
    merged = {**defaults, **{k: v for k, v in block.items() if k in INTEGRATION_KEYS}}
    own = f"{where}.integration"

    def key_path(key: str) -> str:
        return f"{own}.{key}" if key in block or key not in defaults else f"integration.{key}"

    n_before = problems.found

    poni = None
    if "poni" not in merged:
        problems.add(f"{own}.poni", "missing (required: the detector's pyFAI calibration file)")
    elif not isinstance(merged["poni"], str) or not merged["poni"].strip():
        problems.add(key_path("poni"), f"{merged['poni']!r} is {_kind(merged['poni'])}; expected a file path")
    else:
        poni = _resolve(merged["poni"], base_dir)
        error = checker.poni(poni)
        if error:
            problems.add(key_path("poni"), error)

    mask = _none(merged.get("mask"))
    if mask is not None:
        if not isinstance(mask, str) or not mask.strip():
            problems.add(key_path("mask"), f"{mask!r} is {_kind(mask)}; expected a file path or none")
            mask = None
        else:
            mask = _resolve(mask, base_dir)
            loaded = checker.mask(mask)
            if isinstance(loaded, str):
                problems.add(key_path("mask"), loaded)
            elif loaded is not None and frame_shape is not None:
                try:
                    check_mask_shape(loaded, frame_shape, f"file {mask}")
                except ConfigError as exc:
                    # depends on this detector's frame_shape: always reported under the detector
                    inherited = "" if "mask" in block else " (inherited from integration.mask)"
                    problems.add(f"{own}.mask{inherited}", str(exc))

    values: dict[str, Any] = {
        "bins": merged.get("bins", DEFAULT_BINS),
        "unit": merged.get("unit", DEFAULT_UNIT),
        "method": merged.get("method", list(DEFAULT_METHOD)),
        "polarization_factor": _none(merged.get("polarization_factor", 0.99)),
        "error_model": _none(merged.get("error_model")),
    }
    types_ok = {key: True for key in values}
    unit = values["unit"]
    if not isinstance(unit, str):
        problems.add(key_path("unit"), f"{unit!r} is {_kind(unit)}; expected a unit name (a string)")
        types_ok["unit"] = False
    method = values["method"]
    if isinstance(method, str):
        method = [part.strip() for part in method.split(",")]
    if not isinstance(method, (list, tuple)) or not all(isinstance(m, str) and m for m in method):
        problems.add(
            key_path("method"),
            f"{values['method']!r}: expected [splitting, algorithm, implementation], e.g. "
            f"[{', '.join(DEFAULT_METHOD)}]",
        )
        types_ok["method"] = False
    else:
        values["method"] = tuple(method)
    pol = values["polarization_factor"]
    if pol is not None and (isinstance(pol, bool) or not isinstance(pol, (int, float))):
        problems.add(key_path("polarization_factor"), f"{pol!r} is {_kind(pol)}; expected a number in [-1, 1] or none")
        types_ok["polarization_factor"] = False
    error_model = values["error_model"]
    if error_model is not None and not isinstance(error_model, str):
        problems.add(
            key_path("error_model"),
            f"{error_model!r} is {_kind(error_model)}; expected one of none, poisson, azimuthal",
        )
        types_ok["error_model"] = False
    solid_angle = merged.get("solid_angle", True)
    if not isinstance(solid_angle, bool):
        problems.add(key_path("solid_angle"), f"{solid_angle!r} is {_kind(solid_angle)}; expected true or false")

    # Ranges and names: IntegrationSettings' own checks, one value at a time so that all are reported.
    choices = {"unit": tuple(UNITS), "error_model": ERROR_MODELS}
    for key, field_name in _SETTING_FIELDS.items():
        if types_ok[key]:
            error = _setting_error(field_name, values[key])
            if error:
                problems.add(key_path(key), error + _did_you_mean(values[key], choices.get(key, ())))
    if types_ok["method"] and len(values["method"]) == 3:
        error = checker.method(values["method"])
        if error:
            problems.add(key_path("method"), error)

    if poni is None or problems.found > n_before:
        return None
    try:
        return IntegrationSettings(
            poni_path=poni,
            bins=int(values["bins"]),
            unit=values["unit"],
            mask_path=mask,
            method=values["method"],
            polarization_factor=None if pol is None else float(pol),
            correct_solid_angle=solid_angle,
            error_model=error_model,
        )
    except (ConfigError, TypeError, ValueError) as exc:  # a check IntegrationSettings gained since
        problems.add(own, str(exc))
        return None


def _setting_error(field_name: str, value: Any) -> str | None:
    """IntegrationSettings' message for this one value, or None when it accepts it."""
    try:
        IntegrationSettings(poni_path=Path("."), **{field_name: value})
    except ConfigError as exc:
        return str(exc)
    except (TypeError, ValueError) as exc:
        return f"{value!r} is not accepted ({exc})"
    return None


class _FileChecker:
    """Reads each PONI and mask file once per configuration; does nothing when check_files is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._ponis: dict[Path, str | None] = {}
        self._masks: dict[Path, np.ndarray | str | None] = {}
        self._methods: dict[tuple, str | None] = {}

    def poni(self, path: Path) -> str | None:
        """The problem with this PONI file, or None."""
        if not self.enabled:
            return None
        if path not in self._ponis:
            try:
                read_poni(path)
                self._ponis[path] = None
            except ConfigError as exc:
                self._ponis[path] = str(exc)
        return self._ponis[path]

    def mask(self, path: Path) -> np.ndarray | str | None:
        """The mask array, the problem with the file (a string), or None when not checking."""
        if not self.enabled:
            return None
        if path not in self._masks:
            try:
                self._masks[path] = load_mask_file(path)
            except ConfigError as exc:
                self._masks[path] = str(exc)
        return self._masks[path]

    def method(self, method: tuple[str, ...]) -> str | None:
        """A misspelt pyFAI method name. Availability on this machine is the engine's business."""
        if not self.enabled:
            return None
        if method not in self._methods:
            try:
                check_method_available(method, available_here=False)
                self._methods[method] = None
            except ConfigError as exc:
                self._methods[method] = str(exc)
        return self._methods[method]


def _did_you_mean(value: Any, choices) -> str:
    """'; did you mean 'q_nm^-1'?' for a misspelt name close to one of ``choices``, else ''."""
    if not isinstance(value, str) or not choices:
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.75)  # "eiger" is not "image"
    return f"; did you mean {close[0]!r}?" if close and close[0] != value else ""


def _resolve(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _none(value: Any) -> Any:
    """YAML null and the word none (any case) both mean None."""
    return None if value is None or (isinstance(value, str) and value.strip().lower() == "none") else value


def _kind(value: Any) -> str:
    """A value's type in YAML's words, with an article: 'a string', 'a list', 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}
    for typ, name in names.items():
        if isinstance(value, typ):
            return name
    return f"a {type(value).__name__}"
