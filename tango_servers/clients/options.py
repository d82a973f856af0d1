"""The options every client of a chain takes (``panel``, ``web``): the database, the device names,
or a configuration file whose ``chain:`` section names them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .chain_names import ChainNames

_DEFAULTS = ChainNames(tango_host="")


def add_chain_options(p) -> None:
    """``--tango-host``, ``--stitcher``, ``--integrator`` (repeated), ``--merger``, ``--config``."""
    p.add_argument("--tango-host", help="host:port of the chain's Tango database (default $TANGO_HOST)")
    p.add_argument("--stitcher", default=None, help=f"Stitcher device (default {_DEFAULTS.stitcher})")
    p.add_argument(
        "--integrator",
        action="append",
        dest="integrators",
        help=f"an Integrator device, repeat for each (default {' '.join(_DEFAULTS.integrators)})",
    )
    p.add_argument("--merger", default=None, help=f"Merger device (default {_DEFAULTS.merger})")
    p.add_argument("--config", type=Path, default=None, help="YAML file: chain: (device names), web: (logins)")


def read_config(path: Path | None) -> dict[str, Any]:
    """The client configuration file as a mapping ({} without one). ValueError naming what is wrong."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"configuration {path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"configuration {path}: expected a mapping with chain: and web: sections")
    return data


def chain_from_args(args, command: str = "panel", config: dict[str, Any] | None = None) -> ChainNames:
    """The chain named by the options, over the ``chain:`` section of the configuration file."""
    if config is None:
        try:
            config = read_config(getattr(args, "config", None))
        except ValueError as exc:
            raise SystemExit(f"xrd-pipeline {command}: {exc}") from None
    section = config.get("chain") or {}
    host = args.tango_host or os.environ.get("TANGO_HOST", "") or str(section.get("tango_host", ""))
    if not host:
        raise SystemExit(
            f"xrd-pipeline {command}: give --tango-host or set TANGO_HOST (host:port of the Tango database)"
        )
    try:
        chain = ChainNames.from_mapping(section, host)
    except ValueError as exc:
        raise SystemExit(f"xrd-pipeline {command}: {exc}") from None
    return ChainNames(
        host,
        args.stitcher or chain.stitcher,
        tuple(args.integrators or chain.integrators),
        args.merger or chain.merger,
    )
