"""Issue 20: the web server without a chain (a fake one): logins, CSRF, roots, results, the fan-out.

Unit level: Starlette's TestClient against :func:`tango_servers.clients.web.app.create_app` with a
fake chain client, and :class:`~tango_servers.clients.web.live.LiveChain` fed by fake events. The live
chain and a real browser are tests/test_web_live.py.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import shutil
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest

pytest.importorskip("starlette", reason="the web server needs the [web] extra (starlette, uvicorn)")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the [test] extra)")

from starlette.testclient import TestClient  # noqa: E402

from tango_servers.clients.chain_client import Answer  # noqa: E402
from tango_servers.clients.chain_names import ChainNames  # noqa: E402
from tango_servers.clients.web.app import WebContext, create_app  # noqa: E402
from tango_servers.clients.web.config import WebConfig, web_config  # noqa: E402
from tango_servers.clients.web.live import LiveChain  # noqa: E402
from tango_servers.clients.web.secrets import hash_secret, hash_token, verify_secret, verify_token  # noqa: E402

from .helpers import REPO  # noqa: E402

CHAIN = ChainNames("fake:10000")
PASSWORD, TOKEN = "s3cret-pass", "tok-0123456789abcdefghijklmnopqrstuv"
PROXY = "10.0.0.5"  #: the facility's reverse proxy in these tests


class FakeEvents:
    """Subscriptions as SharedSubscriptions makes them, without Tango: ``fire`` plays a device's event."""

    def __init__(self, present=()):
        self.listeners: dict[tuple[str, str], list] = {}
        self.present = set(present)

    @property
    def count(self) -> int:
        return len(self.listeners)

    def listen(self, device, attribute, listener) -> None:
        self.listeners.setdefault((device, attribute), []).append(listener)

    def has_attribute(self, device, attribute) -> bool:
        return attribute in self.present

    def fire(self, device, attribute, value, error="") -> None:
        for listener in self.listeners[(device, attribute)]:
            listener(device, attribute, value, error)


class FakeClient:
    """The chain client's commands, recorded; SetSettings refuses a PONI named bad.poni as the Stitcher would."""

    chain = CHAIN

    def __init__(self):
        self.calls = []

    def apply_settings(self, changes):
        self.calls.append(("settings", dict(changes)))
        if str(changes.get("poniPath", "")).endswith("bad.poni"):
            return Answer(False, "refused (XRD_InvalidValue): bad.poni is not a pyFAI calibration")
        return Answer(True, "applied")

    def start(self):
        self.calls.append(("start",))
        return Answer(True, "Start: done on 4 devices")

    def stop(self):
        raise RuntimeError("the Stitcher went away")  # what an unexpected failure looks like

    def clear_errors(self):
        return Answer(True, "no device in ALARM to clear")

    def reintegrate(self, path):
        self.calls.append(("reintegrate", path))
        return Answer(True, "job-0001")

    def cancel_job(self, job):
        return Answer(False, f"CancelJob refused (XRD_InvalidValue): CancelJob: no job {job}")


@pytest.fixture
def roots(tmp_path):
    cal, data, out = tmp_path / "cal", tmp_path / "data", tmp_path / "out"
    for folder in (cal, data, out, tmp_path / "secret"):
        folder.mkdir()
    (cal / "good.poni").write_text("poni")
    (cal / "bad.poni").write_text("garbage")
    (cal / "sub").mkdir()
    (tmp_path / "secret" / "other.poni").write_text("poni")
    (cal / "escape.poni").symlink_to(tmp_path / "secret" / "other.poni")  # a link out of the roots
    (data / "scan_m1_part00000.nxs").write_bytes(b"x")
    return cal, data, out


def make_app(roots, **web):
    cal, data, out = roots
    events, client = FakeEvents(), FakeClient()
    config = WebConfig(
        accounts={"operator": hash_secret(PASSWORD)}, tokens={"script": hash_token(TOKEN)}, **web
    )
    live = LiveChain(CHAIN, events.listen, events.has_attribute)
    context = WebContext(client, live, config, [str(cal)], [str(data)], subscriptions=events)
    app = create_app(context)
    live.publish({"k": f"{CHAIN.merger}/outputDirectory", "v": str(out), "e": "", "t": 0})
    return app, client, events, context


def logged_in(http: TestClient) -> dict:
    """Log in as the operator; the CSRF header the page would send."""
    http.get("/")
    assert http.post("/api/login", json={"user": "operator", "password": PASSWORD}).status_code == 200
    return {"X-CSRF-Token": http.cookies["xrd_csrf"]}


