"""The core must stay free of Tango: it is imported by tools that have no Tango installed."""

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "pipeline_core"


def test_no_core_module_imports_tango_or_the_servers():
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("tango", "PyTango", "tango_servers")
            ]
    assert offenders == []
    assert len(list(CORE.rglob("*.py"))) >= 10


def test_importing_every_core_module_loads_no_tango():
    modules = sorted(
        ".".join(p.relative_to(CORE).with_suffix("").parts) for p in CORE.rglob("*.py") if p.stem != "__init__"
    )
    assert "live.stitch_stage" in modules and "formats.nexus" in modules  # the sub-packages are walked
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('pipeline_core.' + m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tango', 'PyTango')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=CORE.parent)
    assert out.stdout.strip() == ""
