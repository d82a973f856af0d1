"""What writers may do: log in and out, settings, Start/Stop, Clear errors, reintegrate, cancel a job.

Each write is checked by the server (a read-only visitor's request is refused whatever the page
shows), CSRF-checked, sent through the chain client and recorded in the audit log with who asked,
what, and the chain's answer. A refusal (the Stitcher's reason, a path outside the roots) is HTTP 409
or 400 with that reason as ``error``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..chain_client import Answer
from ..settings_request import SETTING_FIELDS
from . import files
from .auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_S
from .routes_read import context

#: largest request body taken (a settings change or a path is a few hundred bytes)
MAX_BODY = 64 * 1024


async def read_limited(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request's body, refused (413) past ``limit`` bytes without reading more than ``limit + 1``:
    the declared Content-Length is checked first, then the stream is counted as it comes."""
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {int(declared)} bytes; expected at most {limit}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise HTTPException(413, f"request body of more than {limit} bytes; expected at most {limit}")
    return bytes(raw)


async def body(request: Request) -> dict[str, Any]:
    raw = await read_limited(request)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"request body is not JSON ({exc}); expected a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPException(400, f"request body {str(data)[:80]!r}: expected a JSON object")
    return data


def answered(request: Request, action: str, detail: str, call) -> Response:
    """Run ``call()`` (an :class:`Answer`) for the writer of ``request``, record it, answer it."""
    ctx = context(request)
    who = ctx.sessions.writer(request)
    try:
        ctx.audit.check()
    except OSError:
        raise HTTPException(503, "the audit log cannot be written (see the server's log): nothing was run") from None
    answer = Answer(False, "failed: the server could not answer (its log says why)")
    try:
        answer = call()
    except files.Refused as exc:
        answer = Answer(False, str(exc))
    finally:  # whatever the outcome, the entry is written
        ctx.audit.record(who.user, who.how, action, detail, answer.ok, answer.text)
    if not answer.ok:
        return JSONResponse({"error": answer.text}, status_code=409)
    return JSONResponse({"ok": True, "answer": answer.text, "user": who.user})


async def login(request: Request) -> Response:
    ctx = context(request)
    data = await body(request)
    user, password = data.get("user"), data.get("password")
    if not isinstance(user, str) or not isinstance(password, str):
        raise HTTPException(400, "login: expected {\"user\": ..., \"password\": ...}")
    if not (_unicode(user) and _unicode(password)):
        raise HTTPException(400, "login: user and password must be valid Unicode text (no lone surrogates)")
    from starlette.concurrency import run_in_threadpool

    try:
        address = ctx.sessions.client_address(request)
        session = await run_in_threadpool(ctx.sessions.login, user, password, address)
    except HTTPException as exc:  # the name tried, never the password
        ctx.audit.record(user[:80], "account", "login", "", False, str(exc.detail))
        raise
    ctx.audit.record(user, "account", "login", "", True, "logged in")
    response = JSONResponse({"ok": True, "user": user})
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_S, httponly=True, samesite="strict")
    return response


def _unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def logout(request: Request) -> Response:
    ctx = context(request)
    ctx.sessions.logout(request.cookies.get(SESSION_COOKIE, ""))
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE)
    return response


def _settings_changes(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - set(SETTING_FIELDS))
    if unknown:
        expected = ", ".join(SETTING_FIELDS)
        raise HTTPException(400, f"unknown setting(s) {', '.join(unknown)}; expected some of {expected}")
    changes = dict(data)
    for attr, what in (("poniPath", "PONI file"), ("maskPath", "mask file")):
        if changes.get(attr):  # "" as mask: no user mask
            changes[attr] = files.chosen_file(ctx.calibration_roots, str(changes[attr]), what)
    if "bins" in changes and (isinstance(changes["bins"], bool) or not isinstance(changes["bins"], int)):
        raise HTTPException(400, f"bins {changes['bins']!r}: expected a whole number")
    return changes


async def settings(request: Request) -> Response:
    data = await body(request)
    ctx = context(request)

    def apply() -> Answer:
        return ctx.client.apply_settings(_settings_changes(ctx, data))

    return await _threaded(answered, request, "settings", json.dumps(data), apply)


async def chain_command(request: Request) -> Response:
    name = request.path_params["command"]
    calls = {"start": "start", "stop": "stop", "clear-errors": "clear_errors"}
    if name not in calls:
        raise HTTPException(404, f"command {name!r}: expected one of {', '.join(calls)}")
    client = context(request).client
    return await _threaded(answered, request, name, "", getattr(client, calls[name]))


async def submit_job(request: Request) -> Response:
    data = await body(request)
    ctx = context(request)
    path = data.get("path")
    if not isinstance(path, str) or not path:
        raise HTTPException(400, "reintegrate: expected {\"path\": \"<a file of the acquisition>\"}")

    def submit() -> Answer:
        return ctx.client.reintegrate(files.chosen_file(ctx.data_roots, path, "acquisition file"))

    return await _threaded(answered, request, "reintegrate", path, submit)


async def cancel_job(request: Request) -> Response:
    job = request.path_params["job"]
    client = context(request).client
    return await _threaded(answered, request, "cancel job", job, lambda: client.cancel_job(job))


async def _threaded(*args) -> Response:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(*args)


WRITE_ROUTES = [
    Route("/api/login", login, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/settings", settings, methods=["POST"]),
    Route("/api/jobs", submit_job, methods=["POST"]),
    Route("/api/jobs/{job}/cancel", cancel_job, methods=["POST"]),
    Route("/api/chain/{command}", chain_command, methods=["POST"]),
]

__all__ = ["WRITE_ROUTES", "CSRF_COOKIE"]
