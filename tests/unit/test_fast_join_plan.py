"""Fast join in the planner: which nodes lower cluster-node-timeout while they join, and when it goes back."""

import dataclasses

from planner_sim import apply, built, converge, fresh_node, grow
from valkey_reconciler.layout import layout
from valkey_reconciler.plan import (
    JOIN_NODE_TIMEOUT_MS, JOIN_PING_BUDGET_PER_S, PROJECT_NODE_TIMEOUT_MS, join_node_timeout, normal_node_timeout, plan,
)
from valkey_reconciler.steps import Meet, MigrateSlots, SetNodeTimeout
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


def not_serving(view: ClusterView, ordinals) -> ClusterView:
    """The view with `ordinals` empty (the simulator counts a key per slot) and still at cluster_state fail
    (Valkey's rejoin delay)."""
    return ClusterView(tuple(dataclasses.replace(n, cluster_state="fail", keys=0) if n.ordinal in ordinals else n
                             for n in view))


class TestLowering:
    def test_formation_lowers_only_the_primaries_first_and_restores_them_last_once_they_serve(self):
        view = fresh(6)
        steps = plan(view, layout(view, 3, 1), fast_join=True)
        assert timeout_steps(steps[:3]) == [(o, JOIN_NODE_TIMEOUT_MS, "lower", False) for o in range(3)]
        assert timeout_steps(steps[3:]) == timeout_steps(steps[-3:]) == [(o, NORMAL, "restore", True) for o in range(3)]

    def test_a_large_formation_stays_within_the_ping_budget(self):
        view = fresh(100)
        lowered = {t for _, t, kind, _ in timeout_steps(plan(view, layout(view, 50, 1), fast_join=True))
                   if kind == "lower"}
        assert lowered == {join_node_timeout(50, 100, NORMAL)} and lowered != {JOIN_NODE_TIMEOUT_MS}
        assert 2000 * 50 * 99 / lowered.pop() <= JOIN_PING_BUDGET_PER_S
        assert join_node_timeout(3, 6, NORMAL) == JOIN_NODE_TIMEOUT_MS
        assert join_node_timeout(500, 1000, NORMAL) == NORMAL  # the budget allows no lowering at all

    def test_a_new_primary_is_lowered_once_met_and_restored_before_its_slots(self):
        grown = with_timeouts(grow(built(3, 0), 3))
        assert timeout_steps(plan(grown, layout(grown, 6, 0), fast_join=True)) == []  # not met yet
        met = met_new_primaries(grown)
        steps = plan(met, layout(met, 6, 0), fast_join=True)
        kinds = [type(s).__name__ for s in steps]
        assert timeout_steps(steps) == [(o, JOIN_NODE_TIMEOUT_MS, "lower", False) for o in (3, 4, 5)]
        assert max(i for i, k in enumerate(kinds) if k == "SetNodeTimeout") < kinds.index("MigrateSlots")
        lowered = with_timeouts(met, o3=JOIN_NODE_TIMEOUT_MS, o4=JOIN_NODE_TIMEOUT_MS, o5=JOIN_NODE_TIMEOUT_MS)
        lowered = not_serving(lowered, (3, 4, 5))
        steps = plan(lowered, layout(lowered, 6, 0), fast_join=True)
        kinds = [type(s).__name__ for s in steps]
        # Back, after waiting until they serve, before the first migration onto them.
        assert timeout_steps(steps) == [(o, NORMAL, "restore", True) for o in (3, 4, 5)]
        assert max(i for i, k in enumerate(kinds) if k == "SetNodeTimeout") < kinds.index("MigrateSlots")

    def test_without_fast_join_nothing_is_lowered(self):
        view = fresh(6)
        assert timeout_steps(plan(view, layout(view, 3, 1))) == []

    def test_primaries_that_own_slots_are_never_lowered(self):
        # e.g. a cluster whose pods all came back on new IPs: they must not vote each other failed
        waiting = not_serving(with_timeouts(built(3, 1)), range(3))
        assert timeout_steps(plan(waiting, layout(waiting, 3, 1), fast_join=True)) == []

    def test_a_timeout_already_at_the_join_value_is_left_alone(self):
        view = with_timeouts(fresh(3), JOIN_NODE_TIMEOUT_MS)
        assert timeout_steps(plan(view, layout(view, 3, 0), fast_join=True)) == []

    def test_unknown_timeouts_are_not_touched(self):
        view = ClusterView(tuple(fresh_node(o) for o in range(3)))  # CONFIG GET refused: 0
        assert timeout_steps(plan(view, layout(view, 3, 0), fast_join=True)) == []


def met_new_primaries(view: ClusterView) -> ClusterView:
    """`view` after the planner's meets only: the new pods are members, own nothing, and do not serve yet."""
    while True:
        steps = plan(view, layout(view, 6, 0))
        if not isinstance(steps[0], Meet):
            return not_serving(view, (3, 4, 5))
        view = apply(view, steps[0])


class TestRestoring:
    def test_a_lowered_node_that_serves_goes_back_without_waiting(self):
        view = with_timeouts(built(3, 0), o1=JOIN_NODE_TIMEOUT_MS)
        assert view.by_ordinal(1).cluster_state == "ok"
        assert timeout_steps(plan(view, layout(view, 3, 0))) == [(1, NORMAL, "restore", False)]

    def test_a_lowered_node_still_joining_and_not_receiving_slots_goes_back_last_once_it_serves(self):
        view = fresh(3)
        view = with_timeouts(view, o0=JOIN_NODE_TIMEOUT_MS)
        steps = plan(view, layout(view, 1, 2), fast_join=True)
        assert timeout_steps(steps) == timeout_steps(steps[-1:]) == [(0, NORMAL, "restore", True)]

    def test_a_lowered_node_that_became_a_replica_goes_back(self):
        view = with_timeouts(built(3, 1), o4=JOIN_NODE_TIMEOUT_MS)
        assert timeout_steps(plan(view, layout(view, 3, 1))) == [(4, NORMAL, "restore", False)]

    def test_the_restore_value_is_the_setting_then_the_highest_running_then_the_project_default(self):
        view = with_timeouts(built(3, 0), 15000, o0=JOIN_NODE_TIMEOUT_MS)
        assert normal_node_timeout(view, 7000) == 7000
        assert normal_node_timeout(view, None) == 15000
        unknown = ClusterView(tuple(fresh_node(o) for o in range(3)))
        assert normal_node_timeout(unknown, None) == PROJECT_NODE_TIMEOUT_MS


class TestConvergence:
    def test_formation_and_growth_converge_with_every_timeout_restored(self):
        # Forming primaries are lowered and restored once they serve; a node an interrupted run left lowered
        # (ordinal 6) is restored on the way, and the simulator refuses a slot move onto a lowered node.
        view, done = converge(fresh(6), 3, 1, fast_join=True)
        assert {n.node_timeout_ms for n in view} == {NORMAL}
        assert [(o, kind) for o, _, kind, _ in timeout_steps(done)] == \
            [(0, "lower"), (1, "lower"), (2, "lower"), (0, "restore"), (1, "restore"), (2, "restore")]
        grown = ClusterView(view.nodes + tuple(fresh_node(o, node_timeout_ms=NORMAL) for o in range(6, 10)))
        grown = with_timeouts(grown, o6=JOIN_NODE_TIMEOUT_MS)
        final, done = converge(grown, 5, 1, fast_join=True)
        assert {n.node_timeout_ms for n in final} == {NORMAL}
        assert any(isinstance(s, MigrateSlots) for s in done)
