"""The pod interface (valkey_reconciler.pods): the Kubernetes implementation against the `kubernetes` client's
own models (V1StatefulSet, V1Pod, CoreV1Event) behind a tiny fake API object, revision comparison, rollout
detection, and which implementation a run gets."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from valkey_reconciler import pods
from valkey_reconciler.pods import (KubePods, LocalPods, PodApiError, PodInfo, is_outdated, make_pod_api,
                                    pod_info, rollout_in_progress, set_info)

NS = "cache"
STS = "valkey-rel"


def statefulset(strategy: str | None = "OnDelete", replicas: int = 3, update: str = "valkey-rel-new",
                current: str = "valkey-rel-old", updated: int = 0, ready: int = 3, partition: int | None = None,
                generation: int = 2, observed: int = 2) -> client.V1StatefulSet:
    update_strategy = None
    if strategy is not None:
        rolling = client.V1RollingUpdateStatefulSetStrategy(partition=partition) if partition is not None else None
        update_strategy = client.V1StatefulSetUpdateStrategy(type=strategy, rolling_update=rolling)
    return client.V1StatefulSet(
        metadata=client.V1ObjectMeta(name=STS, namespace=NS, uid="sts-uid", generation=generation),
        spec=client.V1StatefulSetSpec(
            replicas=replicas, service_name=f"{STS}-headless", update_strategy=update_strategy,
            selector=client.V1LabelSelector(match_labels={"app": "v"}),
            template=client.V1PodTemplateSpec(spec=client.V1PodSpec(containers=[client.V1Container(name="valkey")]))),
        status=client.V1StatefulSetStatus(replicas=replicas, update_revision=update, current_revision=current,
                                          updated_replicas=updated, ready_replicas=ready,
                                          observed_generation=observed))


def pod(ordinal: int, revision: str | None = "valkey-rel-old", ready: bool = True, deleting: bool = False,
        name: str | None = None) -> client.V1Pod:
    labels = {"app": "v"}
    if revision is not None:
        labels[pods.REVISION_LABEL] = revision
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name or f"{STS}-{ordinal}", namespace=NS, uid=f"uid-{ordinal}",
                                     labels=labels,
                                     deletion_timestamp=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) if deleting else None),
        spec=client.V1PodSpec(containers=[client.V1Container(name="valkey")], node_name=f"node-{ordinal % 2}"),
        status=client.V1PodStatus(pod_ip=f"10.0.0.{ordinal + 1}", conditions=[
            client.V1PodCondition(type="Ready", status="True" if ready else "False")]))


class FakeApi:
    """Records calls; answers with the given models or raises the given ApiException."""

    def __init__(self, sts=None, pod_list=(), fail: dict[str, ApiException] | None = None) -> None:
        self.sts = sts
        self.pods = {p.metadata.name: p for p in pod_list}
        self.fail = fail or {}
        self.calls: list[tuple] = []

    def _maybe_fail(self, what: str) -> None:
        if what in self.fail:
            raise self.fail[what]

    def read_namespaced_stateful_set(self, name, namespace, **kw):
        self.calls.append(("get_sts", name, namespace))
        self._maybe_fail("get_sts")
        return self.sts

    def read_namespaced_pod(self, name, namespace, **kw):
        self.calls.append(("get_pod", name, namespace))
        self._maybe_fail("get_pod")
        if name not in self.pods:
            raise ApiException(status=404, reason="Not Found")
        return self.pods[name]

    def delete_namespaced_pod(self, name, namespace, body=None, **kw):
        self.calls.append(("delete", name, namespace, body))
        self._maybe_fail("delete")

    def create_namespaced_event(self, namespace, body, **kw):
        self.calls.append(("event", namespace, body))
        self._maybe_fail("event")


def kube(api: FakeApi, count: int = 3) -> KubePods:
    return KubePods(core=api, apps=api, namespace=NS, statefulset=STS, count=count, identity="job-pod")


class TestModels:
    def test_statefulset_on_delete(self):
        info = set_info(statefulset())
        assert (info.strategy, info.replicas, info.update_revision, info.current_revision) == \
            ("OnDelete", 3, "valkey-rel-new", "valkey-rel-old")

    def test_statefulset_without_strategy_is_rolling_update_as_kubernetes_defaults(self):
        assert set_info(statefulset(strategy=None)).strategy == "RollingUpdate"

    def test_statefulset_partition_is_read(self):
        assert set_info(statefulset(strategy="RollingUpdate", partition=2)).partition == 2

    def test_pod_revision_readiness_placement_and_deletion(self):
        info = pod_info(pod(1, revision="valkey-rel-new", ready=False, deleting=True), STS)
        assert info == PodInfo(name=f"{STS}-1", ordinal=1, revision="valkey-rel-new", uid="uid-1", ip="10.0.0.2",
                               ready=False, terminating=True, node="node-1")

    def test_pod_of_another_statefulset_is_ignored(self):
        assert pod_info(pod(0, name="valkey-relx-0"), STS) is None
        assert pod_info(pod(0, name=f"{STS}-metrics"), STS) is None


class TestRevisions:
    def test_pod_at_update_revision_is_current_and_older_is_outdated(self):
        sts = set_info(statefulset())
        assert is_outdated(pod_info(pod(0, "valkey-rel-old"), STS), sts)
        assert not is_outdated(pod_info(pod(0, "valkey-rel-new"), STS), sts)

    def test_unknown_revision_on_either_side_is_never_outdated(self):
        assert not is_outdated(pod_info(pod(0, None), STS), set_info(statefulset()))
        assert not is_outdated(pod_info(pod(0), STS), set_info(statefulset(update=None)))

    def test_on_delete_with_old_pods_is_not_a_rollout_to_wait_for(self):
        assert rollout_in_progress(set_info(statefulset())) is None

    def test_rolling_update_replacing_pods_is_in_progress(self):
        why = rollout_in_progress(set_info(statefulset(strategy="RollingUpdate", updated=1)))
        assert why and "1 of 3" in why

    def test_rolling_update_not_yet_observed_is_in_progress(self):
        why = rollout_in_progress(set_info(statefulset(strategy="RollingUpdate", generation=3, observed=2)))
        assert why and "generation 3" in why

    def test_rolling_update_done_or_done_up_to_its_partition(self):
        assert rollout_in_progress(set_info(statefulset(strategy="RollingUpdate", current="valkey-rel-new",
                                                        updated=3))) is None
        assert rollout_in_progress(set_info(statefulset(strategy="RollingUpdate", partition=2, updated=1))) is None

    def test_rolling_update_with_a_pod_not_ready_is_in_progress(self):
        why = rollout_in_progress(set_info(statefulset(strategy="RollingUpdate", current="valkey-rel-new",
                                                       updated=3, ready=2)))
        assert why and "2 of 3" in why


class TestKubePods:
    def test_snapshot_reads_the_statefulset_and_each_pod_by_name(self):
        api = FakeApi(statefulset(), [pod(0, "valkey-rel-new"), pod(2)])
        snap = kube(api).snapshot()
        assert [c[:2] for c in api.calls] == [("get_sts", STS), ("get_pod", f"{STS}-0"), ("get_pod", f"{STS}-1"),
                                              ("get_pod", f"{STS}-2")]
        assert [p.ordinal for p in snap.pods] == [0, 2], "a pod being recreated (404) is absent, not an error"
        assert [snap.outdated(p) for p in snap.pods] == [False, True]

    def test_snapshot_without_rbac_names_the_role(self):
        api = FakeApi(statefulset(), fail={"get_sts": ApiException(status=403, reason="Forbidden")})
        with pytest.raises(PodApiError, match="get statefulset valkey-rel failed.*403.*Role"):
            kube(api).snapshot()

    def test_delete_is_guarded_by_the_pods_uid(self):
        api = FakeApi(statefulset(), [pod(1)])
        kube(api).delete(pod_info(pod(1), STS))
        (_, name, namespace, body) = api.calls[0]
        assert (name, namespace) == (f"{STS}-1", NS)
        assert isinstance(body, client.V1DeleteOptions) and body.preconditions.uid == "uid-1"

    @pytest.mark.parametrize("status", [404, 409])
    def test_delete_of_a_pod_already_gone_or_replaced_is_fine(self, status):
        api = FakeApi(statefulset(), fail={"delete": ApiException(status=status)})
        kube(api).delete(pod_info(pod(1), STS))

    def test_delete_refused_raises_naming_the_pod(self):
        api = FakeApi(statefulset(), fail={"delete": ApiException(status=403, reason="Forbidden")})
        with pytest.raises(PodApiError, match=f"delete pod {STS}-1"):
            kube(api).delete(pod_info(pod(1), STS))

    def test_event_is_recorded_on_the_statefulset_with_the_pod_as_related(self):
        api = FakeApi(statefulset(), [pod(0)])
        k = kube(api)
        k.snapshot()
        k.event("Failover", "ordinal 3 takes over from ordinal 0", pod=f"{STS}-0", warning=True)
        (_, namespace, body) = api.calls[-1]
        assert namespace == NS and isinstance(body, client.CoreV1Event)
        obj = body.involved_object
        assert (obj.kind, obj.api_version, obj.name, obj.namespace, obj.uid) == ("StatefulSet", "apps/v1", STS, NS,
                                                                                "sts-uid")
        assert (body.reason, body.type, body.related.name) == ("Failover", "Warning", f"{STS}-0")
        assert body.metadata.generate_name == f"{STS}." and body.source.component == "valkey-reconciler"


def settings(**kw):
    base = dict(explicit_nodes=False, cluster_name="rel", namespace=NS, expected_pods=3)
    base.update(kw)
    return SimpleNamespace(**base)


class TestChoice:
    def test_local_runner_socket_wins(self):
        api = make_pod_api(settings(), environ={pods.LOCAL_API_ENV: "/tmp/x.sock"})
        assert isinstance(api, LocalPods) and api.path == "/tmp/x.sock"

    def test_outside_kubernetes_there_is_none(self):
        assert make_pod_api(settings(), environ={}) is None

    def test_explicit_nodes_have_none_even_in_kubernetes(self):
        assert make_pod_api(settings(explicit_nodes=True), environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None

    def test_local_socket_gone_says_so(self, tmp_path):
        with pytest.raises(PodApiError, match="snapshot failed.*valkey-local"):
            LocalPods(str(tmp_path / "none.sock"), timeout=1).snapshot()
