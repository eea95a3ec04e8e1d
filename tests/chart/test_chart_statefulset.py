"""The StatefulSet: size, names, labels, env contract, probes, hardening, storage, scheduling and checksum annotations."""

import hashlib

import pytest

from chart_helpers import NAMESPACE, containers, env_of, one, pod_spec, render_chart, render_text

PASSWORD_ENV = {
    "VALKEY_ADMIN_PASSWORD": ("valkey-rel-credentials", "admin-password"),
    "VALKEY_CLIENT_PASSWORD": ("valkey-rel-credentials", "client-password"),
    "VALKEY_REPLICATION_PASSWORD": ("valkey-rel-internal", "replication-password"),
    "VALKEY_RECONCILER_PASSWORD": ("valkey-rel-internal", "reconciler-password"),
    "VALKEY_MONITOR_PASSWORD": ("valkey-rel-internal", "monitor-password"),
    "VALKEYCLI_AUTH": ("valkey-rel-internal", "monitor-password"),
}


def sts(helm, values=None, *extra):
    return one(render_chart(helm, values, *extra), "StatefulSet", "valkey-rel")


def valkey_container(statefulset):
    (c,) = [c for c in containers(statefulset) if c["name"] == "valkey"]
    return c


class TestStatefulSet:
    @pytest.mark.parametrize("masters, replicas", [(3, 1), (3, 0), (3, 2), (1, 0), (5, 1)])
    def test_replicas_are_masters_times_one_plus_replicas(self, helm, masters, replicas):
        s = sts(helm, {"cluster": {"masters": masters, "replicasPerMaster": replicas}})
        assert s["spec"]["replicas"] == masters * (1 + replicas)

    def test_pods_start_in_parallel_behind_the_headless_service(self, helm):
        s = sts(helm)
        assert s["spec"]["podManagementPolicy"] == "Parallel"
        assert s["spec"]["serviceName"] == "valkey-rel-headless"

    def test_name_and_namespace_values_set_object_names(self, helm):
        docs = render_chart(helm, {"name": "sessions", "namespace": "other"})
        s = one(docs, "StatefulSet", "valkey-sessions")
        assert s["metadata"]["namespace"] == "other"
        assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "ServiceMonitor"} == {"other"}

    def test_empty_namespace_means_the_release_namespace(self, helm):
        assert sts(helm)["metadata"]["namespace"] == NAMESPACE

    def test_selector_has_no_chart_version_and_matches_pod_labels(self, helm):
        s = sts(helm)
        selector = s["spec"]["selector"]["matchLabels"]
        assert not any("version" in k or k == "helm.sh/chart" for k in selector)
        labels = s["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert labels["app.kubernetes.io/name"] == "valkey"
        assert labels["app.kubernetes.io/instance"] == "rel"

    def test_env_follows_the_entrypoint_contract(self, helm):
        env = env_of(valkey_container(sts(helm)))
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["VALKEY_TEMPLATE_DIR"]["value"] == "/etc/valkey/templates"
        assert env["VALKEY_CONFIG_DIR"]["value"] == "/run/valkey"
        assert env["VALKEY_DATA_DIR"]["value"] == "/data"
        assert env["VALKEY_PERSISTENCE"]["value"] == "rdb,aof"

    def test_passwords_come_from_secret_key_refs(self, helm):
        env = env_of(valkey_container(sts(helm)))
        for name, (secret, key) in PASSWORD_ENV.items():
            assert "value" not in env[name]
            assert env[name]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}

    def test_existing_secret_and_data_keys_are_used(self, helm):
        env = env_of(valkey_container(sts(helm, {"credentials": {"secret": "mine", "dataKeys": {"adminPassword": "a", "clientPassword": "c"}}})))
        assert env["VALKEY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "a"}
        assert env["VALKEY_CLIENT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "c"}

    def test_mounts_templates_memory_config_and_data(self, helm):
        s = sts(helm)
        mounts = {m["name"]: m["mountPath"] for m in valkey_container(s)["volumeMounts"]}
        assert mounts == {"templates": "/etc/valkey/templates", "config": "/run/valkey", "data": "/data", "tmp": "/tmp"}
        volumes = {v["name"]: v for v in pod_spec(s)["volumes"]}
        assert volumes["templates"]["configMap"]["name"] == "valkey-rel-config"
        assert volumes["config"]["emptyDir"]["medium"] == "Memory"

    @pytest.mark.parametrize("persistence", ["rdb,aof", "rdb", "aof", ["rdb", "aof"]])
    def test_persistence_on_gives_a_pvc_per_pod(self, helm, persistence):
        s = sts(helm, {"persistence": persistence, "storage": {"size": "5Gi", "storageClassName": "local-path"}})
        (vct,) = s["spec"]["volumeClaimTemplates"]
        assert vct["metadata"]["name"] == "data"
        assert vct["spec"]["resources"]["requests"]["storage"] == "5Gi"
        assert vct["spec"]["storageClassName"] == "local-path"
        assert "data" not in {v["name"] for v in pod_spec(s)["volumes"]}

    def test_empty_storage_class_uses_the_cluster_default(self, helm):
        (vct,) = sts(helm)["spec"]["volumeClaimTemplates"]
        assert "storageClassName" not in vct["spec"]

    def test_persistence_off_uses_an_empty_dir(self, helm):
        s = sts(helm, {"persistence": None})
        assert "volumeClaimTemplates" not in s["spec"]
        volumes = {v["name"]: v for v in pod_spec(s)["volumes"]}
        assert "emptyDir" in volumes["data"]

    def test_pod_and_containers_are_hardened(self, helm):
        s = sts(helm, {"metrics": {"enabled": True}})
        spec = pod_spec(s)
        assert spec["automountServiceAccountToken"] is False
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 999
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert len(containers(s)) == 2
        for c in containers(s):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]

    def test_probes_ping_as_monitor_without_a_password_on_the_command_line(self, helm):
        c = valkey_container(sts(helm))
        for probe in ("readinessProbe", "livenessProbe"):
            command = " ".join(c[probe]["exec"]["command"])
            assert "PING" in command and "--user monitor" in command and '"$POD_IP"' in command
            assert " -a " not in command and "--pass" not in command and "AUTH" not in command
            assert "cluster_state" not in command
        assert "VALKEYCLI_AUTH" in env_of(c)

    def test_termination_grace_exceeds_the_shutdown_timeout(self, helm):
        valkey_shutdown_timeout_s = 10
        assert pod_spec(sts(helm))["terminationGracePeriodSeconds"] > valkey_shutdown_timeout_s

    def test_anti_affinity_is_soft_by_default(self, helm):
        aff = pod_spec(sts(helm))["affinity"]["podAntiAffinity"]
        (term,) = aff["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"

    def test_anti_affinity_hard_over_zones(self, helm):
        aff = pod_spec(sts(helm, {"podAntiAffinity": {"type": "hard", "topologyKey": "topology.kubernetes.io/zone"}}))["affinity"]
        (term,) = aff["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "topology.kubernetes.io/zone"

    def test_scheduling_values_pass_through(self, helm):
        values = {
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "valkey", "effect": "NoSchedule"}],
            "nodeSelector": {"disk": "ssd"},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}],
            "priorityClassName": "high",
            "podAnnotations": {"a": "b"},
            "podLabels": {"team": "x"},
        }
        s = sts(helm, values)
        spec = pod_spec(s)
        assert spec["tolerations"] == values["tolerations"]
        assert spec["nodeSelector"] == {"disk": "ssd"}
        assert spec["priorityClassName"] == "high"
        (tsc,) = spec["topologySpreadConstraints"]
        assert tsc["labelSelector"]["matchLabels"] == s["spec"]["selector"]["matchLabels"]
        assert s["spec"]["template"]["metadata"]["annotations"]["a"] == "b"
        assert s["spec"]["template"]["metadata"]["labels"]["team"] == "x"

    def test_update_strategy_value(self, helm):
        assert sts(helm)["spec"]["updateStrategy"] == {"type": "OnDelete"}
        assert sts(helm, {"updateStrategy": {"type": "RollingUpdate"}})["spec"]["updateStrategy"] == {"type": "RollingUpdate"}

    def test_metrics_sidecar_logs_in_as_monitor_from_the_internal_secret(self, helm):
        s = sts(helm, {"metrics": {"enabled": True}})
        (exporter,) = [c for c in containers(s) if c["name"] == "metrics"]
        env = env_of(exporter)
        assert env["REDIS_USER"]["value"] == "monitor"
        assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "valkey-rel-internal", "key": "monitor-password"}
        assert env["REDIS_EXPORTER_CONFIG_COMMAND"]["value"] == "-"
        assert ":" in exporter["image"] and not exporter["image"].endswith(":latest")


