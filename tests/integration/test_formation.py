"""Forming clusters from fresh nodes with the real CLI on both engines, and the no-op second run."""

from __future__ import annotations

import pytest

from .helpers import FAST_OVERRIDES, reconcile, wait_healthy

SHAPES = [(1, 0), (3, 1), (6, 2)]


@pytest.mark.parametrize("masters,replicas", SHAPES, ids=[f"{m}x{r}" for m, r in SHAPES])
def test_fresh_nodes_form_the_cluster_and_a_second_run_takes_no_step(node_set, engine, masters, replicas):
    nodes = node_set(masters * (1 + replicas), engine=engine, persistence="", overrides=FAST_OVERRIDES)

    first = reconcile(nodes, masters, replicas)
    assert first.code == 0, first.stderr
    assert "reconcile_finished" in first.event_names()
    assert wait_healthy(nodes, masters, replicas) == []

    second = reconcile(nodes, masters, replicas)
    assert second.code == 0, second.stderr
    names = second.event_names()
    assert "reconcile_noop" in names and "step_started" not in names and "plan_computed" not in names
