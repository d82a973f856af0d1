"""README: ``--method bbox,csr,opencl`` without an OpenCL device is refused with the reason, never a silent fallback.

``test_integrate`` checks the refusal where pyopencl is missing; this checks it where pyopencl *is*
installed but no OpenCL platform can be found (``OCL_ICD_VENDORS`` pointed at an empty folder, so
the check holds on a GPU machine too): pyFAI would otherwise fall back to another implementation.
"""

import os
import subprocess
import sys

import pytest

from .helpers import REPO

pytest.importorskip("pyopencl", reason="pyopencl is not installed here: test_integrate covers the refusal without it")

TRY_OPENCL = """
import sys
from pipeline_core.errors import ConfigError
from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings
try:
    IntegrationEngine(IntegrationSettings(sys.argv[1], bins=10, method=("bbox", "csr", "opencl")), (67, 32))
except ConfigError as exc:
    print(exc)
    sys.exit(3)
print("accepted")
"""


def test_opencl_without_an_opencl_platform_is_refused_where_pyopencl_is_installed(tmp_path, small_poni):
    (tmp_path / "no-icd").mkdir()
    env = {**os.environ, "OCL_ICD_VENDORS": str(tmp_path / "no-icd")}
    command = [sys.executable, "-c", TRY_OPENCL, str(small_poni)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, (done.stdout, done.stderr[-2000:])
    assert "integration method bbox,csr,opencl is not available on this machine" in done.stdout
    assert "opencl needs pyopencl and an OpenCL device" in done.stdout
