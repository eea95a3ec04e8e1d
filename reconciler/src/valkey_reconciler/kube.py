"""Pod placement (Kubernetes node and zone) read through the Kubernetes API, once any rollout Kubernetes itself runs has finished."""

from __future__ import annotations

import os
from typing import Any, Sequence

from valkey_reconciler.pods import PodApi, PodApiError, make_pod_api, rollout_in_progress
from valkey_reconciler.view import Placement
from valkey_reconciler.waits import wait_until

ZONE_LABEL = "topology.kubernetes.io/zone"
API_TIMEOUT_S = 5.0
ROLLOUT_POLL_S = 1.0


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def pod_name(cluster_name: str, ordinal: int) -> str:
    return f"valkey-{cluster_name}-{ordinal}"


def wait_for_rollout(settings: Any, log: Any, api: PodApi | None = None) -> None:
    """Wait (bounded by the run's timeout) while Kubernetes replaces pods itself (updateStrategy
    RollingUpdate): planning against pods that restart under the reconciler would be planning on sand.

    Under OnDelete there is nothing to wait for (the reconciler's own roll restarts the pods). When the
    StatefulSet cannot be read (no pod interface, or an older Role without `get` on it) this says so and
    goes on."""
    api = api if api is not None else make_pod_api(settings, log)
    if api is None:
        return
    logged: list[str] = []

    def pending() -> str | None:
        why = rollout_in_progress(api.snapshot().statefulset)
        if why and not logged:
            log.info("rollout_waiting", reason=why, message="Kubernetes is replacing pods (RollingUpdate); "
                                                            "planning starts once every pod is replaced and ready")
            logged.append(why)
        return why

    try:
        waited = wait_until(pending, settings.timeout, "the StatefulSet's RollingUpdate to finish",
                            poll=ROLLOUT_POLL_S)
    except PodApiError as exc:
        log.warning("rollout_unknown", reason=str(exc), message="cannot read the StatefulSet; planning without "
                                                                "waiting for a rollout")
        return
    if logged:
        log.info("rollout_finished", waited_s=round(waited, 3))


def placements(settings: Any, log: Any) -> list[Placement | None]:
    """Placement per ordinal, or None for each where it cannot be read (outside Kubernetes, no RBAC, …).

    Called first by every `reconcile` and `drain`: it waits for a RollingUpdate in progress to finish
    (wait_for_rollout), since the pods it replaces may also move to other Kubernetes nodes.
    Missing placement only weakens the replica spreading preference (it falls back to distinct IPs).
    """
    wait_for_rollout(settings, log)
    count = settings.expected_pods
    if not in_cluster() or settings.explicit_nodes or not settings.cluster_name:
        return [None] * count
    try:
        from kubernetes import client, config

        config.load_incluster_config()
        core = client.CoreV1Api()
    except Exception as exc:  # no service account token mounted: placement stays unknown
        log.warning("placement_unavailable", reason=str(exc))
        return [None] * count
    return read_placements(core, settings.cluster_name, settings.namespace, count, log)


def read_placements(core: Any, cluster_name: str, namespace: str, count: int, log: Any) -> list[Placement | None]:
    """Placement per ordinal read through `core` (a kubernetes CoreV1Api), or None where it cannot be read.

    Each Kubernetes node is read once, however many pods it runs."""
    zones: dict[str, str | None] = {}
    out: list[Placement | None] = []
    for ordinal in range(count):
        try:
            pod = core.read_namespaced_pod(pod_name(cluster_name, ordinal), namespace,
                                           _request_timeout=API_TIMEOUT_S)
            node_name = pod.spec.node_name  # unset until the scheduler binds the pod
        except Exception as exc:  # a pod not created yet, or no RBAC to read pods
            log.warning("placement_unavailable", ordinal=ordinal, reason=str(exc).splitlines()[0])
            out.append(None)
            continue
        if node_name and node_name not in zones:
            try:
                node = core.read_node(node_name, _request_timeout=API_TIMEOUT_S)
                zones[node_name] = (node.metadata.labels or {}).get(ZONE_LABEL)
            except Exception:  # reading nodes needs a ClusterRole; the node name alone still helps
                zones[node_name] = None
        out.append(Placement(node=node_name, zone=zones.get(node_name)) if node_name else None)
    return out


def fill(placements_: Sequence[Placement | None], count: int) -> list[Placement | None]:
    return list(placements_)[:count] + [None] * max(0, count - len(placements_))
