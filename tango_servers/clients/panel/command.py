"""``xrd-pipeline panel``: its options, and a clear message when the ``[panel]`` extra is missing.

Qt, Taurus and pyqtgraph are imported only when the command runs, so ``xrd-pipeline`` works on a
machine without them and this module is safe for cli.py to import while building its parser. Where
Qt would abort at start (the X11 plugin's system libraries missing, no display), the command says
what is missing and exits 2 before Qt is started (:mod:`.platform`).
"""

from __future__ import annotations

import os
import sys

from ..options import add_chain_options, chain_from_args
from .qt_platform import platform_problem

INSTALL_HINT = "xrd-pipeline panel needs Qt and Taurus: pip install xrd-pipeline[panel]"


def add_panel_command(sub) -> None:
    """Add the ``panel`` subcommand to the ``xrd-pipeline`` parser (``sub``: its subparsers)."""
    p = sub.add_parser("panel", help="the operator panel (Taurus GUI) of one chain; needs xrd-pipeline[panel]")
    add_chain_options(p)


def cmd_panel(args) -> int:
    """Open the panel and run the Qt event loop until its window is closed or a stop signal comes."""
    chain = chain_from_args(args)
    try:
        from .window import run_panel
    except ImportError as exc:
        print(f"{INSTALL_HINT} ({exc})", file=sys.stderr)
        return 2
    problem = platform_problem(os.environ)
    if problem:
        print(f"xrd-pipeline panel: {problem}", file=sys.stderr)
        return 2
    return run_panel(chain)
