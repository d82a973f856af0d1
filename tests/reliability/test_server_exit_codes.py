"""What a device server's exit status says (issue 18, defect 3), and that README says the same.

A device server asked to stop by INT, TERM or HUP shuts its devices down and exits 0: a clean,
requested stop is a success for Starter (it only checks whether the process is alive) and for
systemd (which counts 143 = 128 + SIGTERM as a failure unless ``SuccessExitStatus`` says otherwise).
Our commands exit 128 + the signal, as a shell expects (``test_signals.py`` sends them mid-run). A
server that cannot serve exits non-zero, so "0" never hides a failure.
"""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
import tango

from tango_servers.demo import layout_for
from tango_servers.embedded_db import EmbeddedDatabase, free_port
from tango_servers.launcher import ServerProcess
from tango_servers.registration import register

from ..helpers import REPO

STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
#: a clean shutdown takes ~0.1 s idle; generous for a loaded machine
EXIT_WITHIN_S = 60


@pytest.fixture(scope="module")
def stitcher_only(tmp_path_factory):
    """The embedded database with the demo's Stitcher registered (nothing upstream: it just waits)."""
    tmp = tmp_path_factory.mktemp("exit-codes")
    db = EmbeddedDatabase(tmp / "db", free_port()).start()
    try:
        specs = [s for s in layout_for(tmp, integrators=1)[0] if s.klass == "Stitcher"]
        host, port = db.tango_host.split(":")
        register(specs, tango.Database(host, int(port)))
        yield tmp, db.tango_host, specs[0]
    finally:
        db.stop()


def _server(stitcher_only, instance: str = "demo") -> ServerProcess:
    tmp, host, spec = stitcher_only
    return ServerProcess(f"XrdStitcher/{instance}", [spec.name], host, tmp / "logs")


def _exit_status(server: ServerProcess) -> int:
    try:
        return server.process.wait(EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(f"{server.server} still running {EXIT_WITHIN_S} s after the signal") from None


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=[s.name for s in STOP_SIGNALS])
def test_a_device_server_stopped_by_a_signal_exits_0(stitcher_only, sig, ledger):
    server = _server(stitcher_only).start()
    try:
        server.wait_ready(120)
        server.process.send_signal(sig)
        ledger.fault(f"{sig.name} to a device server")
        assert _exit_status(server) == 0, server.log_file.read_text(errors="replace")[-2000:]
    finally:
        server.kill()


def test_the_launcher_reports_a_clean_stop_as_0(stitcher_only):
    server = _server(stitcher_only).start()
    try:
        server.wait_ready(120)
    finally:
        code = server.stop(timeout_s=EXIT_WITHIN_S)
    assert code == 0


def test_a_server_that_cannot_serve_exits_non_zero(stitcher_only):
    """An instance the database does not know: the server gives up, and its exit status says so."""
    server = _server(stitcher_only, instance="not-registered").start()
    code = _exit_status(server)
    assert code not in (0, None), server.log_file.read_text(errors="replace")[-2000:]
    assert "not defined in database" in server.log_file.read_text(errors="replace")


def test_readme_says_what_the_servers_and_commands_do():
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| SIGINT, SIGTERM, SIGHUP |"))
    exit_part = row[row.index("Exit status") :]
    assert re.search(r"a command \(`integrate`, `demo`, `database`, …\) exits 128 \+ the signal", exit_part), row
    assert "a device server exits 0" in exit_part and "SuccessExitStatus" in exit_part, row
    assert "a server that fails exits non-zero" in exit_part, row
