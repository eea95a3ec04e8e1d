"""Chart test helpers: render the chart with the real Helm 3 and Helm 4 binaries, cached per helm + values."""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "chart"
HELMS = {
    "helm3": ROOT / ".tools" / "helm-v3.18.0" / "helm",
    "helm4": ROOT / ".tools" / "helm-v4.1.4" / "helm",
}
RELEASE = "rel"
NAMESPACE = "cache"
HELM_TIMEOUT_S = 60
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


class RenderError(Exception):
    """helm template exited non-zero; .stderr holds Helm's message."""

    def __init__(self, stderr: str):
        super().__init__(stderr)
        self.stderr = stderr


def _freeze(values: dict | None) -> str:
    return json.dumps(values or {}, sort_keys=True)


@functools.lru_cache(maxsize=None)
def _render(helm: str, frozen_values: str, extra: tuple[str, ...]) -> tuple[str, tuple[dict, ...]]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(json.loads(frozen_values), f)
        f.flush()
        cmd = [str(HELMS[helm]), "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", f.name, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HELM_TIMEOUT_S)
    if proc.returncode != 0:
        raise RenderError(proc.stderr)
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    return proc.stdout, docs


def render_chart(helm: str, values: dict | None = None, *extra: str) -> list[dict]:
    """Rendered objects of `helm template` with `values` (a dict passed with -f) and extra args."""
    return [json.loads(json.dumps(d)) for d in _render(helm, _freeze(values), tuple(extra))[1]]


def render_text(helm: str, values: dict | None = None, *extra: str) -> str:
    """The raw YAML stream `helm template` printed."""
    return _render(helm, _freeze(values), tuple(extra))[0]


def render_error(helm: str, values: dict | None = None, *extra: str) -> str:
    """Helm's error message for values the chart must refuse (fails the test if Helm accepts them)."""
    try:
        _render(helm, _freeze(values), tuple(extra))
    except RenderError as e:
        return e.stderr
    raise AssertionError(f"helm accepted values it should refuse: {values} {extra}")


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    """The pod spec of a Pod, Job or StatefulSet."""
    if doc["kind"] == "Pod":
        return doc["spec"]
    return doc["spec"]["template"]["spec"]


def containers(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return spec.get("initContainers", []) + spec["containers"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_values(docs: list[dict]) -> list[str]:
    """Decoded values of every rendered Secret."""
    out = []
    for s in find(docs, "Secret"):
        out += [base64.b64decode(v).decode() for v in s.get("data", {}).values()]
        out += list(s.get("stringData", {}).values())
    return out
