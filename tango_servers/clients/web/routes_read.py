"""What everyone may read: the live stream, the chain's layout, folders inside the roots, results.

Plain (sync) endpoints run on Starlette's thread pool: a file read or a Tango call does not hold up
the event loop that feeds the live streams.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline_core.processing.integrate import MAX_BINS
from pipeline_core.processing.units import UNITS

from ..states import STATE_COLOURS
from . import files


def context(request: Request) -> Any:
    return request.app.state.web


def refused(call, *args) -> Any:
    """``call(*args)``; a :class:`files.Refused` answered as HTTP 400 with its reason."""
    try:
        return call(*args)
    except files.Refused as exc:
        raise HTTPException(400, str(exc)) from None


async def events(request: Request) -> Response:
    stream = context(request).live.stream(request.is_disconnected)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


def layout(request: Request) -> Response:
    ctx = context(request)
    chain = ctx.client.chain
    who = ctx.sessions.who(request)
    return JSONResponse({
        "tango_host": chain.tango_host,
        "devices": [{"name": d, "role": chain.role(d)} for d in chain.devices],
        "calibration_roots": ctx.calibration_roots,
        "data_roots": ctx.data_roots,
        "units": {name: unit.label for name, unit in UNITS.items()},
        "max_bins": MAX_BINS,
        "state_colours": {s: "rgb({}, {}, {})".format(*c) for s, c in STATE_COLOURS.items()},
        "logins": {"accounts": bool(ctx.config.accounts), "proxy": ctx.config.proxy_logins},
        "user": None if who is None else {"name": who.user, "how": who.how},
    })


def stats(request: Request) -> Response:
    """What the server costs the chain and this host: subscriptions made, pages watching, memory."""
    ctx = context(request)
    return JSONResponse({
        "subscriptions": getattr(ctx.subscriptions, "count", None),
        "pages": len(ctx.live.pages),
        "rss_bytes": _rss(),
    })


def _rss() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def snapshot(request: Request) -> Response:
    return JSONResponse(context(request).live.snapshot())


def browse(request: Request) -> Response:
    ctx = context(request)
    kind = request.query_params.get("kind", "")
    roots = {"calibration": ctx.calibration_roots, "data": ctx.data_roots}.get(kind)
    if roots is None:
        raise HTTPException(400, f"kind {kind!r}: expected calibration or data")
    return JSONResponse(refused(files.browse, roots, request.query_params.get("path", ""), kind))


def scan(request: Request) -> Response:
    picture = context(request).scan.picture
    return JSONResponse(picture or {"frames": 0})


def output_directory(request: Request) -> Path:
    ctx = context(request)
    message = ctx.live.values.get(f"{ctx.client.chain.merger}/outputDirectory") or {}
    folder = message.get("v")
    if not folder:
        raise HTTPException(503, "the Merger has not said its outputDirectory yet (is it running?)")
    return Path(folder).absolute()


def results(request: Request) -> Response:
    folder = output_directory(request)
    return JSONResponse({"folder": str(folder), "files": files.results(folder)})


def result(request: Request) -> Response:
    path = refused(files.result_file, output_directory(request), request.path_params["name"])
    what = request.path_params.get("what", "")
    if what == "":
        return FileResponse(path, media_type="application/x-hdf5", filename=path.name)
    if what == "heatmap.png":
        return Response(refused(files.heatmap_png, path), media_type="image/png")
    if what == "pressure.csv":
        headers = {"Content-Disposition": attachment(f"{path.stem}_pressure.csv")}
        return Response(refused(files.pressure_csv, path), media_type="text/csv", headers=headers)
    raise HTTPException(404, f"{what!r}: expected heatmap.png or pressure.csv")


def attachment(name: str) -> str:
    """A Content-Disposition for ``name`` as Starlette's FileResponse writes it: RFC 5987 ``filename*``
    (UTF-8, percent-encoded) where the name is not plain ASCII, since headers are Latin-1 only."""
    quoted = quote(name)
    return f"attachment; filename*=utf-8''{quoted}" if quoted != name else f'attachment; filename="{name}"'


def audit(request: Request) -> Response:
    return JSONResponse(context(request).audit.entries())


READ_ROUTES = [
    Route("/events", events),
    Route("/api/layout", layout),
    Route("/api/stats", stats),
    Route("/api/snapshot", snapshot),
    Route("/api/browse", browse),
    Route("/api/scan", scan),
    Route("/api/results", results),
    Route("/api/results/{name}", result),
    Route("/api/results/{name}/{what}", result),
    Route("/api/audit", audit),
]
