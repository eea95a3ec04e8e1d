"""values.yaml documents every key with a helm-docs `# --` comment, and chart/README.md lists every value."""

import re

import pytest

from chart_helpers import CHART

# Values whose content is a Kubernetes object passed through as-is: its inner keys are not chart values.
PASS_THROUGH = ("resources", "updateStrategy", "hooks.resources", "metrics.resources")


def documented_keys():
    """(dotted key, has a `# --` comment directly above it) for every key line of values.yaml."""
    stack: list[tuple[int, str]] = []
    pending_doc = False
    out = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending_doc = True
            continue
        if stripped.startswith("#"):
            continue
        if not stripped:
            pending_doc = False
            continue
        m = re.match(r"^( *)([A-Za-z][\w]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [m.group(2)])
        stack.append((indent, m.group(2)))
        out.append((key, pending_doc))
        pending_doc = False
    return out


def chart_values():
    return [k for k, _ in documented_keys() if not any(k.startswith(p + ".") for p in PASS_THROUGH)]


class TestValuesDocumentation:
    def test_every_key_has_a_helm_docs_comment(self):
        missing = [k for k, doc in documented_keys() if not doc and not any(k.startswith(p + ".") for p in PASS_THROUGH)]
        assert not missing, f"keys without a '# --' comment in values.yaml: {missing}"

    def test_readme_lists_every_value(self):
        readme = (CHART / "README.md").read_text()
        missing = [k for k in chart_values() if f"| {k} |" not in readme]
        assert not missing, f"chart/README.md lacks rows for: {missing}"

    @pytest.mark.parametrize("key", ["name", "namespace", "image", "persistence", "cluster.masters",
                                     "cluster.replicasPerMaster", "cluster.reconcilerImage", "credentials.secret",
                                     "credentials.dataKeys.adminPassword", "credentials.dataKeys.clientPassword",
                                     "resources", "hooks.restartPolicy", "hooks.backoffLimit",
                                     "hooks.ttlSecondsAfterFinished", "hooks.hookDeletePolicy"])
    def test_original_keys_are_kept(self, key):
        assert key in chart_values()
