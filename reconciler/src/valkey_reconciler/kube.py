"""Pod placement (Kubernetes node and zone) read through the Kubernetes API when running inside a cluster."""

from __future__ import annotations

import os
from typing import Any, Sequence

from valkey_reconciler.view import Placement

ZONE_LABEL = "topology.kubernetes.io/zone"
API_TIMEOUT_S = 5.0


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def pod_name(cluster_name: str, ordinal: int) -> str:
    return f"valkey-{cluster_name}-{ordinal}"


def placements(settings: Any, log: Any) -> list[Placement | None]:
    """Placement per ordinal, or None for each where it cannot be read (outside Kubernetes, no RBAC, …).

    Missing placement only weakens the replica spreading preference (it falls back to distinct IPs).
    """
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
    zones: dict[str, str | None] = {}
    out: list[Placement | None] = []
    for ordinal in range(count):
        try:
            pod = core.read_namespaced_pod(pod_name(settings.cluster_name, ordinal), settings.namespace,
                                           _request_timeout=API_TIMEOUT_S)
            node_name = pod.spec.node_name
        except Exception as exc:  # a pod not scheduled yet, or no RBAC to read pods
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
