"""Turns a pod of the rendered StatefulSet (or a hook Job's pod) into local terms: resolved env, volumes as directories, and the valkey-server process started through the image's entrypoint."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .binaries import server_binary
from .nodes import Node, Passwords
from .store import SecretStore

#: Where memory-backed emptyDirs (`medium: Memory`) live when the machine has a tmpfs there: the
#: rendered valkey.conf holds primaryauth in clear text and the chart keeps it off disk.
SHM_ROOT = Path("/dev/shm")
#: Poll interval of the bounded waits on processes.
POLL_SECONDS = 0.05
#: Bound on a SIGKILLed process disappearing.
KILL_TIMEOUT_SECONDS = 5.0
#: Kubernetes' default terminationGracePeriodSeconds, used when the manifest sets none.
DEFAULT_GRACE_SECONDS = 30.0
#: The password variables of the entrypoint (docs/design.md, "The Valkey container").
PASSWORD_ENV = {f"VALKEY_{name.upper()}_PASSWORD": name
                for name in ("admin", "client", "replication", "reconciler", "monitor")}


class PodError(RuntimeError):
    """The manifest asks for something the local runner cannot play, or a pod cannot start."""


@dataclass
class EnvEntry:
    name: str
    value: str = field(repr=False)
    source: str  # "value", "secret:<name>/<key>", "configmap:<name>/<key>", "field:<path>"


def resolve_env(container: dict[str, Any], *, owner: str, fields: dict[str, str], store: SecretStore,
                configmaps: dict[str, dict[str, Any]]) -> list[EnvEntry]:
    """The container's `env` and `envFrom` with every reference resolved as the kubelet would:
    `secretKeyRef` from the local store, `configMapKeyRef` from the rendered ConfigMaps, `fieldRef`
    from `fields` (metadata.name, status.podIP, ...), and `$(VAR)` expanded against earlier entries."""
    out: dict[str, EnvEntry] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            if name not in store.secrets:
                if source["secretRef"].get("optional"):
                    continue
                store.get(name, "<any key>", needed_by=f"envFrom of {owner}")  # raises, naming the Secret
            for key, value in store.secrets[name].items():
                out[prefix + key] = EnvEntry(prefix + key, value, f"secret:{name}/{key}")
        elif "configMapRef" in source:
            name = source["configMapRef"]["name"]
            data = (configmaps.get(name) or {}).get("data")
            if data is None:
                if source["configMapRef"].get("optional"):
                    continue
                raise PodError(f"{owner}: envFrom names ConfigMap {name!r}, which the chart did not render")
            for key, value in data.items():
                out[prefix + key] = EnvEntry(prefix + key, str(value), f"configmap:{name}/{key}")
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            raw = str(item.get("value", ""))
            value = _expand(raw, out)
            out[name] = EnvEntry(name, value, "value")
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            sref = ref["secretKeyRef"]
            if sref.get("optional") and sref["key"] not in store.secrets.get(sref["name"], {}):
                continue
            value = store.get(sref["name"], sref["key"], needed_by=f"{name} of {owner}")
            out[name] = EnvEntry(name, value, f"secret:{sref['name']}/{sref['key']}")
        elif "configMapKeyRef" in ref:
            cref = ref["configMapKeyRef"]
            data = (configmaps.get(cref["name"]) or {}).get("data") or {}
            if cref["key"] not in data:
                if cref.get("optional"):
                    continue
                raise PodError(f"{name} of {owner} reads key {cref['key']!r} of ConfigMap {cref['name']!r}, "
                               "which the chart did not render")
            out[name] = EnvEntry(name, str(data[cref["key"]]), f"configmap:{cref['name']}/{cref['key']}")
        elif "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            if path not in fields:
                raise PodError(f"{name} of {owner} uses fieldRef {path!r}; the local runner provides "
                               f"{', '.join(sorted(fields))}")
            out[name] = EnvEntry(name, fields[path], f"field:{path}")
        else:
            raise PodError(f"{name} of {owner} uses valueFrom {sorted(ref)}; the local runner supports "
                           "secretKeyRef, configMapKeyRef and fieldRef")
    return list(out.values())


def _expand(raw: str, earlier: dict[str, EnvEntry]) -> str:
    """Kubernetes' `$(VAR)` expansion: earlier variables only, `$$` escapes, unknown names stay."""
    def sub(match: re.Match) -> str:
        if match.group(0).startswith("$$"):
            return match.group(0)[1:]
        entry = earlier.get(match.group(1))
        return entry.value if entry else match.group(0)
    return re.sub(r"\$\$\([A-Za-z_][A-Za-z0-9_]*\)|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, raw)


def rewrite_paths(env: list[EnvEntry], mounts: dict[str, Path]) -> None:
    """Env values that point into a mountPath are rewritten to that volume's local directory."""
    ordered = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)
    for entry in env:
        for mount_path, local in ordered:
            if entry.value == mount_path or entry.value.startswith(mount_path.rstrip("/") + "/"):
                entry.value = str(local) + entry.value[len(mount_path.rstrip("/")):]
                break


