"""Every scenario renders with Helm 3 and 4, validates strictly against Kubernetes' schemas, passes `helm lint --strict`, and packages with the top-level templates inside."""

import subprocess
import tarfile

import kubernetes_validate
import pytest

from chart_helpers import CHART, HELM_TIMEOUT_S, HELMS, ROOT, render_chart
from scenarios import SCENARIOS

OLDEST_K8S = "1.30.0"
NEWEST_K8S = kubernetes_validate.latest_version()
# CRDs are not in Kubernetes' OpenAPI schemas; kubernetes-validate has no schema for them.
CRD_KINDS = {"ServiceMonitor"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
class TestStrictSchemas:
    @pytest.mark.parametrize("k8s", [OLDEST_K8S, NEWEST_K8S])
    def test_every_object_validates_strictly(self, helm, scenario, k8s):
        values, extra = SCENARIOS[scenario]
        docs = render_chart(helm, values, *extra)
        assert docs, "nothing rendered"
        checked = 0
        for doc in docs:
            if doc["kind"] in CRD_KINDS:
                continue
            kubernetes_validate.validate(doc, k8s, strict=True)
            checked += 1
        assert checked >= 10


class TestLint:
    def test_helm_lint_strict_passes(self, helm):
        proc = subprocess.run([str(HELMS[helm]), "lint", "--strict", str(CHART)],
                              capture_output=True, text=True, timeout=HELM_TIMEOUT_S)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout

    def test_helm_lint_strict_passes_with_everything_on(self, helm):
        proc = subprocess.run([str(HELMS[helm]), "lint", "--strict", str(CHART),
                               "--set", "metrics.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
                               "--set", "persistence=null", "--set", "cluster.replicasPerMaster=2"],
                              capture_output=True, text=True, timeout=HELM_TIMEOUT_S)
        assert proc.returncode == 0, proc.stdout + proc.stderr


class TestPackage:
    def test_package_contains_the_top_level_templates(self, helm, tmp_path):
        proc = subprocess.run([str(HELMS[helm]), "package", str(CHART), "-d", str(tmp_path)],
                              capture_output=True, text=True, timeout=HELM_TIMEOUT_S)
        assert proc.returncode == 0, proc.stderr
        (tgz,) = tmp_path.glob("valkey-*.tgz")
        with tarfile.open(tgz) as tar:
            for name in ("valkey.conf", "users.acl"):
                member = tar.getmember(f"valkey/files/{name}")
                assert member.isfile(), f"{name} is packaged as a link, not a file"
                assert tar.extractfile(member).read() == (ROOT / name).read_bytes()
