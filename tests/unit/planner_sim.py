"""A tiny, pure cluster simulator for planner tests: builds views and applies a Step to a ClusterView.

Gossip is modelled as instant: every node that is part of the cluster knows every other member exactly.
It exists only to test the planner; the product never simulates."""

from __future__ import annotations

import dataclasses
import hashlib

from valkey_reconciler.layout import layout
from valkey_reconciler.plan import JOIN_NODE_TIMEOUT_MS, plan, plan_drain
from valkey_reconciler.steps import (
    AssignSlots,
    AwaitAgreement,
    AwaitFailover,
    AwaitMigration,
    CloseOpenSlot,
    Failover,
    Forget,
    Meet,
    MigrateSlots,
    RemoveNode,
    Replicate,
    ResetNode,
    SetConfigEpoch,
    SetNodeTimeout,
    Step,
)
from valkey_reconciler.view import (
    EXPORT,
    IMPORT,
    IMPORTING,
    MIGRATING,
    FAILED,
    ONLINE,
    PRIMARY,
    REPLICA,
    TOTAL_SLOTS,
    ClusterView,
    MigrationJob,
    NodeState,
    OpenSlot,
    Peer,
    Placement,
    count_slots,
    intersect_ranges,
    merge_ranges,
    subtract_ranges,
    take_low,
)

CLUSTER = 1  # loopback cluster index used by the simulated pod IPs (127.0.1.x)
MAX_STEPS = 400


def node_id(ordinal: int, generation: int = 0) -> str:
    return hashlib.sha1(f"node-{ordinal}-{generation}".encode()).hexdigest()


def fresh_node(ordinal: int, placement: Placement | None = None, version=(9, 1, 2),
               node_timeout_ms: int = 0) -> NodeState:
    ip = f"127.0.{CLUSTER}.{ordinal + 1}"
    nid = node_id(ordinal)
    me = Peer(node_id=nid, ip=ip, port=6379, role=PRIMARY, health=ONLINE)
    return NodeState(
        ordinal=ordinal,
        address=f"{ip}:6379",
        ip=ip,
        node_id=nid,
        known_nodes=(me,),
        version=version,
        placement=placement,
        node_timeout_ms=node_timeout_ms,
    )


def fresh_view(count: int, placements: dict[int, Placement] | None = None) -> ClusterView:
    return ClusterView(tuple(fresh_node(o, (placements or {}).get(o)) for o in range(count)))


def _self_peer(n: NodeState) -> Peer:
    return Peer(
        node_id=n.node_id,
        ip=n.ip,
        port=n.port,
        role=n.role,
        health=ONLINE,
        replication_offset=n.repl_offset,
        slots=merge_ranges(n.slots) if n.is_primary else (),
    )


def rebuild(nodes: list[NodeState], members: set[str], ghosts: dict[str, Peer]) -> ClusterView:
    """Recompute what every node knows (instant gossip) and the derived keys/link fields."""
    by_id = {n.node_id: n for n in nodes}
    fixed = []
    for n in nodes:
        # Clients write only to a primary that serves: a member, or a lone node holding every slot (1×0).
        # A lone primary that claimed part of the slots (a formation cut short) has no key.
        if n.is_primary and n.slots and (n.node_id in members or n.slot_count == TOTAL_SLOTS):
            n = dataclasses.replace(n, keys=n.slot_count)
        fixed.append(n)
    by_id = {n.node_id: n for n in fixed}
    member_slots = [r for m in fixed if m.node_id in members and m.is_primary for r in m.slots]
    members_ok = count_slots(member_slots) == TOTAL_SLOTS
    out = []
    for n in fixed:
        # CLUSTER INFO cluster_state: ok once the node sees all 16384 slots served
        covered = members_ok if n.node_id in members else count_slots(n.slots) == TOTAL_SLOTS
        n = dataclasses.replace(n, cluster_state="ok" if covered else "fail")
        if n.is_replica:
            p = by_id.get(n.primary_id)
            n = dataclasses.replace(n, keys=p.keys if p else n.keys)
        if n.node_id in members:
            known = tuple(_self_peer(by_id[m]) for m in sorted(members)) + tuple(ghosts.values())
        else:
            known = (_self_peer(n),)
        out.append(dataclasses.replace(n, known_nodes=known))
    return ClusterView(tuple(out))


def _state(view: ClusterView):
    nodes = {n.ordinal: n for n in view}
    members = {n.node_id for n in view if not n.is_alone}
    ghosts: dict[str, Peer] = {}
    for nid, reports in view.foreign_peers().items():
        ghosts[nid] = reports[0]
    return nodes, members, ghosts


