"""The desired cluster shape: which ordinals are primaries, which slots each owns, which replicas serve it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .errors import PlanRefused
from .view import (
    TOTAL_SLOTS,
    ClusterView,
    NodeState,
    Placement,
    Ranges,
    count_slots,
    merge_ranges,
    subtract_ranges,
    take_high,
    take_low,
)

# Co-location costs of a replica against its primary: the same Kubernetes node (or, where placement is
# unknown, the same IP) is worst; the same zone is tolerable; anything else is free.
SAME_NODE_COST = 2
SAME_ZONE_COST = 1


@dataclass(frozen=True)
class ShardLayout:
    """One desired shard: its primary, the slots it owns and its replicas (ordinals)."""

    primary: int
    slots: Ranges
    replicas: tuple[int, ...]

    @property
    def home(self) -> int:
        """The preferred primary of the shard: its lowest-ordinal member."""
        return min((self.primary, *self.replicas))

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(sorted((self.primary, *self.replicas)))


@dataclass(frozen=True)
class Transfer:
    """Slots that change owner: from `source` (an ordinal, or None for slots nobody owns) to `target`."""

    source: int | None
    target: int
    ranges: Ranges


@dataclass(frozen=True)
class Layout:
    """The desired state for `masters` × `replicas_per_master`, and the slot flows that reach it."""

    masters: int
    replicas_per_master: int
    survivors: tuple[int, ...]  # ordinals 0 … masters×(1+replicas)−1 that were observed
    doomed: tuple[int, ...]  # observed ordinals outside the desired size
    shards: tuple[ShardLayout, ...]  # ordered by primary ordinal
    transfers: tuple[Transfer, ...]
    promote: tuple[int, ...]  # replicas that must become empty primaries first

    @property
    def primaries(self) -> tuple[int, ...]:
        return tuple(s.primary for s in self.shards)

    def shard_of(self, ordinal: int) -> ShardLayout | None:
        for s in self.shards:
            if ordinal == s.primary or ordinal in s.replicas:
                return s
        return None

    def primary_for(self, ordinal: int) -> int | None:
        """The desired primary of a replica ordinal (None for primaries and ordinals outside the layout)."""
        for s in self.shards:
            if ordinal in s.replicas:
                return s.primary
        return None

    def shape(self) -> tuple[tuple[int, Ranges, tuple[int, ...]], ...]:
        """The comparable end state: (primary, slots, sorted replicas) per shard."""
        return tuple((s.primary, merge_ranges(s.slots), tuple(sorted(s.replicas))) for s in self.shards)


def expected_size(masters: int, replicas_per_master: int) -> int:
    return masters * (1 + replicas_per_master)


def slot_targets(primaries: list[NodeState]) -> dict[int, int]:
    """Slot count per primary ordinal: an even split (counts differ by at most 1).

    The `TOTAL_SLOTS % m` extra slots go first to primaries that already hold more than the base share
    (they keep them: no slot moves for it), then to the others in ordinal order. Ranking by "holds more
    than the base" rather than by exact counts keeps the choice the same while a migration is part done."""
    m = len(primaries)
    base, extra = divmod(TOTAL_SLOTS, m)
    ranked = sorted(primaries, key=lambda n: (0 if n.slot_count > base else 1, n.ordinal))
    return {n.ordinal: base + (1 if i < extra else 0) for i, n in enumerate(ranked)}


