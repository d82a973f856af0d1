"""One client of one chain: the commands both user interfaces send, and the answers they show.

The panel and the web server call these instead of carrying their own device calls: Start goes
downstream first (Integrators, Merger, then the Stitcher), so nothing the Stitcher hands out finds a
stopped consumer, and Stop goes upstream first; the settings go in ONE ``SetSettings`` with only the
fields the operator changed (all taken or none); reintegration and the job table are the Stitcher's
(``Reintegrate``, ``jobs``, ``CancelJob``). Every call answers an :class:`Answer` with the text an
operator reads, a refusal with its Tango reason, so no interface has to parse a DevFailed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tango

from .chain_names import ChainNames
from .settings_request import settings_request

#: client timeout of the commands (a longer one is a job: Reintegrate returns at once)
TIMEOUT_MS = 3000


@dataclass(frozen=True)
class Answer:
    """What a command did: ``ok`` and the sentence shown to the operator."""

    ok: bool
    text: str


def refusal(exc: tango.DevFailed) -> str:
    """``(REASON): description`` of the first error of a DevFailed."""
    error = exc.args[0]
    return f"({error.reason}): {error.desc.strip()}"


class ChainClient:
    """Proxies to every device of ``chain`` and the operator's commands on them."""

    def __init__(self, chain: ChainNames, timeout_ms: int = TIMEOUT_MS):
        self.chain = chain
        self.proxies: dict[str, tango.DeviceProxy] = {d: self._proxy(d, timeout_ms) for d in chain.devices}

    def _proxy(self, device: str, timeout_ms: int) -> tango.DeviceProxy:
        proxy = tango.DeviceProxy(self.chain.trl(device))
        proxy.set_timeout_millis(timeout_ms)
        return proxy

    @property
    def stitcher(self) -> tango.DeviceProxy:
        return self.proxies[self.chain.stitcher]

    def property_list(self, name: str) -> list[str]:
        """A list property of the Stitcher (``CalibrationRoots``, ``DataRoots``): [] when unset."""
        return [str(v) for v in self.stitcher.get_property(name)[name]]

    # -- reading ------------------------------------------------------------------------------------------
    def state_and_status(self) -> dict[str, tuple[str, str]]:
        """device -> (State name, Status); a device that does not answer: ("UNKNOWN", why)."""
        found = {}
        for device, proxy in self.proxies.items():
            try:
                found[device] = (str(proxy.state()), proxy.status())
            except tango.DevFailed as exc:
                found[device] = ("UNKNOWN", f"not answering: {exc.args[0].desc.strip()}")
        return found

    def settings_in_force(self) -> dict[str, Any]:
        """The Stitcher's ``poniPath``, ``maskPath``, ``bins``, ``unit`` as it holds them."""
        names = ["poniPath", "maskPath", "bins", "unit"]
        return {n: a.value for n, a in zip(names, self.stitcher.read_attributes(names), strict=True)}

    def jobs(self) -> list[dict[str, Any]]:
        """The Stitcher's job table (its ``jobs`` attribute), oldest first."""
        return list(json.loads(self.stitcher.read_attribute("jobs").value or "[]"))

    # -- commands -----------------------------------------------------------------------------------------
    def _run(self, devices: list[str], command: str) -> Answer:
        failed = []
        for device in devices:
            try:
                self.proxies[device].command_inout(command)
            except tango.DevFailed as exc:
                failed.append(f"{device}: {exc.args[0].desc.strip()}")
        return Answer(not failed, f"{command}: " + ("; ".join(failed) if failed else f"done on {len(devices)} devices"))

    def start(self) -> Answer:
        return self._run([*self.chain.integrators, self.chain.merger, self.chain.stitcher], "Start")

    def stop(self) -> Answer:
        return self._run([self.chain.stitcher, *self.chain.integrators, self.chain.merger], "Stop")

    def clear_errors(self) -> Answer:
        """``ClearErrors`` on each device in ALARM now (FAULT needs a repair, not an acknowledgement)."""
        cleared, failed = [], []
        for device, proxy in self.proxies.items():
            try:
                if proxy.state() == tango.DevState.ALARM:
                    proxy.command_inout("ClearErrors")
                    cleared.append(device)
            except tango.DevFailed as exc:
                failed.append(f"{device}: {exc.args[0].desc.strip()}")
        text = f"ClearErrors sent to {', '.join(cleared)}" if cleared else "no device in ALARM to clear"
        return Answer(not failed, "; ".join([text, *failed]))

    def apply_settings(self, changes: Mapping[str, object]) -> Answer:
        """One ``SetSettings`` with ``changes`` (attribute names -> value): all taken or none."""
        try:
            self.stitcher.command_inout("SetSettings", settings_request(changes))
        except tango.DevFailed as exc:
            return Answer(False, f"refused {refusal(exc)}")
        except ValueError as exc:
            return Answer(False, f"refused: {exc}")
        return Answer(True, "applied")

    def reintegrate(self, path: str) -> Answer:
        """Queue ``path`` (any file of an acquisition): a job id with a job backend, else "queued ..."."""
        try:
            return Answer(True, str(self.stitcher.command_inout("Reintegrate", path)))
        except tango.DevFailed as exc:
            return Answer(False, f"Reintegrate refused {refusal(exc)}")

    def cancel_job(self, job_id: str) -> Answer:
        try:
            return Answer(True, str(self.stitcher.command_inout("CancelJob", job_id)))
        except tango.DevFailed as exc:
            return Answer(False, f"CancelJob refused {refusal(exc)}")
