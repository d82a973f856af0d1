"""``xrd-pipeline web``: its options, the checks made before anything listens, and the server's start.

Starlette and uvicorn (the ``[web]`` extra) are imported only when the command runs, so this module
is safe for cli.py to import while building its parser. Refused at start, exit 2: a non-loopback
bind without any login configured, a bad configuration file, a missing extra.
"""

from __future__ import annotations

import getpass
import sys

from ..options import add_chain_options, chain_from_args, read_config
from .audit import unwritable
from .config import DEFAULT_BIND, web_config

INSTALL_HINT = "xrd-pipeline web needs Starlette and uvicorn: pip install xrd-pipeline[web]"


def add_web_command(sub) -> None:
    """Add the ``web`` subcommand to the ``xrd-pipeline`` parser (``sub``: its subparsers)."""
    p = sub.add_parser("web", help="the web interface of one chain (watch from any browser); needs xrd-pipeline[web]")
    add_chain_options(p)
    p.add_argument("--bind", default=None, metavar="HOST:PORT", help=f"where to listen (default {DEFAULT_BIND})")
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (stdin) and print its hash for web: accounts in --config; then exit",
    )
    p.add_argument(
        "--hash-token",
        action="store_true",
        help="read a script's token (stdin; empty: make a new one and print it on stderr) and print its hash "
        "for web: tokens in --config; then exit",
    )


def cmd_web(args) -> int:
    """Serve the chain's web interface until a stop signal comes."""
    if args.hash_password:
        return _hash_password()
    if args.hash_token:
        return _hash_token()
    try:
        config = read_config(args.config)
        web = web_config(config.get("web") or {}, args.bind)
        web.check_bind()
        problem = unwritable(web.audit_log)
        if problem:
            raise ValueError(f"refusing to start: {problem}")
    except ValueError as exc:
        print(f"xrd-pipeline web: {exc}", file=sys.stderr)
        return 2
    chain = chain_from_args(args, "web", config)
    try:
        from .server import serve
    except ImportError as exc:
        print(f"{INSTALL_HINT} ({exc})", file=sys.stderr)
        return 2
    return serve(chain, web)


def _read_secret(prompt: str) -> str:
    return getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")


def _hash_password() -> int:
    from .secrets import hash_secret

    secret = _read_secret("password: ")
    if not secret:
        print("xrd-pipeline web: an empty password is refused", file=sys.stderr)
        return 2
    print(hash_secret(secret))
    return 0


def _hash_token() -> int:
    from .secrets import hash_token, new_token

    token = _read_secret("token (empty: make a new one): ")
    if not token:
        token = new_token()
        print(f"new token (give it to the script; it is not stored): {token}", file=sys.stderr)
    try:
        print(hash_token(token))
    except ValueError as exc:
        print(f"xrd-pipeline web: {exc}", file=sys.stderr)
        return 2
    return 0
