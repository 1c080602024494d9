#!/usr/bin/env bash
# The test suite, slow benchmark-wide checks included (they are what CI runs).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
.venv/bin/python -m pytest -q "$@"
rc=$?
# pytest exits 5 when nothing was collected: that is a failure here, not a pass.
exit $rc
