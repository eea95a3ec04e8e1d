"""The scheduled heal CronJob (the hook Jobs' pod template plus VALKEY_LOCK_MODE=skip), its values, and the Lease rules of the Role."""

import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from chart_helpers import CHART, HELM_TIMEOUT_S, HELMS, containers, env_of, find, one, render_chart, render_error
from scenarios import SCENARIOS
from test_chart_validate import NEWEST_K8S, OLDEST_K8S
from valkey_reconciler import lock

HEAL = "valkey-rel-heal"
HOOK = "valkey-rel-reconcile"
SKIP_ENV = {"name": "VALKEY_LOCK_MODE", "value": "skip"}
# Value sets whose differences reach the reconciler pod: the env comparison must hold for each.
POD_SCENARIOS = ("default", "k3s-set", "existing-secret", "replicas-2", "persistence-null")
POD_VALUES = {
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "valkey", "effect": "NoSchedule"}],
    "priorityClassName": "important",
    "hooks": {"restartPolicy": "OnFailure", "timeoutSeconds": 120, "resources": {"requests": {"cpu": "10m"}}},
    "cluster": {"reconcilerImage": {"repository": "r.example/rec", "tag": "1.2.3", "pullPolicy": "Always"}},
}


def job_template(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]


def heal_containers(cronjob: dict) -> list[dict]:
    return job_template(cronjob)["spec"]["containers"]


def heal_and_hook(docs: list[dict]) -> tuple[dict, dict]:
    return one(docs, "CronJob"), one(docs, "Job", [j["metadata"]["name"] for j in find(docs, "Job")
                                                   if j["metadata"]["name"].endswith("-reconcile")][0])


class TestCronJob:
    def test_renders_by_default_with_the_documented_schedule_and_policies(self, helm):
        cron = one(render_chart(helm), "CronJob", HEAL)
        assert cron["metadata"]["namespace"] == "cache"
        assert "helm.sh/hook" not in cron["metadata"].get("annotations", {}), "a regular resource, not a hook"
        spec = cron["spec"]
        assert spec["schedule"] == "*/5 * * * *"
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["startingDeadlineSeconds"] == 120
        assert spec["successfulJobsHistoryLimit"] == 1 and spec["failedJobsHistoryLimit"] == 3
        assert spec["suspend"] is False
        assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
        (c,) = heal_containers(cron)
        assert c["args"] == ["reconcile"] and "command" not in c

    def test_disabled_renders_no_cronjob_and_keeps_the_hooks(self, helm):
        docs = render_chart(helm, {"heal": {"enabled": False}})
        assert not find(docs, "CronJob")
        assert one(docs, "Job", HOOK) and one(docs, "Job", "valkey-rel-drain")

    def test_schedule_and_policy_values_map_to_the_cronjob(self, helm):
        values = {"heal": {"schedule": "@hourly", "concurrencyPolicy": "Replace", "startingDeadlineSeconds": None,
                           "successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 5, "backoffLimit": 2,
                           "suspend": True}}
        spec = one(render_chart(helm, values), "CronJob", HEAL)["spec"]
        assert spec["schedule"] == "@hourly" and spec["concurrencyPolicy"] == "Replace"
        assert "startingDeadlineSeconds" not in spec
        assert spec["successfulJobsHistoryLimit"] == 0 and spec["failedJobsHistoryLimit"] == 5
        assert spec["jobTemplate"]["spec"]["backoffLimit"] == 2
        assert spec["suspend"] is True

    def test_k3s_set_strings_are_accepted(self, helm):
        extra = ("--set-string", "heal.startingDeadlineSeconds=60", "--set-string", "heal.failedJobsHistoryLimit=2",
                 "--set", "heal.schedule=*/10 * * * *")
        spec = one(render_chart(helm, {}, *extra), "CronJob", HEAL)["spec"]
        assert spec["startingDeadlineSeconds"] == 60 and spec["failedJobsHistoryLimit"] == 2
        assert spec["schedule"] == "*/10 * * * *"

    @pytest.mark.parametrize("k8s", [OLDEST_K8S, NEWEST_K8S])
    @pytest.mark.parametrize("values", [{}, {"heal": {"suspend": True, "startingDeadlineSeconds": None,
                                                      "concurrencyPolicy": "Allow"}}, POD_VALUES])
    def test_cronjob_validates_strictly(self, helm, k8s, values):
        kubernetes_validate.validate(one(render_chart(helm, values), "CronJob", HEAL), k8s, strict=True)


