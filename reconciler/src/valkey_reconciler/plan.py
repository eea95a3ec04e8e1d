"""The planner: from an observed view and a desired layout to the ordered steps that remain. Pure and deterministic."""

from __future__ import annotations

from .errors import PlanRefused
from .layout import Layout
from .steps import (
    AssignSlots,
    AwaitMigration,
    CloseOpenSlot,
    Forget,
    Meet,
    MigrateSlots,
    Replicate,
    ResetNode,
    SetConfigEpoch,
    Step,
)
from .view import (
    FAILED,
    IMPORTING,
    MIGRATING,
    ClusterView,
    NodeState,
    format_ranges,
    intersect_ranges,
    merge_ranges,
    short_id,
    subtract_ranges,
)


def plan(view: ClusterView, layout: Layout) -> tuple[Step, ...]:
    """The steps that take `view` to `layout`, in execution order; empty when the cluster is converged.

    When slots are open or atomic migrations are in flight, only those steps are returned: everything
    else is planned again from a fresh observation once they are closed."""
    _refuse_conflicts(view)
    first = _open_work(view)
    if first:
        return first
    steps: list[Step] = []
    via = _anchor(view, layout)
    steps += _forget_ghosts(view)
    steps += _introductions(view, layout, via)
    for ordinal in layout.promote:
        n = view.by_ordinal(ordinal)
        steps.append(ResetNode(ordinal=ordinal, node_id=n.node_id, hard=False))
        if via is not None and via.ordinal != ordinal:
            steps.append(_meet(n, via))
    steps += _slot_steps(view, layout)
    steps += _replica_steps(view, layout)
    return tuple(steps)


def _refuse_conflicts(view: ClusterView) -> None:
    """States the planner will not touch: two owners for one slot, slots held by nodes outside the pods."""
    claimed: dict[int, NodeState] = {}
    for n in view:
        if not n.is_primary:
            continue
        for r in merge_ranges(n.slots):
            for other in claimed.values():
                both = intersect_ranges((r,), other.slots)
                if both:
                    raise PlanRefused(
                        f"slots {format_ranges(both)} are claimed by both {other.label()} and {n.label()}; "
                        "resolve the conflict by hand (CLUSTER SETSLOT … NODE) before reconciling",
                        ordinal=n.ordinal,
                        other_ordinal=other.ordinal,
                        reason="slot_claimed_twice",
                    )
        claimed[n.ordinal] = n
    owned = view.owned_ranges()
    for node_id, reports in view.foreign_peers().items():
        foreign = merge_ranges(r for p in reports if p.role == "primary" for r in p.slots)
        stray = subtract_ranges(foreign, owned)
        if stray:
            raise PlanRefused(
                f"slots {format_ranges(stray)} are owned by node {short_id(node_id)}, which is not one of the "
                f"expected pods; bring that node back, or drain it, before reconciling",
                node_id=node_id,
                reason="slots_outside_expected_pods",
            )


def _open_work(view: ClusterView) -> tuple[Step, ...]:
    """Legacy migrations left open (close them toward the importing node) and atomic jobs in flight."""
    steps: list[Step] = []
    by_slot: dict[int, dict[str, list[NodeState]]] = {}
    for n, o in view.open_slots():
        if not n.is_primary:
            continue  # replicas inherit the state from their primary and follow its SETSLOT
        by_slot.setdefault(o.slot, {MIGRATING: [], IMPORTING: []})[o.state].append(n)
    for slot in sorted(by_slot):
        importing = by_slot[slot][IMPORTING]
        migrating = by_slot[slot][MIGRATING]
        if len(importing) > 1 or len(migrating) > 1:
            names = ", ".join(n.label() for n in importing + migrating)
            raise PlanRefused(
                f"slot {slot} is open on several nodes at once ({names}); close it by hand with "
                "CLUSTER SETSLOT before reconciling",
                slot=slot,
                reason="slot_open_on_several_nodes",
            )
        imp = importing[0] if importing else None
        mig = migrating[0] if migrating else view.owner_of(slot)
        if imp is not None and mig is not None and mig.node_id == imp.node_id:
            mig = None
        steps.append(
            CloseOpenSlot(
                slot=slot,
                migrating_ordinal=mig.ordinal if mig else None,
                migrating_id=mig.node_id if mig else None,
                importing_ordinal=imp.ordinal if imp else None,
                importing_id=imp.node_id if imp else None,
            )
        )
    for job in view.active_migrations():
        source = view.by_id(job.source_id)
        if source is None:
            raise PlanRefused(
                f"an atomic migration of slots {format_ranges(job.ranges)} runs from node "
                f"{short_id(job.source_id)}, which is not one of the expected pods; wait for it or cancel it "
                "(CLUSTER CANCELSLOTMIGRATIONS on that node)",
                node_id=job.source_id,
                reason="migration_from_outside",
            )
        steps.append(
            AwaitMigration(
                source_ordinal=source.ordinal,
                source_id=source.node_id,
                target_ordinal=view.ordinal_of(job.target_id),
                target_id=job.target_id,
                ranges=merge_ranges(job.ranges),
                job_id=job.job_id,
            )
        )
    return tuple(steps)