def test_a_read_only_visitor_reads_everything_and_every_write_is_refused_by_the_server(roots):
    app, client, _, _ = make_app(roots)
    with TestClient(app) as http:
        page = http.get("/")
        assert page.status_code == 200 and "<canvas id=\"heatmap\"" in page.text and "xrd_csrf" in http.cookies
        layout = http.get("/api/layout").json()
        assert layout["user"] is None and [d["role"] for d in layout["devices"]] == [
            "stitcher", "integrator", "integrator", "merger"
        ]
        assert layout["state_colours"]["ALARM"] == "rgb(255, 140, 0)"
        csrf = {"X-CSRF-Token": http.cookies["xrd_csrf"]}
        for url, body in (("/api/chain/start", None), ("/api/settings", {"bins": 10}), ("/api/jobs", {"path": "x"}),
                          ("/api/jobs/j1/cancel", None)):
            refused = http.post(url, json=body, headers=csrf)
            assert refused.status_code == 401, (url, refused.text)
            assert refused.json() == {"error": "read-only visitor: log in first"}
        wrong = http.post("/api/login", json={"user": "operator", "password": "guess"})
        assert wrong.status_code == 401 and wrong.json()["error"].startswith("login refused")
    assert client.calls == []


def test_a_writer_needs_the_csrf_token_and_every_write_is_recorded_with_who_and_when(roots):
    app, client, _, context = make_app(roots)
    with TestClient(app) as http:
        csrf = logged_in(http)
        forged = http.post("/api/chain/start")  # the session cookie alone: what another site could send
        assert forged.status_code == 403 and "CSRF check failed" in forged.json()["error"]
        assert client.calls == []
        done = http.post("/api/chain/start", headers=csrf)
        assert done.json() == {"ok": True, "answer": "Start: done on 4 devices", "user": "operator"}
        assert http.get("/api/layout").json()["user"] == {"name": "operator", "how": "account"}
        # a token (scripts): no cookie, so no CSRF; a wrong token is refused
        bearer = TestClient(app)
        assert bearer.post("/api/chain/start", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = bearer.post("/api/jobs", json={"path": str(roots[1] / "scan_m1_part00000.nxs")},
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.json()["answer"] == "job-0001" and ok.json()["user"] == "script"
        audit = http.get("/api/audit").json()
    assert [(e["user"], e["how"], e["action"]) for e in audit] == [
        ("operator", "account", "login"), ("operator", "account", "start"), ("script", "token", "reintegrate")
    ]
    assert audit[1]["time"].endswith("+00:00") and audit[1]["answer"] == "Start: done on 4 devices"
    assert context.live.values["audit"]["v"]["action"] == "reintegrate"  # shown on every page at once


def test_settings_go_all_at_once_and_a_path_outside_the_roots_is_refused_before_the_chain_sees_it(roots):
    cal, data, _ = roots
    app, client, _, _ = make_app(roots)
    with TestClient(app) as http:
        csrf = logged_in(http)
        ok = http.post("/api/settings", json={"poniPath": str(cal / "good.poni"), "bins": 500}, headers=csrf)
        assert ok.status_code == 200, ok.text
        bad = http.post("/api/settings", json={"poniPath": str(cal / "bad.poni"), "bins": 7}, headers=csrf)
        assert bad.status_code == 409
        assert bad.json()["error"] == "refused (XRD_InvalidValue): bad.poni is not a pyFAI calibration"
        for path in (cal / "escape.poni", cal / ".." / "secret" / "other.poni", "/etc/passwd"):
            out = http.post("/api/settings", json={"poniPath": str(path)}, headers=csrf)
            assert out.status_code == 409 and "outside the allowed root" in out.json()["error"], out.text
        job = http.post("/api/jobs", json={"path": str(cal / "good.poni")}, headers=csrf)
        assert job.status_code == 409 and f"outside the allowed root(s) {data}" in job.json()["error"]
        for body, why in (
            ({"binz": 3}, "unknown setting(s) binz; expected some of poniPath, maskPath, bins, unit"),
            ({"bins": "many"}, "bins 'many': expected a whole number"),
        ):
            out = http.post("/api/settings", json=body, headers=csrf)
            assert (out.status_code, out.json()["error"]) == (400, why)
        garbled = http.post("/api/settings", content=b"{not json", headers=csrf)
        assert garbled.status_code == 400 and garbled.json()["error"].startswith("request body is not JSON")
        cancel = http.post("/api/jobs/job-9/cancel", headers=csrf)
        assert cancel.json()["error"] == "CancelJob refused (XRD_InvalidValue): CancelJob: no job job-9"
    assert client.calls == [
        ("settings", {"poniPath": str(cal / "good.poni"), "bins": 500}),
        ("settings", {"poniPath": str(cal / "bad.poni"), "bins": 7}),
    ]


def test_an_unexpected_failure_is_a_clear_error_never_a_stack_trace(roots):
    app, client, _, _ = make_app(roots)
    with TestClient(app, raise_server_exceptions=False) as http:
        csrf = logged_in(http)
        out = http.post("/api/chain/stop", headers=csrf)
        assert out.status_code == 500
        assert out.json() == {"error": "the server could not answer (RuntimeError: the Stitcher went away)"}
        assert "Traceback" not in out.text
        assert http.get("/api/results/..%2Fx.nxs").status_code in (400, 404)
        unknown = http.post("/api/chain/explode", headers=csrf)
        assert unknown.json()["error"] == "command 'explode': expected one of start, stop, clear-errors"
        client.clear_errors = _missing_file
        leak = http.post("/api/chain/clear-errors", headers=csrf)  # one line, no path of the server's disk
        assert leak.status_code == 500 and "/srv" not in leak.text and "Traceback" not in leak.text
        assert leak.json() == {
            "error": "the server could not answer (FileNotFoundError: [Errno 2] No such file or directory: <path>)"
        }


def _missing_file():
    raise FileNotFoundError(2, "No such file or directory", "/srv/beamline/secret/run_00001.h5")


def test_browsing_stays_inside_the_roots_and_leaves_out_links_that_escape_or_dangle(roots):
    cal, _, _ = roots
    (cal / "gone.poni").symlink_to(cal / "deleted.poni")  # a dangling link: left out, not a 500
    app, _, _, _ = make_app(roots)
    with TestClient(app) as http:
        top = http.get("/api/browse", params={"kind": "calibration"}).json()
        assert [e["path"] for e in top["entries"]] == [str(cal)]
        inside = http.get("/api/browse", params={"kind": "calibration", "path": str(cal)}).json()
        assert [(e["name"], e["folder"]) for e in inside["entries"]] == [
            ("sub", True), ("bad.poni", False), ("good.poni", False)
        ]  # escape.poni (a link to a file outside) is not offered
        assert inside["parent"] == ""
        for path in (str(cal / ".."), "/etc", str(cal / "escape.poni")):
            out = http.get("/api/browse", params={"kind": "calibration", "path": path})
            assert out.status_code == 400, out.text
        root = http.get("/api/browse", params={"kind": "data", "path": "/"}).json()
        assert "outside the allowed root" in root["error"]
        assert http.get("/api/browse", params={"kind": "home"}).json()["error"] == (
            "kind 'home': expected calibration or data"
        )


_WRITER = """
import sys, numpy as np
from pipeline_core.formats.nexus import MergedFileWriter
from pipeline_core.output import reserve_output
from pipeline_core.processing.integrate import IntegrationSettings
w = MergedFileWriter(reserve_output(sys.argv[1]), np.linspace(5, 25, 16),
                     IntegrationSettings(sys.argv[2], bins=16), ["p0_m1.nxs"], ["a"], "scan")
w.add(np.arange(1, 6), np.ones((5, 16), np.float32), file_index=np.zeros(5, int), index_in_file=np.arange(5))
w.close()
"""


def test_results_list_merged_files_with_their_status_and_give_the_nexus_file_heatmap_and_pressure(roots, small_poni):
    out = roots[2]
    subprocess.run([sys.executable, "-c", _WRITER, str(out / "scan_00001.nxs"), str(small_poni)], check=True, cwd=REPO)
    subprocess.run([sys.executable, "-c", _WRITER, str(out / "scan_00002.nxs"), str(small_poni)], check=True, cwd=REPO)
    with h5py.File(out / "scan_00002.nxs", "a") as h5:
        group = h5.create_group("processed/pressure")
        group["pressure"] = np.array([1.0, 1.5, 2.0, 2.5, 3.0])  # written before the frame numbers
        group["pressure"].attrs["units"] = "GPa"
        group["frame_number"] = np.arange(1, 6)
        group["d_111"] = np.array([2.3, 2.2, 2.1, 2.0, 1.9])  # sorts before frame_number
    app, _, _, _ = make_app(roots)
    with TestClient(app) as http:
        listed = http.get("/api/results").json()
        assert listed["folder"] == str(out)
        assert {(f["name"], f["status"], f["pressure"]) for f in listed["files"]} == {
            ("scan_00001.nxs", "complete", False), ("scan_00002.nxs", "complete", True)
        }
        shutil.copy(out / "scan_00002.nxs", out / "压力.nxs")  # a name headers cannot carry as Latin-1
        named = http.get("/api/results/压力.nxs/pressure.csv")
        assert named.status_code == 200 and named.text.startswith("frame_number,d_111,pressure (GPa)")
        assert named.headers["content-disposition"] == "attachment; filename*=utf-8''%E5%8E%8B%E5%8A%9B_pressure.csv"
        nexus = http.get("/api/results/scan_00001.nxs")
        assert nexus.content == (out / "scan_00001.nxs").read_bytes()
        assert 'filename="scan_00001.nxs"' in nexus.headers["content-disposition"]
        png = http.get("/api/results/scan_00001.nxs/heatmap.png")
        assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert list(out.glob("*.png")) == []  # drawn in a scratch folder, not beside the results
        csv = http.get("/api/results/scan_00002.nxs/pressure.csv").text.splitlines()
        assert csv == [
            "frame_number,d_111,pressure (GPa)", "1,2.3,1.0", "2,2.2,1.5", "3,2.1,2.0", "4,2.0,2.5", "5,1.9,3.0"
        ]
        none = http.get("/api/results/scan_00001.nxs/pressure.csv")
        assert none.status_code == 400 and "has no /processed/pressure group" in none.json()["error"]
        for name in ("missing.nxs", ".hidden", "x.txt"):
            assert http.get(f"/api/results/{name}").status_code == 400


def test_twenty_pages_share_one_subscription_per_attribute_and_each_gets_every_change(roots):
    events = FakeEvents(present={"pressure", "compressionRate"})  # a Merger with part of the pressure attributes
    live = LiveChain(CHAIN, events.listen, events.has_attribute)

    async def watch(pages: int, changes: int) -> list[list[str]]:
        live.start(asyncio.get_running_loop())
        streams = [live.stream(_never) for _ in range(pages)]
        firsts = [await s.__anext__() for s in streams]  # each page's snapshot
        assert all(f.startswith("event: snapshot\n") for f in firsts)
        feeder = threading.Thread(  # Tango's event thread
            target=lambda: [events.fire(CHAIN.merger, "framesProcessed", n) for n in range(changes)]
        )
        feeder.start()
        got = [[await s.__anext__() for _ in range(changes)] for s in streams]
        feeder.join()
        for s in streams:
            await s.aclose()
        return got

    got = asyncio.run(watch(20, 50))
    watched = live.watched()
    assert events.count == len(watched) == len(set(watched))  # one subscription per attribute, 20 pages or not
    assert (CHAIN.merger, "pressure") in watched and (CHAIN.merger, "pressureTrace") not in watched
    for page in got:
        assert [line.split('"v": ')[1].split(",")[0] for line in page] == [str(n) for n in range(50)]
    assert len(got) == 20 and live.pages == set()  # closed pages are forgotten
    events.fire(CHAIN.merger, "pressure", float("nan"))  # no marker fitted: NaN, which JSON cannot carry
    events.fire(CHAIN.integrators[0], "lastPattern", np.array([1.5, np.inf, 2.0]))
    assert live.values[f"{CHAIN.merger}/pressure"]["v"] is None
    assert live.values[f"{CHAIN.integrators[0]}/lastPattern"]["v"] == [1.5, None, 2.0]


async def _never() -> bool:
    return False


def test_configuration_refuses_an_open_bind_without_logins_and_plain_passwords(tmp_path, monkeypatch, capsys):
    from tango_servers.cli import main

    config = tmp_path / "web.yaml"
    config.write_text("web:\n  bind: 0.0.0.0:8080\n")
    assert main(["web", "--tango-host", "127.0.0.1:1", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0:8080 (not this host only) with no login configured" in err
    with pytest.raises(ValueError, match="expected a hash from `xrd-pipeline web --hash-password`"):
        web_config({"accounts": {"operator": "plain-text"}})
    with pytest.raises(ValueError, match="bind 'nowhere': expected HOST:PORT"):
        web_config({}, "nowhere")
    with pytest.raises(ValueError, match="unknown key"):
        web_config({"acounts": {}})
    proxy = {"bind": "0.0.0.0:9000", "proxy_user_header": "X-Remote-User"}
    with pytest.raises(ValueError, match="proxy_user_header 'X-Remote-User' without trusted_proxies: any client"):
        web_config(proxy)  # anybody could send the header
    web_config({**proxy, "trusted_proxies": [PROXY, "fd00::/8"]}).check_bind()  # a login: allowed
    with pytest.raises(ValueError, match="trusted_proxies: 'proxy.example' does not appear to be an IPv4 or IPv6"):
        web_config({**proxy, "trusted_proxies": ["proxy.example"]})

    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    assert main(["web", "--hash-password"]) == 0
    stored = capsys.readouterr().out.strip()
    assert verify_secret("correct horse", stored) and not verify_secret("correct horsf", stored)
    assert stored != hash_secret("correct horse")  # salted


def test_tokens_are_sha256_hashes_from_hash_token_and_a_short_or_scrypt_one_is_refused(monkeypatch, capsys):
    import hashlib

    from tango_servers.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(TOKEN + "\n"))
    assert main(["web", "--hash-token"]) == 0
    stored = capsys.readouterr().out.strip()
    assert stored == "sha256$" + hashlib.sha256(TOKEN.encode()).hexdigest()  # the reference: hashlib itself
    assert web_config({"tokens": {"script": stored}}).tokens == {"script": stored}
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))  # empty: a new token, shown once on stderr
    assert main(["web", "--hash-token"]) == 0
    out, err = capsys.readouterr()
    assert verify_token(err.strip().rsplit(" ", 1)[1], out.strip())
    monkeypatch.setattr(sys, "stdin", io.StringIO("tok-123456\n"))
    assert main(["web", "--hash-token"]) == 2
    assert "a token of 10 characters is refused: expected at least 32" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"web: tokens: script: expected a hash from `xrd-pipeline web --hash-token`"):
        web_config({"tokens": {"script": hash_secret(TOKEN)}})


