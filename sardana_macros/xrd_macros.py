"""Sardana macros for xrd-pipeline: thin verbs over the devices' commands and attributes.

Put this folder on the MacroServer's ``MacroPath``. Device names default to the ones in
``tango_db_setup/pipeline.yaml``; set the environment variables ``XrdStitcher``, ``XrdMerger`` and
``XrdIntegrators`` (``senv XrdMerger p02/xrd/merger``) to point the macros at another chain.

    xrd_status                                  # State, counters and Status of every device
    xrd_settings /gpfs/.../L2.poni              # the chain's PONI; bins, mask and unit unchanged
    xrd_settings /gpfs/.../L2.poni 4038 -       # ... and 4038 bins, no user mask
    xrd_reintegrate /gpfs/.../ramp_00042_m1_part00000.nxs True   # wait for the new merged file
                                                # (or the job's, with ReintegrationBackend local/slurm)
    xrd_pressure                                # the Merger's last pressure, its sigma and the rate

The devices are reached with plain ``tango.DeviceProxy`` (Sardana's ``getDevice`` gives a Taurus
device, whose ``state`` is a property and whose values are pint quantities: not what these verbs
print). The macros import nothing of xrd-pipeline, so a MacroServer in another environment runs
them; the one message they send (``SettingsRequest`` of ``pipeline_core.messages``) is written out
here, and tests/test_sardana_macros.py runs every macro in a real MacroServer against a live chain.
"""

from __future__ import annotations

import json
import time

import tango
from sardana.macroserver.macro import Macro, Optional, Type

DEFAULTS = {
    "XrdStitcher": "p02/xrd/stitcher",
    "XrdMerger": "p02/xrd/merger",
    "XrdIntegrators": "p02/xrd/integrator1 p02/xrd/integrator2",
}
COUNTERS = ("framesReceived", "framesProcessed", "framesFailed", "throughput")
SETTINGS = ("poniPath", "maskPath", "bins", "unit")
#: the mask argument that means "no user mask" ("" and "None" reach a macro as "not given")
NO_MASK = "-"
#: a first PONI check may import pyFAI in the Stitcher: longer than Tango's 3 s default
TIMEOUT_MS = 30_000
#: states of a reintegration job that will not change (pipeline_core.jobs.records.FINAL_STATES, written out)
JOB_FINAL_STATES = ("complete", "incomplete", "failed", "cancelled")


def _device_names(macro: Macro) -> dict:
    names = {}
    for key, default in DEFAULTS.items():
        try:
            names[key] = macro.getEnv(key)
        except Exception:  # unset environment variable: use the default layout
            names[key] = default
    integrators = names["XrdIntegrators"]  # "a b", a list, or "(a, b)" (what ``senv XrdIntegrators a b`` stores)
    if isinstance(integrators, (list, tuple)):
        integrators = " ".join(str(n) for n in integrators)
    names["XrdIntegrators"] = str(integrators).strip("()[] ").replace(",", " ").split()
    return names


def _chain(macro: Macro) -> list[str]:
    """Every device of the chain, upstream first: Stitcher, Integrators, Merger."""
    names = _device_names(macro)
    return [names["XrdStitcher"], *names["XrdIntegrators"], names["XrdMerger"]]


def _proxy(name: str) -> tango.DeviceProxy:
    proxy = tango.DeviceProxy(name)
    proxy.set_timeout_millis(TIMEOUT_MS)
    return proxy


def _reason(exc: tango.DevFailed) -> str:
    """The first error of a DevFailed as an operator reads it: its description (and reason)."""
    err = exc.args[0]
    return f"{err.desc.strip()} ({err.reason})"


def _read(proxy: tango.DeviceProxy, attributes: tuple[str, ...]) -> dict:
    """Values by name; an attribute that cannot be read is shown as '?' with why, not a failed macro."""
    values = {}
    for name in attributes:
        try:
            values[name] = proxy.read_attribute(name).value
        except tango.DevFailed as exc:
            values[name] = f"? ({_reason(exc)})"
    return values