def _anchor(view: ClusterView, layout: Layout) -> NodeState | None:
    """The node everyone else is introduced to: the lowest-ordinal member of the established cluster, or
    the lowest surviving ordinal when the cluster is being formed. Refuses lone nodes holding data."""
    survivors = [view.by_ordinal(o) for o in layout.survivors]
    connected = [n for n in survivors if not n.is_alone]
    lone = [n for n in survivors if n.is_alone]
    lone_owners = [n for n in lone if n.slots]
    if connected or len(lone_owners) > 1:
        for n in lone:
            if n.slots or n.keys:
                what = f"{n.slot_count} slots" if n.slots else f"{n.keys} keys"
                raise PlanRefused(
                    f"{n.label()} at {n.address} is not part of the cluster but holds {what}; "
                    "empty it (FLUSHALL, CLUSTER RESET) if its data is not needed, or restore it by hand",
                    ordinal=n.ordinal,
                    reason="lone_node_with_data",
                )
    else:
        for n in lone:
            if n.keys and not n.slots:
                raise PlanRefused(
                    f"{n.label()} at {n.address} holds {n.keys} keys but owns no slot; "
                    "empty it (FLUSHALL) before forming the cluster",
                    ordinal=n.ordinal,
                    reason="lone_node_with_data",
                )
    if connected:
        owners = [n for n in connected if n.is_primary and n.slots]
        return (owners or connected)[0]
    if lone_owners:
        return lone_owners[0]
    return survivors[0] if survivors else None


def _meet(n: NodeState, via: NodeState) -> Meet:
    return Meet(ordinal=n.ordinal, node_id=n.node_id, ip=n.ip, port=n.port, via_ordinal=via.ordinal, via_id=via.node_id)


def _forget_ghosts(view: ClusterView) -> list[Step]:
    """Failed ids of nodes that are no longer any pod (a pod came back with a new id) are forgotten."""
    steps: list[Step] = []
    for node_id, reports in view.foreign_peers().items():
        if all(p.health == FAILED for p in reports):
            steps.append(Forget(node_id=node_id, reason="failed, no pod has this id any more"))
    return steps


def _introductions(view: ClusterView, layout: Layout, via: NodeState | None) -> list[Step]:
    if via is None:
        return []
    survivors = [view.by_ordinal(o) for o in layout.survivors]
    steps: list[Step] = []
    forming = all(n.is_alone for n in survivors) and not any(n.slots for n in survivors)
    if forming:
        # Distinct config epochs before meeting, as valkey-cli does: no epoch-collision rounds later.
        for ordinal in layout.primaries:
            n = view.by_ordinal(ordinal)
            if n.config_epoch == 0:
                steps.append(SetConfigEpoch(ordinal=ordinal, node_id=n.node_id, epoch=ordinal + 1))
    promoted = set(layout.promote)
    for n in survivors:
        if n.ordinal == via.ordinal or n.ordinal in promoted:
            continue
        if n.is_alone:
            steps.append(_meet(n, via))
            continue
        # A peer that still records this node at an old IP (the pod came back on a new one).
        stale = [m for m in survivors if m.node_id != n.node_id and (p := m.peer(n.node_id)) and p.ip != n.ip]
        if stale:
            steps.append(_meet(n, stale[0]))
    return steps


def _slot_steps(view: ClusterView, layout: Layout) -> list[Step]:
    steps: list[Step] = []
    merged: dict[tuple[int | None, int], list] = {}
    order: list[tuple[int | None, int]] = []
    for t in layout.transfers:
        key = (t.source, t.target)
        if key not in merged:
            merged[key] = []
            order.append(key)
        merged[key].extend(t.ranges)
    for source, target in order:
        ranges = merge_ranges(merged[(source, target)])
        tn = view.by_ordinal(target)
        if source is None:
            steps.append(AssignSlots(ordinal=target, node_id=tn.node_id, ranges=ranges))
        else:
            sn = view.by_ordinal(source)
            steps.append(
                MigrateSlots(
                    source_ordinal=source,
                    source_id=sn.node_id,
                    target_ordinal=target,
                    target_id=tn.node_id,
                    ranges=ranges,
                )
            )
    return steps


def _replica_steps(view: ClusterView, layout: Layout) -> list[Step]:
    wanted: list[tuple[int, int]] = []
    for shard in layout.shards:
        for r in shard.replicas:
            wanted.append((r, shard.primary))
    steps: list[Step] = []
    for ordinal, primary in sorted(wanted):
        n = view.by_ordinal(ordinal)
        p = view.by_ordinal(primary)
        if n.is_replica and n.primary_id == p.node_id:
            continue
        steps.append(Replicate(ordinal=ordinal, node_id=n.node_id, primary_ordinal=primary, primary_id=p.node_id))
    return steps
