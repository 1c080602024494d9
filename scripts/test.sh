#!/usr/bin/env bash
# The test suite, slow benchmark-wide checks included (they are what CI runs).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# the slowest tests are listed: CI must stay within 40 minutes on 2 cores
.venv/bin/python -m pytest -q --durations=20 "$@"
rc=$?
# pytest exits 5 when nothing was collected: that is a failure here, not a pass.
exit $rc