def _number(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else str(value)


def settings_request(poni: str | None, bins: int | None, mask: str | None, unit: str | None) -> str:
    """The JSON ``SettingsRequest`` (pipeline_core.messages) of the given fields; None = unchanged."""
    fields = {"poni_path": poni, "bins": bins, "mask_path": mask, "unit": unit}
    return json.dumps({"type": "settings", "version": 1, **{k: v for k, v in fields.items() if v is not None}})


class xrd_status(Macro):
    """Show State, frame counters, throughput and Status of the Stitcher, the Integrators and the Merger."""

    def run(self):
        for name in _chain(self):
            try:
                proxy = _proxy(name)
                state, status = proxy.state(), proxy.status()
            except tango.DevFailed as exc:
                self.warning(f"{name}: not reachable: {_reason(exc)}")
                continue
            c = _read(proxy, COUNTERS)
            self.output(
                f"{name}: {state}  received {c['framesReceived']}  processed {c['framesProcessed']}  "
                f"failed {c['framesFailed']}  {_number(c['throughput'], '.1f')} frames/s"
            )
            for line in status.splitlines():
                self.output(f"    {line}")
        merger = _device_names(self)["XrdMerger"]
        try:
            last = _read(_proxy(merger), ("lastOutputFile",))["lastOutputFile"]
        except tango.DevFailed as exc:  # not defined in the database
            last = f"? ({_reason(exc)})"
        self.output(f"last merged file: {last}")


#: the Merger's pressure attributes xrd_pressure prints (GPa, GPa, GPa/s)
PRESSURE = ("pressure", "pressureSigma", "compressionRate")


def pressure_text(merger: str, v: dict) -> str:
    """One line: the last frame's pressure ± sigma and the compression rate, with units; NaN (no
    marker, or no fit for that frame) is said as such, an unreadable value as '?' with why."""

    def shown(value, fmt: str, unit: str) -> str:
        if not isinstance(value, float):
            return str(value)
        return "NaN" if value != value else f"{value:{fmt}} {unit}"

    p, sigma, rate = (v[a] for a in PRESSURE)
    return (
        f"{merger}: pressure {shown(p, '.2f', 'GPa')} ± {shown(sigma, '.2f', 'GPa')} (last frame), "
        f"compression rate {shown(rate, '.3f', 'GPa/s')}"
    )


class xrd_pressure(Macro):
    """Show the Merger's pressure of the last frame, its uncertainty and the compression rate.

    NaN means no value: the Merger has no ``Marker`` (its Status says so when one was refused), or the
    last frame's marker peaks did not fit (the merged file's ``/processed/pressure/reason`` says why).
    """

    result_def = [["pressure", "Float", None, "GPa of the last frame (NaN: none)"]]  # Type.Float: only in a MacroServer

    def run(self):
        merger = _device_names(self)["XrdMerger"]
        v = _read(_proxy(merger), PRESSURE)
        self.output(pressure_text(merger, v))
        return v["pressure"] if isinstance(v["pressure"], float) else float("nan")


def _settings_text(v: dict) -> str:
    return f"poni {v['poniPath']}, mask {v['maskPath'] or '(none)'}, {v['bins']} bins, unit {v['unit']}"


class xrd_settings(Macro):
    """Set the chain's integration settings, all or nothing, then show what every device shows.

    The Stitcher holds the chain's one set of settings; the others show it. One ``SetSettings``
    carries the given values: the Stitcher checks all of them before changing any, so a refused
    value (a PONI that does not parse, bins out of range, a mask that does not fit) changes nothing
    and the macro fails with the reason. A parameter not given keeps the value in force; give
    ``-`` as mask for no user mask (detector gaps and bad pixels only): the MacroServer passes an
    empty string or ``None`` as "not given", so neither can say it.
    """

    param_def = [
        ["poni", Type.String, None, "PONI calibration file"],
        ["bins", Type.Integer, Optional, "number of radial bins (not given: unchanged)"],
        ["mask", Type.String, Optional, "mask file; - = no user mask (not given: unchanged)"],
        ["unit", Type.String, Optional, "radial unit, e.g. 2th_deg or q_nm^-1 (not given: unchanged)"],
    ]

    def run(self, poni, bins, mask, unit):
        stitcher = _device_names(self)["XrdStitcher"]
        if mask is not None and mask.strip() == NO_MASK:
            mask = ""  # what SettingsRequest calls no user mask
        request = settings_request(poni, bins, mask, unit)
        try:
            _proxy(stitcher).command_inout("SetSettings", request)
        except tango.DevFailed as exc:
            if exc.args[0].reason != "XRD_InvalidValue":  # not a refusal: unreachable, timed out, ...
                raise
            self.error(f"{stitcher} refused {request}: {_reason(exc)}; nothing was changed")
            shown = self._show()
            raise ValueError(f"settings refused by {stitcher}: {_reason(exc)}; every device keeps {shown}") from None
        self._show()

    def _show(self) -> str:
        """Print each device's values; returns them as one text (warns when the devices disagree)."""
        seen = {}
        for name in _chain(self):
            try:
                v = _read(_proxy(name), SETTINGS)
            except tango.DevFailed as exc:  # a device not defined or not exported
                v = dict.fromkeys(SETTINGS, f"? ({_reason(exc)})")
            seen[name] = tuple(v[a] for a in SETTINGS)
            self.output(f"{name}: {_settings_text(v)}")
        if len(set(seen.values())) != 1:
            self.warning(f"the devices show different settings: {seen}")
            return "(the devices disagree, see above)"
        return _settings_text(v)


class xrd_reintegrate(Macro):
    """Reintegrate an acquisition with the chain's settings into a new file (earlier results stay).

    Returns what the Stitcher answered: through the live chain (``ReintegrationBackend`` chain) what it
    queued, otherwise the id of the job. With ``wait`` True it waits for the result and returns its
    path: the Merger's next closed file (chain; a scan the chain is merging meanwhile may close
    first), or the job's merged file, showing the job's progress (local, slurm). A job that fails or
    is cancelled fails the macro with the job's reason.
    """

    param_def = [
        ["path", Type.String, None, "any file of the acquisition, or its directory"],
        ["wait", Type.Boolean, False, "wait until the new merged file is closed"],
        ["timeout", Type.Float, 600.0, "seconds to wait at most"],
    ]
    result_def = [["answer", Type.String, None, "what was queued or submitted, or (wait) the merged file"]]

    def run(self, path, wait, timeout):
        names = _device_names(self)
        merger, stitcher = _proxy(names["XrdMerger"]), _proxy(names["XrdStitcher"])
        before = merger.lastOutputFile if wait else None
        answer = stitcher.command_inout("Reintegrate", path)
        self.output(answer)
        if not wait:
            return answer
        deadline = time.monotonic() + timeout
        if not answer.startswith("queued "):  # a job backend answers with the job's id(s)
            return self._wait_for_jobs(stitcher, answer.split(), deadline, timeout)
        while (current := merger.lastOutputFile) == before:
            self._tick(deadline, timeout, merger)
        self.output(f"merged file: {current}")
        return current

    def _tick(self, deadline: float, timeout: float, device: tango.DeviceProxy) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new merged file after {timeout:g} s:\n{device.status()}")
        self.checkPoint()  # an abort (Ctrl-C in spock) stops the wait here
        time.sleep(0.2)

    def _wait_for_jobs(self, stitcher: tango.DeviceProxy, ids: list[str], deadline: float, timeout: float) -> str:
        """Follow the Stitcher's ``jobs`` until every job in ``ids`` ended; their merged files."""
        shown: dict[str, str] = {}
        while True:
            table = {job["id"]: job for job in json.loads(stitcher.jobs)}
            missing = [i for i in ids if i not in table]
            if missing:
                raise RuntimeError(f"the Stitcher lists no job {', '.join(missing)}:\n{stitcher.status()}")
            for job_id in ids:
                job = table[job_id]
                line = f"job {job_id}: {job['state']}, {job['frames_done']}/{job['frames_total'] or '?'} frames"
                if shown.get(job_id) != line:
                    self.output(line)
                    shown[job_id] = line
            if all(table[i]["state"] in JOB_FINAL_STATES for i in ids):
                break
            self._tick(deadline, timeout, stitcher)
        bad = [table[i] for i in ids if table[i]["state"] not in ("complete", "incomplete")]
        if bad:
            raise RuntimeError("; ".join(f"job {j['id']} {j['state']}: {j['reason']}" for j in bad))
        for job in (table[i] for i in ids):
            self.output(
                f"merged file: {job['output']}"
                + (" (incomplete: see its failed frames)" if job["state"] == "incomplete" else "")
            )
        return " ".join(table[i]["output"] for i in ids)
