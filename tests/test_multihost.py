"""Several hosts: the chain on one host, one more Integrator on a second host, sharing a scan.

The second host is a network namespace with its own address (``ip netns`` + a veth pair: 10.77.N.1
on this side, 10.77.N.2 inside), so nothing reaches the other side over loopback: the database, the
servers and their events must be published at an address the other host reaches, or the test fails.
Every command a user types for this set-up (README "Several hosts") is run here as written, with
``ip netns exec NS`` standing for "on the second host":

* ``xrd-pipeline database --host 10.77.N.1 --port P --state DIR``       (the database for every host)
* ``xrd-pipeline register --file second-host.yaml --state DIR``          (its Integrator, the Merger's list)
* ``xrd-integrator host2 -ORBendPoint giop:tcp:10.77.N.2:``              (on the second host, by hand)
* ``ORBendPoint=giop:tcp:10.77.N.2: XrdIntegrator host2``                (what Tango's Starter runs there)

and the first host's servers are started by the launcher with ``endpoint=10.77.N.1`` (what
``xrd-pipeline demo --endpoint`` does; the demo is run that way too, and read from the other side).
The namespace tests need root (namespaces, links) and are skipped with the reason otherwise; the
two tests before them check ``database --host`` and the launcher's endpoint on a second loopback
address (127.0.0.2), which needs nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import tango
from tango.test_context import parse_ior

from pipeline_core.errors import ConfigError
from pipeline_core.formats.nexus import read_merged
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import LambdaSource
from pipeline_core.simulate import write_calibration
from tango_servers.demo import MERGER, SIMULATOR, STITCHER, layout_for
from tango_servers.embedded_db import (
    EmbeddedDatabase,
    check_local_address,
    database_answers,
    die_with_parent,
    free_port,
    orb_endpoint,
    tango_host_reachable,
    terminate,
)
from tango_servers.launcher import ServerProcess, start_servers, stop_servers
from tango_servers.registration import register

from .helpers import REPO, readme_block, wait_for

BIN = Path(sys.executable).parent  # the environment's executables: xrd-pipeline, xrd-integrator, XrdIntegrator

#: The README's second-host layout, registered with ``xrd-pipeline register --file``: one more Integrator
#: (its own server instance, to be run on the second host) and the Merger collecting from it too.
SECOND_HOST_YAML = readme_block("**Register the second host's Integrator**", "yaml")  # README, as written
REMOTE = "p02/xrd/integrator3"

#: Short leases and polls, so a killed Integrator's work comes back within seconds (as in
#: tests/reliability/test_process_faults.py: the lease outlasts a first item and its engine build).
TUNED = {
    "Stitcher": {"FramesPerItem": ["4"], "LeaseTimeout": ["8"]},
    "Merger": {"GapCheck": ["3"]},
    "Integrator": {"PollInterval": ["0.3"]},
}


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _why_no_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the second host is a network namespace with a veth pair (ip netns, ip link)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (ip netns) for the second host's network namespace"
    listed = _ip("netns", "list")
    if listed.returncode != 0:
        return f"`ip netns` is unavailable here: {listed.stderr.strip()}"
    return None


@dataclass
class SecondHost:
    """A network namespace joined to this one by a veth pair: ``address`` there, ``host_address`` here."""

    name: str
    host_address: str
    address: str
    veth: str

    def exec(self, *argv: str) -> list[str]:
        """``argv`` run on the second host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def holds(self, pid: int) -> bool:
        return _ip("netns", "identify", str(pid)).stdout.strip() == self.name