def test_a_reverse_proxy_user_may_write_only_from_a_trusted_proxy_address(roots):
    app, client, _, context = make_app(
        roots, proxy_user_header="X-Remote-User", trusted_proxies=(ipaddress.ip_network(PROXY),)
    )
    spoof = {"X-Remote-User": "root", "X-CSRF-Token": "x", "Cookie": "xrd_csrf=x"}  # what any script can send
    with TestClient(app, client=(PROXY, 40000)) as http:
        for peer in ("10.0.0.6", "testclient"):
            other = TestClient(app, client=(peer, 40000))
            out = other.post("/api/chain/start", headers=spoof)
            assert (out.status_code, out.json()["error"]) == (401, "read-only visitor: log in first"), peer
            assert other.get("/api/layout", headers=spoof).json()["user"] is None
        assert client.calls == []
        assert http.post("/api/chain/start", headers={**spoof, "X-Remote-User": "alice"}).json()["user"] == "alice"
        assert http.get("/api/layout", headers={"X-Remote-User": "alice"}).json()["user"] == {
            "name": "alice", "how": "proxy"
        }
    assert client.calls == [("start",)] and context.audit.entries()[-1]["user"] == "alice"
    app, client, _, _ = make_app(roots, trusted_proxies=(ipaddress.ip_network(PROXY),))
    with TestClient(app, client=(PROXY, 40000)) as http:
        assert http.post("/api/chain/start", headers=spoof).status_code == 401  # no header configured


