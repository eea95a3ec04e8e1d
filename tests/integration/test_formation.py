"""Forming clusters from fresh nodes with the real CLI on both engines, and the no-op second run."""

from __future__ import annotations

import pytest

from .helpers import FAST_OVERRIDES, fast_join_steps, node_timeouts, reconcile, wait_healthy

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


def test_fast_join_lowers_the_primaries_timeout_while_they_join_and_puts_it_back(node_set, engine):
    nodes = node_set(6, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    run = reconcile(nodes, 3, 1)
    assert run.code == 0, run.stderr
    # Lowered on the three primaries before they met anyone, restored once the cluster served and agreed.
    assert sorted(fast_join_steps(run)) == [(0, False), (0, True), (1, False), (1, True), (2, False), (2, True)]
    assert node_timeouts(nodes) == {o: 2000 for o in range(6)}
    assert wait_healthy(nodes, 3, 1) == []


def test_without_config_set_rights_the_run_still_forms_the_cluster(node_set, engine):
    nodes = node_set(3, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    run = reconcile(nodes, 3, 0, "--fast-join", "off")
    assert run.code == 0, run.stderr
    assert fast_join_steps(run) == []
    assert node_timeouts(nodes) == {o: 2000 for o in range(3)}