def layout(
    view: ClusterView,
    masters: int,
    replicas_per_master: int,
    placement: Mapping[int, Placement] | None = None,
) -> Layout:
    """The desired layout for the observed view. Pure; raises PlanRefused when it cannot be reached."""
    if masters < 1:
        raise PlanRefused(
            f"masters must be at least 1 (got {masters}); set masters to 1 or more",
            reason="masters_below_one",
        )
    if replicas_per_master < 0:
        raise PlanRefused(
            f"replicas per master must be 0 or more (got {replicas_per_master})",
            reason="negative_replicas",
        )
    size = expected_size(masters, replicas_per_master)
    # Slots two nodes claim while they cannot talk are planned as Valkey will settle them (higher epoch).
    view = view.resolved()
    survivors = [n for n in view if n.ordinal < size]
    doomed = [n for n in view if n.ordinal >= size]
    if len(survivors) < masters:
        raise PlanRefused(
            f"{masters} primaries need {masters} pods, only {len(survivors)} of ordinals 0…{size - 1} were observed; "
            "start the missing pods or lower masters",
            reason="not_enough_pods",
            observed=tuple(n.ordinal for n in survivors),
        )
    places = {n.ordinal: (placement or {}).get(n.ordinal, n.placement) for n in view}
    by_id = {n.node_id: n for n in survivors}

    # Primaries: slot owners stay; if there are too many, those holding the most slots stay.
    owners = [n for n in survivors if n.is_primary and n.slots]
    demoted: list[NodeState] = []
    promote: list[NodeState] = []
    if len(owners) > masters:
        ranked = sorted(owners, key=lambda n: (-n.slot_count, n.ordinal))
        kept = sorted(ranked[:masters], key=lambda n: n.ordinal)
        demoted = sorted(ranked[masters:], key=lambda n: n.ordinal)
    else:
        kept = list(owners)
        need = masters - len(kept)
        for n in survivors:  # fresh or emptied primaries, in ordinal order
            if need and n.is_primary and not n.slots:
                kept.append(n)
                need -= 1
        if need:
            promote = _pick_promotions(survivors, kept, need, replicas_per_master, by_id)
            kept.extend(promote)
        kept.sort(key=lambda n: n.ordinal)
    primary_ids = {n.node_id for n in kept}

    transfers, final_slots = _slot_flows(view, kept, demoted + doomed)

    # Replicas: keep valid links (lowest ordinals first), then assign the rest.
    counts = {n.ordinal: 0 for n in kept}
    replicas: dict[int, list[int]] = {n.ordinal: [] for n in kept}
    free: list[NodeState] = []
    for n in survivors:
        if n.node_id in primary_ids:
            continue
        if n.is_replica and n.primary_id in primary_ids:
            p = by_id[n.primary_id].ordinal
            if counts[p] < replicas_per_master:
                counts[p] += 1
                replicas[p].append(n.ordinal)
                continue
        free.append(n)
    _assign_replicas(free, kept, counts, replicas, replicas_per_master, places)

    shards = tuple(
        ShardLayout(primary=n.ordinal, slots=final_slots[n.ordinal], replicas=tuple(sorted(replicas[n.ordinal])))
        for n in kept
    )
    return Layout(
        masters=masters,
        replicas_per_master=replicas_per_master,
        survivors=tuple(n.ordinal for n in survivors),
        doomed=tuple(n.ordinal for n in doomed),
        shards=shards,
        transfers=tuple(transfers),
        promote=tuple(sorted(n.ordinal for n in promote)),
    )


def _pick_promotions(
    survivors: list[NodeState], kept: list[NodeState], need: int, r: int, by_id: dict[str, NodeState]
) -> list[NodeState]:
    """Replicas to turn into new primaries: orphans and replicas of over-full shards first, lowest ordinal first."""
    kept_ids = {n.node_id for n in kept}
    shard_size: dict[str, int] = {}
    for n in survivors:
        if n.is_replica and n.primary_id in kept_ids:
            shard_size[n.primary_id] = shard_size.get(n.primary_id, 0) + 1
    picked: list[NodeState] = []
    candidates = [n for n in survivors if n.is_replica]
    while need:
        pool = [n for n in candidates if n not in picked]
        if not pool:
            raise PlanRefused(
                f"not enough pods to make {len(kept) + len(picked) + need} primaries; start more pods or lower masters",
                reason="not_enough_pods",
            )

        def key(n: NodeState) -> tuple:
            if n.primary_id not in kept_ids:
                return (0, 0, n.ordinal)  # orphan replica: its primary is gone or leaving
            size = shard_size[n.primary_id]
            return (1 if size > r else 2, -size, n.ordinal)

        best = min(pool, key=key)
        picked.append(best)
        if best.primary_id in shard_size:
            shard_size[best.primary_id] -= 1
        need -= 1
    return picked


def _slot_flows(
    view: ClusterView, primaries: list[NodeState], leaving: list[NodeState]
) -> tuple[list[Transfer], dict[int, Ranges]]:
    """Minimal moves to the even split: unowned slots first, then each donor's surplus from the high end of
    its ranges, handed to receivers in ordinal order."""
    targets = slot_targets(primaries)
    donors: list[tuple[int | None, Ranges]] = []
    unowned = view.unowned_ranges()
    if unowned:
        donors.append((None, unowned))
    givers: list[tuple[int, Ranges]] = []
    for n in primaries:
        surplus = n.slot_count - targets[n.ordinal]
        if surplus > 0:
            givers.append((n.ordinal, take_high(n.slots, surplus)))
    for n in leaving:
        if n.is_primary and n.slots:
            givers.append((n.ordinal, merge_ranges(n.slots)))
    donors.extend(sorted(givers, key=lambda d: d[0]))

    final = {n.ordinal: merge_ranges(n.slots) for n in primaries}
    needs = [(n.ordinal, targets[n.ordinal] - n.slot_count) for n in primaries if targets[n.ordinal] > n.slot_count]
    transfers: list[Transfer] = []
    ri = 0
    for source, ranges in donors:
        if source is not None and source in final:
            final[source] = subtract_ranges(final[source], ranges)
        remaining = ranges
        while remaining:
            target, need = needs[ri]
            chunk = take_low(remaining, need)
            transfers.append(Transfer(source=source, target=target, ranges=chunk))
            final[target] = merge_ranges(final[target] + chunk)
            remaining = subtract_ranges(remaining, chunk)
            got = count_slots(chunk)
            if got == need:
                ri += 1
            else:
                needs[ri] = (target, need - got)
    return transfers, final


