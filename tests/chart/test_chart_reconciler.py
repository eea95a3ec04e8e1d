"""Reconciler hook Jobs (one partial, two phases), their RBAC, and the `helm test` pods."""

import pytest

from chart_helpers import containers, env_of, find, one, pod_spec, render_chart
from scenarios import K3S_SET, SCENARIOS

EXPECTED_ENV = {
    "VALKEY_CLUSTER_NAME": "rel",
    "VALKEY_NAMESPACE": "cache",
    "VALKEY_MASTERS": "3",
    "VALKEY_REPLICAS_PER_MASTER": "1",
    "VALKEY_USER": "reconciler",
    "VALKEY_PORT": "6379",
    "VALKEY_POD_ADDRESS": "valkey-rel-{ordinal}.valkey-rel-headless.cache.svc.cluster.local",
    "VALKEY_PERSISTENCE": "rdb,aof",
    "VALKEY_TIMEOUT_SECONDS": "300",
    "VALKEY_ROLL_ALLOW_DATA_LOSS": "false",
    "VALKEY_NODE_TIMEOUT_MS": "5000",
    "VALKEY_FAST_JOIN": "on",
    "LOG_FORMAT": "json",
}
PHASES = {
    "valkey-rel-reconcile": ("post-install,post-upgrade", ["reconcile"]),
    "valkey-rel-drain": ("pre-upgrade", ["drain"]),
}


def literal_env(container):
    return {k: v["value"] for k, v in env_of(container).items() if "value" in v}


class TestReconcilerJobs:
    @pytest.mark.parametrize("job_name", sorted(PHASES))
    def test_hook_annotation_and_args(self, helm, job_name):
        job = one(render_chart(helm), "Job", job_name)
        hook, args = PHASES[job_name]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == hook
        (c,) = containers(job)
        assert c["args"] == args
        assert "command" not in c

    @pytest.mark.parametrize("job_name", sorted(PHASES))
    def test_env_follows_the_reconciler_contract(self, helm, job_name):
        (c,) = containers(one(render_chart(helm), "Job", job_name))
        assert literal_env(c) == EXPECTED_ENV
        assert env_of(c)["VALKEY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "valkey-rel-internal", "key": "reconciler-password"}

    def test_node_timeout_and_fast_join_reach_the_jobs(self, helm):
        rendered = render_chart(helm, {"cluster": {"nodeTimeoutMs": 2000, "fastJoin": False}})
        for job in find(rendered, "Job"):
            env = literal_env(containers(job)[0])
            assert (env["VALKEY_NODE_TIMEOUT_MS"], env["VALKEY_FAST_JOIN"]) == ("2000", "off")

    def test_hooks_values_map_to_the_job(self, helm):
        values = {"hooks": {"restartPolicy": "OnFailure", "backoffLimit": 7, "ttlSecondsAfterFinished": 120,
                            "hookDeletePolicy": "before-hook-creation,hook-succeeded"}}
        for job in find(render_chart(helm, values), "Job"):
            assert job["spec"]["backoffLimit"] == 7
            assert job["spec"]["ttlSecondsAfterFinished"] == 120
            assert pod_spec(job)["restartPolicy"] == "OnFailure"
            assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"

    def test_null_ttl_keeps_jobs(self, helm):
        for job in find(render_chart(helm, {"hooks": {"ttlSecondsAfterFinished": None}}), "Job"):
            assert "ttlSecondsAfterFinished" not in job["spec"]

    def test_k3s_set_example_reaches_the_jobs(self, helm):
        values, extra = SCENARIOS["k3s-set"]
        docs = render_chart(helm, values, *extra)
        job = one(docs, "Job", "valkey-sessions-reconcile")
        assert job["metadata"]["namespace"] == "cache"
        assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert job["spec"]["backoffLimit"] == 3 and job["spec"]["ttlSecondsAfterFinished"] == 600
        (c,) = containers(job)
        assert c["image"] == K3S_SET["cluster.reconcilerImage"]
        env = literal_env(c)
        assert env["VALKEY_CLUSTER_NAME"] == "sessions"
        assert env["VALKEY_MASTERS"] == "3" and env["VALKEY_REPLICAS_PER_MASTER"] == "1"
        assert env["VALKEY_PERSISTENCE"] == "rdb,aof"
        sts = one(docs, "StatefulSet", "valkey-sessions")
        assert sts["spec"]["replicas"] == 6
        valkey_env = env_of(containers(sts)[0])
        assert valkey_env["VALKEY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "valkey-credentials", "key": "admin"}
        assert valkey_env["VALKEY_CLIENT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "valkey-credentials", "key": "client"}

    def test_job_pods_are_hardened_and_mount_a_token(self, helm):
        for job in find(render_chart(helm), "Job"):
            spec = pod_spec(job)
            assert spec["serviceAccountName"] == "valkey-rel-reconciler"
            assert spec["automountServiceAccountToken"] is True
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] == 10001
            sc = containers(job)[0]["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]


class TestRbac:
    def test_service_account_role_and_binding_are_regular_resources(self, helm):
        docs = render_chart(helm)
        for kind in ("ServiceAccount", "Role", "RoleBinding"):
            obj = one(docs, kind, "valkey-rel-reconciler")
            assert "helm.sh/hook" not in obj["metadata"].get("annotations", {})
        binding = one(docs, "RoleBinding", "valkey-rel-reconciler")
        assert binding["roleRef"]["name"] == "valkey-rel-reconciler"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "valkey-rel-reconciler", "namespace": "cache"}]

    def test_role_only_reads_pods_in_the_core_group(self, helm):
        # The Lease rules (coordination.k8s.io) are checked exactly in test_chart_heal.py; the roll's rules
        # (pod delete by name, events) in test_chart_roll.py.
        role = one(render_chart(helm), "Role", "valkey-rel-reconciler")
        core = [r for r in role["rules"] if r["apiGroups"] == [""] and "resourceNames" not in r
                and r["resources"] != ["events"]]
        assert core == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]

    def test_no_cluster_scoped_rbac(self, helm):
        docs = render_chart(helm)
        assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")


class TestHelmTests:
    def test_status_check_runs_the_reconciler_with_the_job_env(self, helm):
        docs = render_chart(helm)
        pod = one(docs, "Pod", "valkey-rel-test-status")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        (c,) = containers(pod)
        assert c["args"] == ["status", "--check"]
        (job_c,) = containers(one(docs, "Job", "valkey-rel-reconcile"))
        assert c["env"] == job_c["env"]
        assert c["image"] == job_c["image"]

    def test_client_acl_check_expects_noperm_for_flushall(self, helm):
        pod = one(render_chart(helm), "Pod", "valkey-rel-test-acl")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        (c,) = containers(pod)
        script = c["command"][-1]
        assert "--user client FLUSHALL" in script
        assert "*NOPERM*) " in script and "exit 1" in script
        env = env_of(c)
        assert env["VALKEYCLI_AUTH"]["valueFrom"]["secretKeyRef"] == {"name": "valkey-rel-credentials", "key": "client-password"}
        assert c["image"] == containers(one(render_chart(helm), "StatefulSet"))[0]["image"]

    def test_tests_can_be_turned_off(self, helm):
        assert not find(render_chart(helm, {"tests": {"enabled": False}}), "Pod")
