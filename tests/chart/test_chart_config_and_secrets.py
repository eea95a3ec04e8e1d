"""The ConfigMap (top-level templates verbatim, overrides.conf with maxmemory and extraConfig) and the Secrets (generated, kept via lookup, never leaked into ConfigMaps, command lines or env literals)."""

import base64
import re

import pytest

from chart_helpers import ROOT, containers, find, one, render_chart, secret_values
from scenarios import EXISTING_SECRET, SCENARIOS

MIB = 1024 * 1024


def configmap(helm, values=None, *extra):
    return one(render_chart(helm, values, *extra), "ConfigMap", "valkey-rel-config")


def overrides(helm, values=None):
    return configmap(helm, values)["data"]["overrides.conf"].splitlines()


class TestConfigMap:
    @pytest.mark.parametrize("name", ["valkey.conf", "users.acl"])
    def test_holds_the_top_level_template_verbatim(self, helm, name):
        assert configmap(helm)["data"][name] == (ROOT / name).read_text().rstrip("\n")

    def test_templates_hold_only_placeholders(self, helm):
        data = configmap(helm)["data"]
        assert "${VALKEY_REPLICATION_PASSWORD}" in data["valkey.conf"]
        assert re.search(r"\$\{VALKEY_\w+\}", data["users.acl"])

    def test_maxmemory_is_derived_from_the_memory_limit(self, helm):
        assert f"maxmemory {512 * MIB * 75 // 100}" in overrides(helm)

    @pytest.mark.parametrize("limit, percent, expected", [
        ("1Gi", 50, 512 * MIB),
        ("1G", 80, 800_000_000),
        ("1.5Gi", 100, 1536 * MIB),
        ("268435456", 75, 201326592),
    ])
    def test_maxmemory_percent_of_limit(self, helm, limit, percent, expected):
        lines = overrides(helm, {"resources": {"limits": {"memory": limit}}, "maxmemoryPercent": percent})
        assert f"maxmemory {expected}" in lines

    def test_explicit_maxmemory_wins(self, helm):
        lines = overrides(helm, {"maxmemory": "300mb"})
        assert "maxmemory 300mb" in lines
        assert not [l for l in lines if l.startswith("maxmemory ") and l != "maxmemory 300mb"]

    def test_no_memory_limit_and_no_maxmemory_writes_none(self, helm):
        assert not [l for l in overrides(helm, {"resources": {"limits": None}}) if l.startswith("maxmemory ")]

    def test_unparseable_memory_limit_is_refused_naming_the_fix(self, helm):
        from chart_helpers import render_error
        msg = render_error(helm, {"resources": {"limits": {"memory": "lots"}}})
        assert "resources.limits.memory" in msg and "maxmemory" in msg

    def test_policy_node_timeout_and_extra_config_are_appended(self, helm):
        lines = overrides(helm, {"maxmemoryPolicy": "allkeys-lru", "cluster": {"nodeTimeoutMs": 8000},
                                 "extraConfig": "hz 20\nlatency-tracking no\n"})
        assert "maxmemory-policy allkeys-lru" in lines
        assert "cluster-node-timeout 8000" in lines
        assert lines[-2:] == ["hz 20", "latency-tracking no"]


class TestSecrets:
    def test_generated_secrets_have_the_documented_keys(self, helm):
        docs = render_chart(helm)
        creds = one(docs, "Secret", "valkey-rel-credentials")
        assert set(creds["data"]) == {"admin-password", "client-password"}
        internal = one(docs, "Secret", "valkey-rel-internal")
        assert set(internal["data"]) == {"replication-password", "reconciler-password", "monitor-password"}

    def test_generated_passwords_are_long_and_alphanumeric(self, helm):
        values = secret_values(render_chart(helm))
        assert len(values) == 5
        for v in values:
            assert re.fullmatch(r"[A-Za-z0-9]{32,}", v)
        assert len(set(values)) == 5

    def test_generated_secret_follows_custom_data_keys(self, helm):
        creds = one(render_chart(helm, {"credentials": {"dataKeys": {"adminPassword": "adm", "clientPassword": "cli"}}}),
                    "Secret", "valkey-rel-credentials")
        assert set(creds["data"]) == {"adm", "cli"}

    def test_existing_secret_is_not_generated_but_internal_is(self, helm):
        docs = render_chart(helm, EXISTING_SECRET)
        assert {s["metadata"]["name"] for s in find(docs, "Secret")} == {"valkey-rel-internal"}

    def test_passwords_are_kept_across_upgrades_via_lookup(self):
        text = (ROOT / "chart" / "templates" / "_helpers.tpl").read_text()
        # helm template has no cluster to look up; the lookup call itself is what keeps passwords.
        assert re.search(r'lookup "v1" "Secret" \$ns \$secretName', text)


def _password_free_strings(docs):
    """Every string a password must never be in: ConfigMap data, commands/args, env literal values."""
    for cm in find(docs, "ConfigMap"):
        yield from cm.get("data", {}).values()
    for doc in docs:
        if doc["kind"] not in ("StatefulSet", "Job", "Pod"):
            continue
        for c in containers(doc):
            yield from c.get("command", [])
            yield from c.get("args", [])
            for e in c.get("env", []):
                if "value" in e:
                    yield e["value"]
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                yield from c.get(probe, {}).get("exec", {}).get("command", [])


class TestNoPasswordLeaks:
    @pytest.mark.parametrize("scenario", ["default", "generated-secret", "metrics-networkpolicy", "persistence-null"])
    def test_generated_passwords_appear_only_in_secrets(self, helm, scenario):
        values, extra = SCENARIOS[scenario]
        docs = render_chart(helm, values, *extra)
        passwords = secret_values(docs)
        assert passwords
        for text in _password_free_strings(docs):
            for pw in passwords:
                assert pw not in text

    @pytest.mark.parametrize("scenario", ["existing-secret", "k3s-set", "default"])
    def test_every_password_variable_comes_from_a_secret(self, helm, scenario):
        values, extra = SCENARIOS[scenario]
        docs = render_chart(helm, values, *extra)
        for doc in docs:
            if doc["kind"] not in ("StatefulSet", "Job", "Pod"):
                continue
            for c in containers(doc):
                for e in c.get("env", []):
                    if re.search(r"PASSWORD|AUTH", e["name"]):
                        assert "value" not in e, f"{doc['metadata']['name']}/{c['name']}: {e['name']} is a literal"
                        assert "secretKeyRef" in e["valueFrom"]

    def test_no_secret_data_in_configmaps_with_known_password(self, helm):
        # A known password placed in the user's Secret never reaches the chart, so nothing can leak it;
        # the generated Secrets' base64 form must not appear outside Secrets either.
        docs = render_chart(helm)
        encoded = [v for s in find(docs, "Secret") for v in s["data"].values()]
        for text in _password_free_strings(docs):
            for enc in encoded:
                assert enc not in text
                assert base64.b64decode(enc).decode() not in text
