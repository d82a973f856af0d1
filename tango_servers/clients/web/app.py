"""The web application: pages, the live stream, reads open to all, writes for logged-in writers.

Built by :func:`create_app` from a :class:`WebContext` (the chain client, the live view, the logins),
so a test can give it a fake chain. Every error is answered as JSON ``{"error": "..."}`` with the
reason, never a stack trace (that goes to the server's log).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .audit import AuditLog
from .auth import CSRF_COOKIE, Sessions
from .config import WebConfig
from .live import LiveChain
from .routes_read import READ_ROUTES
from .routes_write import WRITE_ROUTES
from .scan_view import ScanView

log = logging.getLogger("xrd_pipeline.web")
STATIC = Path(__file__).with_name("static")
#: an absolute path (POSIX or Windows) inside an exception's text
_PATH = re.compile(r"""'(?:[A-Za-z]:)?[/\\][^']*'|"(?:[A-Za-z]:)?[/\\][^"]*"|(?<![\w.])(?:[A-Za-z]:)?[/\\]\S*""")


@dataclass
class WebContext:
    """What the routes work with. ``client``: a :class:`~..chain_client.ChainClient` (or a test's fake)."""

    client: Any
    live: LiveChain
    config: WebConfig
    calibration_roots: list[str]
    data_roots: list[str]
    subscriptions: Any = None  #: has ``count``: change-event subscriptions made on the devices
    audit: AuditLog = field(default_factory=AuditLog)
    sessions: Sessions | None = None
    scan: ScanView | None = None

    def __post_init__(self) -> None:
        self.sessions = self.sessions or Sessions(self.config)
        self.scan = self.scan or ScanView(self.live)
        self.audit.path = self.audit.path or self.config.audit_log
        self.audit.on_entry = lambda entry: self.live.publish({"k": "audit", "v": entry, "e": "", "t": 0})


async def index(request: Request) -> Response:
    response = FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})
    if not request.cookies.get(CSRF_COOKIE):
        response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(24), httponly=False, samesite="strict")
    return response


async def http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def server_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"the server could not answer ({reason(exc)})"}, status_code=500)


def reason(exc: BaseException) -> str:
    """One line for a page: the exception's type and first line, paths left out (they are in the log)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _PATH.sub("<path>", text)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def create_app(context: WebContext) -> Starlette:
    """The Starlette application of ``context``; the live view starts with it, stops after it."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        import asyncio

        context.live.start(asyncio.get_running_loop())
        context.scan.start()  # type: ignore[union-attr]
        try:
            yield
        finally:
            context.scan.stop()  # type: ignore[union-attr]

    routes = [
        Route("/", index),
        *READ_ROUTES,
        *WRITE_ROUTES,
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.web = context
    return app