class TestSamePodAsTheHooks:
    @pytest.mark.parametrize("scenario", POD_SCENARIOS)
    def test_env_is_the_hook_env_plus_skip_mode(self, helm, scenario):
        values, extra = SCENARIOS[scenario]
        cron, hook = heal_and_hook(render_chart(helm, values, *extra))
        (heal_c,), (hook_c,) = heal_containers(cron), containers(hook)
        assert heal_c["env"] == hook_c["env"] + [SKIP_ENV]
        assert "VALKEY_LOCK_MODE" not in env_of(hook_c), "hooks use the default mode, wait"

    @pytest.mark.parametrize("values", [{}, POD_VALUES], ids=["default", "pod-values"])
    def test_pod_template_is_the_hook_jobs_apart_from_the_env(self, helm, values):
        cron, hook = heal_and_hook(render_chart(helm, values))
        heal_t, hook_t = job_template(cron), hook["spec"]["template"]
        assert heal_t["metadata"] == hook_t["metadata"]
        heal_c, hook_c = heal_t["spec"]["containers"][0], hook_t["spec"]["containers"][0]
        assert {k: v for k, v in heal_c.items() if k != "env"} == {k: v for k, v in hook_c.items() if k != "env"}
        strip = lambda spec: {k: v for k, v in spec.items() if k != "containers"}  # noqa: E731
        assert strip(heal_t["spec"]) == strip(hook_t["spec"])
        if values:
            assert heal_t["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
            assert heal_c["image"] == "r.example/rec:1.2.3" and heal_c["imagePullPolicy"] == "Always"

    def test_lock_modes_are_what_the_reconciler_reads(self, helm):
        cron, hook = heal_and_hook(render_chart(helm))
        heal_env = {k: v["value"] for k, v in env_of(heal_containers(cron)[0]).items() if "value" in v}
        hook_env = {k: v["value"] for k, v in env_of(containers(hook)[0]).items() if "value" in v}
        assert lock.LOCK_MODE_ENV == "VALKEY_LOCK_MODE"
        settings = type("S", (), {})()
        assert lock.lock_mode(settings, heal_env) == lock.MODE_SKIP
        assert lock.lock_mode(settings, hook_env) == lock.MODE_WAIT


def selects(match_labels: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in match_labels.items())


class TestNetworkAndRbac:
    def test_network_policy_admits_heal_pods_like_the_hooks_and_denies_ingress_to_them(self, helm):
        docs = render_chart(helm)
        labels = job_template(one(docs, "CronJob", HEAL))["metadata"]["labels"]
        server = one(docs, "NetworkPolicy", "valkey-rel")
        client_rule = next(r for r in server["spec"]["ingress"] if r["ports"] == [{"port": 6379, "protocol": "TCP"}])
        assert any("namespaceSelector" not in peer and selects(peer["podSelector"]["matchLabels"], labels)
                   for peer in client_rule["from"] if peer.get("podSelector", {}).get("matchLabels"))
        deny = one(docs, "NetworkPolicy", "valkey-rel-reconciler")
        assert selects(deny["spec"]["podSelector"]["matchLabels"], labels) and deny["spec"]["ingress"] == []

    @pytest.mark.parametrize("scenario, cluster_name", [("default", "rel"), ("k3s-set", "sessions")])
    def test_role_rules_are_exactly_pods_and_the_one_lease(self, helm, scenario, cluster_name):
        values, extra = SCENARIOS[scenario]
        role = one(render_chart(helm, values, *extra), "Role", f"valkey-{cluster_name}-reconciler")
        roll_rules = [r for r in role["rules"] if "delete" in r["verbs"] or r["resources"] in (["statefulsets"], ["events"])]
        assert len(roll_rules) == 3  # the roll's rules, checked in test_chart_roll.py
        assert [r for r in role["rules"] if r not in roll_rules] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [lock.lease_name(cluster_name)], "verbs": ["get", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ]

    def test_role_keeps_the_lease_rules_without_the_cronjob(self, helm):
        # Hook Jobs take the Lease too, so turning scheduled healing off must not take the rights away.
        role = one(render_chart(helm, {"heal": {"enabled": False}}), "Role", "valkey-rel-reconciler")
        assert any(r["apiGroups"] == ["coordination.k8s.io"] for r in role["rules"])

    def test_role_explains_why_create_is_not_limited_by_name(self):
        text = (CHART / "templates" / "reconciler" / "role.yaml").read_text()
        assert "create cannot be limited by resourceNames" in text


class TestRefusedValues:
    @pytest.mark.parametrize("heal, field", [
        ({"schedule": "every five minutes"}, "schedule"),
        ({"schedule": "CRON_TZ=UTC */5 * * * *"}, "schedule"),
        ({"concurrencyPolicy": "Never"}, "concurrencyPolicy"),
        ({"suspend": "yes"}, "suspend"),
        ({"failedJobsHistoryLimit": -1}, "failedJobsHistoryLimit"),
        ({"interval": "5m"}, "interval"),
    ])
    def test_schema_names_the_bad_heal_value(self, helm, heal, field):
        err = render_error(helm, {"heal": heal})
        assert "heal" in err and field in err


NOTES_PROBE = '''apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-probe
data:
  notes: {{ include "valkey/templates/NOTES.txt" . | quote }}
'''


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory):
    copy = tmp_path_factory.mktemp("heal-notes") / "valkey"
    shutil.copytree(CHART, copy, symlinks=False)
    (copy / "templates" / "zz-notes-probe.yaml").write_text(NOTES_PROBE)
    return copy


def notes(helm: str, chart, *sets: str) -> str:
    args = [a for s in sets for a in ("--set", s)]
    proc = subprocess.run([str(HELMS[helm]), "template", "rel", str(chart), "-n", "cache",
                           "--show-only", "templates/zz-notes-probe.yaml", *args],
                          capture_output=True, text=True, timeout=HELM_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["data"]["notes"]


class TestNotes:
    def test_notes_name_the_cronjob_the_lease_and_a_manual_run(self, helm, notes_chart):
        text = notes(helm, notes_chart)
        assert "CronJob valkey-rel-heal" in text and '"*/5 * * * *"' in text
        assert "Lease\nvalkey-rel-reconciler" in text or "Lease valkey-rel-reconciler" in text
        assert "lock_busy_skipped" in text
        assert "create job --from=cronjob/valkey-rel-heal" in text
        assert "suspended" not in text

    def test_notes_say_when_suspended_or_off(self, helm, notes_chart):
        assert "suspended: heal.suspend=true" in notes(helm, notes_chart, "heal.suspend=true")
        off = notes(helm, notes_chart, "heal.enabled=false")
        assert "Scheduled healing is off" in off and "valkey-rel-heal" not in off
