"""Table-driven planner tests: an observed view and the desired size in, the exact steps out."""

import dataclasses

import pytest

from planner_sim import apply, built, converge, fresh_node, fresh_view, grow, node_id, rebuild, shape
from valkey_reconciler.errors import PlanRefused
from valkey_reconciler.layout import layout
from valkey_reconciler.plan import plan
from valkey_reconciler.steps import (
    AssignSlots,
    AwaitMigration,
    CloseOpenSlot,
    Failover,
    Forget,
    Meet,
    MigrateSlots,
    Replicate,
    ResetNode,
    SetConfigEpoch,
)
from valkey_reconciler.view import (
    EXPORT,
    FAILED,
    IMPORT,
    IMPORTING,
    MIGRATING,
    PRIMARY,
    TOTAL_SLOTS,
    ClusterView,
    MigrationJob,
    OpenSlot,
    Peer,
    Placement,
    SlotRange,
    count_slots,
)


def steps_for(view, masters, replicas, placements=None):
    return plan(view, layout(view, masters, replicas, placements))


def summary(steps):
    """Steps as comparable tuples of ordinals and ranges (node ids left out)."""
    out = []
    for s in steps:
        if isinstance(s, SetConfigEpoch):
            out.append(("epoch", s.ordinal, s.epoch))
        elif isinstance(s, Meet):
            out.append(("meet", s.ordinal, s.via_ordinal))
        elif isinstance(s, AssignSlots):
            out.append(("assign", s.ordinal, tuple(str(r) for r in s.ranges)))
        elif isinstance(s, MigrateSlots):
            out.append(("migrate", s.source_ordinal, s.target_ordinal, tuple(str(r) for r in s.ranges)))
        elif isinstance(s, Replicate):
            out.append(("replicate", s.ordinal, s.primary_ordinal))
        elif isinstance(s, ResetNode):
            out.append(("reset", s.ordinal))
        elif isinstance(s, CloseOpenSlot):
            out.append(("close", s.slot, s.migrating_ordinal, s.importing_ordinal))
        elif isinstance(s, AwaitMigration):
            out.append(("await", s.source_ordinal, s.target_ordinal))
        elif isinstance(s, Forget):
            out.append(("forget", s.node_id[:8]))
        else:
            out.append((s.kind,))
    return out


FORMATION = [
    pytest.param(
        1, 0,
        [("epoch", 0, 1), ("assign", 0, ("0-16383",))],
        id="fresh-1x0",
    ),
    pytest.param(
        3, 1,
        # primaries claim their slots while alone (as valkey-cli does); replicas meet their own primary too
        [("epoch", 0, 1), ("epoch", 1, 2), ("epoch", 2, 3),
         ("assign", 0, ("0-5461",)), ("assign", 1, ("5462-10922",)), ("assign", 2, ("10923-16383",)),
         ("meet", 1, 0), ("meet", 2, 0), ("meet", 3, 0), ("meet", 4, 1), ("meet", 4, 0), ("meet", 5, 2), ("meet", 5, 0),
         ("replicate", 3, 0), ("replicate", 4, 1), ("replicate", 5, 2)],
        id="fresh-3x1",
    ),
    pytest.param(
        6, 2,
        [("epoch", o, o + 1) for o in range(6)]
        + [("assign", 0, ("0-2730",)), ("assign", 1, ("2731-5461",)), ("assign", 2, ("5462-8192",)),
           ("assign", 3, ("8193-10923",)), ("assign", 4, ("10924-13653",)), ("assign", 5, ("13654-16383",))]
        + [("meet", o, 0) for o in range(1, 6)]
        + [m for o in range(6, 18) for m in ([("meet", o, 0)] if o % 6 == 0 else [("meet", o, o % 6), ("meet", o, 0)])]
        # like valkey-cli create: ordinal M + j·M + s serves shard s
        + [("replicate", o, (o - 6) % 6) for o in range(6, 18)],
        id="fresh-6x2",
    ),
]


