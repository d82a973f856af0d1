"""The embedded default Tango database: pytango's own sqlite-backed DataBaseds, run by us.

Production beamlines have a MariaDB-backed Tango DB and a ``TANGO_HOST`` pointing at it; a laptop,
a CI runner or a demo has nothing. ``ensure_database`` uses the one named by ``TANGO_HOST`` when it
answers and otherwise starts ``python -m tango.databaseds.database`` on loopback, with its sqlite
file kept in a state folder so registrations survive restarts. Everything else (registration,
servers, clients) goes through the same ``TANGO_HOST`` code path either way.

Several hosts: the database listens on one address, and what it listens on is what it publishes
(``--host A`` becomes the server's ``-ORBendPoint giop:tcp:A:PORT``), so ``A:PORT`` is the
``TANGO_HOST`` every host uses. Loopback stays the default: nothing is reachable from outside
unless asked for.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# imported here, not on first use: a stop signal landing inside the C extension's initialisation
# would come out as an ImportError instead of a clean stop
import tango

from pipeline_core.errors import ConfigError
from pipeline_core.signals import signals_deferred

#: prctl option: the signal the kernel sends a process when the thread that forked it exits.
_PR_SET_PDEATHSIG = 1

#: Where the embedded database and the servers we start listen unless told otherwise: this host only.
LOOPBACK_ADDRESS = "127.0.0.1"
#: Addresses that mean "every interface": a server bound there publishes some address of the host's
#: choosing, not necessarily one the other hosts reach, so they are refused as a published address.
_WILDCARDS = ("", "0.0.0.0", "::", "*")


def check_local_address(address: str) -> str:
    """Return ``address`` if this host can listen on it; raise ``ConfigError`` naming it otherwise.

    Checked before anything starts: a database or server given an address it cannot bind exits
    with an omniORB message in its log, and one given a wildcard publishes an address of the
    host's choosing — other hosts then fail much later, at their first call.
    """
    if address.strip() in _WILDCARDS:
        raise ConfigError(
            f"address {address!r} means every interface; give the one address (or name) of this host "
            "that the other hosts reach it at, e.g. 10.0.0.1 — it is published to them"
        )
    try:
        infos = socket.getaddrinfo(address, 0, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(
            f"address {address!r} does not resolve ({exc.strerror}); expected an IP address or host name"
        ) from exc
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind(sockaddr[:1] + (0,) + tuple(sockaddr[2:]))
            return address
        except OSError:
            continue
    raise ConfigError(
        f"address {address!r} is not an address of this host (nothing can listen on it); "
        "expected the address of one of its network interfaces, or a name that resolves to one"
    )


def orb_endpoint(address: str, port: int | str = "") -> str:
    """omniORB's endpoint for ``address`` (``giop:tcp:10.0.0.1:``; no port: the system picks one).

    A server given this endpoint listens on that address only and publishes it in every object
    reference (IOR) it hands out — through the database, that is what clients on other hosts dial.
    cppTango also binds its ZMQ event sockets to the address given here.
    """
    host = f"[{address}]" if ":" in address else address  # an IPv6 literal is bracketed in a URL
    return f"giop:tcp:{host}:{port}"


def tango_host_reachable(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port (cheap check before asking Tango)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def database_answers(tango_host: str, timeout_s: float = 2.0) -> bool:
    """True when a Tango database server answers at ``tango_host`` (``host:port``)."""
    host, _, port = tango_host.rpartition(":")
    if not tango_host_reachable(host, int(port), timeout_s):
        return False

    try:
        tango.Database(host, int(port)).get_info()
        return True
    except tango.DevFailed:
        return False


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``signum`` when we die, however we die (Linux).

    Our own shutdown path stops every child, but a parent killed outright (SIGKILL, OOM killer,
    a crash) runs no code; without this the children are reparented to PID 1 and live on. SIGTERM
    because Tango servers shut down cleanly on it (the Merger suspends its open file).

    The kernel sends the signal when the *thread* that forked exits: start children from the main
    thread (or one that lives as long as the process). If we died between fork and ``prctl`` the
    signal never comes, so the child checks that its parent is still the one that forked it.
    Returns None where ``prctl`` does not exist (not Linux): children are then only stopped by us.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            os._exit(126)  # cannot promise to die with the parent: refuse to start at all
        if os.getppid() != parent:  # the parent is already gone: nobody will stop us
            os._exit(128 + int(signum))

    return preexec


def terminate(process: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """SIGTERM (a Tango server shuts down its devices on it), SIGKILL if it does not end in time."""
    terminate_all([process], timeout_s)


def terminate_all(processes: Iterable[subprocess.Popen | None], timeout_s: float = 10.0) -> None:
    """SIGTERM to every process at once, then wait; SIGKILL whatever is still running after ``timeout_s``.

    All at once, so stopping five servers is bounded by one timeout, not five. Stop signals that
    arrive meanwhile are deferred: a second Ctrl-C must not leave half of them running.
    """
    with signals_deferred():
        running = [p for p in processes if p is not None and p.poll() is None]
        for p in running:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        for p in running:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def free_port(address: str = LOOPBACK_ADDRESS) -> int:
    """A TCP port nothing listens on at ``address`` now (the database is started on it next)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedDatabase:
    """A DataBaseds subprocess listening on ``host`` (loopback by default); ``stop()`` ends it (and only it).

    ``host`` is where it listens and what it publishes: ``tango_host`` (``host:port``) is what the
    servers and clients of every host set as ``TANGO_HOST``, so it must be an address of this host
    that they reach (``check_local_address`` refuses wildcards and foreign addresses).
    """

    state_dir: Path
    port: int
    host: str = LOOPBACK_ADDRESS
    process: subprocess.Popen | None = None

    @property
    def tango_host(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedDatabase:
        check_local_address(self.host)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.state_dir / "databaseds.log", "ab") as log, signals_deferred():  # started and recorded
                self.process = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "tango.databaseds.database"),
                        *("--host", self.host, "--port", str(self.port), "2"),
                    ],
                    cwd=self.state_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                    env={**os.environ, "TANGO_HOST": self.tango_host},
                )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the embedded Tango database exited with code {self.process.returncode}; "
                        f"see {self.state_dir / 'databaseds.log'}"
                    )
                if database_answers(self.tango_host, 1.0):
                    return self
                time.sleep(0.2)
            raise RuntimeError(
                f"the embedded Tango database did not answer on {self.tango_host} within {timeout_s:.0f} s"
            )
        except BaseException:  # also Ctrl-C/SIGTERM while waiting: never leave it behind
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        terminate(self.process, timeout_s)

    def __enter__(self) -> EmbeddedDatabase:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_database(
    state_dir: Path, tango_host: str | None = None, host: str = LOOPBACK_ADDRESS
) -> tuple[str, EmbeddedDatabase | None]:
    """Return a working TANGO_HOST: the given/ambient one if it answers, else a new embedded database.

    A new one listens on ``host`` (and keeps the port of a ``TANGO_HOST`` that names this address
    or loopback). The caller owns the returned EmbeddedDatabase (None when an external one is used)
    and stops it.
    """
    tango_host = tango_host or os.environ.get("TANGO_HOST")
    if tango_host and database_answers(tango_host):
        return tango_host, None
    named, _, named_port = (tango_host or "").rpartition(":")
    ours = named == host or (host == LOOPBACK_ADDRESS and named.startswith(("127.", "localhost")))
    port = int(named_port) if tango_host and ours else 0
    db = EmbeddedDatabase(state_dir, port or free_port(host), host).start()
    return db.tango_host, db
