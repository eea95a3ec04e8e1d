"""Drain planning: which shards survive, the exact steps per scale-down, each safety gate, idempotence, and
that the post-upgrade reconcile finishes the layout once the doomed pods are gone."""

import dataclasses

import pytest

from planner_sim import apply, built, converge, converge_drain, moved_primaries, shape, shrink
from valkey_reconciler.errors import PlanRefused
from valkey_reconciler.layout import layout
from valkey_reconciler.plan import MEMORY_HEADROOM, drain_gates, plan_drain
from valkey_reconciler.steps import Failover, Forget, MigrateSlots, RemoveNode, Replicate, ResetNode
from valkey_reconciler.view import (
    FAILED,
    IMPORTING,
    MIGRATING,
    PRIMARY,
    TOTAL_SLOTS,
    ClusterView,
    OpenSlot,
    Peer,
    SlotRange,
    count_slots,
    subtract_ranges,
)

MB = 1024 * 1024


def summary(steps):
    out = []
    for s in steps:
        if isinstance(s, Failover):
            out.append(("failover", s.ordinal, s.primary_ordinal))
        elif isinstance(s, MigrateSlots):
            out.append(("migrate", s.source_ordinal, s.target_ordinal, tuple(str(r) for r in s.ranges)))
        elif isinstance(s, Replicate):
            out.append(("replicate", s.ordinal, s.primary_ordinal))
        elif isinstance(s, RemoveNode):
            out.append(("remove", s.ordinal))
        elif isinstance(s, ResetNode):
            out.append(("reset", s.ordinal))
        elif isinstance(s, Forget):
            out.append(("forget", s.node_id[:8]))
        else:
            out.append((s.kind,))
    return out


def replace_node(view, ordinal, **changes):
    nodes = [dataclasses.replace(n, **changes) if n.ordinal == ordinal else n for n in view.nodes]
    return ClusterView(tuple(nodes))


def after_drain_and_reconcile(view, masters, replicas):
    """Drain, shrink the StatefulSet, reconcile: the final view (asserts the drain left nothing behind)."""
    drained, _ = converge_drain(view, masters, replicas)
    size = masters * (1 + replicas)
    for n in drained:
        if n.ordinal >= size:
            assert n.is_alone and not n.slots and n.keys == 0, f"{n.label()} still in the cluster"
    survivors = shrink(drained, size)
    assert not survivors.foreign_peers(), "a survivor still knows a removed node"
    final, _ = converge(survivors, masters, replicas)
    return drained, final


def assert_exact(final, masters, replicas):
    counts = [count_slots(p.slots) for p in final.primaries()]
    assert len(counts) == masters and sum(counts) == TOTAL_SLOTS and max(counts) - min(counts) <= 1
    assert [len(final.replicas_of(p.node_id)) for p in final.primaries()] == [replicas] * masters


# -- the transitions of the issue -------------------------------------------------------------------------


def test_6x0_to_3x0_moves_each_doomed_shard_to_one_survivor_then_removes_it():
    view = built(6, 0)
    assert summary(plan_drain(view, 3, 0)) == [
        ("migrate", 3, 0, ("8193-10923",)),
        ("migrate", 4, 1, ("10924-13653",)),
        ("migrate", 5, 2, ("13654-16383",)),
        ("remove", 5), ("remove", 4), ("remove", 3),
    ]
    drained, final = after_drain_and_reconcile(view, 3, 0)
    assert [count_slots(p.slots) for p in drained.primaries()] == [5462, 5461, 5461]
    assert_exact(final, 3, 0)


def test_4x1_to_2x1_with_primaries_on_high_ordinals_fails_over_first():
    view = moved_primaries(built(4, 1), [4, 5, 6, 7])
    assert [p.ordinal for p in view.primaries()] == [4, 5, 6, 7]
    steps = plan_drain(view, 2, 1)
    assert summary(steps) == [
        # every shard has one surviving member: the lowest surviving ordinals (0, 1) keep their shards
        ("failover", 0, 4), ("failover", 1, 5),
        ("migrate", 6, 0, ("8192-12287",)), ("migrate", 7, 1, ("12288-16383",)),
        # 2 and 3 replicated the dissolved shards: re-pointed before their primaries go
        ("replicate", 2, 0), ("replicate", 3, 1),
        ("remove", 5), ("remove", 4), ("remove", 7), ("remove", 6),
    ]
    assert "taking over from ordinal 4" in steps[0].describe()
    _, final = after_drain_and_reconcile(view, 2, 1)
    assert_exact(final, 2, 1)
    assert [p.ordinal for p in final.primaries()] == [0, 1]


def test_4x1_to_2x1_in_place_reuses_the_emptied_primaries_as_replicas():
    view = built(4, 1)
    assert summary(plan_drain(view, 2, 1)) == [
        ("migrate", 2, 0, ("8192-12287",)), ("migrate", 3, 1, ("12288-16383",)),
        # 0 and 1 lose their only replicas (4, 5): the emptied primaries 2, 3 take over before
        ("replicate", 2, 0), ("replicate", 3, 1),
        ("remove", 7), ("remove", 6), ("remove", 5), ("remove", 4),
    ]
    _, final = after_drain_and_reconcile(view, 2, 1)
    assert_exact(final, 2, 1)


