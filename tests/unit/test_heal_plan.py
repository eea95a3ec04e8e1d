"""The planner on fault states: a pod back as a new node (with and without a replica, before and after the
failover), the persistence contract for lost slots, unknown members, slots claimed twice, mixed versions."""

from __future__ import annotations

import dataclasses

import pytest

from planner_sim import apply, built, grow, restart_fresh
from valkey_reconciler.errors import PlanRefused
from valkey_reconciler.layout import layout
from valkey_reconciler.observe import parse_shards
from valkey_reconciler.plan import plan
from valkey_reconciler.steps import AssignSlots, AwaitAgreement, AwaitFailover, Forget, Meet, MigrateSlots, Replicate
from valkey_reconciler.view import FAILED, ONLINE, PRIMARY, ClusterView, Peer, SlotRange

MAX_STEPS = 100


def run(view, masters, replicas, persistence):
    """observe → plan → first step, to the end; returns (final view, steps taken)."""
    done = []
    for _ in range(MAX_STEPS):
        steps = plan(view, layout(view, masters, replicas), persistence=persistence)
        if not steps:
            return view, done
        view = apply(view, steps[0])
        done.append(steps[0])
    raise AssertionError("no convergence")


def test_a_primary_back_fresh_waits_for_the_failover_then_rejoins_as_a_replica_of_the_promoted_one():
    start = built(3, 1)
    old_id = start.by_ordinal(0).node_id
    replica = next(n for n in start if n.primary_id == old_id)
    view = restart_fresh(start, 0, failed=False)
    steps = plan(view, layout(view, 3, 1), persistence="")
    assert steps == (AwaitFailover(node_id=old_id, ranges=start.by_ordinal(0).slots,
                                   replica_ordinals=(replica.ordinal,), replaced_by=0),)
    final, done = run(view, 3, 1, "")
    forget = next(s for s in done if isinstance(s, Forget))
    assert forget.node_id == old_id and forget.replaced_by == 0 and "cache contract" in forget.note
    assert [type(s) for s in done] == [AwaitFailover, Forget, Meet, Replicate]
    assert final.by_ordinal(0).primary_id == replica.node_id
    assert old_id not in {p.node_id for n in final for p in n.known_nodes}
    assert len(final.primaries()) == 3 and final.fully_covered()


def test_a_replica_less_primary_back_empty_gets_its_slots_only_with_persistence_off():
    start = built(3, 0)
    lost = start.by_ordinal(1)
    view = restart_fresh(start, 1, failed=True)
    for persistence in (None, "rdb", "rdb,aof"):
        with pytest.raises(PlanRefused) as err:
            plan(view, layout(view, 3, 0), persistence=persistence)
        assert err.value.data["reason"] == "slots_lost"
        assert f"CLUSTER FORGET {lost.node_id}" in str(err.value) and "ordinal 1" in str(err.value)
    final, done = run(view, 3, 0, "")
    assert isinstance(done[0], Forget) and done[0].lost == lost.slots and "lost" in done[0].note
    assert any(isinstance(s, AssignSlots) and s.ordinal == 1 and s.ranges == lost.slots for s in done)
    assert final.fully_covered() and final.by_ordinal(1).slots == lost.slots


def test_a_replica_less_primary_not_yet_failed_is_waited_for():
    view = restart_fresh(built(3, 0), 2, failed=False)
    steps = plan(view, layout(view, 3, 0), persistence="")
    assert len(steps) == 1 and isinstance(steps[0], AwaitFailover) and steps[0].replica_ordinals == ()


def test_a_live_member_at_an_address_of_no_pod_is_refused():
    view = built(3, 0)
    stranger = Peer(node_id="f" * 40, ip="10.9.9.9", port=6379, role="replica", health=ONLINE)
    nodes = tuple(dataclasses.replace(n, known_nodes=n.known_nodes + (stranger,)) for n in view)
    with pytest.raises(PlanRefused) as err:
        plan(ClusterView(nodes), layout(ClusterView(nodes), 3, 0))
    assert err.value.data["reason"] == "unknown_node" and "10.9.9.9" in str(err.value)


def test_slots_claimed_twice_are_left_to_the_epoch_rule_and_the_layout_does_not_break():
    view = built(3, 0)
    a, b = view.by_ordinal(0), view.by_ordinal(1)
    nodes = {n.ordinal: n for n in view}
    nodes[1] = dataclasses.replace(b, slots=b.slots + (SlotRange(0, 99),), config_epoch=a.config_epoch + 5)
    contested = ClusterView(tuple(nodes.values()))
    steps = plan(contested, layout(contested, 3, 0))
    assert steps == (AwaitAgreement(ranges=(SlotRange(0, 99),), claimants=(0, 1)),)
    settled = apply(contested, steps[0])
    assert settled.contested() == ()


def test_moving_slots_is_refused_while_versions_are_mixed_but_attaching_replicas_is_not():
    base = built(3, 0)
    mixed = grow(base, 3)
    nodes = tuple(dataclasses.replace(n, version=(8, 1, 8)) if n.ordinal >= 3 else n for n in mixed)
    view = ClusterView(nodes)
    with pytest.raises(PlanRefused) as err:
        plan(view, layout(view, 6, 0))
    assert err.value.data["reason"] == "mixed_versions"
    assert "9.1.2 on ordinals 0, 1, 2; 8.1.8 on ordinals 3, 4, 5" in str(err.value)
    steps = plan(view, layout(view, 3, 1))
    assert steps and not any(isinstance(s, MigrateSlots) for s in steps)


def test_a_dead_primary_listed_next_to_its_promoted_replica_owns_no_slots():
    reply = [["slots", [0, 5461], "id", "s1", "nodes", [
        ["id", "dead", "ip", "", "endpoint", "", "role", "master", "replication-offset", 0, "health", "fail"],
        ["id", "live", "ip", "127.0.10.4", "port", 6379, "role", "master", "replication-offset", 9,
         "health", "online"],
    ]]]
    peers = {p.node_id: p for p in parse_shards(reply)}
    assert peers["dead"].slots == () and peers["dead"].health == FAILED
    assert peers["live"].slots == (SlotRange(0, 5461),) and peers["live"].role == PRIMARY


def test_status_names_an_old_identity_still_known_to_the_cluster():
    from valkey_reconciler.status import problems

    start = built(3, 1)
    old_id = start.by_ordinal(0).node_id
    view = restart_fresh(start, 0, failed=True, promoted=True)
    found = [p for p in problems(view, 1) if old_id[:8] in p]
    assert found and "(failed)" in found[0] and "none of the pods" in found[0]
    assert not [p for p in problems(start, 1) if "none of the pods" in p]
