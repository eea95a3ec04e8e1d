"""Renders the chart with `helm template` and sorts the manifests into what the local runner plays: Secrets, ConfigMaps, StatefulSets and hook Jobs."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from .nodes import REPO_ROOT

CHART_DIR = REPO_ROOT / "chart"
#: The Helm that scripts/bootstrap.sh installs, used when no `helm` is on PATH.
BUNDLED_HELM = REPO_ROOT / ".tools" / "helm-v4.1.4" / "helm"
#: Bound on one `helm template` (or post-renderer) run.
RENDER_TIMEOUT_SECONDS = 120.0

HOOK_ANNOTATION = "helm.sh/hook"
HOOK_WEIGHT_ANNOTATION = "helm.sh/hook-weight"
#: Helm's hook events that an install or an upgrade fires, in the order the runner meets them.
INSTALL_PHASES = ("pre-install", "post-install")
UPGRADE_PHASES = ("pre-upgrade", "post-upgrade")


class RenderError(RuntimeError):
    """helm is missing, or `helm template` / the post-renderer failed; nothing was changed."""


def find_helm(explicit: str | None = None) -> str:
    """The helm to run: --helm, else a `helm` on PATH, else the bundled .tools/helm-v4.1.4/helm."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise RenderError(f"--helm {explicit!r} is not an executable file: point it at a helm binary")
        return explicit
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    if BUNDLED_HELM.is_file() and os.access(BUNDLED_HELM, os.X_OK):
        return str(BUNDLED_HELM)
    raise RenderError(
        "helm is not installed: no `helm` on PATH and no .tools/helm-v4.1.4/helm. "
        "Run scripts/bootstrap.sh (it fetches Helm 3 and 4 into .tools/), or install Helm "
        "(https://helm.sh/docs/intro/install/) and put it on PATH."
    )


def helm_template(
    helm: str,
    release: str,
    namespace: str,
    value_args: Sequence[str],
    *,
    chart: Path = CHART_DIR,
    upgrade: bool = False,
    post_renderer: str | None = None,
) -> str:
    """The YAML stream `helm template` renders (then piped through `post_renderer`, Helm's contract:
    manifests on stdin, manifests on stdout). The runner applies the post-renderer itself so it works
    the same with Helm 3 and Helm 4 (whose --post-renderer takes only plugins)."""
    command = [helm, "template", release, str(chart), "--namespace", namespace, *value_args]
    if upgrade:
        command.append("--is-upgrade")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_SECONDS,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RenderError(f"`helm template` did not finish within {RENDER_TIMEOUT_SECONDS:.0f} s") from None
    if done.returncode != 0:
        errors = "\n".join(line for line in done.stderr.splitlines() if "found symbolic link" not in line)
        raise RenderError(f"`helm template` rejected the values (exit {done.returncode}); nothing was "
                          f"changed. Fix the values named below:\n{errors.strip()}")
    text = done.stdout
    if post_renderer:
        if not (os.path.isfile(post_renderer) and os.access(post_renderer, os.X_OK)):
            raise RenderError(f"--post-renderer {post_renderer!r} is not an executable file")
        try:
            post = subprocess.run([post_renderer], input=text, capture_output=True, text=True,
                                  timeout=RENDER_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise RenderError(f"the post-renderer {post_renderer} did not finish within "
                              f"{RENDER_TIMEOUT_SECONDS:.0f} s") from None
        if post.returncode != 0:
            raise RenderError(f"the post-renderer {post_renderer} failed (exit {post.returncode}); "
                              f"nothing was changed:\n{post.stderr.strip()}")
        text = post.stdout
    return text


@dataclass(frozen=True)
class Hook:
    """One hook Job: the phases it runs in (from `helm.sh/hook`) and its weight."""

    name: str
    phases: tuple[str, ...]
    weight: int
    manifest: dict[str, Any] = field(repr=False)

    @property
    def container(self) -> dict[str, Any]:
        return job_container(self.manifest)


def job_container(job: dict[str, Any]) -> dict[str, Any]:
    """The one container of a Job's pod template (the chart's Jobs have exactly one)."""
    containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    if len(containers) != 1:
        raise RenderError(f"Job {job['metadata']['name']} has {len(containers)} containers; "
                          "the local runner runs Jobs with exactly one (the reconciler)")
    return containers[0]


@dataclass
class Rendered:
    """The manifests of one render, sorted by what the runner does with them."""

    text: str
    objects: list[dict[str, Any]]
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    statefulsets: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)
    cronjobs: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def hooks_for(self, phase: str) -> list[Hook]:
        """Hook Jobs of `phase` in Helm's order: by weight, then by name."""
        return sorted((h for h in self.hooks if phase in h.phases), key=lambda h: (h.weight, h.name))

    @property
    def statefulset(self) -> dict[str, Any]:
        if len(self.statefulsets) != 1:
            raise RenderError(f"the chart rendered {len(self.statefulsets)} StatefulSets; the local "
                              "runner plays exactly one (the Valkey pods)")
        return self.statefulsets[0]


def parse(text: str) -> Rendered:
    """Splits the YAML stream; hook resources go to `hooks` (Jobs) or `ignored` (test pods, others)."""
    try:
        objects = [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind")]
    except yaml.YAMLError as error:
        raise RenderError(f"the rendered manifests are not valid YAML: {error}") from None
    rendered = Rendered(text=text, objects=objects)
    for obj in objects:
        kind = obj["kind"]
        meta = obj.get("metadata") or {}
        name = meta.get("name", "?")
        annotations = meta.get("annotations") or {}
        hook = annotations.get(HOOK_ANNOTATION)
        if hook:
            phases = tuple(p.strip() for p in str(hook).split(",") if p.strip())
            if kind == "Job":
                try:
                    weight = int(str(annotations.get(HOOK_WEIGHT_ANNOTATION, "0")).strip())
                except ValueError:
                    raise RenderError(f"Job {name}: {HOOK_WEIGHT_ANNOTATION} "
                                      f"{annotations[HOOK_WEIGHT_ANNOTATION]!r} is not an integer") from None
                rendered.hooks.append(Hook(name=name, phases=phases, weight=weight, manifest=obj))
            else:
                rendered.ignored.append(f"{kind}/{name} (hook {hook})")
            continue
        if kind == "Secret":
            rendered.secrets[name] = obj
        elif kind == "ConfigMap":
            rendered.configmaps[name] = obj
        elif kind == "StatefulSet":
            rendered.statefulsets.append(obj)
        elif kind == "CronJob":
            rendered.cronjobs.append(obj)
        else:
            rendered.ignored.append(f"{kind}/{name}")
    return rendered


def redacted(rendered: Rendered) -> str:
    """The manifests with every Secret's values replaced, for the state dir's copy."""
    out = []
    for obj in rendered.objects:
        if obj["kind"] == "Secret":
            obj = {**obj}
            for section in ("data", "stringData"):
                if obj.get(section):
                    obj[section] = {key: "<in the local secret store>" for key in obj[section]}
        out.append(yaml.safe_dump(obj, sort_keys=False))
    return "---\n" + "---\n".join(out)