def _by_id(nodes: dict[int, NodeState], nid: str) -> NodeState:
    for n in nodes.values():
        if n.node_id == nid:
            return n
    raise AssertionError(f"step names unknown node {nid[:8]}")


def _move(nodes: dict[int, NodeState], source: NodeState, target: NodeState, ranges) -> None:
    assert source.is_primary and target.is_primary, "slots move between primaries only"
    assert intersect_ranges(source.slots, ranges) == merge_ranges(ranges), "source does not own every slot"
    left = subtract_ranges(source.slots, ranges)
    # one key per slot in the simulation: the keys leave with their slots
    nodes[source.ordinal] = dataclasses.replace(source, slots=left, keys=count_slots(left))
    t = nodes[target.ordinal]
    nodes[target.ordinal] = dataclasses.replace(t, slots=merge_ranges(t.slots + tuple(ranges)))


def apply(view: ClusterView, step: Step) -> ClusterView:
    """The view after `step` completed (what the executor's post-condition promises)."""
    nodes, members, ghosts = _state(view)
    if isinstance(step, CloseOpenSlot):
        slot = step.slot
        if step.finish:
            target = _by_id(nodes, step.importing_id)
            owner = view.owner_of(slot)
            if owner is not None and owner.node_id != target.node_id:
                _move(nodes, nodes[owner.ordinal], target, (_r(slot),))
        for o, n in list(nodes.items()):
            nodes[o] = dataclasses.replace(n, open_slots=tuple(x for x in n.open_slots if x.slot != slot))
    elif isinstance(step, AwaitMigration):
        _move(nodes, _by_id(nodes, step.source_id), _by_id(nodes, step.target_id), step.ranges)
        for o, n in list(nodes.items()):
            nodes[o] = dataclasses.replace(n, migrations=tuple(j for j in n.migrations if not j.active))
    elif isinstance(step, AwaitFailover):
        ghost = ghosts[step.node_id]
        if step.replica_ordinals:
            # Valkey's automatic failover: the best replica takes the lost primary's slots.
            n = nodes[step.replica_ordinals[0]]
            nodes[n.ordinal] = dataclasses.replace(n, role=PRIMARY, primary_id=None,
                                                   slots=merge_ranges(n.slots + ghost.slots))
            for o, m in list(nodes.items()):
                if m.is_replica and m.primary_id == step.node_id and o != n.ordinal:
                    nodes[o] = dataclasses.replace(m, primary_id=n.node_id)
            ghosts[step.node_id] = dataclasses.replace(ghost, role=REPLICA, slots=(), health=FAILED)
        else:
            ghosts[step.node_id] = dataclasses.replace(ghost, health=FAILED)
    elif isinstance(step, AwaitAgreement):
        # Valkey's epoch rule: the claimant with the higher config epoch keeps the slots.
        a, b = (nodes[o] for o in step.claimants)
        loser = a if (a.config_epoch, -a.ordinal) < (b.config_epoch, -b.ordinal) else b
        nodes[loser.ordinal] = dataclasses.replace(loser, slots=subtract_ranges(loser.slots, step.ranges))
    elif isinstance(step, SetNodeTimeout):
        n = _by_id(nodes, step.node_id)
        nodes[n.ordinal] = dataclasses.replace(n, node_timeout_ms=step.timeout_ms)
    elif isinstance(step, SetConfigEpoch):
        n = _by_id(nodes, step.node_id)
        assert n.is_alone and n.config_epoch == 0, "SET-CONFIG-EPOCH needs a lone node at epoch 0"
        nodes[n.ordinal] = dataclasses.replace(n, config_epoch=step.epoch)
    elif isinstance(step, Meet):
        n = _by_id(nodes, step.node_id)
        assert step.ip == n.ip
        members |= {step.node_id, step.via_id}
    elif isinstance(step, AssignSlots):
        n = _by_id(nodes, step.node_id)
        assert n.is_primary
        assert not intersect_ranges(view.owned_ranges(), step.ranges), "ADDSLOTS on an owned slot"
        nodes[n.ordinal] = dataclasses.replace(n, slots=merge_ranges(n.slots + step.ranges))
    elif isinstance(step, MigrateSlots):
        s, t = _by_id(nodes, step.source_id), _by_id(nodes, step.target_id)
        assert s.node_id in members and t.node_id in members
        assert t.node_timeout_ms != JOIN_NODE_TIMEOUT_MS, "slots moved onto a primary whose timeout is still lowered"
        _move(nodes, s, t, step.ranges)
    elif isinstance(step, Replicate):
        n, p = _by_id(nodes, step.node_id), _by_id(nodes, step.primary_id)
        assert not (n.is_primary and n.slots), "CLUSTER REPLICATE on a primary that owns slots"
        assert p.is_primary and p.node_id in members and n.node_id in members
        nodes[n.ordinal] = dataclasses.replace(
            n, role=REPLICA, primary_id=p.node_id, link_up=True, repl_offset=max(1, n.repl_offset)
        )
    elif isinstance(step, ResetNode):
        n = _by_id(nodes, step.node_id)
        assert not (n.is_primary and n.slots and n.keys), "reset of a primary owning keys"
        nodes[n.ordinal] = dataclasses.replace(
            n, role=PRIMARY, primary_id=None, slots=(), keys=0, link_up=False, repl_offset=0, open_slots=()
        )
        members.discard(n.node_id)
    elif isinstance(step, Forget):
        ghosts.pop(step.node_id, None)
    elif isinstance(step, Failover):
        n = _by_id(nodes, step.node_id)
        old = _by_id(nodes, n.primary_id)
        nodes[n.ordinal] = dataclasses.replace(n, role=PRIMARY, primary_id=None, slots=old.slots)
        # A manual failover leaves the old primary in sync as a replica of the new one.
        nodes[old.ordinal] = dataclasses.replace(
            old, role=REPLICA, primary_id=n.node_id, slots=(), link_up=True, repl_offset=max(1, old.repl_offset)
        )
        for o, m in list(nodes.items()):
            if m.is_replica and m.primary_id == old.node_id:
                nodes[o] = dataclasses.replace(m, primary_id=n.node_id)
    elif isinstance(step, RemoveNode):
        n = _by_id(nodes, step.node_id)
        assert not (n.is_primary and (n.slots or n.keys)), "removal of a primary that owns slots or keys"
        assert not any(m.is_replica and m.primary_id == n.node_id for m in nodes.values()), \
            "removal of a node that is still replicated"
        nodes[n.ordinal] = _hard_reset(n)
        members.discard(n.node_id)
        ghosts.pop(n.node_id, None)
    else:  # pragma: no cover
        raise AssertionError(f"the simulator does not know {step.kind}")
    if len(members) == 1:
        members.clear()
    return rebuild(list(nodes.values()), members, ghosts)


