#!/usr/bin/env bash
# The README's test command: installs what the tests need (scripts/bootstrap.sh), then runs the whole
# suite. Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
