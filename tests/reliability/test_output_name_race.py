"""Processes racing for one output name: each gets its own file, none overwritten, all complete.

Three ``xrd-pipeline integrate -o same.nxs`` started at the same moment (as a user re-running a
command in three terminals, or a script's loop without waiting): the name is reserved with
O_EXCL on its ``.part`` and published with a hard link, so the losers take ``_v001``, ``_v002``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline_core.formats.nexus import read_merged

from ..helpers import REPO, SMALL_PONI, write_small_acquisition

RACERS = 3


def test_three_integrates_racing_for_one_name_give_three_complete_files(tmp_path, ledger):
    raw = tmp_path / "raw"
    write_small_acquisition(raw, n_parts=2, frames_per_part=20)
    poni = tmp_path / "small.poni"
    poni.write_text(SMALL_PONI)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "same.nxs"
    command = [sys.executable, "-m", "pipeline_core.cli", "integrate", str(raw), "--poni", str(poni),
               "--bins", "30", "-o", str(target)]  # fmt: skip
    procs = [
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(RACERS)
    ]
    ledger.fault("processes racing for one output name", RACERS - 1)
    results = []
    for proc in procs:
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(Path(out_text.strip()))
    expected = ["same.nxs", "same_v001.nxs", "same_v002.nxs"]
    assert sorted(p.name for p in results) == expected, results  # each printed its own file
    assert sorted(p.name for p in out.iterdir()) == expected  # no .part left, nothing else
    first = read_merged(results[0])
    for path in results:
        m = read_merged(path)
        assert m["status"] == "complete" and m["failed_frames"] == []
        assert m["frame_number"].tolist() == list(range(1, 41))
        np.testing.assert_array_equal(m["data"], first["data"])  # whole, not interleaved with another's rows
        ledger.checked(len(m["frame_number"]))
