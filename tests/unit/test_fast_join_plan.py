"""Fast join in the planner: which nodes lower cluster-node-timeout while they join, and when it goes back."""

import dataclasses

from planner_sim import built, converge, fresh_node, grow
from valkey_reconciler.layout import layout
from valkey_reconciler.plan import JOIN_NODE_TIMEOUT_MS, PROJECT_NODE_TIMEOUT_MS, normal_node_timeout, plan
from valkey_reconciler.steps import MigrateSlots, SetNodeTimeout
from valkey_reconciler.view import ClusterView

NORMAL = 5000


def with_timeouts(view: ClusterView, value: int = NORMAL, **by_ordinal: int) -> ClusterView:
    """Every node running `value` ms, except ordinals given as o<N>=ms."""
    explicit = {int(k[1:]): v for k, v in by_ordinal.items()}
    return ClusterView(tuple(dataclasses.replace(n, node_timeout_ms=explicit.get(n.ordinal, value)) for n in view))


def timeout_steps(steps):
    return [(s.ordinal, s.timeout_ms, "lower" if s.lower else "restore", s.await_ok)
            for s in steps if isinstance(s, SetNodeTimeout)]


def fresh(count: int) -> ClusterView:
    return ClusterView(tuple(fresh_node(o, node_timeout_ms=NORMAL) for o in range(count)))


class TestLowering:
    def test_formation_lowers_only_the_primaries_first(self):
        view = fresh(6)
        steps = plan(view, layout(view, 3, 1), fast_join=True)
        assert timeout_steps(steps[:3]) == [(o, JOIN_NODE_TIMEOUT_MS, "lower", False) for o in range(3)]
        assert timeout_steps(steps[3:]) == []

    def test_growth_lowers_the_new_primaries_and_restores_them_before_their_slots(self):
        view = with_timeouts(grow(built(3, 0), 3))
        steps = plan(view, layout(view, 6, 0), fast_join=True)
        assert timeout_steps(steps) == [(o, JOIN_NODE_TIMEOUT_MS, "lower", False) for o in (3, 4, 5)]
        lowered = with_timeouts(view, o3=JOIN_NODE_TIMEOUT_MS, o4=JOIN_NODE_TIMEOUT_MS, o5=JOIN_NODE_TIMEOUT_MS)
        # The new nodes are not serving yet (cluster_state fail): they go back, after waiting for ok,
        # right before the first migration onto them.
        lowered = ClusterView(tuple(dataclasses.replace(n, cluster_state="fail") if n.ordinal >= 3 else n
                                    for n in lowered))
        steps = plan(lowered, layout(lowered, 6, 0), fast_join=True)
        kinds = [type(s).__name__ for s in steps]
        first_migration = kinds.index("MigrateSlots")
        assert timeout_steps(steps) == [(o, NORMAL, "restore", True) for o in (3, 4, 5)]
        assert max(i for i, k in enumerate(kinds) if k == "SetNodeTimeout") < first_migration

    def test_without_fast_join_nothing_is_lowered(self):
        view = fresh(6)
        assert timeout_steps(plan(view, layout(view, 3, 1))) == []

    def test_nodes_that_hold_slots_or_keys_are_never_lowered(self):
        view = with_timeouts(built(3, 1))
        failing = ClusterView(tuple(dataclasses.replace(n, cluster_state="fail") for n in view))
        assert timeout_steps(plan(failing, layout(failing, 3, 1), fast_join=True)) == []

    def test_a_timeout_already_at_or_below_the_join_value_is_left_alone(self):
        view = with_timeouts(fresh(3), 400)
        assert timeout_steps(plan(view, layout(view, 3, 0), fast_join=True)) == []

    def test_unknown_timeouts_are_not_touched(self):
        view = ClusterView(tuple(fresh_node(o) for o in range(3)))  # CONFIG GET refused: 0
        assert timeout_steps(plan(view, layout(view, 3, 0), fast_join=True)) == []


class TestRestoring:
    def test_a_lowered_node_that_serves_goes_back_without_waiting(self):
        view = with_timeouts(built(3, 0), o1=JOIN_NODE_TIMEOUT_MS)
        assert view.by_ordinal(1).cluster_state == "ok"
        assert timeout_steps(plan(view, layout(view, 3, 0))) == [(1, NORMAL, "restore", False)]

    def test_a_lowered_node_still_joining_and_not_receiving_slots_is_left_to_finish(self):
        view = fresh(3)
        view = with_timeouts(view, o0=JOIN_NODE_TIMEOUT_MS)
        steps = plan(view, layout(view, 1, 2), fast_join=True)
        assert [s for s in timeout_steps(steps) if s[0] == 0] == []

    def test_a_lowered_node_that_became_a_replica_goes_back(self):
        view = with_timeouts(built(3, 1), o4=JOIN_NODE_TIMEOUT_MS)
        assert timeout_steps(plan(view, layout(view, 3, 1))) == [(4, NORMAL, "restore", False)]

    def test_the_restore_value_is_the_setting_then_the_other_nodes_then_the_project_default(self):
        view = with_timeouts(built(3, 0), 15000, o0=JOIN_NODE_TIMEOUT_MS)
        assert normal_node_timeout(view, 7000) == 7000
        assert normal_node_timeout(view, None) == 15000
        alone = with_timeouts(fresh(1), JOIN_NODE_TIMEOUT_MS)
        assert normal_node_timeout(alone, None) == PROJECT_NODE_TIMEOUT_MS


class TestConvergence:
    def test_formation_and_growth_converge_with_every_timeout_restored(self):
        view, done = converge(fresh(6), 3, 1, fast_join=True)
        assert {n.node_timeout_ms for n in view} == {NORMAL}
        assert any(isinstance(s, SetNodeTimeout) and s.lower for s in done)
        grown = ClusterView(view.nodes + tuple(fresh_node(o, node_timeout_ms=NORMAL) for o in range(6, 10)))
        # The simulator refuses a migration onto a node whose timeout is still lowered.
        final, done = converge(grown, 5, 1, fast_join=True)
        assert {n.node_timeout_ms for n in final} == {NORMAL}
        assert any(isinstance(s, MigrateSlots) for s in done)
