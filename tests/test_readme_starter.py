"""README's Starter set-up, run as written (the install folder made local) on the embedded database:
the property is stored where the Starter reads it, and the folder holds the servers by their names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .helpers import REPO

WRITTEN_PATH = "/opt/xrd-pipeline/.venv/bin"


def readme_starter_script() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**Tango's Starter**") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_starter_script_sets_start_ds_path(tmp_path):
    from tango_servers.embedded_db import EmbeddedDatabase, free_port

    bin_dir = Path(sys.executable).parent
    script = readme_starter_script()
    assert WRITTEN_PATH in script
    db = EmbeddedDatabase(tmp_path / "db", free_port()).start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", script.replace(WRITTEN_PATH, str(bin_dir))],
            env={**os.environ, "TANGO_HOST": db.tango_host},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        db.stop()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([str(bin_dir)])
    for server in ("XrdStitcher", "XrdIntegrator", "XrdMerger", "XrdSimulator"):  # what the Starter runs
        assert os.access(bin_dir / server, os.X_OK), f"{server} is not an executable in {bin_dir}"
