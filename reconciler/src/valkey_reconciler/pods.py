"""The reconciler's one interface to pods: list them with revision and placement, delete one, emit an event — on the Kubernetes API, or on the local runner's pod socket."""

from __future__ import annotations

import abc
import datetime as dt
import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Mapping

from valkey_reconciler.errors import ReconcilerError

# The StatefulSet controller labels each pod with the revision of the template it was created from.
REVISION_LABEL = "controller-revision-hash"
ON_DELETE = "OnDelete"
ROLLING_UPDATE = "RollingUpdate"
API_TIMEOUT_S = 10.0
# The local runner recreates a deleted pod before it answers (stop: the pod's grace period; start: ready).
LOCAL_API_TIMEOUT_S = 180.0
LOCAL_API_ENV = "VALKEY_LOCAL_POD_API"
COMPONENT = "valkey-reconciler"
EVENT_NORMAL = "Normal"
EVENT_WARNING = "Warning"
# Kubernetes caps an Event's message at 1 KiB in practice (kubectl shows it in one line).
EVENT_MESSAGE_MAX = 1024
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


class PodApiError(ReconcilerError):
    """The pod interface could not read, delete or report (no RBAC, API unreachable, runner gone)."""


@dataclass(frozen=True)
class PodInfo:
    """One pod of the StatefulSet as the API reports it."""

    name: str
    ordinal: int
    revision: str | None  # the pod's controller-revision-hash
    uid: str | None  # changes whenever the pod is recreated
    ip: str | None = None
    ready: bool = False
    terminating: bool = False
    node: str | None = None  # Kubernetes node


@dataclass(frozen=True)
class SetInfo:
    """The StatefulSet's update strategy and rollout status."""

    name: str
    uid: str | None
    strategy: str
    replicas: int
    update_revision: str | None
    current_revision: str | None
    updated_replicas: int = 0
    ready_replicas: int = 0
    partition: int = 0
    generation: int = 0
    observed_generation: int = 0


@dataclass(frozen=True)
class PodSnapshot:
    """The StatefulSet and its pods (a pod that does not exist is absent) at one moment."""

    statefulset: SetInfo
    pods: tuple[PodInfo, ...]

    def pod(self, ordinal: int) -> PodInfo | None:
        return next((p for p in self.pods if p.ordinal == ordinal), None)

    def outdated(self, pod: PodInfo) -> bool:
        return is_outdated(pod, self.statefulset)


def is_outdated(pod: PodInfo, sts: SetInfo) -> bool:
    """True when the pod was created from an older template than the StatefulSet's updateRevision.

    Unknown on either side (a pod the controller did not label, a StatefulSet whose status is not
    written yet) counts as up to date: the roll never restarts a pod on a guess."""
    if not pod.revision or not sts.update_revision:
        return False
    return pod.revision != sts.update_revision


def rollout_in_progress(sts: SetInfo) -> str | None:
    """Why Kubernetes itself is still replacing pods (RollingUpdate), or None.

    Under OnDelete, currentRevision stays behind updateRevision until every pod was deleted: that is the
    reconciler's own roll, not a rollout to wait for."""
    if sts.strategy != ROLLING_UPDATE:
        return None
    if sts.observed_generation < sts.generation:
        return (f"the StatefulSet controller has not yet seen generation {sts.generation} "
                f"(observed {sts.observed_generation})")
    due = max(0, sts.replicas - sts.partition)
    if sts.update_revision and sts.current_revision != sts.update_revision and sts.updated_replicas < due:
        return (f"RollingUpdate to revision {sts.update_revision}: {sts.updated_replicas} of {due} pod(s) "
                "replaced so far")
    if sts.ready_replicas < sts.replicas:
        return f"RollingUpdate: {sts.ready_replicas} of {sts.replicas} pod(s) ready"
    return None


class PodApi(abc.ABC):
    """Pods of one StatefulSet: read, delete (the controller recreates them), and report to people."""

    @abc.abstractmethod
    def describe(self) -> str: ...

    @abc.abstractmethod
    def snapshot(self) -> PodSnapshot: ...

    @abc.abstractmethod
    def delete(self, pod: PodInfo) -> None:
        """Delete exactly this pod (by uid where the API allows); its controller creates it again."""

    @abc.abstractmethod
    def event(self, reason: str, message: str, *, pod: str | None = None, warning: bool = False,
              facts: Mapping[str, Any] | None = None) -> None:
        """Record an Event on the StatefulSet (`kubectl describe statefulset` lists it)."""


def ordinal_of(pod_name: str, statefulset: str) -> int | None:
    prefix = statefulset + "-"
    if not pod_name.startswith(prefix) or not pod_name[len(prefix):].isdigit():
        return None
    return int(pod_name[len(prefix):])


