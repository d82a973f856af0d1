"""`xrd-pipeline register`: refuses to guess a database, registers idempotently, reads the layout strictly."""

import os
import subprocess
import sys

import pytest

from pipeline_core.errors import ConfigError
from tango_servers.embedded_db import EmbeddedDatabase, free_port
from tango_servers.registration import load_layout

from .helpers import REPO


def _register(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tango_servers.cli", "register", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_register_without_tango_host_exits_2_and_says_what_is_missing():
    env = {k: v for k, v in os.environ.items() if k != "TANGO_HOST"}
    done = _register(env)
    assert done.returncode == 2, done
    assert "xrd-pipeline register: TANGO_HOST is not set (host:port of the Tango database)" in done.stderr
    assert done.stdout == ""


def test_register_into_the_database_of_tango_host_is_idempotent(tmp_path):
    db = EmbeddedDatabase(tmp_path / "db", free_port()).start()
    try:
        env = {**os.environ, "TANGO_HOST": db.tango_host}
        first = _register(env, "--state", str(tmp_path))
        assert first.returncode == 0, first.stderr
        added = first.stdout.splitlines()
        assert len(added) == 5 and "added p02/xrd/stitcher (Stitcher) to server XrdStitcher/demo" in added
        again = _register(env, "--state", str(tmp_path))
        assert (again.returncode, again.stdout) == (0, "nothing to add: already registered\n"), again.stderr
    finally:
        db.stop()


def test_a_layout_with_a_bad_device_name_is_refused_with_its_place(tmp_path):
    bad = tmp_path / "layout.yaml"
    bad.write_text("servers:\n  XrdStitcher/x:\n    Stitcher:\n      p02/stitcher: {}\n")
    with pytest.raises(ConfigError, match=r"servers.XrdStitcher/x.Stitcher.p02/stitcher: a device name is domain"):
        load_layout(bad)
    bad.write_text("servers: [1, 2]\n")
    with pytest.raises(ConfigError, match="layout.yaml: expected a mapping 'servers:"):
        load_layout(bad)
