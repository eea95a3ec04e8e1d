"""Unit tests of the observed-state values: slot range arithmetic and the ClusterView queries."""

import dataclasses

import pytest

from planner_sim import built, fresh_view
from valkey_reconciler.view import (
    ALL_SLOTS,
    FAILED,
    PRIMARY,
    EXPORT,
    IMPORT,
    TOTAL_SLOTS,
    ClusterView,
    MigrationJob,
    SlotRange,
    count_slots,
    format_ranges,
    intersect_ranges,
    merge_ranges,
    ranges_from_slots,
    subtract_ranges,
    take_high,
    take_low,
)


def test_slot_range_rejects_out_of_bounds_and_reversed():
    with pytest.raises(ValueError):
        SlotRange(0, TOTAL_SLOTS)
    with pytest.raises(ValueError):
        SlotRange(5, 4)


def test_merge_subtract_intersect_count():
    a = (SlotRange(10, 20), SlotRange(0, 5), SlotRange(6, 9))
    assert merge_ranges(a) == (SlotRange(0, 20),)
    assert subtract_ranges(ALL_SLOTS, (SlotRange(100, 199),)) == (SlotRange(0, 99), SlotRange(200, TOTAL_SLOTS - 1))
    assert intersect_ranges((SlotRange(0, 100),), (SlotRange(50, 150), SlotRange(90, 200))) == (SlotRange(50, 100),)
    assert count_slots(ALL_SLOTS) == TOTAL_SLOTS
    assert ranges_from_slots([3, 1, 2, 7]) == (SlotRange(1, 3), SlotRange(7, 7))
    assert format_ranges((SlotRange(7, 7), SlotRange(1, 3))) == "1-3,7"


def test_take_high_and_low_pick_from_the_ends():
    r = (SlotRange(0, 9), SlotRange(20, 29))
    assert take_high(r, 12) == (SlotRange(8, 9), SlotRange(20, 29))
    assert take_low(r, 12) == (SlotRange(0, 9), SlotRange(20, 21))
    assert take_high(r, 100) == r


def test_view_queries_on_a_formed_cluster():
    view = built(3, 1)
    assert [p.ordinal for p in view.primaries()] == [0, 1, 2]
    assert view.agrees() and view.fully_covered()
    assert view.owner_of(0).ordinal == 0 and view.owner_of(TOTAL_SLOTS - 1).ordinal == 2
    assert [r.ordinal for r in view.replicas_of(view.by_ordinal(1).node_id)] == [4]
    assert view.ordinal_of(view.by_ordinal(5).node_id) == 5
    assert view.unowned_ranges() == ()


def test_agrees_is_false_when_one_node_sees_an_old_slot_map():
    view = built(2, 0)
    n0 = view.by_ordinal(0)
    stale = tuple(dataclasses.replace(p, slots=()) if p.node_id != n0.node_id else p for p in n0.known_nodes)
    view2 = ClusterView((dataclasses.replace(n0, known_nodes=stale), view.by_ordinal(1)))
    assert not view2.agrees()


def test_active_migrations_lists_a_job_once_though_both_sides_report_it():
    view = fresh_view(2)
    a, b = view.nodes
    job = MigrationJob("j1", a.node_id, b.node_id, (SlotRange(0, 9),), "snapshotting", EXPORT)
    done = MigrationJob("j0", a.node_id, b.node_id, (SlotRange(20, 29),), "success", EXPORT)
    view = ClusterView(
        (
            dataclasses.replace(a, migrations=(job, done)),
            dataclasses.replace(b, migrations=(dataclasses.replace(job, operation=IMPORT),)),
        )
    )
    assert view.active_migrations() == (job,)


def test_view_rejects_duplicate_ordinals_or_ids():
    n = fresh_view(1).nodes[0]
    with pytest.raises(ValueError):
        ClusterView((n, n))


def test_disagreement_names_the_node_and_what_it_sees_differently():
    view = built(3, 0)
    assert view.agrees() and view.disagreement() is None
    first = view.by_ordinal(0)
    other = view.by_ordinal(1)
    failed = tuple(dataclasses.replace(p, health=FAILED) if p.node_id == other.node_id else p
                   for p in first.known_nodes)
    stale = ClusterView(tuple(dataclasses.replace(n, known_nodes=failed) if n.ordinal == 0 else n for n in view))
    assert stale.disagreement() == f"{first.label()} marks {other.label()} failed"
    blind = ClusterView(tuple(dataclasses.replace(n, known_nodes=tuple(p for p in failed if p.health != FAILED))
                              if n.ordinal == 0 else n for n in view))
    assert blind.disagreement() == f"{first.label()} does not know {other.label()} yet"


def test_a_replica_role_still_spreading_leaves_the_slot_map_agreed():
    view = built(3, 1)
    replica = view.by_ordinal(3)
    first = view.by_ordinal(0)
    stale = tuple(dataclasses.replace(p, role=PRIMARY) if p.node_id == replica.node_id else p
                  for p in first.known_nodes)
    view = ClusterView(tuple(dataclasses.replace(n, known_nodes=stale) if n.ordinal == 0 else n for n in view))
    assert not view.agrees()
    assert view.disagreement() == f"{first.label()} sees {replica.label()} as primary, it is a replica"
    assert view.agrees(roles=False) and view.disagreement(roles=False) is None