def test_3x2_to_3x1_removes_the_highest_replicas_only():
    view = built(3, 2)
    assert summary(plan_drain(view, 3, 1)) == [("remove", 8), ("remove", 7), ("remove", 6)]
    _, final = after_drain_and_reconcile(view, 3, 1)
    assert_exact(final, 3, 1)


def test_3x1_to_2x2_removes_no_pod_so_drain_has_nothing_and_reconcile_empties_a_primary():
    view = built(3, 1)
    assert plan_drain(view, 2, 2) == ()
    final, _ = converge(view, 2, 2)
    assert_exact(final, 2, 2)


def test_5x1_to_1x0_moves_everything_to_ordinal_0():
    view = built(5, 1)
    assert summary(plan_drain(view, 1, 0)) == [
        ("migrate", 1, 0, ("3277-6553",)), ("migrate", 2, 0, ("6554-9830",)),
        ("migrate", 3, 0, ("9831-13107",)), ("migrate", 4, 0, ("13108-16383",)),
        ("remove", 9), ("remove", 8), ("remove", 7), ("remove", 6), ("remove", 5),
        ("remove", 4), ("remove", 3), ("remove", 2), ("remove", 1),
    ]
    _, final = after_drain_and_reconcile(view, 1, 0)
    assert_exact(final, 1, 0)


def test_masters_up_replicas_down_2x3_to_3x1_drains_replicas_and_reconcile_adds_the_primary():
    view = built(2, 3)
    assert summary(plan_drain(view, 3, 1)) == [("remove", 7), ("remove", 6)]
    _, final = after_drain_and_reconcile(view, 3, 1)
    assert_exact(final, 3, 1)


def test_masters_down_replicas_up_6x0_to_2x1():
    view = built(6, 0)
    steps = plan_drain(view, 2, 1)
    assert [s for s in summary(steps) if s[0] != "migrate"] == [
        ("replicate", 2, 0), ("replicate", 3, 1), ("remove", 5), ("remove", 4),
    ]
    _, final = after_drain_and_reconcile(view, 2, 1)
    assert_exact(final, 2, 1)


def test_a_replica_of_a_doomed_primary_with_no_replica_places_becomes_an_empty_primary():
    # 2x1 with primaries moved onto 2 and 3; 1x1: shard of ordinal 0 survives, ordinal 1 replicated the other
    view = moved_primaries(built(2, 1), [2, 3])
    steps = summary(plan_drain(view, 3, 0))
    assert ("failover", 1, 3) in steps and ("remove", 3) in steps
    drained, final = after_drain_and_reconcile(view, 3, 0)
    assert_exact(final, 3, 0)


def test_shard_survival_prefers_most_surviving_members():
    # 3x2 with shard 2's members all doomed except one, shard 0 with two survivors: 1x... keep shard 0
    view = built(3, 2)  # shard s: primary s, replicas 3+s and 6+s
    steps = plan_drain(view, 1, 1)  # survivors 0, 1: shard 0 has {0}, shard 1 has {1}: tie → ordinal 0
    assert summary(steps)[:2] == [("migrate", 1, 0, ("5462-10922",)), ("migrate", 2, 0, ("10923-16383",))]
    moved = moved_primaries(view, [3])  # shard 0's primary now on 3; survivors 0..3 for 2x1
    steps = plan_drain(moved, 2, 1)
    # shard 0 has two surviving members (0, 3), shard 1 one (1): shards 0 and 1 survive, 2 dissolves
    assert not any(s[0] == "failover" for s in summary(steps))
    assert {s.target_ordinal for s in steps if isinstance(s, MigrateSlots)} == {3, 1}


def test_drain_plan_is_readable():
    for s in plan_drain(moved_primaries(built(4, 1), [4, 5, 6, 7]), 2, 1):
        line = s.describe()
        assert "ordinal" in line and "\n" not in line and len(line) < 160


# -- idempotence and no-ops -------------------------------------------------------------------------------


@pytest.mark.parametrize("masters,replicas", [(1, 0), (3, 1), (2, 2)])
def test_same_size_is_a_no_op(masters, replicas):
    view = built(masters, replicas)
    assert plan_drain(view, masters, replicas) == ()
    drain_gates(view, masters, replicas)


def test_a_second_drain_is_a_no_op():
    view = moved_primaries(built(4, 1), [4, 6])
    drained, steps = converge_drain(view, 2, 1)
    assert steps and plan_drain(drained, 2, 1) == ()
    drain_gates(drained, 2, 1)


def test_a_reset_node_not_yet_forgotten_is_forgotten_next():
    from planner_sim import interrupt

    view = built(3, 1)
    remove = plan_drain(view, 2, 1)[-1]
    assert isinstance(remove, RemoveNode)
    cut = interrupt(view, remove, 0.5, atomic=False)
    ghost = remove.node_id
    assert ghost in cut.foreign_peers()
    assert summary(plan_drain(cut, 2, 1))[0] == ("forget", ghost[:8])


