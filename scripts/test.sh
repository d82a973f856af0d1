#!/usr/bin/env bash
# Install into ./.venv and run the checks: ruff, mypy on pipeline_core, then the whole pytest suite.
# This is the README's test command and what CI runs (.ci/run calls it).
#
# The reintegration jobs' Slurm tests need a cluster. One that answers `scontrol ping` (SLURM_CONF, or
# Slurm's default configuration) is used as it is. Otherwise, as root on Debian, scripts/slurm_local.sh
# starts a one-node cluster for the run (slurm-wlm + munge, installed if missing) and stops it at the end.
# Otherwise the Slurm tests are skipped, and the run says why: in pytest's summary (-rfEs names failures,
# errors and skips) and on its last line. XRD_TEST_SLURM=required (CI) makes a cluster that cannot be had an
# error instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/python -m mypy  # [tool.mypy] in pyproject.toml: pipeline_core/
bash scripts/browser_local.sh  # Debian's chromium for the web interface's browser tests

slurm_answers() {  # a controller answers with the current SLURM_CONF (or the default configuration)
    command -v scontrol >/dev/null && timeout 15 scontrol ping 2>/dev/null | grep -q " is UP"
}

started_slurm=""
stop_slurm() { if [ -n "$started_slurm" ]; then bash scripts/slurm_local.sh stop || true; fi; }
trap stop_slurm EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# why the Slurm tests cannot run ("" when they can); the tests add it to their skip reason
slurm_skip=""
if slurm_answers; then
    echo "test.sh: Slurm tests use the running cluster (${SLURM_CONF:-the default configuration})" >&2
elif [ "$(id -u)" != 0 ]; then
    slurm_skip="scripts/test.sh starts a one-node Slurm only as root (this is uid $(id -u))"
elif [ ! -f /etc/debian_version ]; then
    slurm_skip="scripts/test.sh starts a one-node Slurm only on Debian (slurm-wlm + munge from apt)"
else
    eval "$(bash scripts/slurm_local.sh env)"  # SLURM_CONF of the one-node cluster
    if slurm_answers; then  # started by someone else (another run): used, and left running
        echo "test.sh: Slurm tests use the one-node cluster already running ($SLURM_CONF)" >&2
    else
        start_log=$(mktemp)
        started_slurm=1  # stopped at the end, also what a failed start left running
        if slurm_env=$(bash scripts/slurm_local.sh start 2>"$start_log"); then
            eval "$slurm_env"
        else
            slurm_skip="scripts/slurm_local.sh start failed: $(tail -n 1 "$start_log")"
            unset SLURM_CONF
        fi
        cat "$start_log" >&2
        rm -f "$start_log"
    fi
fi
if [ -n "$slurm_skip" ] && [ "${XRD_TEST_SLURM:-}" = required ]; then
    echo "test.sh: XRD_TEST_SLURM=required, but no Slurm cluster: $slurm_skip" >&2
    exit 1
fi
export XRD_TEST_SLURM_SKIP="$slurm_skip"

# The tests run in parallel (pytest-xdist): most of their time is spent waiting (servers starting, Slurm,
# time-outs), so more workers than cores pays. XRD_TEST_WORKERS sets how many (0: none; also `-n N`
# among the arguments, which come last and win). Tests that share a live chain, or the Slurm cluster,
# run on one worker (tests/xdist_groups.py).
# pytest exit code 5 means "no tests ran": that is a failure here, as in CI.
status=0
.venv/bin/python -m pytest -q -rfEs -p no:cacheprovider -n "${XRD_TEST_WORKERS:-3}" "$@" || status=$?
if [ -n "$slurm_skip" ]; then
    echo "test.sh: the Slurm tests were skipped: $slurm_skip" >&2
fi
exit "$status"
