"""Fixtures of the chart tests: every test taking `helm` runs with Helm 3.18 and Helm 4.1."""

import pytest

from chart_helpers import HELMS


@pytest.fixture(params=sorted(HELMS))
def helm(request) -> str:
    """Each test that takes `helm` runs once with Helm 3.18 and once with Helm 4.1."""
    return request.param