# -- gates ------------------------------------------------------------------------------------------------


def refusal(view, masters, replicas):
    with pytest.raises(PlanRefused) as err:
        drain_gates(view, masters, replicas)
    return err.value


def test_gate_masters_below_one():
    err = refusal(built(2, 0), 0, 0)
    assert err.data["reason"] == "masters_below_one" and "set masters to 1 or more" in str(err)


def test_gate_failed_pod():
    view = built(3, 0)
    nodes = []
    for n in view.nodes:
        known = tuple(dataclasses.replace(p, health=FAILED) if p.node_id == view.by_ordinal(2).node_id
                      and n.ordinal != 2 else p for p in n.known_nodes)
        nodes.append(dataclasses.replace(n, known_nodes=known))
    err = refusal(ClusterView(tuple(nodes)), 2, 0)
    assert err.data["reason"] == "node_failed" and err.data["ordinal"] == 2
    assert "reports ordinal 2" in str(err) and "as failed" in str(err)


def test_gate_cluster_state_fail():
    view = replace_node(built(3, 0), 1, cluster_state="fail")
    err = refusal(view, 2, 0)
    assert err.data["reason"] == "cluster_unhealthy" and "cluster_state is not ok on ordinal 1" in str(err)


def test_gate_uncovered_slots():
    view = built(3, 0)
    n0 = view.by_ordinal(0)
    view = replace_node(view, 0, slots=subtract_ranges(n0.slots, (SlotRange(0, 9),)))
    err = refusal(view, 2, 0)
    assert err.data["reason"] == "slots_uncovered" and "slots 0-9 (10) are owned by no pod" in str(err)


def test_gate_slot_open_on_several_nodes():
    view = built(3, 0)
    n0 = view.by_ordinal(0)
    view = replace_node(view, 1, open_slots=(OpenSlot(7, IMPORTING, n0.node_id),))
    view = replace_node(view, 2, open_slots=(OpenSlot(7, IMPORTING, n0.node_id),))
    err = refusal(view, 2, 0)
    assert err.data["reason"] == "slot_open_on_several_nodes" and "slot 7" in str(err)


def test_an_open_slot_that_can_be_closed_is_closed_first():
    view = built(3, 0)
    n0, n1 = view.by_ordinal(0), view.by_ordinal(1)
    view = replace_node(view, 0, open_slots=(OpenSlot(7, MIGRATING, n1.node_id),))
    view = replace_node(view, 1, open_slots=(OpenSlot(7, IMPORTING, n0.node_id),))
    drain_gates(view, 2, 0)
    assert [s.kind for s in plan_drain(view, 2, 0)] == ["close_open_slot"]


def test_gate_maxmemory_with_headroom():
    view = built(4, 0)
    for o in range(4):
        view = replace_node(view, o, used_memory=100 * MB)
    # 4 → 2: ordinal 0 receives all of ordinal 2 (≈100 MB): needs ≈200 MB
    fits = 200 * MB / (1 - MEMORY_HEADROOM) + MB
    for o in (0, 1):
        view = replace_node(view, o, maxmemory=int(fits))
    drain_gates(view, 2, 0)
    tight = replace_node(view, 0, maxmemory=210 * MB)  # 200 MB > 210 × 0.9 = 189 MB
    err = refusal(tight, 2, 0)
    assert err.data["reason"] == "not_enough_memory" and err.data["ordinal"] == 0
    assert "raise maxmemory" in str(err) and "10% headroom" in str(err)
    assert drain_gates(replace_node(view, 0, maxmemory=0), 2, 0) is None  # 0 = no limit


def test_gate_unknown_member():
    view = built(3, 0)
    stranger = Peer(node_id="e" * 40, ip="127.0.1.50", port=6379, role=PRIMARY, health="online")
    view = ClusterView(tuple(dataclasses.replace(n, known_nodes=n.known_nodes + (stranger,)) for n in view.nodes))
    err = refusal(view, 2, 0)
    assert err.data["reason"] == "unknown_node" and "127.0.1.50" in str(err) and "eeeeeeee" in str(err)


def test_gate_replica_not_synced_before_failover():
    view = moved_primaries(built(2, 1), [2, 3])
    view = replace_node(view, 0, link_up=False)
    err = refusal(view, 1, 1)
    assert err.data["reason"] == "replica_not_synced" and "ordinal 0" in str(err)


def test_gate_lone_doomed_node_with_keys():
    from planner_sim import grow

    view = grow(built(2, 0), 1)
    view = replace_node(view, 2, keys=5)
    err = refusal(view, 1, 1)
    assert err.data["reason"] == "lone_node_with_data" and "5 keys" in str(err)


def test_a_lone_empty_doomed_node_needs_nothing():
    from planner_sim import grow

    view = grow(built(2, 0), 2)
    assert plan_drain(view, 2, 0) == ()
