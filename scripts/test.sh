#!/usr/bin/env bash
# Install into ./.venv and run the checks: ruff, mypy on pipeline_core, then the whole pytest suite.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/python -m mypy  # [tool.mypy] in pyproject.toml: pipeline_core/
# pytest exit code 5 means "no tests ran": that is a failure here, as in CI.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
