"""``xrd-pipeline panel``: its options, and a clear message when the ``[panel]`` extra is missing.

Qt, Taurus and pyqtgraph are imported only when the command runs, so ``xrd-pipeline`` works on a
machine without them and this module is safe for cli.py to import while building its parser. Where
Qt would abort at start (the X11 plugin's system libraries missing, no display), the command says
what is missing and exits 2 before Qt is started (:mod:`.panel_platform`).
"""

from __future__ import annotations

import os
import sys

from .panel_data import ChainNames
from .panel_platform import platform_problem

INSTALL_HINT = "xrd-pipeline panel needs Qt and Taurus: pip install xrd-pipeline[panel]"
_DEFAULTS = ChainNames(tango_host="")


def add_panel_command(sub) -> None:
    """Add the ``panel`` subcommand to the ``xrd-pipeline`` parser (``sub``: its subparsers)."""
    p = sub.add_parser("panel", help="the operator panel (Taurus GUI) of one chain; needs xrd-pipeline[panel]")
    p.add_argument("--tango-host", help="host:port of the chain's Tango database (default $TANGO_HOST)")
    p.add_argument("--stitcher", default=_DEFAULTS.stitcher, help=f"Stitcher device (default {_DEFAULTS.stitcher})")
    p.add_argument(
        "--integrator",
        action="append",
        dest="integrators",
        help=f"an Integrator device, repeat for each (default {' '.join(_DEFAULTS.integrators)})",
    )
    p.add_argument("--merger", default=_DEFAULTS.merger, help=f"Merger device (default {_DEFAULTS.merger})")


def chain_from_args(args) -> ChainNames:
    host = args.tango_host or os.environ.get("TANGO_HOST", "")
    if not host:
        raise SystemExit("xrd-pipeline panel: give --tango-host or set TANGO_HOST (host:port of the Tango database)")
    return ChainNames(host, args.stitcher, tuple(args.integrators or _DEFAULTS.integrators), args.merger)


def cmd_panel(args) -> int:
    """Open the panel and run the Qt event loop until its window is closed or a stop signal comes."""
    chain = chain_from_args(args)
    try:
        from .panel import run_panel
    except ImportError as exc:
        print(f"{INSTALL_HINT} ({exc})", file=sys.stderr)
        return 2
    problem = platform_problem(os.environ)
    if problem:
        print(f"xrd-pipeline panel: {problem}", file=sys.stderr)
        return 2
    return run_panel(chain)
