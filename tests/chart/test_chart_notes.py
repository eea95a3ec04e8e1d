"""NOTES.txt: connection help, hook log locations, password commands and the warnings for risky topologies."""

import shutil
import subprocess

import pytest
import yaml

from chart_helpers import CHART, HELM_TIMEOUT_S, HELMS

# `helm template` never prints NOTES.txt, and Helm 3's `install --dry-run` wants a cluster. A copy of
# the chart gets one extra template that includes the real NOTES.txt into a ConfigMap, which
# `helm template` then prints.
NOTES_PROBE = '''apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-probe
data:
  notes: {{ include "valkey/templates/NOTES.txt" . | quote }}
'''


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory):
    copy = tmp_path_factory.mktemp("notes") / "valkey"
    shutil.copytree(CHART, copy, symlinks=False)
    (copy / "templates" / "zz-notes-probe.yaml").write_text(NOTES_PROBE)
    return copy


@pytest.fixture
def notes(helm, notes_chart):
    def render(*sets):
        args = [a for s in sets for a in ("--set", s)]
        proc = subprocess.run([str(HELMS[helm]), "template", "rel", str(notes_chart), "-n", "cache",
                               "--show-only", "templates/zz-notes-probe.yaml", *args],
                              capture_output=True, text=True, timeout=HELM_TIMEOUT_S)
        assert proc.returncode == 0, proc.stderr
        return yaml.safe_load(proc.stdout)["data"]["notes"]
    return render


class TestNotes:
    def test_default_notes_explain_connecting_logs_and_passwords(self, notes):
        text = notes()
        assert "valkey-cli -c" in text and "ValkeyCluster" in text
        assert "kubectl -n cache logs job/valkey-rel-reconcile" in text
        assert "kubectl -n cache logs job/valkey-rel-drain" in text
        assert "get secret valkey-rel-credentials" in text and "admin-password" in text
        assert "WARNING" not in text

    def test_warns_when_replicas_are_zero(self, notes):
        assert "WARNING: cluster.replicasPerMaster=0" in notes("cluster.replicasPerMaster=0")

    def test_warns_when_persistence_is_off(self, notes):
        assert "WARNING: persistence is off: this is a cache" in notes("persistence=null")

    def test_warns_when_masters_below_three(self, notes):
        assert "fewer than 3 primaries" in notes("cluster.masters=2")

    def test_notes_when_service_monitor_crd_is_missing(self, notes):
        assert "no ServiceMonitor was created" in notes("metrics.enabled=true", "metrics.serviceMonitor.enabled=true")
