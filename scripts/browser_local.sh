#!/usr/bin/env bash
# The browser of the web interface's tests (tests/test_web_live.py): Debian's chromium, driven by
# Playwright for Python through /usr/bin/chromium (no browser download). Installed with apt when this
# runs as root on Debian and it is missing; otherwise says why not and leaves the tests to skip.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
    echo "browser_local.sh: no /usr/bin/chromium, and chromium is installed here only as root on Debian:" \
        "the browser tests will be skipped" >&2
    exit 0
fi
echo "browser_local.sh: installing Debian's chromium for the browser tests" >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
