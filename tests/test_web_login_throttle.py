"""The web server's logins against a password guesser: failures throttled per address and name, no
user-name oracle, scrypt checks bounded (tango_servers/clients/web/login_throttle.py)."""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

pytest.importorskip("starlette", reason="the web server needs the [web] extra (starlette, uvicorn)")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the [test] extra)")

from starlette.exceptions import HTTPException  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from tango_servers.clients.web import auth  # noqa: E402
from tango_servers.clients.web.auth import Sessions  # noqa: E402
from tango_servers.clients.web.config import WebConfig  # noqa: E402
from tango_servers.clients.web.login_throttle import MAX_CONCURRENT_CHECKS, LoginThrottle  # noqa: E402
from tango_servers.clients.web.secrets import hash_secret  # noqa: E402

from .test_web_server import PASSWORD, PROXY, make_app, roots  # noqa: E402, F401  (the fixture)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _login(http: TestClient, user: str, password: str):
    return http.post("/api/login", json={"user": user, "password": password})


def test_five_wrong_passwords_refuse_the_sixth_try_even_right_until_the_window_passes(roots):  # noqa: F811
    app, _, _, context = make_app(roots)
    clock = Clock()
    context.sessions.throttle = LoginThrottle(clock=clock)
    with TestClient(app) as http:
        for _ in range(5):
            assert _login(http, "operator", "guess").status_code == 401
        refused = _login(http, "operator", PASSWORD)
        assert refused.status_code == 429
        assert refused.json()["error"] == (
            "login refused: 5 failed logins as 'operator' from testclient within 300 s; try again in 300 s"
        )
        clock.now += 120
        assert "try again in 180 s" in _login(http, "operator", PASSWORD).json()["error"]
        clock.now += 180  # the first failure leaves the window: one more try is allowed
        assert _login(http, "operator", PASSWORD).status_code == 200
    audit = [(e["user"], e["action"], e["ok"], e["answer"][:40]) for e in context.audit.entries()]
    assert audit[-3:] == [  # the throttled tries are in the audit too, with why
        ("operator", "login", False, "login refused: 5 failed logins as 'opera"),
        ("operator", "login", False, "login refused: 5 failed logins as 'opera"),
        ("operator", "login", True, "logged in"),
    ]


def test_the_throttle_is_per_address_and_name_so_a_guesser_cannot_lock_the_operator_out():
    clock = Clock()
    throttle = LoginThrottle(per_pair=3, per_address=5, clock=clock)
    for _ in range(3):  # an attempt counts as failed until its password proves right
        throttle.attempt("10.1.1.1", "operator")
    with pytest.raises(HTTPException) as exc:
        throttle.attempt("10.1.1.1", "operator")
    assert exc.value.status_code == 429
    throttle.attempt("10.2.2.2", "operator")  # the operator at the beamline console: not refused
    throttle.succeeded("10.2.2.2", "operator")
    throttle.attempt("10.1.1.1", "viewer")  # another name from the guesser's address: 4 of 5
    throttle.attempt("10.1.1.1", "admin")  # 5 of 5
    with pytest.raises(HTTPException, match=r"5 failed logins from 10\.1\.1\.1 within 300 s; try again in 300 s"):
        throttle.attempt("10.1.1.1", "someone-else")
    clock.now += 301
    throttle.attempt("10.1.1.1", "operator")  # every failure left the window
    throttle.succeeded("10.1.1.1", "operator")
    assert throttle._failures == {}  # and they are forgotten, not kept forever


def test_a_right_password_forgets_that_name_s_failures_from_that_address():
    throttle = LoginThrottle(per_pair=3)
    throttle.attempt("a", "operator")
    throttle.attempt("a", "operator")
    throttle.attempt("a", "viewer")
    throttle.succeeded("a", "operator")
    assert [name for _, name in throttle._failures["a"]] == ["viewer"]


def test_forty_logins_at_once_check_no_more_passwords_than_the_limit(monkeypatch):
    """Counted before the ~50 ms check, not after: requests in flight cannot all pass (an audit sent 40
    at once and got 40 password checks)."""
    sessions = Sessions(WebConfig(accounts={"operator": hash_secret(PASSWORD)}))
    checks, codes = [], []
    lock = threading.Lock()

    def slow(secret, stored):
        time.sleep(0.05)
        with lock:
            checks.append(1)
        return False

    monkeypatch.setattr(auth, "verify_secret", slow)
    start = threading.Barrier(40)

    def attempt() -> None:
        start.wait()
        try:
            sessions.login("operator", "guess", "10.9.9.9")
        except HTTPException as exc:
            with lock:
                codes.append(exc.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(checks) == 5 and sorted(codes) == [401] * 5 + [429] * 35


def test_behind_a_trusted_proxy_the_throttle_counts_the_forwarded_client_not_the_proxy():
    """Every login comes from the proxy's address: keyed on it, twenty wrong names from anybody would lock
    every operator out (an audit did)."""
    sessions = Sessions(WebConfig(accounts={"operator": hash_secret(PASSWORD)}, proxy_user_header="X-Remote-User",
                                  trusted_proxies=(ipaddress.ip_network(PROXY),)))  # fmt: skip

    class Req:
        def __init__(self, peer, forwarded):
            self.client = type("C", (), {"host": peer})()
            self.headers = {"x-forwarded-for": forwarded} if forwarded else {}

    assert sessions.client_address(Req(PROXY, "192.0.2.7, 198.51.100.3")) == "198.51.100.3"
    assert sessions.client_address(Req("203.0.113.9", "198.51.100.3")) == "203.0.113.9"  # not a proxy: ignored
    assert sessions.client_address(Req(PROXY, "")) == PROXY
    for n in range(20):  # a guesser behind the proxy, twenty names
        with pytest.raises(HTTPException):
            sessions.login(f"name{n}", "guess", sessions.client_address(Req(PROXY, "198.51.100.3")))
    assert sessions.login("operator", PASSWORD, sessions.client_address(Req(PROXY, "192.0.2.7")))  # not locked out


def test_an_unknown_name_costs_the_same_scrypt_check_as_a_known_one(monkeypatch):
    """The time of the answer does not tell a guesser which user names exist."""
    sessions = Sessions(WebConfig(accounts={"operator": hash_secret(PASSWORD)}))
    checked = []
    real = auth.verify_secret

    def counting(secret, stored):
        checked.append(stored.split("$")[0])
        return real(secret, stored)

    monkeypatch.setattr(auth, "verify_secret", counting)
    for user in ("operator", "nobody"):
        with pytest.raises(HTTPException) as exc:
            sessions.login(user, "guess", "a")
        assert exc.value.detail == "login refused: unknown user name or wrong password"
    assert checked == ["scrypt", "scrypt"]


def test_at_most_two_scrypt_checks_run_at_once(monkeypatch):
    sessions = Sessions(WebConfig(accounts={"operator": hash_secret(PASSWORD)}))
    running, most = [0], [0]
    lock = threading.Lock()

    def slow(secret, stored):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return False

    monkeypatch.setattr(auth, "verify_secret", slow)

    def attempt(i: int) -> None:
        with pytest.raises(HTTPException):
            sessions.login("operator", "guess", f"10.0.0.{i}")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == MAX_CONCURRENT_CHECKS == 2
