"""Starting and stopping the device server processes of a pipeline (demo, tests, a laptop).

At a beamline Tango's Starter does this; here we start each server as its own process, wait
until its devices answer, and on the way out stop every one we started — on success, on error, on
Ctrl-C/SIGTERM/SIGHUP — so no orphan process is left behind. A launcher killed outright (SIGKILL)
runs no code: its servers then get SIGTERM from the kernel (``die_with_parent``) and shut down as
cleanly as if we had stopped them.

Each server is bound to one address, its *endpoint* (omniORB's ``-ORBendPoint giop:tcp:ADDRESS:``):
it listens there and publishes that address to its clients through the database. Loopback by
default, so a laptop's demo is reachable from nowhere else; for a chain spread over several hosts,
the address of this host that the others reach.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tango

from pipeline_core.signals import signals_deferred

from .embedded_db import LOOPBACK_ADDRESS, check_local_address, die_with_parent, orb_endpoint, terminate, terminate_all

#: Tango server name -> module that runs it (``python -m MODULE INSTANCE``).
MODULES = {
    "XrdSimulator": "tango_servers.simulator",
    "XrdStitcher": "tango_servers.stitcher",
    "XrdIntegrator": "tango_servers.integrator",
    "XrdMerger": "tango_servers.merger",
}


def endpoint_args(address: str = LOOPBACK_ADDRESS) -> list[str]:
    """The server arguments that bind it to ``address`` (any free port): ``-ORBendPoint giop:tcp:ADDRESS:``."""
    return ["-ORBendPoint", orb_endpoint(address)]


LOOPBACK = endpoint_args(LOOPBACK_ADDRESS)


def _connected(dev: tango.DeviceProxy) -> bool:
    """``upstreamConnected``; False while a just-started device is too busy to answer in time (a
    loaded machine: its first events are being pushed), so the caller asks again until its deadline."""
    try:
        return bool(dev.upstreamConnected)
    except tango.CommunicationFailed:
        return False


#: What cppTango prints once a server's start-up is over (``Util::server_run``)
READY = "Ready to accept request"


@dataclass
class ServerProcess:
    server: str  # "XrdStitcher/demo"
    devices: list[str]
    tango_host: str
    log_dir: Path
    #: the address the server listens on and publishes (an address of this host the clients reach)
    endpoint: str = LOOPBACK_ADDRESS
    process: subprocess.Popen | None = field(default=None, repr=False)
    #: the log's size when this process was started (the log is appended to across restarts)
    log_offset: int = field(default=0, repr=False)

    def command(self) -> list[str]:
        """The server's command line: ``python -m MODULE INSTANCE -ORBendPoint giop:tcp:ENDPOINT:``."""
        executable, instance = self.server.split("/", 1)
        return [sys.executable, "-m", MODULES[executable], instance, *endpoint_args(self.endpoint)]

    def start(self) -> ServerProcess:
        executable, instance = self.server.split("/", 1)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        # a stop signal during Popen would lose the child: it is started and recorded, then we stop
        with open(self.log_dir / f"{executable}-{instance}.log", "ab") as log, signals_deferred():
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us only; we stop them in order
                preexec_fn=die_with_parent(),
                env={**os.environ, "TANGO_HOST": self.tango_host, "PYTHONUNBUFFERED": "1"},
            )
        return self

    @property
    def log_file(self) -> Path:
        executable, instance = self.server.split("/", 1)
        return self.log_dir / f"{executable}-{instance}.log"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until every device of the server answers a ping (the server is exported) and the server
        has said ``Ready to accept request`` (cppTango's start-up is over).

        Why both: devices answer while cppTango is still starting, and a stop signal in that window
        makes cppTango's shutdown fail and the server ``raise(SIGKILL)`` itself (``thsig.cpp``): exit
        -9 instead of a clean stop, as a test that signalled a server right after its ping saw."""
        deadline = time.monotonic() + timeout_s
        pending = list(self.devices)
        while pending:
            self._check_alive()
            try:
                tango.DeviceProxy(f"tango://{self.tango_host}/{pending[0]}").ping()
                pending.pop(0)
                continue
            except tango.DevFailed:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server {self.server}: {pending[0]} did not answer within {timeout_s:.0f} s; see {self.log_file}"
                )
            time.sleep(0.2)
        while READY not in self._log_since_start():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.server} did not say {READY!r} within {timeout_s:.0f} s; "
                                   f"see {self.log_file}")  # fmt: skip
            time.sleep(0.1)

    def _check_alive(self) -> None:
        """RuntimeError with the log's tail when the server has exited."""
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"server {self.server} exited with code {self.process.returncode}:\n{tail}")

    def _log_since_start(self) -> str:
        """What this process wrote to the log (it is appended to across restarts)."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(self.log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_connected(self, timeout_s: float = 60.0) -> None:
        """Wait until every device's upstream event subscriptions deliver (``upstreamConnected``)."""
        deadline = time.monotonic() + timeout_s
        for name in self.devices:
            dev = tango.DeviceProxy(f"tango://{self.tango_host}/{name}")
            if "upstreamConnected" not in dev.get_attribute_list():
                continue
            while not _connected(dev):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is not connected to its upstream devices:\n{dev.status()}")
                time.sleep(0.2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash looks like (reliability tests)."""
        if self.alive():
            self.process.kill()
            self.process.wait()

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout_s``; returns the exit status (None if never started).

        0 is a clean stop: a device server asked to stop by a signal exits 0, as Starter and systemd
        expect of a requested stop (README, signals); -9 means it had to be killed."""
        terminate(self.process, timeout_s)
        return None if self.process is None else self.process.returncode


#: Start order by device class (Starter's "start levels"): a server is started once the servers it
#: subscribes to answer. A subscription or command that reaches a server still initialising can
#: fail in cppTango ("Class DServer is not initialised", then API_ZmqFailed on every retry);
#: starting upstream first avoids it rather than waiting for Tango's 10 s re-subscription cycles.
START_LEVELS = {"LambdaSimulator": 0, "Stitcher": 1, "Integrator": 2, "Merger": 3}


def start_servers(
    specs, tango_host: str, log_dir: Path, timeout_s: float = 60.0, endpoint: str = LOOPBACK_ADDRESS
) -> list[ServerProcess]:
    """Start one process per server in ``specs`` (registration DeviceSpecs) and wait for all of them.

    Every server listens on and publishes ``endpoint`` (checked first: a wildcard or an address that
    is not this host's is refused before anything starts). Call it from the main thread (or one
    that lives as long as the process): see ``die_with_parent``.
    """
    check_local_address(endpoint)
    by_server: dict[str, list[str]] = {}
    level: dict[str, int] = {}
    for spec in specs:
        by_server.setdefault(spec.server, []).append(spec.name)
        level[spec.server] = min(level.get(spec.server, 99), START_LEVELS.get(spec.klass, 99))
    started: list[ServerProcess] = []
    try:
        for current in sorted(set(level.values())):  # upstream first, as Starter's start levels do
            batch = []
            for server, devices in by_server.items():
                if level[server] == current:
                    started.append(ServerProcess(server, devices, tango_host, log_dir, endpoint))  # recorded first
                    batch.append(started[-1].start())
            for p in batch:
                p.wait_ready(timeout_s)
        for p in started:
            p.wait_connected(timeout_s)
    except BaseException:
        stop_servers(started)
        raise
    return started


def stop_servers(processes: list[ServerProcess], timeout_s: float = 10.0) -> None:
    """SIGTERM to every server at once (each deletes its devices), SIGKILL to any still up after ``timeout_s``."""
    terminate_all([p.process for p in reversed(processes)], timeout_s)