@pytest.mark.parametrize("masters,replicas,expected", FORMATION)
def test_fresh_formation_plan(masters, replicas, expected):
    view = fresh_view(masters * (1 + replicas))
    steps = steps_for(view, masters, replicas)
    assert summary(steps) == expected
    final, _ = converge(view, masters, replicas)
    assert shape(final) == layout(view, masters, replicas).shape()


@pytest.mark.parametrize("masters,replicas", [(1, 0), (3, 1), (6, 2)])
def test_converged_cluster_needs_no_step(masters, replicas):
    assert steps_for(built(masters, replicas), masters, replicas) == ()


def test_3x0_to_6x0_moves_each_donors_high_end_to_one_new_primary():
    view = grow(built(3, 0), 3)
    steps = steps_for(view, 6, 0)
    assert summary(steps) == [
        ("meet", 3, 0), ("meet", 4, 0), ("meet", 5, 0),
        ("migrate", 0, 3, ("2731-5461",)),
        ("migrate", 1, 4, ("8193-10922",)),
        ("migrate", 2, 5, ("13654-16383",)),
    ]
    moved = sum(count_slots(s.ranges) for s in steps if isinstance(s, MigrateSlots))
    assert moved == TOTAL_SLOTS - 3 * 2731  # exactly the surplus of the three old primaries, nothing more
    final, _ = converge(view, 6, 0)
    counts = [count_slots(p.slots) for p in final.primaries()]
    assert max(counts) - min(counts) <= 1 and sum(counts) == TOTAL_SLOTS
    # the three primaries that held the most slots keep the +1s (16384 = 6 × 2730 + 4)
    assert counts == [2731, 2731, 2731, 2731, 2730, 2730]


def test_3x1_to_5x1_fills_new_primaries_in_ordinal_order_with_minimal_moves():
    view = grow(built(3, 1), 4)
    steps = steps_for(view, 5, 1)
    assert summary(steps) == [
        # the new replicas meet their own (new) primaries, and the anchor
        ("meet", 6, 0), ("meet", 7, 0), ("meet", 8, 6), ("meet", 8, 0), ("meet", 9, 7), ("meet", 9, 0),
        ("migrate", 0, 6, ("3277-5461",)),
        ("migrate", 1, 6, ("8739-9830",)),
        ("migrate", 1, 7, ("9831-10922",)),
        ("migrate", 2, 7, ("14200-16383",)),
        ("replicate", 8, 6), ("replicate", 9, 7),
    ]
    final, _ = converge(view, 5, 1)
    counts = sorted(count_slots(p.slots) for p in final.primaries())
    assert counts == [3276, 3277, 3277, 3277, 3277]
    assert [len(final.replicas_of(p.node_id)) for p in final.primaries()] == [1] * 5


K8S = {0: "A", 1: "B", 2: "C", 3: "B", 4: "C", 5: "A", 6: "A", 7: "B", 8: "C"}


def test_3x1_to_3x2_adds_replicas_off_their_primarys_kubernetes_node():
    places = {o: Placement(node=n, zone=None) for o, n in K8S.items()}
    view = grow(built(3, 1, places), 3, places)
    steps = steps_for(view, 3, 2)
    assert all(isinstance(s, (Meet, Replicate)) for s in steps)
    reps = {s.ordinal: s.primary_ordinal for s in steps if isinstance(s, Replicate)}
    assert sorted(reps) == [6, 7, 8]
    assert sorted(reps.values()) == [0, 1, 2]  # one new replica per primary
    for replica, primary in reps.items():
        assert K8S[replica] != K8S[primary], f"ordinal {replica} shares node {K8S[replica]} with its primary"
    final, _ = converge(view, 3, 2, places)
    assert [len(final.replicas_of(p.node_id)) for p in final.primaries()] == [2, 2, 2]


def test_3x1_to_3x2_without_placement_uses_distinct_addresses_round_robin():
    view = grow(built(3, 1), 3)
    steps = steps_for(view, 3, 2)
    assert [("replicate", s.ordinal, s.primary_ordinal) for s in steps if isinstance(s, Replicate)] == [
        ("replicate", 6, 0), ("replicate", 7, 1), ("replicate", 8, 2)]
    for s in steps:
        if isinstance(s, Replicate):
            assert view.by_ordinal(s.ordinal).ip != view.by_ordinal(s.primary_ordinal).ip


