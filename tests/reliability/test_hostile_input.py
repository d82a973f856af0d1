"""Hostile command input and bursts past every bound, through real Stitcher/Integrator server processes.

Each hostile input must be answered with XRD_InvalidValue naming the field; afterwards every
attribute still reads and the chain (Stitcher -> Integrator) still integrates a real acquisition.
A burst of Reintegrate calls is refused beyond its bound with XRD_QueueFull naming it, the work
queue never grows past its bound, and every accepted reintegration is still handed out in full."""

import json

import pytest
import tango

from tango_servers.registration import DeviceSpec

from ..helpers import SMALL_PONI, real_servers, wait_for, write_small_acquisition

STITCHER, BURST, INTEGRATOR = "test/hostile/stitcher", "test/hostile/burst", "test/hostile/integrator"


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "small.poni").write_text(SMALL_PONI)
    write_small_acquisition(tmp / "raw", n_parts=2, frames_per_part=3)
    roots = [str(tmp / "raw")]
    specs = [
        DeviceSpec("XrdStitcher/hostile", "Stitcher", STITCHER, {"FramesPerItem": ["2"], "DataRoots": roots}),
        DeviceSpec(  # nobody claims from this one: its queues fill up
            "XrdStitcher/hostile",
            "Stitcher",
            BURST,
            {"FramesPerItem": ["2"], "DataRoots": roots, "MaxReintegrations": ["5"], "MaxItems": ["20"]},
        ),
        DeviceSpec(
            "XrdIntegrator/hostile",
            "Integrator",
            INTEGRATOR,
            {
                "StitcherDevice": [STITCHER],
                "PoniPath": [str(tmp / "small.poni")],
                "Bins": ["10"],
                "PollInterval": ["0.3"],
                "DataRoots": roots,
            },
        ),
    ]
    with real_servers(tmp, specs) as host:
        yield tmp, Devices(host)


class Devices:
    def __init__(self, host):
        self.host = host

    def get_device(self, name):
        return tango.DeviceProxy(f"tango://{self.host}/{name}")


CLAIM = {"type": "claim", "version": 1}
REQUEUE = {"type": "requeue", "version": 1, "scan": "scan_00001"}
HOSTILE = [
    ("ClaimWork", "", "claim message: not JSON"),
    ("ClaimWork", "{bad json", "claim message: not JSON"),
    ("ClaimWork", "[" * 50_000, "claim message: not JSON"),
    ("ClaimWork", "[]", "expected a JSON object"),
    ("ClaimWork", json.dumps({**CLAIM, "settings": ["x"]}), r"claim.settings: expected an object"),
    ("ClaimWork", json.dumps({**CLAIM, "settings": {"bins": "many"}}), r"claim.settings.bins: expected an integer"),
    ("ClaimWork", json.dumps({**CLAIM, "settings": {"poni_path": {"a": 1}}}), r"claim.settings.poni_path"),
    ("ClaimWork", json.dumps({**CLAIM, "done": [1, 2]}), r"claim.done\[0\]: expected a string"),
    ("ClaimWork", json.dumps({**CLAIM, "integrator": "x" * 10_000}), r"claim.integrator: expected a string of at most"),
    ("ClaimWork", json.dumps({**CLAIM, "version": 2}), "version 2 is not supported"),
    ("ClaimWork", json.dumps({"integrator": "old"}), "expected a claim message"),
    ("RequeueFrames", "[1e400]", "expected a JSON object"),
    ("RequeueFrames", '{"type":"requeue","version":1,"scan":"s","frames":[1e400]}', r"frames\[0\]: .* got inf"),
    ("RequeueFrames", json.dumps({**REQUEUE, "frames": [0]}), r"frames\[0\]: expected an integer in 1..2147483647"),
    ("RequeueFrames", json.dumps({**REQUEUE, "frames": [2**31]}), r"requeue.frames\[0\]: expected an integer in 1.."),
    ("RequeueFrames", json.dumps({**REQUEUE, "frames": [True]}), r"requeue.frames\[0\]: expected an integer"),
    ("RequeueFrames", json.dumps({**REQUEUE, "frames": 5}), r"requeue.frames: expected a list of 1..1000000"),
    ("RequeueFrames", json.dumps({**REQUEUE, "frames": []}), r"requeue.frames: expected a list of 1.."),
    ("RequeueFrames", json.dumps({**REQUEUE, "frames": [1], "raw_file": 7}), r"requeue.raw_file: expected a string"),
    ("RequeueFrames", json.dumps({"type": "requeue", "version": 1, "frames": [1]}), r"requeue.scan: missing"),
    ("Reintegrate", "", r"reintegrate.path: expected the path"),
    ("Reintegrate", "/" + "a" * 5000, r"reintegrate.path: expected a string of at most 4096"),
]


