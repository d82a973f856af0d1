"""``xrd-pipeline``: the core commands plus the Tango ones (demo, register, database).

The core's command line (integrate, heatmap, simulate) never imports Tango; the commands added here
do, lazily, so ``xrd-pipeline integrate`` works on a machine without a Tango installation too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline_core import cli as core_cli
from pipeline_core.signals import signals_deferred

from .clients.panel.command import add_panel_command, cmd_panel  # no Qt imported until the panel runs
from .clients.web.command import add_web_command, cmd_web  # no Starlette imported until the server runs


def build_parser():
    return core_cli.build_parser(add_commands=add_tango_commands)


def add_tango_commands(sub) -> None:
    """The subcommands that need Tango, added to the core's ``xrd-pipeline`` parser."""
    p = sub.add_parser("demo", help="the live pipeline on the embedded Tango database: simulate, integrate, merge")
    p.add_argument(
        "--workdir", type=Path, default=Path("demo-output"), help="where everything goes (default demo-output)"
    )
    p.add_argument("--frames", type=int, default=300, help="frames of the simulated ramp (default 300)")
    p.add_argument("--rate", type=float, default=20.0, help="detector frame rate, Hz (default 20)")
    p.add_argument("--integrators", type=int, default=2, help="Integrator servers (default 2)")
    p.add_argument("--tango-host", help="use this Tango database (default: $TANGO_HOST if it answers, else embedded)")
    p.add_argument(
        "--endpoint",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address of this host the servers (and an embedded database) listen on and publish; "
        "other hosts must reach it (default 127.0.0.1: this host only)",
    )

    p = sub.add_parser("register", help="register the pipeline's devices in the database of TANGO_HOST")
    p.add_argument("--file", type=Path, default=None, help="layout YAML (default tango_db_setup/pipeline.yaml)")
    p.add_argument("--state", type=Path, default=Path("."), help="folder that replaces {state} in paths")

    p = sub.add_parser("database", help="run the embedded sqlite Tango database in the foreground")
    p.add_argument("--state", type=Path, default=Path(".xrd-state"), help="folder of its sqlite file")
    p.add_argument("--port", type=int, default=10000)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address of this host to listen on and publish; TANGO_HOST is ADDRESS:PORT, so give the one "
        "the other hosts reach (default 127.0.0.1: this host only)",
    )

    add_panel_command(sub)
    add_web_command(sub)


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(
        args.workdir,
        frames=args.frames,
        rate=args.rate,
        integrators=args.integrators,
        tango_host=args.tango_host,
        endpoint=args.endpoint,
    )
    return 0


def cmd_register(args) -> int:
    from .registration import DEFAULT_FILE, load_layout, register

    if not os.environ.get("TANGO_HOST"):
        print("xrd-pipeline register: TANGO_HOST is not set (host:port of the Tango database)", file=sys.stderr)
        return 2
    for line in register(load_layout(args.file or DEFAULT_FILE, args.state)) or ["nothing to add: already registered"]:
        print(line)
    return 0


def cmd_database(args) -> int:
    from .embedded_db import EmbeddedDatabase

    db = EmbeddedDatabase(args.state, args.port, args.host).start()
    print(f"embedded Tango database running: export TANGO_HOST={db.tango_host}   (Ctrl-C stops it)", flush=True)
    try:
        # Ctrl-C, SIGTERM, SIGHUP raise here; main() then exits 128 + the signal's number
        code = db.process.wait()
    finally:
        with signals_deferred():  # the DataBaseds is stopped even if a second signal comes
            db.stop()
    print(
        f"xrd-pipeline database: the database server exited by itself with code {code}; see "
        f"{args.state / 'databaseds.log'}",
        file=sys.stderr,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    commands = {
        "demo": cmd_demo,
        "register": cmd_register,
        "database": cmd_database,
        "panel": cmd_panel,
        "web": cmd_web,
    }
    return core_cli.main(argv, parser=build_parser(), extra_commands=commands)


if __name__ == "__main__":
    sys.exit(main())