def test_zone_is_avoided_when_nodes_differ():
    places = {0: Placement("a1", "za"), 1: Placement("b1", "zb"), 2: Placement("a2", "za"), 3: Placement("b2", "zb")}
    view = fresh_view(4, places)
    reps = {s.ordinal: s.primary_ordinal for s in steps_for(view, 2, 1, places) if isinstance(s, Replicate)}
    assert reps == {2: 1, 3: 0}


def test_open_slots_are_planned_first_and_alone():
    view = grow(built(3, 0), 3)
    view = apply(view, steps_for(view, 6, 0)[0])  # meet ordinal 3
    n0, n3 = view.by_ordinal(0), view.by_ordinal(3)
    nodes = list(view.nodes)
    nodes[0] = dataclasses.replace(n0, open_slots=(OpenSlot(5461, MIGRATING, n3.node_id),))
    nodes[3] = dataclasses.replace(n3, open_slots=(OpenSlot(5461, IMPORTING, n0.node_id),))
    nodes[1] = dataclasses.replace(nodes[1], open_slots=(OpenSlot(100, MIGRATING, n3.node_id),))
    opened = ClusterView(tuple(nodes))
    steps = steps_for(opened, 6, 0)
    assert steps == (
        CloseOpenSlot(100, 1, nodes[1].node_id, None, None),
        CloseOpenSlot(5461, 0, n0.node_id, 3, n3.node_id),
    )
    assert "finish moving it from ordinal 0" in steps[1].describe()
    assert "set it stable on ordinal 1" in steps[0].describe()


def test_atomic_migration_in_flight_is_awaited_first():
    view = grow(built(3, 0), 3)
    a, b = view.by_ordinal(0), view.by_ordinal(1)
    job = MigrationJob("j", a.node_id, b.node_id, (SlotRange(0, 10),), "streaming", EXPORT)
    nodes = list(view.nodes)
    nodes[0] = dataclasses.replace(a, migrations=(job,))
    nodes[1] = dataclasses.replace(b, migrations=(dataclasses.replace(job, operation=IMPORT),))
    steps = steps_for(ClusterView(tuple(nodes)), 6, 0)
    assert summary(steps) == [("await", 0, 1)]


def test_failed_over_shard_is_left_alone():
    view = built(3, 1)
    view = apply(view, Failover(3, view.by_ordinal(3).node_id))
    assert view.by_ordinal(3).is_primary and view.by_ordinal(0).is_replica
    assert steps_for(view, 3, 1) == ()
    assert layout(view, 3, 1).shard_of(3).home == 0


def test_lone_node_with_keys_is_refused_with_its_ordinal():
    view = grow(built(3, 0), 1)
    nodes = list(view.nodes)
    nodes[3] = dataclasses.replace(nodes[3], keys=42)
    with pytest.raises(PlanRefused) as err:
        steps_for(ClusterView(tuple(nodes)), 4, 0)
    assert err.value.data["ordinal"] == 3
    assert err.value.data["reason"] == "lone_node_with_data"
    assert "ordinal 3" in str(err.value) and "42 keys" in str(err.value)


def test_a_formation_cut_short_after_its_slots_were_claimed_is_joined():
    view = fresh_view(6)
    for step in steps_for(view, 3, 1):
        if step.kind == "meet":
            break
        view = apply(view, step)
    assert all(n.is_alone for n in view) and [n.slot_count for n in view][:3] == [5462, 5461, 5461]
    assert [s.kind for s in steps_for(view, 3, 1)][:1] == ["meet"]
    final, _ = converge(view, 3, 1)
    assert shape(final) == layout(fresh_view(6), 3, 1).shape()


