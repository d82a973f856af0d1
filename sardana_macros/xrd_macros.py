"""Sardana macros for xrd-pipeline: thin verbs over the devices' commands and attributes.

Put this folder on the MacroServer's ``MacroPath``. Device names default to the ones in
``tango_db_setup/pipeline.yaml``; set the environment variables ``XrdStitcher``, ``XrdMerger`` and
``XrdIntegrators`` (``senv XrdMerger p02/xrd/merger``) to point the macros at another chain.

    xrd_status                                 # State/Status and counters of every device
    xrd_settings /gpfs/.../L2.poni 4038        # PONI and bins on every Integrator
    xrd_reintegrate /gpfs/.../ramp_00042_m1_part00000.nxs
"""

from sardana.macroserver.macro import Macro, Type  # noqa: F401  (only importable inside a MacroServer)

DEFAULTS = {
    "XrdStitcher": "p02/xrd/stitcher",
    "XrdMerger": "p02/xrd/merger",
    "XrdIntegrators": "p02/xrd/integrator1 p02/xrd/integrator2",
}


def _device_names(macro: Macro) -> dict:
    names = {}
    for key, default in DEFAULTS.items():
        try:
            names[key] = macro.getEnv(key)
        except Exception:  # unset environment variable: use the default layout
            names[key] = default
    names["XrdIntegrators"] = str(names["XrdIntegrators"]).split()
    return names


class xrd_status(Macro):
    """Show State, Status and frame counters of the Stitcher, the Integrators and the Merger."""

    def run(self):
        names = _device_names(self)
        for name in [names["XrdStitcher"], *names["XrdIntegrators"], names["XrdMerger"]]:
            dev = self.getDevice(name)
            self.output(f"{name}: {dev.state()}  received {dev.framesReceived}  processed {dev.framesProcessed}"
                        f"  failed {dev.framesFailed}  {dev.throughput:.1f} frames/s")
            for line in dev.status().splitlines():
                self.output(f"    {line}")
        self.output(f"last merged file: {self.getDevice(names['XrdMerger']).lastOutputFile}")


class xrd_settings(Macro):
    """Set PONI file and number of bins on every Integrator (a bad value is refused by the device)."""

    param_def = [
        ["poni", Type.String, None, "PONI calibration file"],
        ["bins", Type.Integer, None, "number of radial bins"],
        ["mask", Type.String, "", "mask file (empty: gaps and bad pixels only)"],
    ]

    def run(self, poni, bins, mask):
        for name in _device_names(self)["XrdIntegrators"]:
            dev = self.getDevice(name)
            dev.write_attribute("poniPath", poni)
            dev.write_attribute("maskPath", mask)
            dev.write_attribute("bins", bins)
            self.output(f"{name}: {poni}, {bins} bins, mask {mask or '(none)'}")


class xrd_reintegrate(Macro):
    """Reintegrate an acquisition with the current settings into a new file (earlier results stay)."""

    param_def = [["path", Type.String, None, "any file of the acquisition, or its directory"]]

    def run(self, path):
        answer = self.getDevice(_device_names(self)["XrdStitcher"]).command_inout("Reintegrate", path)
        self.output(answer)