# --- Kubernetes ------------------------------------------------------------------------------------------


def _api_error(exc: Exception, action: str) -> PodApiError:
    status = getattr(exc, "status", None)
    reason = (getattr(exc, "reason", None) or str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    hint = ""
    if status in (401, 403):
        hint = ("; the reconciler's Role must allow it (the chart grants get on the StatefulSet, delete on this "
                "release's pod names, create/patch on events)")
    return PodApiError(f"Kubernetes API: {action} failed ({status or type(exc).__name__}: {reason}){hint}",
                       status=status, action=action)


def _ready(pod: Any) -> bool:
    for cond in (getattr(pod.status, "conditions", None) or []) if pod.status else []:
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def pod_info(pod: Any, statefulset: str) -> PodInfo | None:
    """A V1Pod → PodInfo (None for a pod that is not one of the StatefulSet's ordinals)."""
    meta = pod.metadata
    ordinal = ordinal_of(meta.name, statefulset)
    if ordinal is None:
        return None
    status = pod.status
    return PodInfo(
        name=meta.name, ordinal=ordinal, revision=(meta.labels or {}).get(REVISION_LABEL), uid=meta.uid,
        ip=getattr(status, "pod_ip", None) if status else None, ready=_ready(pod),
        terminating=meta.deletion_timestamp is not None,
        node=getattr(pod.spec, "node_name", None) if pod.spec else None,
    )


def set_info(sts: Any) -> SetInfo:
    """A V1StatefulSet → SetInfo. Kubernetes defaults updateStrategy to RollingUpdate."""
    spec, status = sts.spec, sts.status
    strategy = (spec.update_strategy.type if spec.update_strategy and spec.update_strategy.type
                else ROLLING_UPDATE)
    rolling = spec.update_strategy.rolling_update if spec.update_strategy else None
    partition = int(rolling.partition or 0) if rolling is not None else 0
    return SetInfo(
        name=sts.metadata.name, uid=sts.metadata.uid, strategy=strategy,
        replicas=int(spec.replicas if spec.replicas is not None else 1),
        update_revision=status.update_revision if status else None,
        current_revision=status.current_revision if status else None,
        updated_replicas=int((status.updated_replicas if status else 0) or 0),
        ready_replicas=int((status.ready_replicas if status else 0) or 0),
        partition=partition, generation=int(sts.metadata.generation or 0),
        observed_generation=int((status.observed_generation if status else 0) or 0),
    )


class KubePods(PodApi):
    """The StatefulSet `valkey-<name>` through the Kubernetes API: get it by name, get each pod by name
    (ordinals 0 … count−1), delete a pod with a uid precondition, create Events on the StatefulSet."""

    def __init__(self, core: Any, apps: Any, namespace: str, statefulset: str, count: int,
                 identity: str | None = None) -> None:
        self.core = core
        self.apps = apps
        self.namespace = namespace
        self.statefulset = statefulset
        self.count = count
        self.identity = identity or os.environ.get("HOSTNAME") or COMPONENT
        self._sts: SetInfo | None = None

    def describe(self) -> str:
        return f"StatefulSet {self.namespace}/{self.statefulset} (Kubernetes API)"

    def snapshot(self) -> PodSnapshot:
        try:
            raw = self.apps.read_namespaced_stateful_set(self.statefulset, self.namespace,
                                                        _request_timeout=API_TIMEOUT_S)
        except Exception as exc:
            raise _api_error(exc, f"get statefulset {self.statefulset}") from None
        self._sts = set_info(raw)
        pods = []
        for ordinal in range(max(self.count, self._sts.replicas)):
            name = f"{self.statefulset}-{ordinal}"
            try:
                pod = self.core.read_namespaced_pod(name, self.namespace, _request_timeout=API_TIMEOUT_S)
            except Exception as exc:
                if getattr(exc, "status", None) == HTTP_NOT_FOUND:
                    continue  # deleted and not yet recreated
                raise _api_error(exc, f"get pod {name}") from None
            info = pod_info(pod, self.statefulset)
            if info is not None:
                pods.append(info)
        return PodSnapshot(self._sts, tuple(pods))

    def delete(self, pod: PodInfo) -> None:
        from kubernetes import client

        # The uid precondition: never delete the replacement of the pod the decision was made about.
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=pod.uid) if pod.uid else None)
        try:
            self.core.delete_namespaced_pod(pod.name, self.namespace, body=body, _request_timeout=API_TIMEOUT_S)
        except Exception as exc:
            if getattr(exc, "status", None) in (HTTP_NOT_FOUND, HTTP_CONFLICT):
                return  # already gone, or already replaced: the caller waits for the new pod either way
            raise _api_error(exc, f"delete pod {pod.name}") from None

    def event(self, reason: str, message: str, *, pod: str | None = None, warning: bool = False,
              facts: Mapping[str, Any] | None = None) -> None:
        from kubernetes import client

        now = dt.datetime.now(dt.timezone.utc)
        sts_uid = self._sts.uid if self._sts else None
        related = (client.V1ObjectReference(api_version="v1", kind="Pod", name=pod, namespace=self.namespace)
                   if pod else None)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{self.statefulset}.", namespace=self.namespace),
            involved_object=client.V1ObjectReference(api_version="apps/v1", kind="StatefulSet",
                                                     name=self.statefulset, namespace=self.namespace,
                                                     uid=sts_uid),
            related=related, reason=reason, message=message[:EVENT_MESSAGE_MAX],
            type=EVENT_WARNING if warning else EVENT_NORMAL, count=1, first_timestamp=now, last_timestamp=now,
            source=client.V1EventSource(component=COMPONENT), reporting_component=COMPONENT,
            reporting_instance=self.identity[:128], action=reason,
        )
        try:
            self.core.create_namespaced_event(self.namespace, body, _request_timeout=API_TIMEOUT_S)
        except Exception as exc:
            raise _api_error(exc, f"create event {reason}") from None