def _node_key(n: NodeState, places: Mapping[int, Placement | None]) -> str:
    p = places.get(n.ordinal)
    return (p.node if p and p.node else None) or f"ip:{n.ip}"


def _zone(n: NodeState, places: Mapping[int, Placement | None]) -> str | None:
    p = places.get(n.ordinal)
    return p.zone if p else None


def colocation_cost(a: NodeState, b: NodeState, places: Mapping[int, Placement | None]) -> int:
    if _node_key(a, places) == _node_key(b, places) or a.ip == b.ip:
        return SAME_NODE_COST
    za, zb = _zone(a, places), _zone(b, places)
    if za is not None and za == zb:
        return SAME_ZONE_COST
    return 0


def _assign_replicas(
    free: list[NodeState],
    primaries: list[NodeState],
    counts: dict[int, int],
    replicas: dict[int, list[int]],
    r: int,
    places: Mapping[int, Placement | None],
) -> None:
    """Give each free node, in ordinal order, a shard with room: the first choice by (co-location cost, fewest
    replicas, primary ordinal) that still allows the least total co-location cost for everyone after it.

    Deciding in ordinal order against the optimum makes the result prefix-stable: once the first k
    replicas are attached, re-planning assigns the rest exactly as before (crash safety)."""
    cost = {(f.ordinal, p.ordinal): colocation_cost(f, p, places) for f in free for p in primaries}
    room = {p.ordinal: r - counts[p.ordinal] for p in primaries}
    trivial = all(c == 0 for c in cost.values())
    best_total = 0 if trivial else _min_cost(free, primaries, room, cost)
    spent = 0
    for i, f in enumerate(free):
        options = sorted(
            (p for p in primaries if room[p.ordinal] > 0),
            key=lambda p: (cost[f.ordinal, p.ordinal], counts[p.ordinal], p.ordinal),
        )
        if not options:
            return  # more free nodes than replica places: they stay empty primaries without slots
        chosen = options[0]
        if not trivial:
            rest = free[i + 1 :]
            for p in options:
                room[p.ordinal] -= 1
                total = spent + cost[f.ordinal, p.ordinal] + _min_cost(rest, primaries, room, cost)
                room[p.ordinal] += 1
                if total == best_total:
                    chosen = p
                    break
        room[chosen.ordinal] -= 1
        counts[chosen.ordinal] += 1
        spent += cost[f.ordinal, chosen.ordinal]
        replicas[chosen.ordinal].append(f.ordinal)


def _min_cost(
    free: list[NodeState], primaries: list[NodeState], room: dict[int, int], cost: dict[tuple[int, int], int]
) -> int:
    """Least total co-location cost of placing as many of `free` as there is room for (min-cost flow on the
    small bipartite graph free nodes → primaries, successive shortest paths with Bellman-Ford)."""
    fs = [f.ordinal for f in free]
    ps = [p.ordinal for p in primaries if room[p.ordinal] > 0]
    if not fs or not ps:
        return 0
    # vertices: 0 source, 1..F free nodes, F+1..F+P primaries, F+P+1 sink
    nf, np_ = len(fs), len(ps)
    sink = nf + np_ + 1
    graph: list[list[list[int]]] = [[] for _ in range(sink + 1)]  # edge: [to, cap, cost, rev]

    def add(u: int, v: int, cap: int, c: int) -> None:
        graph[u].append([v, cap, c, len(graph[v])])
        graph[v].append([u, 0, -c, len(graph[u]) - 1])

    for i in range(nf):
        add(0, 1 + i, 1, 0)
        for j, p in enumerate(ps):
            add(1 + i, 1 + nf + j, 1, cost[fs[i], p])
    for j, p in enumerate(ps):
        add(1 + nf + j, sink, room[p], 0)
    total = 0
    while True:
        dist = [None] * (sink + 1)
        prev: list[tuple[int, int] | None] = [None] * (sink + 1)
        dist[0] = 0
        changed = True
        while changed:
            changed = False
            for u in range(sink + 1):
                if dist[u] is None:
                    continue
                for k, (v, cap, c, _) in enumerate(graph[u]):
                    if cap > 0 and (dist[v] is None or dist[u] + c < dist[v]):
                        dist[v] = dist[u] + c
                        prev[v] = (u, k)
                        changed = True
        if dist[sink] is None:
            return total
        v = sink
        while v != 0:
            u, k = prev[v]
            edge = graph[u][k]
            edge[1] -= 1
            graph[v][edge[3]][1] += 1
            v = u
        total += dist[sink]
