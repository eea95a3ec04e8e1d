"""The planner: from an observed view and a desired layout (or a smaller size to drain to) to the ordered
steps that remain. Pure and deterministic."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from .errors import PlanRefused
from .layout import Layout, Transfer, _slot_flows, colocation_cost, expected_size
from .steps import (
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
from .view import (
    FAILED,
    Ranges,
    IMPORTING,
    MIGRATING,
    PRIMARY,
    REPLICA,
    ClusterView,
    NodeState,
    Placement,
    count_slots,
    format_ranges,
    intersect_ranges,
    merge_ranges,
    short_id,
    subtract_ranges,
)

# Drain: share of its maxmemory a surviving primary must still have free once it has received the data of
# the removed shards (clients keep writing during the move, and the estimate is per slot, not per key).
MEMORY_HEADROOM = 0.10
MB = 1024 * 1024
# Below this release a replica made primary by CLUSTER RESET SOFT keeps its old primary's shard id (8.1.8).
SOFT_RESET_NEW_SHARD_MIN_VERSION = (9, 0, 0)
# Fast join: cluster-node-timeout while an empty primary joins. Valkey's rejoin delay is this value clamped
# to 0.5-5 s, so 500 ms is the shortest wait Valkey allows (see SetNodeTimeout).
JOIN_NODE_TIMEOUT_MS = 500
# A node pings every peer each cluster-node-timeout/2: the lowered nodes together may add at most this many
# pings per second (50 forming primaries of a 100-pod cluster at 500 ms would send ~20,000 and slow every
# node down; they get ~2.5 s instead).
JOIN_PING_BUDGET_PER_S = 4000
# The project's valkey.conf value: what a lowered node goes back to when neither the settings nor any
# other node tell.
PROJECT_NODE_TIMEOUT_MS = 5000


def plan(view: ClusterView, layout: Layout, *, persistence: str | None = None, fast_join: bool = False,
         node_timeout_ms: int | None = None) -> tuple[Step, ...]:
    """The steps that take `view` to `layout`, in execution order; empty when the cluster is converged.

    When slots are open or atomic migrations are in flight, only those steps are returned: everything
    else is planned again from a fresh observation once they are closed. The same holds for slots two pods
    claim and for a lost primary whose slots wait for a failover. `persistence` is the chart's ("" = off):
    only with persistence off are the slots of a lost primary without replica given to its fresh pod
    (their data cannot come back); otherwise that is refused. With `fast_join`, empty primaries lower their
    cluster-node-timeout while they join (SetNodeTimeout); lowered nodes are always put back, to
    `node_timeout_ms` or else to the highest value a node runs with."""
    ghosts, unknown = _classify_foreign(view)
    _refuse_conflicts(view, contested_ok=True, handled={g.node_id for g in ghosts if g.replaced_by is not None or g.replicas})
    _refuse_unknown_members(view, unknown)
    first = _open_work(view)
    if first:
        _refuse_mixed_versions(view, first)
        return first
    via = _anchor(view, layout)
    intros = _introductions(view, layout, via)
    contested = view.contested()
    if contested:
        # Valkey settles a double claim by config epoch once both sides talk: introduce stale peers first.
        stale = [m for m in intros if not view.by_ordinal(m.ordinal).is_alone] if intros else []
        if stale:
            return tuple(stale)
        return tuple(AwaitAgreement(ranges=r, claimants=tuple(sorted(n.ordinal for n in pair)))
                     for r, pair in contested)
    waits, forgets = _ghost_steps(view, ghosts, persistence)
    if waits:
        return tuple(waits)
    slot_steps = _slot_steps(view, layout)
    targets = {t.target_ordinal for t in slot_steps if isinstance(t, MigrateSlots)}
    lower, restore = _node_timeout_steps(view, layout, fast_join, node_timeout_ms, targets)
    # A forming cluster's primaries are lowered first; a new primary right before slots move onto it;
    # lowered nodes that serve go back last, in one batch.
    before_slots = [t for t in lower + restore if t.ordinal in targets]
    steps: list[Step] = [t for t in lower if t.ordinal not in targets]
    last = [t for t in restore if t.ordinal not in targets]
    steps += forgets
    if _forming(view, layout):
        # As valkey-cli does, each primary claims its slots while still alone: a node that owns slots counts
        # itself as a reachable primary, so Valkey never sees it in a minority again and its rejoin delay
        # runs out while gossip spreads, instead of starting when the cluster is complete.
        epochs = [s for s in intros if isinstance(s, SetConfigEpoch)]
        intros = epochs + slot_steps + [s for s in intros if not isinstance(s, SetConfigEpoch)]
        slot_steps = []
    steps += intros
    for ordinal in layout.promote:
        n = view.by_ordinal(ordinal)
        # Valkey 8.x keeps the shard id across CLUSTER RESET SOFT, so the new primary would share its old
        # primary's shard: CLUSTER SHARDS then lists both primaries (and the slots of only one) as one shard.
        # A HARD reset draws a new node id and shard id; its old id is forgotten as a ghost at its address.
        hard = n.version < SOFT_RESET_NEW_SHARD_MIN_VERSION
        steps.append(ResetNode(ordinal=ordinal, node_id=n.node_id, hard=hard))
        if via is not None and via.ordinal != ordinal and not hard:
            steps.append(_meet(n, via))
    # A lowered node goes back before it owns a slot: a primary with slots and a short timeout votes
    # other primaries failed after half a second of silence.
    steps += before_slots
    steps += slot_steps
    steps += _replica_steps(view, layout)
    steps += last
    _refuse_mixed_versions(view, steps)
    return tuple(steps)


def normal_node_timeout(view: ClusterView, configured: int | None) -> int:
    """The cluster-node-timeout every node runs with, and a fast join restores: the configured one, else the
    highest any node runs with (a lowered node is always below it), else the project's default."""
    if configured:
        return configured
    return max((n.node_timeout_ms for n in view if n.node_timeout_ms), default=PROJECT_NODE_TIMEOUT_MS)