# --- The local runner --------------------------------------------------------------------------------------


class LocalPods(PodApi):
    """The local runner's pods through its UNIX socket (`VALKEY_LOCAL_POD_API`): one JSON request line,
    one JSON reply line per connection. Operations: `snapshot`; `delete` {pod, uid} (the runner stops the
    pod and starts it again from the applied StatefulSet, then answers); `event` {reason, message, type,
    pod, facts} (written to the release's events.jsonl)."""

    def __init__(self, path: str, timeout: float = LOCAL_API_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout

    def describe(self) -> str:
        return f"local runner pod API {self.path}"

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as exc:
            raise PodApiError(f"{self.describe()}: {request.get('op')} failed: {exc}; is the local runner "
                              "(valkey-local) still running this hook?", op=request.get("op")) from None
        try:
            reply = json.loads(data)
        except ValueError:
            raise PodApiError(f"{self.describe()}: {request.get('op')}: unreadable reply", op=request.get("op")) \
                from None
        if not reply.get("ok"):
            raise PodApiError(f"{self.describe()}: {request.get('op')} refused: {reply.get('error')}",
                              op=request.get("op"))
        return reply

    def snapshot(self) -> PodSnapshot:
        reply = self._call({"op": "snapshot"})
        s = reply["statefulset"]
        sts = SetInfo(name=s["name"], uid=s.get("uid"), strategy=s["strategy"], replicas=int(s["replicas"]),
                      update_revision=s.get("update_revision"), current_revision=s.get("current_revision"),
                      updated_replicas=int(s.get("updated_replicas", 0)), ready_replicas=int(s.get("ready_replicas", 0)),
                      partition=int(s.get("partition", 0)), generation=int(s.get("generation", 0)),
                      observed_generation=int(s.get("observed_generation", 0)))
        pods = tuple(PodInfo(name=p["name"], ordinal=int(p["ordinal"]), revision=p.get("revision"),
                             uid=p.get("uid"), ip=p.get("ip"), ready=bool(p.get("ready")),
                             terminating=bool(p.get("terminating")), node=p.get("node"))
                     for p in reply["pods"])
        return PodSnapshot(sts, pods)

    def delete(self, pod: PodInfo) -> None:
        self._call({"op": "delete", "pod": pod.name, "uid": pod.uid})

    def event(self, reason: str, message: str, *, pod: str | None = None, warning: bool = False,
              facts: Mapping[str, Any] | None = None) -> None:
        self._call({"op": "event", "reason": reason, "message": message, "pod": pod,
                    "type": EVENT_WARNING if warning else EVENT_NORMAL, "facts": dict(facts or {})})


def make_pod_api(settings: Any, log: Any = None, environ: Mapping[str, str] | None = None) -> PodApi | None:
    """The local runner's socket when it offers one, the Kubernetes API inside a cluster (pod address
    scheme and a cluster name), else None: pods cannot be restarted from here (explicit --node runs)."""
    environ = os.environ if environ is None else environ
    local = environ.get(LOCAL_API_ENV)
    if local:
        return LocalPods(local)
    if not environ.get("KUBERNETES_SERVICE_HOST") or getattr(settings, "explicit_nodes", False) \
            or not getattr(settings, "cluster_name", None):
        return None
    try:
        from kubernetes import client, config

        config.load_incluster_config()
        core, apps = client.CoreV1Api(), client.AppsV1Api()
    except Exception as exc:  # no ServiceAccount token: the roll cannot run, and says so
        if log is not None:
            log.warning("pod_api_unavailable", reason=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    return KubePods(core, apps, settings.namespace, f"valkey-{settings.cluster_name}", settings.expected_pods)