def _hard_reset(n: NodeState) -> NodeState:
    """CLUSTER RESET HARD: a new id (derived from the old one), no data, no peers, epochs zeroed."""
    new_id = hashlib.sha1(f"reset-{n.node_id}".encode()).hexdigest()
    return dataclasses.replace(
        n, node_id=new_id, role=PRIMARY, primary_id=None, slots=(), keys=0, link_up=False, repl_offset=0,
        open_slots=(), config_epoch=0,
    )


def _r(slot: int):
    from valkey_reconciler.view import SlotRange

    return SlotRange(slot, slot)


def interrupt(view: ClusterView, step: Step, fraction: float, atomic: bool) -> ClusterView:
    """The view after `step` was cut short: a migration part-done (legacy: the next slot left open; atomic:
    the job still in flight) or a step that did nothing yet."""
    if isinstance(step, RemoveNode):
        # The reset happened, the forget did not: the others still know the old id, failed and without address.
        nodes, members, ghosts = _state(view)
        n = _by_id(nodes, step.node_id)
        ghosts[n.node_id] = Peer(node_id=n.node_id, ip="", port=0, role=n.role, health=FAILED)
        nodes[n.ordinal] = _hard_reset(n)
        members.discard(n.node_id)
        return rebuild(list(nodes.values()), members, ghosts)
    if not isinstance(step, MigrateSlots):
        return view
    nodes, members, ghosts = _state(view)
    s, t = _by_id(nodes, step.source_id), _by_id(nodes, step.target_id)
    if atomic:
        job = MigrationJob("job-1", s.node_id, t.node_id, step.ranges, "snapshotting", EXPORT)
        nodes[s.ordinal] = dataclasses.replace(s, migrations=(job,))
        nodes[t.ordinal] = dataclasses.replace(t, migrations=(dataclasses.replace(job, operation=IMPORT),))
        return rebuild(list(nodes.values()), members, ghosts)
    total = count_slots(step.ranges)
    done = take_low(step.ranges, int(total * fraction))
    if done:
        _move(nodes, s, t, done)
    rest = subtract_ranges(step.ranges, done)
    if rest:
        slot = rest[0].start
        s, t = nodes[s.ordinal], nodes[t.ordinal]
        nodes[s.ordinal] = dataclasses.replace(s, open_slots=(OpenSlot(slot, MIGRATING, t.node_id),))
        nodes[t.ordinal] = dataclasses.replace(t, open_slots=(OpenSlot(slot, IMPORTING, s.node_id),))
    return rebuild(list(nodes.values()), members, ghosts)