class TestChecksums:
    KEYS = ("checksum/config", "checksum/credentials", "checksum/internal")

    @staticmethod
    def annotations(helm, values=None):
        return sts(helm, values)["spec"]["template"]["metadata"]["annotations"]

    def test_checksum_annotations_are_present(self, helm):
        ann = self.annotations(helm)
        for key in self.KEYS:
            assert len(ann[key]) == 64

    def test_config_checksum_is_stable_and_follows_the_config(self, helm):
        base = self.annotations(helm)["checksum/config"]
        assert self.annotations(helm, {"podLabels": {"x": "y"}})["checksum/config"] == base
        assert self.annotations(helm, {"extraConfig": "hz 20"})["checksum/config"] != base
        assert self.annotations(helm, {"maxmemory": "100mb"})["checksum/config"] != base

    def test_config_checksum_is_the_hash_of_the_rendered_configmap(self, helm):
        text = render_text(helm)
        body = text.split("# Source: valkey/templates/configmap.yaml\n", 1)[1].split("\n---\n", 1)[0] + "\n"
        assert hashlib.sha256(body.encode()).hexdigest() == self.annotations(helm)["checksum/config"]

    def test_credentials_checksum_follows_the_secret_reference(self, helm):
        a = self.annotations(helm, {"credentials": {"secret": "one"}})["checksum/credentials"]
        b = self.annotations(helm, {"credentials": {"secret": "two"}})["checksum/credentials"]
        assert a != b
