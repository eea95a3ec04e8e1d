"""Services, NetworkPolicy, PodDisruptionBudget, metrics Service and the guarded ServiceMonitor."""

from chart_helpers import SERVICE_MONITOR_API, find, one, render_chart

SERVER_SELECTOR = {
    "app.kubernetes.io/name": "valkey",
    "app.kubernetes.io/instance": "rel",
    "app.kubernetes.io/component": "server",
}


def ports(obj):
    return {p["port"] for p in obj["spec"]["ports"]}


class TestServices:
    def test_headless_service_publishes_not_ready_pods_on_both_ports(self, helm):
        svc = one(render_chart(helm), "Service", "valkey-rel-headless")
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert ports(svc) == {6379, 16379}
        assert svc["spec"]["selector"] == SERVER_SELECTOR

    def test_client_service_exposes_only_the_client_port(self, helm):
        svc = one(render_chart(helm), "Service", "valkey-rel-cluster")
        assert ports(svc) == {6379}
        assert svc["spec"]["selector"] == SERVER_SELECTOR

    def test_every_object_carries_the_standard_labels(self, helm):
        for doc in render_chart(helm, {"metrics": {"enabled": True}}):
            labels = doc["metadata"]["labels"]
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                        "app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"):
                assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"

    def test_no_selector_carries_a_version(self, helm):
        for doc in render_chart(helm, {"metrics": {"enabled": True}}):
            spec = doc.get("spec", {})
            selectors = [spec.get("selector")] if doc["kind"] == "Service" else []
            selectors += [spec.get("selector", {}).get("matchLabels")] if doc["kind"] in ("StatefulSet", "PodDisruptionBudget") else []
            selectors += [spec.get("podSelector", {}).get("matchLabels")] if doc["kind"] == "NetworkPolicy" else []
            for sel in filter(None, selectors):
                assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(sel), doc["metadata"]["name"]


class TestNetworkPolicy:
    @staticmethod
    def policy(helm, values=None):
        return one(render_chart(helm, values), "NetworkPolicy", "valkey-rel")

    @staticmethod
    def rule_for(policy, port):
        (rule,) = [r for r in policy["spec"]["ingress"] if port in {p["port"] for p in r["ports"]}]
        return rule

    def test_on_by_default(self, helm):
        assert self.policy(helm)["spec"]["podSelector"]["matchLabels"] == SERVER_SELECTOR

    def test_bus_port_only_from_this_clusters_pods(self, helm):
        rule = self.rule_for(self.policy(helm), 16379)
        assert rule["from"] == [{"podSelector": {"matchLabels": SERVER_SELECTOR}}]
        assert {p["port"] for p in rule["ports"]} == {16379}

    def test_client_port_from_pods_jobs_tests_namespace_and_labelled_clients(self, helm):
        peers = self.rule_for(self.policy(helm), 6379)["from"]
        components = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
                      for p in peers if "namespaceSelector" not in p and p["podSelector"]}
        assert components == {"server", "reconciler", "test"}
        assert {"podSelector": {}} in peers
        assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"valkey-rel-client": "true"}}} in peers

    def test_client_port_can_be_narrowed(self, helm):
        extra = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
        peers = self.rule_for(self.policy(helm, {"networkPolicy": {"allowNamespace": False, "allowLabelledClients": False,
                                                                   "extraClients": [extra]}}), 6379)["from"]
        assert {"podSelector": {}} not in peers
        assert extra in peers
        assert len(peers) == 4

    def test_metrics_port_from_the_configured_peers(self, helm):
        peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        policy = self.policy(helm, {"metrics": {"enabled": True}, "networkPolicy": {"metricsFrom": peers}})
        assert self.rule_for(policy, 9121)["from"] == peers

    def test_job_and_test_pods_accept_no_connections(self, helm):
        docs = render_chart(helm)
        for component in ("reconciler", "test"):
            policy = one(docs, "NetworkPolicy", f"valkey-rel-{component}")
            assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
            assert policy["spec"]["ingress"] == []

    def test_can_be_turned_off(self, helm):
        assert not find(render_chart(helm, {"networkPolicy": {"enabled": False}}), "NetworkPolicy")


class TestPodDisruptionBudget:
    def test_on_by_default_with_max_unavailable_one(self, helm):
        pdb = one(render_chart(helm), "PodDisruptionBudget", "valkey-rel")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == SERVER_SELECTOR

    def test_can_be_turned_off(self, helm):
        assert not find(render_chart(helm, {"pdb": {"enabled": False}}), "PodDisruptionBudget")


class TestMetrics:
    def test_off_by_default(self, helm):
        docs = render_chart(helm)
        assert not find(docs, "Service", "valkey-rel-metrics") and not find(docs, "ServiceMonitor")

    def test_metrics_service_selects_the_pods(self, helm):
        svc = one(render_chart(helm, {"metrics": {"enabled": True}}), "Service", "valkey-rel-metrics")
        assert svc["spec"]["selector"] == SERVER_SELECTOR
        assert ports(svc) == {9121}

    def test_service_monitor_only_when_the_crd_is_served(self, helm):
        values = {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}}
        assert not find(render_chart(helm, values), "ServiceMonitor")
        (sm,) = find(render_chart(helm, values, "--api-versions", SERVICE_MONITOR_API), "ServiceMonitor")
        assert sm["metadata"]["namespace"] == "cache"  # the release namespace
        assert sm["spec"]["namespaceSelector"] == {"matchNames": ["cache"]}
        assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"

    def test_service_monitor_lives_in_the_release_namespace_when_namespace_differs(self, helm):
        values = {"namespace": "data", "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}}}
        (sm,) = find(render_chart(helm, values, "--api-versions", SERVICE_MONITOR_API), "ServiceMonitor")
        assert sm["metadata"]["namespace"] == "cache"
        assert sm["spec"]["namespaceSelector"] == {"matchNames": ["data"]}
