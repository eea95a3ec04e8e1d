"""The chart's side of reconciler-driven rolls: updateStrategy OnDelete by default, the rollout.allowDataLoss
value reaching the reconciler, and a Role that deletes only this release's pods (resourceNames matching the
StatefulSet's pods), gets only its StatefulSet and records Events."""

import pytest

from chart_helpers import env_of, find, one, render_chart, render_error
from valkey_reconciler.roll import ALLOW_DATA_LOSS_ENV


def role(docs: list[dict], cluster: str = "rel") -> dict:
    return one(docs, "Role", f"valkey-{cluster}-reconciler")


def statefulset_pod_names(docs: list[dict]) -> list[str]:
    sts = one(docs, "StatefulSet")
    return [f"{sts['metadata']['name']}-{i}" for i in range(int(sts["spec"]["replicas"]))]


def rules_for(r: dict, group: str, resource: str) -> list[dict]:
    return [x for x in r["rules"] if x["apiGroups"] == [group] and resource in x["resources"]]


class TestUpdateStrategy:
    def test_default_is_on_delete_so_the_reconciler_drives_restarts(self, helm):
        assert one(render_chart(helm), "StatefulSet")["spec"]["updateStrategy"] == {"type": "OnDelete"}

    def test_rolling_update_is_a_value(self, helm):
        sts = one(render_chart(helm, {"updateStrategy": {"type": "RollingUpdate"}}), "StatefulSet")
        assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate"}

    def test_unknown_strategy_is_refused(self, helm):
        assert "updateStrategy" in render_error(helm, {"updateStrategy": {"type": "Recreate"}})


class TestAllowDataLoss:
    @pytest.mark.parametrize("value, expected", [(None, "false"), (True, "true"), (False, "false")])
    def test_value_reaches_every_reconciler_pod(self, helm, value, expected):
        docs = render_chart(helm, {"rollout": {"allowDataLoss": value}} if value is not None else None)
        pods = [j["spec"]["template"] for j in find(docs, "Job")] + \
               [c["spec"]["jobTemplate"]["spec"]["template"] for c in find(docs, "CronJob")]
        assert len(pods) >= 3
        for pod in pods:
            assert env_of(pod["spec"]["containers"][0])[ALLOW_DATA_LOSS_ENV] == {"name": ALLOW_DATA_LOSS_ENV, "value": expected}

    def test_non_boolean_is_refused(self, helm):
        assert "allowDataLoss" in render_error(helm, {"rollout": {"allowDataLoss": "yes"}})


class TestRoleForTheRoll:
    @pytest.mark.parametrize("values, cluster", [
        (None, "rel"),
        ({"cluster": {"masters": 4, "replicasPerMaster": 2}}, "rel"),
        ({"cluster": {"masters": 1, "replicasPerMaster": 0}}, "rel"),
        ({"name": "sessions", "cluster": {"masters": 5, "replicasPerMaster": 1}}, "sessions"),
    ])
    def test_pod_delete_resource_names_are_exactly_the_statefulsets_pods(self, helm, values, cluster):
        docs = render_chart(helm, values)
        (delete,) = [r for r in rules_for(role(docs, cluster), "", "pods") if "delete" in r["verbs"]]
        assert delete == {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"],
                          "resourceNames": statefulset_pod_names(docs)}

    def test_delete_is_never_granted_without_resource_names(self, helm):
        for rule in role(render_chart(helm))["rules"]:
            if "delete" in rule["verbs"] or "*" in rule["verbs"]:
                assert rule.get("resourceNames"), rule

    def test_statefulset_is_read_by_name_only(self, helm):
        docs = render_chart(helm)
        assert rules_for(role(docs), "apps", "statefulsets") == [
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"],
             "resourceNames": [one(docs, "StatefulSet")["metadata"]["name"]]}]

    def test_events_can_be_created_and_patched(self, helm):
        assert rules_for(role(render_chart(helm)), "", "events") == [
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}]