def join_node_timeout(lowered: int, pods: int, normal: int) -> int:
    """The timeout `lowered` joining primaries of a `pods`-pod cluster run with: as low as Valkey allows,
    within the ping budget, never above `normal`."""
    needed = -(-2000 * lowered * max(pods - 1, 1) // JOIN_PING_BUDGET_PER_S)
    return min(normal, max(JOIN_NODE_TIMEOUT_MS, needed))


def _node_timeout_steps(view: ClusterView, layout: Layout, fast_join: bool, configured: int | None,
                        targets: set[int]) -> tuple[list[SetNodeTimeout], list[SetNodeTimeout]]:
    """(lower, restore). Lowered: primaries-to-be that own no slot, hold no key and do not serve yet (see
    below). Restored, when below the normal timeout: a node that serves or is no joining primary (at the
    end of the plan), and a joining one about to receive slots (`targets`) once it serves (before them)."""
    normal = normal_node_timeout(view, configured)
    primaries = set(layout.primaries)
    lower: list[NodeState] = []
    restore: list[SetNodeTimeout] = []
    already = 0
    cluster_has_slots = any(n.slots for n in view)
    for n in view:
        waiting = n.cluster_state != "ok" and n.is_primary and n.ordinal in primaries and not n.keys
        if 0 < n.node_timeout_ms < normal:
            # Back as soon as it serves: primaries with slots and a short timeout vote each other failed
            # after one busy moment, and with every primary of a forming cluster still lowered while gossip
            # spread, formations on a loaded machine stalled for 40 s in failure flags.
            restore.append(SetNodeTimeout(ordinal=n.ordinal, node_id=n.node_id, timeout_ms=normal,
                                          lower=False, await_ok=waiting))
            already += waiting
        elif fast_join and waiting and n.node_timeout_ms and not n.slots:
            # A forming cluster's primaries while still alone (their rejoin delay starts with their first
            # slot); a new primary of a serving cluster once it is met, right before slots move onto it.
            if n.is_alone != cluster_has_slots:
                lower.append(n)
    join = join_node_timeout(len(lower) + already, len(view), normal)
    if join >= normal:
        return [], restore
    # A forming primary goes back at the end of this same plan, once it serves. A new primary of a serving
    # cluster is planned again once met: its restore then goes right before the slots it receives.
    restore += [SetNodeTimeout(ordinal=n.ordinal, node_id=n.node_id, timeout_ms=normal, lower=False, await_ok=True)
                for n in lower if n.ordinal not in targets and n.is_alone]
    return [SetNodeTimeout(ordinal=n.ordinal, node_id=n.node_id, timeout_ms=join, lower=True) for n in lower], restore


def _version_text(v: tuple[int, int, int]) -> str:
    return ".".join(str(x) for x in v)


def _refuse_mixed_versions(view: ClusterView, steps) -> None:
    """Slots never move while pods run different Valkey releases (a rolling upgrade in progress): the engine
    depends on the version of both sides. Meeting, replica attach and forgetting still run."""
    releases = {n.version[:2] for n in view}
    if len(releases) <= 1 or not any(isinstance(s, (MigrateSlots, CloseOpenSlot)) for s in steps):
        return
    groups: dict[tuple[int, int, int], list[int]] = {}
    for n in view:
        groups.setdefault(n.version, []).append(n.ordinal)
    text = "; ".join(f"{_version_text(v)} on ordinal{'s' if len(o) > 1 else ''} {', '.join(map(str, o))}"
                     for v, o in sorted(groups.items(), reverse=True))
    raise PlanRefused(
        f"the pods run different Valkey versions ({text}), and this change moves slots, which is refused "
        "while versions are mixed; finish the upgrade (or roll back) so every pod runs one version, then "
        "run reconcile again; nothing was changed",
        reason="mixed_versions",
        versions={_version_text(v): o for v, o in groups.items()},
    )


@dataclass(frozen=True)
class Ghost:
    """A node id some pod knows that no pod has now: a pod that came back as a new node, or a removed one."""

    node_id: str
    failed: bool  # every reporter marks it failed
    slots: Ranges  # slots it still owns that no pod claims
    replicas: tuple[int, ...]  # pods that replicate it
    replaced_by: int | None  # the pod that answers in its place, when that can be told


def _classify_foreign(view: ClusterView) -> tuple[list[Ghost], list[tuple[str, str]]]:
    """Ghosts, and unknown members (id, ip): alive at an address that is no pod's."""
    pod_ips = {n.ip: n for n in view}
    owned = view.owned_ranges()
    fresh = [n for n in view if n.is_alone and n.is_primary and not n.slots and not n.keys]
    ghosts: list[Ghost] = []
    unknown: list[tuple[str, str]] = []
    for node_id, reports in view.foreign_peers().items():
        failed = all(p.health == FAILED for p in reports)
        ips = [p.ip for p in reports if p.ip]
        at_pod = [pod_ips[ip] for ip in ips if ip in pod_ips]
        if not (failed or not ips or at_pod):
            unknown.append((node_id, ips[0]))
            continue
        if at_pod:
            replaced_by: int | None = at_pod[0].ordinal
        else:
            # The address was cleared ("noaddr": its IP answered with another id): a pod back as a new node.
            replaced_by = fresh[0].ordinal if len(fresh) == 1 else None
        slots = subtract_ranges(merge_ranges(r for p in reports if p.role == PRIMARY for r in p.slots), owned)
        replicas = tuple(n.ordinal for n in view if n.is_replica and n.primary_id == node_id)
        ghosts.append(Ghost(node_id, failed, slots, replicas, replaced_by))
    return ghosts, unknown


def _refuse_unknown_members(view: ClusterView, unknown: list[tuple[str, str]]) -> None:
    if unknown:
        node_id, ip = unknown[0]
        raise PlanRefused(
            f"node {short_id(node_id)} at {ip} is a member of the cluster but none of the {len(view)} expected "
            f"pods (ordinals 0…{len(view) - 1}); if it is one of ours (a pod beyond the size, a pod whose name "
            "did not resolve), drain it or list it; otherwise remove it by hand (CLUSTER FORGET "
            f"{node_id} on every node) and run reconcile again; nothing was changed",
            node_id=node_id, ip=ip, reason="unknown_node",
        )


def _ghost_steps(view: ClusterView, ghosts: list[Ghost], persistence: str | None) -> tuple[list[Step], list[Step]]:
    """(waits that block everything else, forgets that come first)."""
    waits: list[Step] = []
    forgets: list[Step] = []
    for g in ghosts:
        who = f"ordinal {g.replaced_by}" if g.replaced_by is not None else "a pod"
        if g.slots and (g.replicas or not g.failed):
            if g.replaced_by is None and g.failed:
                continue  # refused by _refuse_conflicts
            waits.append(AwaitFailover(node_id=g.node_id, ranges=g.slots, replica_ordinals=g.replicas,
                                       replaced_by=g.replaced_by))
            continue
        if g.slots:
            if g.replaced_by is None:
                continue  # refused by _refuse_conflicts
            if persistence != "":
                mode = "is on" if persistence else "is not known (pass --persistence)"
                raise PlanRefused(
                    f"slots {format_ranges(g.slots)} ({count_slots(g.slots)}) are owned by node "
                    f"{short_id(g.node_id)}, which failed and has no replica, and ordinal {g.replaced_by} answers "
                    f"in its place as a new, empty node: the data of those slots is lost unless that pod's volume "
                    f"comes back (persistence {mode}). Restore the volume so the old node returns with its data, "
                    f"or, to accept the loss, run CLUSTER FORGET {g.node_id} on every node and reconcile again "
                    "(the slots are then assigned, empty); nothing was changed",
                    node_id=g.node_id, ordinal=g.replaced_by, slots=format_ranges(g.slots), reason="slots_lost",
                )
            note = (f"slots {format_ranges(g.slots)} ({count_slots(g.slots)}) of node {short_id(g.node_id)} had no "
                    f"replica; {who} came back empty (persistence off: the cache contract), so the data of those "
                    "slots is lost; the slots are assigned again, empty, so the cluster serves again")
            forgets.append(Forget(node_id=g.node_id, reason="lost with its pod; its slots had no replica",
                                  replaced_by=g.replaced_by, lost=g.slots, note=note))
            continue
        if g.replaced_by is not None:
            if persistence == "":
                note = (f"{who} came back as a new, empty node in place of {short_id(g.node_id)}: with "
                        "persistence off a restarted pod never keeps its identity or data (the cache contract); "
                        "the old id is forgotten and the pod rejoins, as a replica where one is missing")
            else:
                note = (f"{who} answers as a new node in place of {short_id(g.node_id)} (its nodes.conf and data "
                        "are gone: a lost volume?); the old id is forgotten and the pod rejoins as a new node")
            forgets.append(Forget(node_id=g.node_id, reason=f"{who} came back as a new node",
                                  replaced_by=g.replaced_by, note=note))
        else:
            forgets.append(Forget(node_id=g.node_id, reason="failed, no pod has this id any more"))
    return waits, forgets


def _refuse_conflicts(view: ClusterView, contested_ok: bool = False, handled: set[str] = frozenset()) -> None:
    """States the planner will not touch: two owners for one slot, slots held by nodes outside the pods.

    With `contested_ok`, two pods claiming one slot is left to Valkey's epoch rule (see ClusterView.contested);
    `handled` are ids of pods' lost identities, whose slots the ghost steps deal with."""
    claimed: dict[int, NodeState] = {}
    for n in view:
        if not n.is_primary or contested_ok:
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
        if node_id in handled:
            continue
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
    # A lone owner without keys whose slots nobody else claims is a primary of a formation cut short after
    # it claimed its slots: it is joined. Any other lone node with slots or keys holds separate data.
    def claimed_alone(n: NodeState) -> bool:
        return not n.keys and bool(n.slots) and not any(
            m is not n and intersect_ranges(n.slots, m.slots) for m in survivors)

    separate = len(lone_owners) > 1 and any(n.keys for n in lone_owners)
    if connected or separate:
        for n in lone:
            if (n.slots or n.keys) and not claimed_alone(n):
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


def _forming(view: ClusterView, layout: Layout) -> bool:
    """A cluster not formed yet: every surviving pod alone, and no slot claimed."""
    survivors = [view.by_ordinal(o) for o in layout.survivors]
    return all(n.is_alone for n in survivors) and not any(n.slots for n in survivors)


def _meet(n: NodeState, via: NodeState) -> Meet:
    return Meet(ordinal=n.ordinal, node_id=n.node_id, ip=n.ip, port=n.port, via_ordinal=via.ordinal, via_id=via.node_id)


def _introductions(view: ClusterView, layout: Layout, via: NodeState | None) -> list[Step]:
    if via is None:
        return []
    survivors = [view.by_ordinal(o) for o in layout.survivors]
    steps: list[Step] = []
    if _forming(view, layout):
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
            # A replica-to-be meets its own primary too: CLUSTER REPLICATE then needs no gossip round first.
            # Every node meets the anchor, which knows them all first and so spreads each of them fastest
            # (a 100-pod formation is done a second sooner). A primary about to be reset forgets its peers.
            primary = layout.primary_for(n.ordinal)
            home = view.get_ordinal(primary) if primary is not None and primary not in promoted else None
            if home is not None and home.ordinal != via.ordinal:
                steps.append(_meet(n, home))
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


# ---------------------------------------------------------------------------------------------------------
# Drain: empty and remove the pods a smaller size deletes (ordinals >= masters × (1 + replicas)).
#
# Which shards survive: at most `masters` of the slot-owning shards that have a member on a surviving
# ordinal, preferring the most members on surviving ordinals (least data to copy again), then the lowest
# surviving ordinal. Every step of a drain only adds surviving members to surviving shards or takes them
# from the others, so the choice never changes while a drain is under way (re-planning is stable).
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainDesign:
    """What a drain does, worked out on the observed view (printed by --dry-run, checked by the gates)."""

    size: int
    doomed: tuple[int, ...]  # observed ordinals >= size that are still cluster members
    kept: tuple[int, ...]  # ordinals that will be the primaries of the surviving shards
    failovers: tuple[Failover, ...]
    after: ClusterView  # the view as it will be once the failovers are done
    transfers: tuple[Transfer, ...]  # slot flows from the dissolved shards (and any surplus) to the kept ones


def doomed_ordinals(view: ClusterView, masters: int, replicas_per_master: int) -> tuple[int, ...]:
    size = expected_size(masters, replicas_per_master)
    return tuple(n.ordinal for n in view if n.ordinal >= size)


def _check_size(masters: int, replicas_per_master: int) -> None:
    if masters < 1:
        raise PlanRefused(
            f"masters must be at least 1 (got {masters}): a cluster needs a primary to hold its 16384 slots; "
            "set masters to 1 or more",
            reason="masters_below_one",
        )
    if replicas_per_master < 0:
        raise PlanRefused(
            f"replicas per master must be 0 or more (got {replicas_per_master})", reason="negative_replicas"
        )


def _foreign_ids(view: ClusterView) -> tuple[list[str], list[tuple[str, str]]]:
    """Ids some pod knows that no pod has now: (ghosts to forget, unknown members as (id, ip)).

    A ghost is failed, has lost its address (noaddr: its IP now answers with another id, as after a
    CLUSTER RESET HARD) or sits at a pod's IP under an id that pod no longer has."""
    pod_ips = {n.ip for n in view}
    ghosts: list[str] = []
    unknown: list[tuple[str, str]] = []
    for node_id, reports in view.foreign_peers().items():
        if all(p.health == FAILED or not p.ip for p in reports) or any(p.ip in pod_ips for p in reports):
            ghosts.append(node_id)
        else:
            unknown.append((node_id, next(p.ip for p in reports if p.ip)))
    return ghosts, unknown


def _surviving_shards(view: ClusterView, size: int, masters: int) -> list[NodeState]:
    """Current primaries of the shards that survive (see the rule above), in ordinal order."""
    ranked = []
    for p in view.primaries():
        members = [p, *view.replicas_of(p.node_id)]
        surviving = sorted(m.ordinal for m in members if m.ordinal < size)
        if surviving:
            ranked.append((-len(surviving), surviving[0], p))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return sorted((r[2] for r in ranked[:masters]), key=lambda n: n.ordinal)


def _after_failovers(view: ClusterView, failovers: list[Failover]) -> ClusterView:
    """The view once each failover is done: the replica owns the shard's slots, the old primary and the
    shard's other replicas replicate it (Valkey re-points them when they learn the new owner)."""
    nodes = {n.ordinal: n for n in view}
    for f in failovers:
        new, old = nodes[f.ordinal], nodes[f.primary_ordinal]
        nodes[new.ordinal] = dataclasses.replace(new, role=PRIMARY, primary_id=None, slots=old.slots)
        nodes[old.ordinal] = dataclasses.replace(old, role=REPLICA, primary_id=new.node_id, slots=())
        for o, m in list(nodes.items()):
            if m.is_replica and m.primary_id == old.node_id:
                nodes[o] = dataclasses.replace(m, primary_id=new.node_id)
    return ClusterView(tuple(nodes.values()))


def drain_design(
    view: ClusterView, masters: int, replicas_per_master: int, placement: Mapping[int, Placement] | None = None
) -> DrainDesign:
    """Which shards survive, the failovers that put their primaries on surviving ordinals, and the slot flows."""
    _check_size(masters, replicas_per_master)
    size = expected_size(masters, replicas_per_master)
    doomed = tuple(n.ordinal for n in view if n.ordinal >= size and not n.is_alone)
    for n in view:
        if n.ordinal >= size and n.is_alone and (n.slots or n.keys):
            what = f"{n.slot_count} slots" if n.slots else f"{n.keys} keys"
            raise PlanRefused(
                f"{n.label()} at {n.address} is removed by the new size but is not part of the cluster and "
                f"holds {what}; those would be lost with the pod: copy them out, or empty it "
                "(FLUSHALL, CLUSTER RESET) if they are not needed, then drain again",
                ordinal=n.ordinal,
                reason="lone_node_with_data",
            )
    uncovered = view.unowned_ranges() if view.primaries() else ()
    if uncovered:
        raise PlanRefused(
            f"slots {format_ranges(uncovered)} ({count_slots(uncovered)}) are owned by no pod, so the cluster "
            "is down; bring their primary back (or assign them by hand if that data is gone), then drain again",
            reason="slots_uncovered",
        )
    kept_now = _surviving_shards(view, size, masters)
    if view.primaries() and not kept_now:
        raise PlanRefused(
            f"no pod below ordinal {size} holds or replicates any shard, so nothing could take the data; "
            "run `valkey-reconciler reconcile` with the current size so the surviving pods join, then drain",
            reason="no_surviving_shard",
        )
    failovers: list[Failover] = []
    for p in kept_now:
        if p.ordinal < size:
            continue
        candidates = [r for r in view.replicas_of(p.node_id) if r.ordinal < size]
        synced = [r for r in candidates if r.synced]
        if not synced:
            r = candidates[0]
            raise PlanRefused(
                f"the shard of {p.label()} (slots {format_ranges(p.slots)}) must move to a surviving pod, but "
                f"its replica {r.label()} is not in sync (replication link "
                f"{'up' if r.link_up else 'down'}, offset {r.repl_offset}); a failover now could lose writes. "
                "Wait until the replica has synced (INFO replication: master_link_status:up), then drain again",
                ordinal=r.ordinal,
                primary_ordinal=p.ordinal,
                reason="replica_not_synced",
            )
        r = synced[0]
        failovers.append(Failover(ordinal=r.ordinal, node_id=r.node_id, primary_ordinal=p.ordinal, primary_id=p.node_id))
    after = _after_failovers(view, failovers)
    kept = [after.by_ordinal(f.ordinal) for f in failovers] + [p for p in kept_now if p.ordinal < size]
    kept.sort(key=lambda n: n.ordinal)
    kept_ords = {n.ordinal for n in kept}
    leaving = [n for n in after.primaries() if n.ordinal not in kept_ords]
    transfers = _slot_flows(after, kept, leaving)[0] if kept else []
    return DrainDesign(
        size=size,
        doomed=doomed,
        kept=tuple(n.ordinal for n in kept),
        failovers=tuple(failovers),
        after=after,
        transfers=tuple(transfers),
    )


def plan_drain(
    view: ClusterView, masters: int, replicas_per_master: int, placement: Mapping[int, Placement] | None = None
) -> tuple[Step, ...]:
    """The steps that empty and remove every pod at an ordinal >= masters × (1 + replicas), in order:
    open slots and running migrations first (alone), then forgetting ghost ids, failovers onto surviving
    ordinals, slot migrations to the surviving primaries (ending in an even split), re-pointing surviving
    replicas whose primary goes away (and giving an unprotected surviving primary a replica while a
    surviving pod can be one), then removals: replicas before primaries, highest ordinal first.

    Empty when nothing is left to drain. Whatever the post-upgrade `reconcile` would do anyway (more
    primaries, the exact replica count) is left to it."""
    _check_size(masters, replicas_per_master)
    _refuse_unknown(view)
    _refuse_conflicts(view)
    first = _open_work(view)
    if first:
        _refuse_mixed_versions(view, first)
        return first
    ghosts, _ = _foreign_ids(view)
    steps: list[Step] = [Forget(node_id=g, reason="a removed or restarted pod's old id") for g in ghosts]
    design = drain_design(view, masters, replicas_per_master, placement)
    if not design.doomed:
        return tuple(steps)
    steps += design.failovers
    steps += _slot_steps(design.after, _layout_for_transfers(design))
    steps += _drain_replica_steps(design, replicas_per_master, placement)
    steps += _removals(design)
    _refuse_mixed_versions(view, steps)
    return tuple(steps)


def _layout_for_transfers(design: DrainDesign) -> Layout:
    """A Layout carrying only the drain's transfers, so the reconcile planner's migration grouping is reused."""
    return Layout(
        masters=len(design.kept),
        replicas_per_master=0,
        survivors=(),
        doomed=design.doomed,
        shards=(),
        transfers=design.transfers,
        promote=(),
    )


def _refuse_unknown(view: ClusterView) -> None:
    _, unknown = _foreign_ids(view)
    if unknown:
        node_id, ip = unknown[0]
        raise PlanRefused(
            f"node {short_id(node_id)} at {ip} is a member of the cluster but is none of the {len(view)} pods "
            f"found (ordinals 0…{len(view) - 1}); if it is a pod whose name did not resolve, wait until it "
            "does (or list every pod with --node) and drain again; if it is not one of ours, remove it by hand "
            "(CLUSTER FORGET on every node) first",
            node_id=node_id,
            ip=ip,
            reason="unknown_node",
        )


def _drain_replica_steps(
    design: DrainDesign, r: int, placement: Mapping[int, Placement] | None
) -> list[Step]:
    """Surviving replicas of a primary that goes away are re-pointed (or, with 0 replicas wanted, made empty
    primaries); then each surviving primary without a surviving replica gets one while a surviving pod can
    serve: a replica of a dissolved shard, an emptied primary, or a replica beyond the wanted count."""
    after, size = design.after, design.size
    places = {n.ordinal: (placement or {}).get(n.ordinal, n.placement) for n in after}
    kept = [after.by_ordinal(o) for o in design.kept]
    kept_ids = {n.node_id for n in kept}
    removed_ids = {after.by_ordinal(o).node_id for o in design.doomed}
    surviving = [n for n in after if n.ordinal < size and not n.is_alone]
    count = {k.node_id: sum(1 for n in surviving if n.is_replica and n.primary_id == k.node_id) for k in kept}
    used: set[int] = set()
    steps: list[Step] = []
    anchor = kept[0] if kept else None

    def point(n: NodeState, k: NodeState) -> None:
        steps.append(Replicate(ordinal=n.ordinal, node_id=n.node_id, primary_ordinal=k.ordinal, primary_id=k.node_id))
        count[k.node_id] += 1
        if n.is_replica and n.primary_id in count:
            count[n.primary_id] -= 1
        used.add(n.ordinal)

    for n in surviving:
        if not (n.is_replica and n.primary_id in removed_ids):
            continue
        if r == 0 or not kept:
            # No replica places: it becomes an empty primary (a reset forgets its primary, a meet brings it back).
            steps.append(ResetNode(ordinal=n.ordinal, node_id=n.node_id, hard=False))
            if anchor is not None:
                steps.append(_meet(n, anchor))
            used.add(n.ordinal)
            continue
        point(n, min(kept, key=lambda k: (count[k.node_id], colocation_cost(n, k, places), k.ordinal)))
    if r == 0:
        return steps
    for k in kept:
        if count[k.node_id]:
            continue
        # (pool, ordinal direction): replicas of dissolved shards and emptied primaries lowest ordinal first;
        # a surplus replica of a surviving shard highest ordinal first (the one reconcile would drop).
        donors = [
            ([n for n in surviving if n.is_replica and n.primary_id not in kept_ids], 1),
            ([n for n in surviving if n.is_primary and n.node_id not in kept_ids], 1),
            ([n for n in surviving if n.is_replica and n.primary_id in kept_ids and count[n.primary_id] > r], -1),
        ]
        for pool, direction in donors:
            pool = [n for n in pool if n.ordinal not in used]
            if pool:
                point(min(pool, key=lambda n: (colocation_cost(n, k, places), direction * n.ordinal)), k)
                break
    return steps


def _removals(design: DrainDesign) -> list[Step]:
    """Doomed replicas first (a primary is removed only once nothing replicates it), highest ordinal first."""
    doomed = [design.after.by_ordinal(o) for o in design.doomed]
    replicas = sorted((n for n in doomed if n.is_replica), key=lambda n: -n.ordinal)
    primaries = sorted((n for n in doomed if n.is_primary), key=lambda n: -n.ordinal)
    return [RemoveNode(ordinal=n.ordinal, node_id=n.node_id, require_empty=True) for n in replicas + primaries]


def drain_gates(
    view: ClusterView, masters: int, replicas_per_master: int, placement: Mapping[int, Placement] | None = None
) -> None:
    """The safety gates a drain passes before it changes anything; each raises PlanRefused naming the
    problem and the fix. Gossip settling after a change is not judged here: the caller re-observes."""
    _check_size(masters, replicas_per_master)
    _refuse_unknown(view)
    members = [n for n in view if not n.is_alone]
    pod_ids = {n.node_id: n for n in view}
    for n in members:
        for p in n.peers:
            if p.health == FAILED and p.node_id in pod_ids:
                failed = pod_ids[p.node_id]
                raise PlanRefused(
                    f"{n.label()} reports {failed.label()} as failed: the cluster is not healthy. Find out why "
                    f"that pod is unreachable from its peers (restart it, check the network on port 16379) and "
                    "drain again once every node sees every other as healthy",
                    ordinal=failed.ordinal,
                    reporter=n.ordinal,
                    reason="node_failed",
                )
    bad = [n for n in members if n.cluster_state != "ok"]
    design = drain_design(view, masters, replicas_per_master, placement)  # slots_uncovered and friends
    if bad:
        names = ", ".join(n.label() for n in bad)
        raise PlanRefused(
            f"cluster_state is not ok on {names}: the cluster is not healthy; run `valkey-reconciler status` to "
            "see why, fix it (or let the scheduled reconcile heal it), then drain again",
            ordinals=[n.ordinal for n in bad],
            reason="cluster_unhealthy",
        )
    plan_drain(view, masters, replicas_per_master, placement)  # conflicts, open slots that cannot be closed
    _memory_gate(view, design)


def _memory_gate(view: ClusterView, design: DrainDesign) -> None:
    """Refuse when a receiving primary with a maxmemory would end above maxmemory minus the headroom.

    Incoming data per transfer is estimated as the donor's used memory × the share of its slots it gives
    (conservative: it counts the donor's fixed overhead too)."""
    incoming: dict[int, float] = {}
    for t in design.transfers:
        if t.source is None:
            continue
        owned = count_slots(design.after.by_ordinal(t.source).slots) or 1
        # A donor that takes over by failover first is a replica now: it holds the same data as its primary.
        used = view.by_ordinal(t.source).used_memory
        incoming[t.target] = incoming.get(t.target, 0.0) + used * count_slots(t.ranges) / owned
    for ordinal, extra in sorted(incoming.items()):
        target = view.by_ordinal(ordinal)
        if target.maxmemory <= 0:
            continue
        need = target.used_memory + extra
        limit = target.maxmemory * (1 - MEMORY_HEADROOM)
        if need > limit:
            raise PlanRefused(
                f"{target.label()} would hold about {need / MB:.1f} MB after receiving {extra / MB:.1f} MB from the "
                f"removed shards, above its maxmemory {target.maxmemory / MB:.1f} MB less "
                f"{MEMORY_HEADROOM:.0%} headroom ({limit / MB:.1f} MB); raise maxmemory (and the pods' memory "
                "limits) first, or keep more masters",
                ordinal=ordinal,
                need_bytes=int(need),
                limit_bytes=int(limit),
                reason="not_enough_memory",
            )
