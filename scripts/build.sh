#!/usr/bin/env bash
# Builds and pushes the three artifacts: the Valkey image, the reconciler image and the chart.
# Usage: scripts/build.sh build|push image|reconciler|helm|all
# REGISTRY (default local-registry:5000) names the registry; the chart goes to oci://$REGISTRY/charts.
# CONTAINER_TOOL (default docker) may be podman or nerdctl. HELM_PLAIN_HTTP=true (the default for a
# local-registry:* or localhost:* registry) pushes the chart over plain HTTP.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

action="${1:-}"; target="${2:-}"
registry="${REGISTRY:-local-registry:5000}"
tool="${CONTAINER_TOOL:-docker}"

die() { printf 'build: %s\n' "$*" >&2; exit 1; }

# One place reads each version: the chart's version/appVersion and the reconciler's pyproject.
chart_version() { sed -n 's/^version:[[:space:]]*//p' chart/Chart.yaml | tr -d '"'; }
app_version() { sed -n 's/^appVersion:[[:space:]]*//p' chart/Chart.yaml | tr -d '"'; }
reconciler_version() { sed -n 's/^version = "\(.*\)"/\1/p' reconciler/pyproject.toml; }

helm_bin() {
  # A helm the user already has wins; otherwise the one scripts/bootstrap.sh installed.
  if command -v helm >/dev/null 2>&1; then command -v helm
  elif [ -x .tools/helm-v4.1.4/helm ]; then echo .tools/helm-v4.1.4/helm
  else die "helm not found: install Helm 3.18+ or run scripts/bootstrap.sh"; fi
}

need_engine() {
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found: install it or set CONTAINER_TOOL=podman|nerdctl"
  "$tool" info >/dev/null 2>&1 || die "$tool cannot reach a container engine: start it (or set CONTAINER_TOOL) and run again"
}

image_ref() { case "$1" in
  image) echo "$registry/valkey:$(app_version)";;
  reconciler) echo "$registry/valkey-reconciler:$(reconciler_version)";;
esac; }

build() { case "$1" in
  image) need_engine; "$tool" build -f image/Dockerfile -t "$(image_ref image)" .;;
  reconciler) need_engine; "$tool" build -f reconciler/Dockerfile -t "$(image_ref reconciler)" reconciler;;
  helm) local helm; helm="$(helm_bin)" || exit 1; mkdir -p dist; "$helm" package chart -d dist;;
  all) build image; build reconciler; build helm;;
  *) die "unknown target '$1': use image, reconciler, helm or all";;
esac; }

push() { case "$1" in
  image|reconciler) need_engine; "$tool" push "$(image_ref "$1")";;
  helm)
    local helm pkg="dist/valkey-$(chart_version).tgz" plain="${HELM_PLAIN_HTTP:-}"
    helm="$(helm_bin)" || exit 1
    [ -f "$pkg" ] || die "$pkg not found: run 'pnpm build:helm' first"
    if [ -z "$plain" ]; then case "$registry" in local-registry:*|localhost:*|127.*) plain=true;; *) plain=false;; esac; fi
    flags=(); [ "$plain" = true ] && flags+=(--plain-http)
    "$helm" push "$pkg" "oci://$registry/charts" "${flags[@]}";;
  all) push image; push reconciler; push helm;;
  *) die "unknown target '$1': use image, reconciler, helm or all";;
esac; }

case "$action" in
  build|push) "$action" "$target";;
  *) die "usage: scripts/build.sh build|push image|reconciler|helm|all";;
esac