def test_the_readme_configuration_is_read_as_written_and_an_unreachable_chain_is_named(capsys):
    import yaml

    from tango_servers.cli import main

    from .helpers import readme_block

    section = yaml.safe_load(readme_block("**Who may do what.**", "yaml"))["web"]
    config = web_config(section)
    assert verify_secret("change-me", config.accounts["operator"]) and config.logins
    assert (config.host, config.port, str(config.audit_log)) == ("127.0.0.1", 8080, "web-audit.log")
    command = readme_block("### Web interface", "bash").splitlines()[1].split("#")[0].split()
    assert command == ["xrd-pipeline", "web", "--tango-host", "HOST:PORT"]
    assert main(["web", "--tango-host", "127.0.0.1:1", "--bind", "127.0.0.1:18080"]) == 1
    assert "xrd-pipeline web: cannot reach the chain on 127.0.0.1:1: " in capsys.readouterr().err


def _asgi_request(headers: list, chunks: list[bytes]):
    """A POST whose body arrives in ``chunks``; ``sent``: the chunks the server asked for."""
    from starlette.requests import Request

    sent: list[bytes] = []

    async def receive() -> dict:
        chunk = chunks[len(sent)] if len(sent) < len(chunks) else b""
        sent.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": len(sent) < len(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/api/login", "headers": headers, "query_string": b""}
    return Request(scope, receive), sent