def check_address_free(ip: str, port: int, pod: str) -> None:
    """Fails, naming the address and the pod, when ip:port cannot be bound (in use, or not local)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As valkey-server does: connections of a stopped server lingering in TIME_WAIT do not block it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PodError(f"{ip}:{port} (pod {pod}) is already in use by another process: stop it "
                               f"(`ss -ltnp | grep {port}` shows which), or pick another loopback range "
                               "with --cluster-index N") from None
            if error.errno == errno.EADDRNOTAVAIL:
                raise PodError(f"{ip} (pod {pod}) is not an address of this machine: local mode needs "
                               "the whole 127.0.0.0/8 on loopback (Linux has it by default)") from None
            raise PodError(f"cannot bind {ip}:{port} for pod {pod}: {error}") from None


class PodNode(Node):
    """A Valkey pod as a local process: valkey_local's Node, but with exactly the environment the
    pod template gives (plus PATH and VALKEY_SERVER_BIN, the runner's stand-in for the image) and
    the templates the ConfigMap volume holds, never the repository's own."""

    def __init__(self, root: Path, ordinal: int, ip: str, *, engine: str, env: list[EnvEntry],
                 data_dir: Path | None, args: list[str]) -> None:
        values = {e.name: e.value for e in env}
        passwords = Passwords(**{user: values.get(var, "") for var, user in PASSWORD_ENV.items()})
        self.pod_env = env
        self.args = list(args)
        super().__init__(root, ordinal, ip, engine=engine, persistence=values.get("VALKEY_PERSISTENCE", ""),
                         passwords=passwords)
        if data_dir is not None:
            self.data_dir = data_dir

    def write_templates(self) -> None:  # the ConfigMap volume holds the templates
        return None

    def environment(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "VALKEY_SERVER_BIN": str(server_binary(self.engine))}
        env.update({e.name: e.value for e in self.pod_env})
        return env

    def start(self) -> None:
        if self.args:  # the container's args reach the server through the entrypoint's "$@"
            raise PodError("the Valkey container sets args; the local runner starts the entrypoint without any")
        super().start()


# --- Processes started by an earlier runner invocation ----------------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":  # a zombie of ours: reap it
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def is_pod_process(pid: int | None, data_dir: Path) -> bool:
    """True when `pid` is alive and is a valkey-server working in this pod's data dir (the server
    chdirs to its `dir`, and rewrites its command line, so the working directory is what identifies
    it). A recycled PID never matches, so the runner never signals a stranger."""
    if not pid or not _alive(pid):
        return False
    try:
        return os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(data_dir)
    except OSError:
        return False


def stop_pid(pid: int, data_dir: Path, grace_seconds: float) -> None:
    """SIGTERM (after SIGCONT), wait up to the grace period, SIGKILL: what the kubelet does."""
    if not is_pod_process(pid, data_dir):
        return
    for signum in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
    if wait_gone(pid, grace_seconds):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not wait_gone(pid, KILL_TIMEOUT_SECONDS):
        raise PodError(f"PID {pid} survived SIGKILL for {KILL_TIMEOUT_SECONDS} s")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(POLL_SECONDS)
    return not _alive(pid)


def revision(template: dict[str, Any], env: list[EnvEntry], files: dict[str, dict[str, str]]) -> str:
    """The pod's effective revision: its template without annotations (the chart's checksum
    annotations change on every `helm template`, whose random passwords the store replaces), its
    resolved env (fieldRefs by path: they differ per pod) and the ConfigMap files it mounts. A change rolls the pod, as Kubernetes would."""
    spec = {k: v for k, v in template.items() if k != "metadata"}
    labels = (template.get("metadata") or {}).get("labels") or {}
    blob = json.dumps({"spec": spec, "labels": labels, "env": [(e.name, e.source if e.source.startswith("field:") else e.value)
                                                          for e in env],
                       "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