def test_a_lone_keyless_node_claiming_slots_a_member_owns_is_refused():
    view = grow(built(3, 0), 1)
    nodes = list(view.nodes)
    nodes[3] = dataclasses.replace(nodes[3], slots=(SlotRange(0, 9),), keys=0)
    with pytest.raises(PlanRefused) as err:
        steps_for(ClusterView(tuple(nodes)), 4, 0)
    assert err.value.data["ordinal"] == 3 and "10 slots" in str(err.value)


def test_slots_owned_outside_the_expected_pods_are_refused():
    view = built(2, 0)
    ghost = Peer(node_id="f" * 40, ip="127.0.1.99", port=6379, role=PRIMARY, health="online",
                 slots=(SlotRange(0, 99),))
    nodes = [dataclasses.replace(n, known_nodes=n.known_nodes + (ghost,)) for n in view.nodes]
    nodes[0] = dataclasses.replace(nodes[0], slots=(SlotRange(100, 8191),))
    with pytest.raises(PlanRefused) as err:
        steps_for(ClusterView(tuple(nodes)), 2, 0)
    assert err.value.data["reason"] == "slots_outside_expected_pods"


def test_missing_replica_after_failover_is_reattached():
    view = built(3, 1)
    view = apply(view, Failover(3, view.by_ordinal(3).node_id))
    # the old primary (now ordinal 0's identity as a replica) dies; its pod returns as a fresh node
    old = view.by_ordinal(0)
    ghost = dataclasses.replace(old.peer(old.node_id), health=FAILED)
    nodes = []
    for n in view.nodes:
        if n.ordinal == 0:
            nodes.append(dataclasses.replace(fresh_node(0), node_id=node_id(0, 1),
                                             known_nodes=(dataclasses.replace(ghost, node_id=node_id(0, 1),
                                                                              health="online", role=PRIMARY),)))
        else:
            known = tuple(ghost if p.node_id == old.node_id else p for p in n.known_nodes)
            nodes.append(dataclasses.replace(n, known_nodes=known))
    broken = ClusterView(tuple(nodes))
    steps = steps_for(broken, 3, 1)
    assert summary(steps) == [("forget", old.node_id[:8]), ("meet", 0, 3), ("meet", 0, 1),
                              ("replicate", 0, 3)]
    final, _ = converge(broken, 3, 1)
    assert [len(final.replicas_of(p.node_id)) for p in final.primaries()] == [1, 1, 1]


def test_2x2_to_3x1_promotes_a_surplus_replica_and_keeps_shards_protected():
    view = built(2, 2)
    steps = steps_for(view, 3, 1)
    assert summary(steps) == [
        ("reset", 2), ("meet", 2, 0),
        ("migrate", 0, 2, ("5462-8191",)),
        ("migrate", 1, 2, ("13653-16383",)),
        ("replicate", 5, 2),
    ]
    final, _ = converge(view, 3, 1)
    assert [len(final.replicas_of(p.node_id)) for p in final.primaries()] == [1, 1, 1]


def test_4x0_to_2x1_demotes_the_smallest_primaries_after_emptying_them():
    view = built(4, 0)
    steps = steps_for(view, 2, 1)
    assert summary(steps) == [
        ("migrate", 2, 0, ("8192-12287",)), ("migrate", 3, 1, ("12288-16383",)),
        ("replicate", 2, 0), ("replicate", 3, 1),
    ]
    final, _ = converge(view, 2, 1)
    assert [p.ordinal for p in final.primaries()] == [0, 1]
    assert all(count_slots(p.slots) == TOTAL_SLOTS // 2 for p in final.primaries())


def test_plan_is_deterministic_and_readable():
    view = grow(built(3, 1), 4)
    first = steps_for(view, 5, 1)
    assert first == steps_for(view, 5, 1)
    for s in first:
        line = s.describe()
        assert "ordinal" in line and "\n" not in line and len(line) < 160
        assert s.kind == s.kind.lower() and " " not in s.kind


def test_masters_below_one_is_refused():
    with pytest.raises(PlanRefused, match="masters must be at least 1"):
        layout(fresh_view(1), 0, 0)
