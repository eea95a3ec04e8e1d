#!/usr/bin/env bash
# The README's test command: installs what the tests need (scripts/bootstrap.sh), then runs the whole
# suite. Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
# Two workers: the suite is sized for 2 cores (each test cluster has its own loopback addresses).
exec .venv/bin/python -m pytest -n 2 "$@"
