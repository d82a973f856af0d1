"""A real Sardana for tests: Pool + MacroServer + Door registered in the embedded Tango database, the
MacroServer's ``MacroPath`` on our ``sardana_macros`` folder, macros run through the Door.

Sardana's servers are not ours (``tango_servers.launcher`` only knows the Xrd executables), so they
are started here, each as its own process group that dies with the test interpreter, and stopped —
SIGTERM, then SIGKILL of the whole group — also when start-up fails. Their logs stay in the test's
tmp folder and are quoted in every start-up failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import tango

from tango_servers.embedded_db import die_with_parent
from tango_servers.registration import DeviceSpec

from .helpers import REPO

BIN = Path(sys.executable).parent
MACRO_PATH = REPO / "sardana_macros"


@dataclass(frozen=True)
class SardanaLayout:
    """Names of one test Sardana: ``Pool/<instance>`` and ``MacroServer/<instance>`` (with the Door)."""

    instance: str = "xrdtest"
    pool: str = "test/pool/1"
    macro_server: str = "test/ms/1"
    door: str = "test/door/1"

    def specs(self, state_dir: Path) -> list[DeviceSpec]:
        """Registration of the three devices; the MacroServer's environment lives in ``state_dir``."""
        return [
            DeviceSpec(f"Pool/{self.instance}", "Pool", self.pool, {}),
            DeviceSpec(
                f"MacroServer/{self.instance}",
                "MacroServer",
                self.macro_server,
                {
                    "PoolNames": [self.pool],
                    "MacroPath": [str(MACRO_PATH)],
                    "EnvironmentDb": [str(state_dir / "macroserver-env")],
                },
            ),
            DeviceSpec(f"MacroServer/{self.instance}", "Door", self.door, {"MacroServerName": [self.macro_server]}),
        ]


@dataclass
class SardanaProcess:
    """One Sardana server process (``.venv/bin/Pool <instance>``), in its own process group."""

    executable: str
    instance: str
    devices: list[str]
    tango_host: str
    log_dir: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.executable}-{self.instance}.log"

    def start(self) -> SardanaProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(BIN / self.executable), self.instance, "-ORBendPoint", "giop:tcp:127.0.0.1:"],
                stdin=subprocess.DEVNULL,  # never wait for an answer to "create a new one?"
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
                env={**os.environ, "TANGO_HOST": self.tango_host, "PYTHONUNBUFFERED": "1"},
            )
        return self

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout_s: float) -> None:
        """Every device answers a ping and is no longer INIT (the MacroServer loads macros in init)."""
        deadline = time.monotonic() + timeout_s
        for name in self.devices:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.executable} {self.instance} exited with code {self.process.returncode}:\n{self.tail()}"
                    )
                try:
                    if tango.DeviceProxy(f"tango://{self.tango_host}/{name}").state() != tango.DevState.INIT:
                        break
                except tango.DevFailed:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.executable} {self.instance}: {name} not ready within {timeout_s:.0f} s; "
                        f"log {self.log_file}:\n{self.tail()}"
                    )
                time.sleep(0.3)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL to the group if it is still there after ``timeout_s``."""
        if self.process is None:
            return
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(10)
        _signal_group(self.process, signal.SIGKILL)  # anything the server started in its group goes too


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


@contextlib.contextmanager
def sardana_servers(layout: SardanaLayout, tango_host: str, log_dir: Path, timeout_s: float = 120.0):
    """Pool, then MacroServer + Door (already registered); yields them; both stopped on the way out."""
    pool = SardanaProcess("Pool", layout.instance, [layout.pool], tango_host, log_dir)
    ms = SardanaProcess("MacroServer", layout.instance, [layout.macro_server, layout.door], tango_host, log_dir)
    started: list[SardanaProcess] = []
    try:
        started.append(pool.start())
        pool.wait_ready(timeout_s)  # the MacroServer connects to its PoolNames when it starts
        started.append(ms.start())
        ms.wait_ready(timeout_s)
        yield pool, ms
    finally:
        for p in reversed(started):
            p.stop()


@dataclass
class MacroRun:
    """What a macro left on the Door: its Output/Error lines, its Result, the Door state after it."""

    state: tango.DevState
    output: list[str]
    error: list[str]
    result: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    @property
    def report(self) -> str:
        """Everything the Door showed, for assertion messages."""
        lines = [f"Door state {self.state}", *self.output, *(f"ERROR {e}" for e in self.error)]
        return "\n".join([*lines, f"result {self.result}"])


class Door:
    """A Door driven as any Tango client does: ``RunMacro``, then State and Result change events (the
    Door's Result attribute only has a value in its events) and the Output/Error log attributes."""

    def __init__(self, tango_host: str, name: str):
        self.proxy = tango.DeviceProxy(f"tango://{tango_host}/{name}")
        self.proxy.set_timeout_millis(10_000)
        self._states: list[tango.DevState] = []
        self._results: list[list[str]] = []
        self._changed = threading.Condition()
        self._event_ids = [
            self.proxy.subscribe_event("State", tango.EventType.CHANGE_EVENT, self._on_state),
            self.proxy.subscribe_event("Result", tango.EventType.CHANGE_EVENT, self._on_result),
        ]

    def _on_state(self, event) -> None:
        if event.err or event.attr_value is None:
            return
        with self._changed:
            self._states.append(event.attr_value.value)
            self._changed.notify_all()

    def _on_result(self, event) -> None:
        if event.err or event.attr_value is None:
            return
        with self._changed:
            self._results.append([str(v) for v in event.attr_value.value or ()])

    def run(self, *macro: str, timeout_s: float = 120.0) -> MacroRun:
        """Run one macro and wait until the Door leaves RUNNING (an event after the RUNNING one)."""
        with self._changed:
            self._states.clear()
            self._results.clear()
        self.proxy.RunMacro(list(macro))
        started = time.monotonic()
        deadline = started + timeout_s
        with self._changed:
            while not self._finished():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{macro} still running after {timeout_s:.0f} s: {self.proxy.status()}")
                self._changed.wait(min(left, 1.0))
                if self._ended_unseen(time.monotonic() - started):
                    break
            final = self._states[-1] if self._finished() else self.proxy.state()
            result = self._results[-1] if self._results else []
        return MacroRun(final, self._lines("Output"), self._lines("Error"), result)

    def _finished(self) -> bool:
        if tango.DevState.RUNNING not in self._states:
            return False
        after = self._states[self._states.index(tango.DevState.RUNNING) + 1 :]
        return any(s != tango.DevState.RUNNING for s in after)

    def _ended_unseen(self, waited_s: float) -> bool:
        """The macro ended though its RUNNING event never arrived (a loaded host can coalesce a short
        macro's ON -> RUNNING -> ON): 10 s after RunMacro the Door reads idle (ON, or ALARM after an
        error) without ever having said RUNNING. Not sooner: Sardana starts the macro in a job thread
        after RunMacro returns, so right after it an idle Door may not have begun yet."""
        if tango.DevState.RUNNING in self._states or waited_s < 10.0:
            return False
        return self.proxy.state() in (tango.DevState.ON, tango.DevState.ALARM)

    def _lines(self, attr: str) -> list[str]:
        value = self.proxy.read_attribute(attr).value
        return [] if value is None else [str(v) for v in value]

    def close(self) -> None:
        for event_id in self._event_ids:
            with contextlib.suppress(tango.DevFailed):
                self.proxy.unsubscribe_event(event_id)