@pytest.fixture(scope="module")
def second_host():
    reason = _why_no_namespaces()
    if reason:
        pytest.skip(reason)
    used = _ip("-o", "-4", "addr", "show").stdout
    subnet = next((n for n in range(256) if f"inet 10.77.{n}." not in used), None)
    if subnet is None:
        pytest.skip("no free 10.77.N.0/24 subnet for the veth pair")
    tag = os.getpid()
    host = SecondHost(f"xrd-mh-{tag}", f"10.77.{subnet}.1", f"10.77.{subnet}.2", f"xmh{tag}")
    peer = f"{host.veth}n"
    created = _ip("netns", "add", host.name)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        steps = [
            ("link", "add", host.veth, "type", "veth", "peer", "name", peer),
            ("link", "set", peer, "netns", host.name),
            ("addr", "add", f"{host.host_address}/24", "dev", host.veth),
            ("link", "set", host.veth, "up"),
            ("-n", host.name, "addr", "add", f"{host.address}/24", "dev", peer),
            ("-n", host.name, "link", "set", peer, "up"),
            ("-n", host.name, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the veth pair (ip {' '.join(step)}): {done.stderr.strip()}")
        yield host
    finally:
        # what runs there now was started by this module (its servers and clients): stop it by pid
        for pid in _ip("netns", "pids", host.name).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        _ip("link", "del", host.veth)  # takes its peer with it
        _ip("netns", "del", host.name)


@dataclass
class OnSecondHost(ServerProcess):
    """A server started on the second host by the command a user (or Tango's Starter) runs there."""

    host: SecondHost | None = None
    argv: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        return self.host.exec(*self.argv)


def _ior_address(tango_host: str, device: str) -> str:
    """The address a device's server published in the database (what every client dials)."""
    address, port = tango_host.rsplit(":", 1)
    return parse_ior(tango.Database(address, int(port)).import_device(device).ior).host.decode()


def _started(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )


# -- without root: one host, a second loopback address ------------------------------------------------
ALIAS = "127.0.0.2"  # Linux routes all of 127.0.0.0/8 to lo: an address of this host that is not 127.0.0.1


@pytest.fixture
def alias() -> str:
    try:
        return check_local_address(ALIAS)
    except ConfigError as exc:
        pytest.skip(f"no second loopback address here: {exc}")


def _port_free_on_both(alias: str) -> tuple[int, socket.socket]:
    """A port free on ``alias``, and a socket bound (not listening) to it on 127.0.0.1: no other test
    running beside this one (pytest-xdist) can listen there meanwhile, so a connection to 127.0.0.1
    reaches nobody unless the database itself listens there."""
    for _ in range(20):
        port = free_port(alias)
        guard = socket.socket()
        try:
            guard.bind(("127.0.0.1", port))
            return port, guard
        except OSError:
            guard.close()
    raise AssertionError(f"no port free on both {alias} and 127.0.0.1 in 20 tries")


def test_database_host_is_where_it_listens_and_what_it_publishes(alias, tmp_path):
    port, guard = _port_free_on_both(alias)
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    database = _started(
        [str(BIN / "xrd-pipeline"), "database", "--host", alias, "--port", str(port), "--state", str(tmp_path)],
        tmp_path / "database.log",
        env,
    )
    try:
        line = database.stdout.readline()
        assert f"export TANGO_HOST={alias}:{port}" in line, (tmp_path / "database.log").read_text()[-2000:]
        assert database_answers(f"{alias}:{port}")
        assert _ior_address(f"{alias}:{port}", "sys/database/2") == alias  # what it hands out
        assert not tango_host_reachable("127.0.0.1", port)  # that address only
    finally:
        terminate(database)
        guard.close()
    assert database.returncode == 128 + signal.SIGTERM


def test_servers_started_with_an_endpoint_listen_there_and_publish_it(alias, tmp_path):
    specs = [s for s in layout_for(tmp_path, integrators=1)[0] if s.klass == "LambdaSimulator"]
    db = EmbeddedDatabase(tmp_path / "db", free_port(alias), alias).start()
    servers: list[ServerProcess] = []
    try:
        assert db.tango_host == f"{alias}:{db.port}"
        register(specs, tango.Database(alias, db.port))
        servers = start_servers(specs, db.tango_host, tmp_path / "logs", endpoint=alias)
        assert servers[0].command()[-2:] == ["-ORBendPoint", f"giop:tcp:{alias}:"]
        assert _ior_address(db.tango_host, SIMULATOR) == alias
        sim = tango.DeviceProxy(f"tango://{db.tango_host}/{SIMULATOR}")
        admin = tango.DeviceProxy(f"tango://{db.tango_host}/{sim.adm_name().split('/', 3)[-1]}")
        info = admin.command_inout("ZmqEventSubscriptionChange", ["info"])[1]
        events = [x for x in info if "tcp://" in x]
        assert events and all(f"tcp://{alias}:" in x for x in events), info  # events are published there too
    finally:
        stop_servers(servers)
        db.stop()


# -- as root: a second host in a network namespace --------------------------------------------------
def test_an_integrator_on_a_second_host_shares_a_scan_and_its_kill_9_loses_nothing(second_host, tmp_path):
    host = second_host
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    database: subprocess.Popen | None = None
    servers: list[ServerProcess] = []
    try:
        # -- the database, for every host: listening on (and publishing) this host's address
        port = free_port(host.host_address)
        database = _started(
            [
                str(BIN / "xrd-pipeline"),
                "database",
                "--host",
                host.host_address,
                "--port",
                str(port),
                "--state",
                str(tmp_path / "db"),
            ],
            tmp_path / "database.log",
            env,
        )
        tango_host = f"{host.host_address}:{port}"
        line = database.stdout.readline()  # printed once it answers; EOF if it failed
        assert f"export TANGO_HOST={tango_host}" in line, (line, (tmp_path / "database.log").read_text()[-2000:])
        env["TANGO_HOST"] = tango_host

        # -- the chain's devices (the demo layout), then the second host's, as README registers them
        specs, names = layout_for(tmp_path, integrators=2)
        specs = [replace(s, properties={**s.properties, **TUNED.get(s.klass, {})}) for s in specs]
        db = tango.Database(host.host_address, port)
        register(specs, db)
        (tmp_path / "second-host.yaml").write_text(SECOND_HOST_YAML)
        out = subprocess.run(
            [
                str(BIN / "xrd-pipeline"),
                "register",
                "--file",
                str(tmp_path / "second-host.yaml"),
                "--state",
                str(tmp_path),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert f"added {REMOTE} (Integrator) to server XrdIntegrator/host2" in out.stdout
        assert list(db.get_device_property(MERGER, "IntegratorDevices")["IntegratorDevices"]) == [*names, REMOTE]
        db.put_device_property(REMOTE, TUNED["Integrator"])

        def proxy(name: str) -> tango.DeviceProxy:
            return tango.DeviceProxy(f"tango://{tango_host}/{name}")

        # -- first host: simulator + Stitcher (upstream first), then the second host's Integrator,
        #    then the local Integrators and the Merger (which subscribes to all three)
        upstream = [s for s in specs if s.klass in ("LambdaSimulator", "Stitcher")]
        downstream = [s for s in specs if s not in upstream]
        servers += start_servers(upstream, tango_host, tmp_path / "logs", endpoint=host.host_address)
        remote = OnSecondHost(
            "XrdIntegrator/host2",
            [REMOTE],
            tango_host,
            tmp_path / "logs",
            host=host,
            argv=[str(BIN / "xrd-integrator"), "host2", "-ORBendPoint", orb_endpoint(host.address)],
        )
        servers.append(remote.start())
        remote.wait_ready(60)
        remote.wait_connected(60)
        servers += start_servers(downstream, tango_host, tmp_path / "logs", endpoint=host.host_address)

        # each runs where it should and is published at its host's address
        assert host.holds(remote.process.pid) and not host.holds(os.getpid())
        assert _ior_address(tango_host, REMOTE) == host.address
        for name in (STITCHER, MERGER, *names):
            assert _ior_address(tango_host, name) == host.host_address, name

        merger, stitcher, sim = proxy(MERGER), proxy(STITCHER), proxy(SIMULATOR)
        remote_dev = proxy(REMOTE)
        poni, mask = write_calibration(tmp_path / "cal")
        stitcher.poniPath, stitcher.maskPath, stitcher.bins = str(poni), str(mask), 500
        for name in names:  # AutoStart: they would claim; the second host works alone at first
            proxy(name).Stop()
        stitcher.Start()

        # -- the scan: the second host's Integrator claims and integrates, then is killed -9
        frames = 80
        sim.FrameNumbers, sim.FramesPerFile, sim.rate = frames, 10, 10.0
        stem = sim.Start()
        wait_for(
            lambda: remote_dev.framesProcessed > 0 and stitcher.itemsLeased > 0,
            120,
            "the second host's Integrator to integrate frames and hold a lease",
        )
        remote_processed = remote_dev.framesProcessed
        remote.kill()
        written_at_kill, leased_at_kill = sim.framesWritten, stitcher.itemsLeased
        assert merger.lastOutputFile == "", "the scan was merged before the kill: nothing was left to recover"
        local = proxy(names[0])
        local.Start()
        wait_for(lambda: merger.lastOutputFile != "", 180, f"the merged file of {stem}")
        merged = Path(merger.lastOutputFile)
        live = read_merged(merged)

        # every frame exactly once, shared by the two hosts
        assert merged.name == f"{stem}.nxs"
        assert live["frame_number"].tolist() == list(range(1, frames + 1)), live["failed_reasons"]
        assert live["status"] == "complete" and live["failed_frames"] == []
        assert remote_processed > 0 and local.framesProcessed > 0, (remote_processed, local.framesProcessed)
        # the dead host's leases come back: an item it had integrated and delivered stays leased until its
        # next claim, which never comes, so the scan may be merged before that lease runs out (LeaseTimeout)
        if leased_at_kill:
            lease_s = float(TUNED["Stitcher"]["LeaseTimeout"][0])
            wait_for(lambda: stitcher.itemsRequeued > 0, lease_s + 30, "the killed host's leases handed out again")
        wait_for(lambda: stitcher.workAvailable == 0, 60, "the items handed out again claimed")
        # integrations counted, not only the file (its writer drops a twin): a frame is integrated twice
        # only when the killed host handed it on and its lease ran out before it was acknowledged, so
        # at most the frames of the items handed out again (FramesPerItem each). No lower bound: the second
        # host's count is read just before its kill, and it may finish one more item in between
        integrated = remote_processed + local.framesProcessed
        requeued_frames = stitcher.itemsRequeued * int(TUNED["Stitcher"]["FramesPerItem"][0])
        assert integrated <= frames + requeued_frames, (integrated, frames, requeued_frames)
        print(
            f"second host integrated {remote_processed} of {frames} frames; killed with {leased_at_kill} item(s) "
            f"leased after {written_at_kill} frames written; first host integrated {local.framesProcessed}"
        )

        # row for row what `xrd-pipeline integrate` gives on the same files
        raw = sorted((tmp_path / "raw").glob(f"{stem}_m1_part*.nxs"))
        offline = integrate_source(
            LambdaSource.from_file(raw[0]),
            IntegrationSettings(poni, bins=500, mask_path=mask),
            tmp_path / "offline" / f"{stem}.nxs",
        )
        ref = read_merged(offline.output)
        np.testing.assert_allclose(live["data"], ref["data"], rtol=1e-6)
        np.testing.assert_array_equal(live["pos_map"], ref["pos_map"])
        assert sorted(live["input_files"]) == sorted(ref["input_files"])

        # -- the second host's Integrator restarted as Tango's Starter runs it there: the executable
        #    from StartDsPath with the instance only, the endpoint from the environment it inherits
        local.Stop()
        revived = OnSecondHost(
            "XrdIntegrator/host2",
            [REMOTE],
            tango_host,
            tmp_path / "logs",
            host=host,
            argv=["env", f"ORBendPoint={orb_endpoint(host.address)}", str(BIN / "XrdIntegrator"), "host2"],
        )
        servers[servers.index(remote)] = revived.start()
        revived.wait_ready(60)
        revived.wait_connected(60)
        assert host.holds(revived.process.pid) and _ior_address(tango_host, REMOTE) == host.address
        wait_for(lambda: merger.upstreamConnected, 60, "the Merger to re-subscribe to the restarted Integrator")
        wait_for(lambda: sim.state() == tango.DevState.ON, 60, "the simulator to be idle")
        sim.FrameNumbers, sim.FramesPerFile, sim.rate = 20, 10, 20.0
        second = sim.Start()
        wait_for(lambda: Path(merger.lastOutputFile).name.startswith(second), 120, f"the merged file of {second}")
        assert read_merged(merger.lastOutputFile)["frame_number"].tolist() == list(range(1, 21))
        assert proxy(REMOTE).framesProcessed > 0  # alone: every frame of it went through the second host
    finally:
        stop_servers(servers)
        terminate(database)  # SIGTERM: `xrd-pipeline database` stops its DataBaseds, then exits
    assert database.returncode == 128 + signal.SIGTERM
    assert all(not s.alive() for s in servers)


def test_demo_with_an_endpoint_is_reachable_from_the_second_host(second_host, tmp_path):
    """``xrd-pipeline demo --endpoint A``: its embedded database and servers answer at A from elsewhere."""
    host = second_host
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    demo = subprocess.Popen(
        [
            str(BIN / "xrd-pipeline"),
            "demo",
            "--workdir",
            str(tmp_path),
            "--endpoint",
            host.host_address,
            "--frames",
            "2000",
            "--rate",
            "20",
            "--integrators",
            "1",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not any(line.startswith("acquiring") for line in lines):
            line = demo.stderr.readline()
            assert line and time.monotonic() < deadline, "".join(lines)[-3000:]
            lines.append(line)
        tango_host = next(line.split()[2] for line in lines if line.startswith("Tango database:"))
        assert tango_host.startswith(f"{host.host_address}:"), lines
        # a client on the second host: the database and every device answer there, counters move
        client = (
            "import sys, time, tango\n"
            "names = sys.argv[2:]\n"
            "for name in names:\n"
            "    tango.DeviceProxy(f'tango://{sys.argv[1]}/{name}').ping()\n"
            "sim = tango.DeviceProxy(f'tango://{sys.argv[1]}/" + SIMULATOR + "')\n"
            "first = sim.framesWritten\n"
            "deadline = time.monotonic() + 60\n"
            "while sim.framesWritten == first and time.monotonic() < deadline:\n"
            "    time.sleep(0.2)\n"
            "print('written', first, sim.framesWritten)\n"
        )
        seen = subprocess.run(
            host.exec(sys.executable, "-c", client, tango_host, SIMULATOR, STITCHER, "p02/xrd/integrator1", MERGER),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert seen.returncode == 0, seen.stderr[-3000:]
        _, first, later = seen.stdout.split()
        assert int(later) > int(first)
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 130, err[-3000:]