def test_a_body_past_the_limit_is_refused_without_being_read(roots):
    from starlette.exceptions import HTTPException

    from tango_servers.clients.web.routes_write import MAX_BODY, body

    piece = b"x" * 65536
    declared, sent = _asgi_request([(b"content-length", str(300 * len(piece)).encode())], [piece] * 300)
    with pytest.raises(HTTPException) as refused:
        asyncio.run(body(declared))
    assert refused.value.status_code == 413 and sent == []  # refused on its Content-Length: nothing read
    assert refused.value.detail == f"request body of {300 * len(piece)} bytes; expected at most {MAX_BODY}"
    streamed, sent = _asgi_request([], [piece] * 300)  # no Content-Length (chunked)
    with pytest.raises(HTTPException) as refused:
        asyncio.run(body(streamed))
    assert refused.value.status_code == 413 and sum(map(len, sent)) <= MAX_BODY + len(piece)
    app, _, _, _ = make_app(roots)
    with TestClient(app) as http:
        assert http.post("/api/login", content=b"{" + b" " * MAX_BODY + b"}").status_code == 413


def test_no_command_runs_unaudited_and_a_failed_one_is_audited_too(roots, tmp_path, capsys):
    from tango_servers.cli import main

    missing = tmp_path / "no-such-folder" / "audit.log"
    config = tmp_path / "web.yaml"
    config.write_text(f"web:\n  audit_log: {missing}\n")
    assert main(["web", "--tango-host", "127.0.0.1:1", "--config", str(config)]) == 2  # before any chain call
    assert f"refusing to start: audit_log {missing}: cannot be appended to (No such file or directory)" in (
        capsys.readouterr().err
    )
    app, client, _, context = make_app(roots)
    log = context.audit.path = tmp_path / "audit.log"
    with TestClient(app, raise_server_exceptions=False) as http:
        csrf = logged_in(http)
        assert http.post("/api/chain/stop", headers=csrf).status_code == 500  # the chain client raised
        context.audit.path = missing  # the log became unwritable while serving
        refused = http.post("/api/chain/start", headers=csrf)
        assert refused.status_code == 503 and str(missing) not in refused.text
        assert refused.json()["error"] == "the audit log cannot be written (see the server's log): nothing was run"
    assert client.calls == []  # start never ran
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["user"], e["action"], e["ok"]) for e in entries] == [
        ("operator", "login", True), ("operator", "stop", False)
    ]


