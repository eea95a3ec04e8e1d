"""The runner's stand-in for the part of the Kubernetes API the reconciler uses while a hook Job runs: the applied StatefulSet and its pods (revision, readiness), pod deletion (the pod is recreated from the applied StatefulSet, as its controller would) and Events — over a UNIX socket, one JSON line each way."""

from __future__ import annotations

import collections
import json
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .nodes import node_ip

if TYPE_CHECKING:  # the runner imports this module
    from .manifests import Rendered
    from .runner import Runner
    from .store import SecretStore

#: The variable the runner sets for hook Jobs; valkey_reconciler.pods reads it (LOCAL_API_ENV).
POD_API_ENV = "VALKEY_LOCAL_POD_API"
SOCKET_NAME = "pod-api.sock"
#: A UNIX socket path must fit in sun_path (108 bytes on Linux, with its NUL).
MAX_SOCKET_PATH = 100
#: How often the serving thread checks whether it must stop.
ACCEPT_POLL_SECONDS = 0.2
#: Bound on reading one request line from the reconciler.
REQUEST_TIMEOUT_SECONDS = 10.0
MAX_REQUEST_BYTES = 1 << 20
#: Bound on the serving thread stopping once the hook has exited: a pod restart it is still doing for a
#: killed Job is finished first (stop: up to the grace period; start: up to the pod ready bound).
STOP_TIMEOUT_SECONDS = 240.0


class PodApiServer:
    """Serves the applied StatefulSet of one release while a hook runs (a context manager)."""

    def __init__(self, runner: "Runner", applied: "Rendered", store: "SecretStore") -> None:
        self.runner = runner
        self.applied = applied
        self.store = store
        self.sts = applied.statefulset
        self.name = self.sts["metadata"]["name"]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._tmpdir: str | None = None
        path = runner.dir / SOCKET_NAME
        if len(str(path)) > MAX_SOCKET_PATH:
            self._tmpdir = tempfile.mkdtemp(prefix="valkey-local-")
            path = Path(self._tmpdir) / SOCKET_NAME
        self.path = path
        self.update_revision = self._update_revision()

    def _update_revision(self) -> str:
        """The revision a pod created now from the applied StatefulSet gets (the same for every ordinal)."""
        pods = self.runner.state.get("pods", {})
        ip = next((p["ip"] for p in pods.values() if p["ordinal"] == 0), None) \
            or node_ip(self.runner.state["cluster_index"], 0)
        return self.runner.plan_pod(self.applied, 0, ip, self.store).revision

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "PodApiServer":
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(8)
        sock.settimeout(ACCEPT_POLL_SECONDS)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="pod-api", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
        if self._sock is not None:
            self._sock.close()
        self.path.unlink(missing_ok=True)
        if self._tmpdir:
            os.rmdir(self._tmpdir)

    def env(self) -> dict[str, str]:
        return {POD_API_ENV: str(self.path)}

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # One connection at a time: the StatefulSet controller handles one pod change at a time too.
            with conn:
                conn.settimeout(REQUEST_TIMEOUT_SECONDS)
                try:
                    data = b""
                    while not data.endswith(b"\n") and len(data) < MAX_REQUEST_BYTES:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    reply = self.handle(json.loads(data))
                except Exception as error:  # answered to the reconciler, which reports it
                    reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass  # the reconciler is gone (killed mid-request): the pod change is done anyway

    # --- operations --------------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        with self._lock:
            if op == "snapshot":
                return self.snapshot()
            if op == "delete":
                return self.delete(str(request.get("pod")), request.get("uid"))
            if op == "event":
                return self.record(request)
        return {"ok": False, "error": f"unknown operation {op!r}: snapshot, delete and event are offered"}

    def _uid(self, name: str, pod: dict[str, Any]) -> str | None:
        return f"{name}-{pod['pid']}" if pod.get("pid") else None

    def snapshot(self) -> dict[str, Any]:
        runner = self.runner
        pods = []
        for name, pod in sorted(runner.state.get("pods", {}).items(), key=lambda item: item[1]["ordinal"]):
            running = runner._running(name)
            pods.append({"name": name, "ordinal": pod["ordinal"], "revision": pod.get("revision"),
                         "uid": self._uid(name, pod) if running else None, "ip": pod["ip"], "ready": running,
                         "terminating": False, "node": "localhost"})
        strategy = self.sts["spec"].get("updateStrategy") or {}
        revisions = collections.Counter(p["revision"] for p in pods)
        current = revisions.most_common(1)[0][0] if revisions else self.update_revision
        return {"ok": True, "pods": pods, "statefulset": {
            "name": self.name, "uid": None, "strategy": strategy.get("type", "RollingUpdate"),
            "replicas": int(self.sts["spec"].get("replicas", 1)),
            "partition": int((strategy.get("rollingUpdate") or {}).get("partition", 0)),
            "update_revision": self.update_revision, "current_revision": current,
            "updated_replicas": revisions.get(self.update_revision, 0),
            "ready_replicas": sum(1 for p in pods if p["ready"]), "generation": 1, "observed_generation": 1}}

    def delete(self, name: str, uid: str | None) -> dict[str, Any]:
        runner = self.runner
        pods = runner.state.get("pods", {})
        if name not in pods:
            return {"ok": False, "error": f"pod {name} does not exist (pods: {', '.join(sorted(pods))})"}
        pod = pods[name]
        if uid and self._uid(name, pod) != uid:
            return {"ok": True, "note": "already replaced"}  # Kubernetes: the uid precondition fails
        runner.stop_pods([name], "deleted through the pod API", forget=False)
        plan = runner.plan_pod(self.applied, pod["ordinal"], pod["ip"], self.store)
        runner.start_pods([plan], "recreated by the StatefulSet")
        return {"ok": True}

    def record(self, request: dict[str, Any]) -> dict[str, Any]:
        kind = str(request.get("type") or "Normal")
        reason = str(request.get("reason") or "")
        message = str(request.get("message") or "")
        self.runner.event(event="k8s_event", object=f"StatefulSet/{self.name}", type=kind, reason=reason,
                          message=message, pod=request.get("pod"), facts=request.get("facts") or {})
        self.runner.say(f"event on StatefulSet {self.name}: {kind} {reason}: {message}")
        return {"ok": True}