@pytest.mark.parametrize(
    ("command", "argument", "message"), HOSTILE, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(HOSTILE)]
)
def test_hostile_input_is_refused_with_a_message_naming_the_field(devices, command, argument, message, ledger):
    _, ctx = devices
    ledger.fault("hostile command argument")
    stitcher = ctx.get_device(STITCHER)
    with pytest.raises(tango.DevFailed, match=message) as info:
        stitcher.command_inout(command, argument)
    assert info.value.args[0].reason == "XRD_InvalidValue"


def test_after_hostile_input_every_attribute_reads_and_the_chain_still_works(devices, ledger):
    tmp, ctx = devices
    ledger.fault("hostile command argument", len(HOSTILE[:11]))
    stitcher, integrator = ctx.get_device(STITCHER), ctx.get_device(INTEGRATOR)
    for _, argument, _ in HOSTILE[:11]:  # all the bad claims again, in a row
        with pytest.raises(tango.DevFailed):
            stitcher.ClaimWork(argument)
    values = {name: stitcher.read_attribute(name).value for name in stitcher.get_attribute_list()}
    assert values["bins"] in (0, 10) and isinstance(values["poniPath"], str) and values["queueDepth"] == 0
    stitcher.Reintegrate(str(tmp / "raw"))
    wait_for(lambda: integrator.framesProcessed == 6, what="the 6 frames integrated after the hostile input")
    assert integrator.framesFailed == 0
    assert stitcher.poniPath == str(tmp / "small.poni") and stitcher.bins == 10  # shown from the real claims
    assert stitcher.state() != tango.DevState.FAULT


def test_a_burst_past_every_bound_is_refused_naming_it_and_loses_nothing_accepted(devices, ledger):
    tmp, ctx = devices
    burst = ctx.get_device(BURST)
    accepted, refused = 0, []
    for _ in range(100):
        try:
            burst.Reintegrate(str(tmp / "raw"))
            accepted += 1
        except tango.DevFailed as exc:
            refused.append(exc.args[0])
    assert len(refused) >= 100 - 5 - 5  # 5 acquisitions (20 items) fit in the work queue, 5 more may wait
    assert {e.reason for e in refused} == {"XRD_QueueFull"}
    assert "bound MaxReintegrations = 5" in refused[0].desc
    wait_for(lambda: burst.workAvailable >= 20, what="the work queue at its bound")
    assert burst.workAvailable <= 20 + 2 and burst.reintegrationsPending <= 5  # a part adds at most its 2 items
    with pytest.raises(tango.DevFailed, match=r"bound MaxItems = 20") as info:
        burst.RequeueFrames(json.dumps({**REQUEUE, "scan": "scan_00001#r1", "frames": [1, 2]}))
    assert info.value.args[0].reason == "XRD_QueueFull"
    ledger.fault("request past a bound", len(refused) + 1)  # the refused Reintegrate calls, the requeue

    handed = []  # an Integrator catches up: the parts that waited on disk follow, none lost
    claim = json.dumps({**CLAIM, "integrator": "test"})

    def drain():
        while answer := burst.ClaimWork(claim):
            handed.append(json.loads(answer))
        return burst.reintegrationsPending == 0 and burst.workAvailable == 0

    wait_for(drain, what="every accepted reintegration handed out")
    assert len(handed) == 4 * accepted and all(item["error"] is None for item in handed)
    assert sorted(n for item in handed for n in item["frame_numbers"]) == sorted(list(range(1, 7)) * accepted)