def test_a_failed_login_is_audited_without_its_password_and_bad_unicode_is_a_bad_request(roots, tmp_path):
    app, _, _, context = make_app(roots)
    log = context.audit.path = tmp_path / "audit.log"
    with TestClient(app) as http:
        assert http.post("/api/login", json={"user": "operator", "password": "guess-xyz"}).status_code == 401
        lone = http.post("/api/login", content=b'{"user": "operator", "password": "\\ud800"}')
        assert (lone.status_code, lone.json()["error"]) == (
            400, "login: user and password must be valid Unicode text (no lone surrogates)"
        )
    assert [json.loads(line) for line in log.read_text().splitlines()][0] == {
        **json.loads(log.read_text().splitlines()[0]),
        "user": "operator", "how": "account", "action": "login", "detail": "", "ok": False,
        "answer": "login refused: unknown user name or wrong password",
    }
    assert "guess-xyz" not in log.read_text() and len(log.read_text().splitlines()) == 1


def test_a_read_ignores_credentials_and_a_token_check_costs_no_scrypt(roots, monkeypatch):
    import hashlib

    app, client, _, _ = make_app(roots)
    scrypt = hashlib.scrypt
    calls: list[int] = []
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: calls.append(1) or scrypt(*a, **k))
    with TestClient(app) as http:
        for bearer in ("nope", TOKEN):
            read = http.get("/api/layout", headers={"Authorization": f"Bearer {bearer}"})
            assert read.status_code == 200 and read.json()["user"] is None, read.text
        assert http.post("/api/chain/start", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.post("/api/chain/start", headers={"Authorization": f"Bearer {TOKEN}"}).json()["user"] == "script"
    assert calls == [] and client.calls == [("start",)]
