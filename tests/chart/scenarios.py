"""The value sets every chart test renders: defaults, the original README's k3s `set:` example, each persistence form, replica counts, metrics/NetworkPolicy and both kinds of Secret."""

# The original README's k3s HelmChart example, reconstructed: helm-controller passes a quoted `set:`
# value with --set-string (so numbers arrive as strings) and an unquoted number with --set; commas
# must be escaped because --set splits on them.
K3S_SET = {
    "name": "sessions",
    "namespace": "cache",
    "image": "local-registry:5000/valkey:9.1.2",
    "persistence": "rdb\\,aof",
    "cluster.masters": "3",
    "cluster.replicasPerMaster": "1",
    "cluster.reconcilerImage": "local-registry:5000/valkey-reconciler:0.1.0",
    "credentials.secret": "valkey-credentials",
    "credentials.dataKeys.adminPassword": "admin",
    "credentials.dataKeys.clientPassword": "client",
    "hooks.restartPolicy": "Never",
    "hooks.backoffLimit": "3",
    "hooks.ttlSecondsAfterFinished": "600",
    "hooks.hookDeletePolicy": "before-hook-creation\\,hook-succeeded",
}


def k3s_set_args(values: dict) -> tuple[str, ...]:
    """The arguments helm-controller builds from a HelmChart `set:` map (strings → --set-string)."""
    args: list[str] = []
    for key, value in values.items():
        flag = "--set-string" if isinstance(value, str) else "--set"
        args += [flag, f"{key}={value}"]
    return tuple(args)


EXISTING_SECRET = {
    "credentials": {"secret": "my-valkey", "dataKeys": {"adminPassword": "admin", "clientPassword": "client"}},
}

# name -> (values, extra helm args)
SCENARIOS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "default": ({}, ()),
    "k3s-set": ({}, k3s_set_args(K3S_SET)),
    "persistence-rdb-aof-string": ({"persistence": "rdb,aof"}, ()),
    "persistence-rdb": ({"persistence": "rdb"}, ()),
    "persistence-aof": ({"persistence": "aof"}, ()),
    "persistence-list": ({"persistence": ["rdb", "aof"]}, ()),
    "persistence-null": ({"persistence": None}, ()),
    "persistence-set-list": ({}, ("--set", "persistence={rdb,aof}")),
    "replicas-0": ({"cluster": {"replicasPerMaster": 0}}, ()),
    "replicas-2": ({"cluster": {"replicasPerMaster": 2}}, ()),
    "metrics-networkpolicy": (
        {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}, "networkPolicy": {"enabled": True}},
        ("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"),
    ),
    "existing-secret": (EXISTING_SECRET, ()),
    "generated-secret": ({"credentials": {"secret": ""}}, ()),
}
