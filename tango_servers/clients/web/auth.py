"""Who is writing: a logged-in account, a token, or the user a reverse proxy names; and CSRF checks.

Reading is open to everyone; every write needs a writer. Three ways to be one, each only where the
configuration enables it: an account's password (``POST /api/login`` sets an HttpOnly session cookie),
a token (``Authorization: Bearer ...``, for scripts: no cookie, so no CSRF; looked at on writes only,
so a read never costs a token check nor fails on one), or the user name the facility's reverse proxy
puts in ``proxy_user_header``, honoured only on a request whose peer address is in
``trusted_proxies`` (anybody else can send that header too). Writes carried by a cookie or the proxy's
header must also carry ``X-CSRF-Token`` equal to the ``xrd_csrf`` cookie (double submit): another
site's page can make the browser send cookies, but can neither read that cookie nor set the header.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request

from .config import WebConfig
from .login_throttle import LoginThrottle
from .secrets import hash_secret, verify_secret, verify_token

SESSION_COOKIE = "xrd_session"
CSRF_COOKIE = "xrd_csrf"
CSRF_HEADER = "x-csrf-token"
#: seconds a login lasts
SESSION_S = 12 * 3600


@dataclass(frozen=True)
class Writer:
    """Who asks for a write, and how they proved it (``account``, ``token``, ``proxy``)."""

    user: str
    how: str


@functools.cache
def _throwaway_hash() -> str:
    return hash_secret(secrets.token_urlsafe(16))


class Sessions:
    """Logged-in accounts: random session ids (kept in memory: a restart logs everybody out)."""

    def __init__(self, config: WebConfig, throttle: LoginThrottle | None = None):
        self.config = config
        self.throttle = throttle or LoginThrottle()
        self._sessions: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def login(self, user: str, password: str, address: str = "?") -> str:
        """A new session id; HTTP 401 for an unknown user or a wrong password (not saying which), 429
        when ``address`` failed too often lately (:mod:`.login_throttle`: no password is checked then)."""
        self.throttle.attempt(address, user)  # counted as failed until the password proves right
        stored = self.config.accounts.get(user)
        with self.throttle.checks:  # scrypt: ~50 ms and 16 MiB each, a bounded number at once
            # an unknown name costs the same check (against a throwaway hash): the answer's time must
            # not tell a guesser which user names exist
            ok = verify_secret(password, stored or _throwaway_hash()) and stored is not None
        if not ok:
            raise HTTPException(401, "login refused: unknown user name or wrong password")
        self.throttle.succeeded(address, user)
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session] = (user, time.monotonic() + SESSION_S)
        return session

    def client_address(self, request: Request) -> str:
        """Who is logging in, for the throttle: the peer, or behind a trusted reverse proxy the client
        it names last in ``X-Forwarded-For`` (else every login would share the proxy's address, and
        twenty wrong ones from anybody would lock every operator out)."""
        peer = request.client.host if request.client else "?"
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded.strip() and self.config.trusted_proxy(peer):
            return forwarded.split(",")[-1].strip()[:64] or peer
        return peer

    def logout(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    def user(self, session: str | None) -> str | None:
        if not session:
            return None
        with self._lock:
            found = self._sessions.get(session)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def token_user(self, token: str) -> str | None:
        for name, stored in self.config.tokens.items():
            if verify_token(token, stored):
                return name
        return None

    def who(self, request: Request, write: bool = False) -> Writer | None:
        """The writer behind ``request`` (None: a read-only visitor); tokens only count on a ``write``."""
        bearer = request.headers.get("authorization", "")
        if write and bearer.lower().startswith("bearer ") and self.config.tokens:
            name = self.token_user(bearer[7:].strip())
            if name is None:
                raise HTTPException(401, "token refused: it matches none of the configured tokens")
            return Writer(name, "token")
        user = self.user(request.cookies.get(SESSION_COOKIE))
        if user is not None:
            return Writer(user, "account")
        header = self.config.proxy_user_header
        peer = request.client.host if request.client else None
        if header and request.headers.get(header, "").strip() and self.config.trusted_proxy(peer):
            return Writer(request.headers[header].strip(), "proxy")
        return None

    def writer(self, request: Request) -> Writer:
        """The writer of a write request, CSRF-checked; HTTP 401/403 with the reason otherwise."""
        who = self.who(request, write=True)
        if who is None:
            how = "log in first" if self.config.logins else "no login is configured: this server is read-only"
            raise HTTPException(401, f"read-only visitor: {how}")
        if who.how != "token":
            cookie = request.cookies.get(CSRF_COOKIE, "")
            header = request.headers.get(CSRF_HEADER, "")
            if not cookie or not hmac.compare_digest(cookie, header):
                raise HTTPException(
                    403, "CSRF check failed: X-CSRF-Token must equal the xrd_csrf cookie (reload the page)"
                )
        return who