def converge(view: ClusterView, masters: int, replicas: int, placements=None,
             fast_join: bool = False) -> tuple[ClusterView, list[Step]]:
    """Observe → plan → execute the first step, until the plan is empty (bounded)."""
    done: list[Step] = []
    for _ in range(MAX_STEPS):
        steps = plan(view, layout(view, masters, replicas, placements), fast_join=fast_join)
        if not steps:
            return view, done
        view = apply(view, steps[0])
        done.append(steps[0])
    raise AssertionError(f"no convergence after {MAX_STEPS} steps; last: {[s.describe() for s in done[-5:]]}")


def shape(view: ClusterView):
    """(primary ordinal, slots, replica ordinals) per slot-owning primary, as the layout's shape()."""
    out = []
    for p in view.primaries():
        reps = tuple(sorted(r.ordinal for r in view.replicas_of(p.node_id)))
        out.append((p.ordinal, merge_ranges(p.slots), reps))
    return tuple(out)


def grow(view: ClusterView, count: int, placements: dict[int, Placement] | None = None) -> ClusterView:
    """Add fresh pods at the next ordinals (the StatefulSet grew)."""
    start = len(view)
    extra = tuple(fresh_node(o, (placements or {}).get(o)) for o in range(start, start + count))
    return ClusterView(view.nodes + extra)


def built(masters: int, replicas: int, placements=None) -> ClusterView:
    """A converged masters×replicas cluster, formed by the planner from fresh pods."""
    view, _ = converge(fresh_view(masters * (1 + replicas), placements), masters, replicas, placements)
    return view


def converge_drain(view: ClusterView, masters: int, replicas: int, placements=None) -> tuple[ClusterView, list[Step]]:
    """The drain loop: observe → plan_drain → execute the first step, until nothing is left to drain."""
    done: list[Step] = []
    for _ in range(MAX_STEPS):
        steps = plan_drain(view, masters, replicas, placements)
        if not steps:
            return view, done
        view = apply(view, steps[0])
        done.append(steps[0])
    raise AssertionError(f"drain did not finish after {MAX_STEPS} steps; last: {[s.describe() for s in done[-5:]]}")


def shrink(view: ClusterView, size: int) -> ClusterView:
    """The StatefulSet shrank: only ordinals below `size` remain."""
    return ClusterView(tuple(n for n in view if n.ordinal < size))


def moved_primaries(view: ClusterView, replica_ordinals) -> ClusterView:
    """Manual failovers onto the given replicas (primaries moved onto those ordinals)."""
    for o in replica_ordinals:
        n = view.by_ordinal(o)
        view = apply(view, Failover(o, n.node_id, view.ordinal_of(n.primary_id), n.primary_id))
    return view


def restart_fresh(view: ClusterView, ordinal: int, *, failed: bool = True, promoted: bool = False) -> ClusterView:
    """The pod at `ordinal` came back as a new, empty node (persistence off). The others keep its old id as a
    ghost without address: failed (or not yet), and, when `promoted`, its replica has already taken its slots."""
    nodes, members, ghosts = _state(view)
    old = nodes[ordinal]
    slots = merge_ranges(old.slots) if old.is_primary else ()
    if promoted and slots:
        rep = next(m for m in nodes.values() if m.is_replica and m.primary_id == old.node_id)
        nodes[rep.ordinal] = dataclasses.replace(rep, role=PRIMARY, primary_id=None, slots=slots)
        for o, m in list(nodes.items()):
            if m.is_replica and m.primary_id == old.node_id and o != rep.ordinal:
                nodes[o] = dataclasses.replace(m, primary_id=rep.node_id)
        slots = ()
    members.discard(old.node_id)
    ghosts[old.node_id] = Peer(node_id=old.node_id, ip="", port=0, role=PRIMARY if slots else REPLICA,
                               health=FAILED if failed else ONLINE, slots=slots)
    new = fresh_node(ordinal, old.placement, old.version)
    new_id = node_id(ordinal, 1)
    nodes[ordinal] = dataclasses.replace(new, node_id=new_id,
                                         known_nodes=(dataclasses.replace(new.known_nodes[0], node_id=new_id),))
    return rebuild(list(nodes.values()), members, ghosts)
