"""How the suite runs in parallel (pytest-xdist, ``-n N``): which tests share a worker, and in what order.

xdist's own ``--dist loadgroup`` cannot be used: it names a test's group by appending "@group" to the
test's node id, which pytest 9.2 no longer lets a plugin change (pytest-xdist issue #1386), so the
groups are silently ignored and a live chain meant for one file's tests is started on every worker.
Here each worker writes the group of every test it collected (:func:`group_of`) to a file the
controller named, and the controller's scheduler (:class:`GroupScheduling`) reads it: one work unit
per group, every other test a unit of its own. tests/conftest.py wires the hooks.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

#: the key of ``workerinput`` that names the folder where the workers write their groups
GROUPS_KEY = "xrd_groups_dir"
#: Test files that fork the test interpreter for a MultiDeviceTestContext(process=True) (those that
#: import ``tango.test_context``): a fork after the process has used Tango (client threads, event
#: subscriptions) breaks the devices' events or aborts the child ("omni_thread_fatal"). Their tests
#: form one unit, dealt first, so they run first on their worker, in collection order (as in a
#: single-process run, where each had only Tango-free tests and these before it).
FORK_GROUP = "fork-first"
#: Fixture scopes that outlive a test: the tests of a file that share one (a live chain) run on one
#: worker, so the chain starts once.
SHARED_SCOPES = {"module", "class", "package"}


@functools.cache
def forks_a_test_context(path: Path) -> bool:
    return "tango.test_context" in path.read_text(errors="replace")


def group_of(item: pytest.Item) -> str | None:
    """The work unit ``item`` belongs to: FORK_GROUP for a file that forks a test context, its ``xdist_group`` mark
    (the Slurm tests share one cluster), else its file when it uses a fixture shared by the file's
    tests, else None (a unit of its own)."""
    if forks_a_test_context(Path(str(item.fspath))):
        return FORK_GROUP
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    fixtures = getattr(item, "_fixtureinfo", None)
    for defs in fixtures.name2fixturedefs.values() if fixtures else ():
        if any(d.scope in SHARED_SCOPES for d in defs):
            return item.nodeid.split("::")[0]
    return None


def order_and_record(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker: order the run (FORK_GROUP, then the other groups, which are the long units and
    start early, then the rest, each in collection order) and write every test's group for the
    controller. Every worker collects the same tests and orders them alike."""
    folder = getattr(config, "workerinput", {}).get(GROUPS_KEY)
    if folder is None:
        return
    groups = {item.nodeid: group_of(item) for item in items}

    def rank(item: pytest.Item) -> int:
        return 0 if groups[item.nodeid] == FORK_GROUP else 1 if groups[item.nodeid] else 2

    items.sort(key=rank)  # stable: collection order within each rank
    path = Path(folder) / f"{config.workerinput['workerid']}.json"
    part = path.with_suffix(".part")
    part.write_text(json.dumps({nodeid: g for nodeid, g in groups.items() if g is not None}))
    os.replace(part, path)


def groups_folder(config: pytest.Config) -> Path:
    """The controller's folder for the workers' group files (made at the first call)."""
    if not hasattr(config, "_xrd_groups_dir"):
        config._xrd_groups_dir = Path(tempfile.mkdtemp(prefix="xrd-test-groups-"))  # type: ignore[attr-defined]
    return config._xrd_groups_dir  # type: ignore[attr-defined]


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with the workers' groups as scopes, in the workers' order."""

    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False  # keep the order the workers gave (FORK_GROUP first)
        self._folder = groups_folder(config)
        self._groups: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._groups is None:
            self._groups = read_groups(self._folder)
        return self._groups.get(nodeid, nodeid)


def read_groups(folder: Path) -> dict[str, str]:
    """The groups the workers wrote (all alike: each collected the same tests); refused when none did."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise RuntimeError(f"no worker wrote its test groups to {folder}: cannot keep shared fixtures on one worker")
    first = json.loads(files[0].read_text())
    for other in files[1:]:
        if json.loads(other.read_text()) != first:
            raise RuntimeError(f"the workers' test groups differ: {files[0]} and {other}")
    return first


class WorkerTimes:
    """On the controller: each worker's test time (set-up + call + tear-down) and tests run, for one
    summary line, so a run shows how evenly the work was dealt (and which worker holds the long tail)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.tests: dict[str, int] = {}

    def add(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)  # set by xdist on the controller only
        if node is None:
            return
        worker = node.gateway.id
        self.seconds[worker] = self.seconds.get(worker, 0.0) + report.duration
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.tests[worker] = self.tests.get(worker, 0) + 1

    def summary(self) -> str:
        """``xdist workers: gw0 312 s (41 tests), gw1 ...`` or "" when no worker reported."""
        if not self.seconds:
            return ""
        parts = [f"{w} {self.seconds[w]:.0f} s ({self.tests.get(w, 0)} tests)" for w in sorted(self.seconds)]
        return "xdist workers (test time): " + ", ".join(parts)
