"""checkov over the rendered default manifests: no failed check outside tests/chart/checkov-skips.yaml, and no stale skip."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from chart_helpers import ROOT, render_text

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SKIPS = yaml.safe_load((Path(__file__).parent / "checkov-skips.yaml").read_text())
CHECKOV_TIMEOUT_S = 300


def _kind_name(resource: str) -> str:
    """checkov names resources `Kind.namespace.name[.labels…]`; keep `Kind/name`."""
    kind, _namespace, rest = resource.split(".", 2)
    return f"{kind}/{rest}"


def _skipped(check_id: str, resource: str) -> bool:
    kind_name = _kind_name(resource)
    return any(s["check"] == check_id and any(kind_name == r or kind_name.startswith(r + ".") for r in s["resources"])
               for s in SKIPS)


@pytest.fixture(scope="module")
def checkov_failures(tmp_path_factory):
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run scripts/bootstrap.sh")
    manifest = tmp_path_factory.mktemp("checkov") / "rendered.yaml"
    manifest.write_text(render_text("helm4"))
    proc = subprocess.run([str(CHECKOV), "-f", str(manifest), "--framework", "kubernetes", "--quiet", "--compact",
                           "-o", "json", "--skip-download"],
                          capture_output=True, text=True, timeout=CHECKOV_TIMEOUT_S)
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= 15
    return [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]


class TestCheckov:
    def test_every_skip_has_a_reason(self):
        for s in SKIPS:
            assert s["check"].startswith("CKV") and s["resources"] and len(s["reason"]) > 40

    def test_no_failed_check_outside_the_skip_list(self, checkov_failures):
        unexpected = [f for f in checkov_failures if not _skipped(*f)]
        assert not unexpected, f"checkov failures not in checkov-skips.yaml: {unexpected}"

    def test_every_skip_is_still_needed(self, checkov_failures):
        failing = {(cid, _kind_name(res).split(".")[0]) for cid, res in checkov_failures}
        for s in SKIPS:
            for r in s["resources"]:
                assert (s["check"], r) in failing, f"{s['check']} no longer fails on {r}: drop it from the skip list"
