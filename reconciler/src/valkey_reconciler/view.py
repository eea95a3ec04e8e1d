"""The observed state of a Valkey cluster as frozen values: slot ranges, peers, nodes and the cluster view."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

# Valkey Cluster hashes every key into one of 16384 slots (CRC16 mod 16384).
TOTAL_SLOTS = 16384

PRIMARY = "primary"
REPLICA = "replica"

ONLINE = "online"
FAILED = "failed"
LOADING = "loading"

MIGRATING = "migrating"
IMPORTING = "importing"

EXPORT = "export"
IMPORT = "import"

# Atomic slot migration jobs (CLUSTER GETSLOTMIGRATIONS) stay listed after they end; these states are final.
FINISHED_MIGRATION_STATES = frozenset({"success", "failed", "cancelled", "canceled"})


@dataclass(frozen=True, order=True)
class SlotRange:
    """Slots `start` … `end`, both inclusive."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start <= self.end < TOTAL_SLOTS):
            raise ValueError(f"invalid slot range {self.start}-{self.end}: need 0 <= start <= end < {TOTAL_SLOTS}")

    @property
    def count(self) -> int:
        return self.end - self.start + 1

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and self.start <= slot <= self.end

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"


Ranges = tuple[SlotRange, ...]


def ranges_from_slots(slots: Iterable[int]) -> Ranges:
    """The fewest sorted ranges covering exactly `slots`."""
    out: list[SlotRange] = []
    start = prev = None
    for slot in sorted(set(slots)):
        if prev is not None and slot == prev + 1:
            prev = slot
            continue
        if start is not None:
            out.append(SlotRange(start, prev))
        start = prev = slot
    if start is not None:
        out.append(SlotRange(start, prev))
    return tuple(out)


def merge_ranges(ranges: Iterable[SlotRange]) -> Ranges:
    """Sorted, non-overlapping, non-adjacent ranges covering the union of `ranges`."""
    out: list[SlotRange] = []
    for r in sorted(ranges):
        if out and r.start <= out[-1].end + 1:
            if r.end > out[-1].end:
                out[-1] = SlotRange(out[-1].start, r.end)
        else:
            out.append(r)
    return tuple(out)


def subtract_ranges(ranges: Iterable[SlotRange], remove: Iterable[SlotRange]) -> Ranges:
    """The slots of `ranges` that are not in `remove`."""
    out: list[SlotRange] = []
    cut = merge_ranges(remove)
    for r in merge_ranges(ranges):
        pieces = [r]
        for c in cut:
            nxt: list[SlotRange] = []
            for p in pieces:
                if c.end < p.start or c.start > p.end:
                    nxt.append(p)
                    continue
                if p.start < c.start:
                    nxt.append(SlotRange(p.start, c.start - 1))
                if c.end < p.end:
                    nxt.append(SlotRange(c.end + 1, p.end))
            pieces = nxt
        out.extend(pieces)
    return merge_ranges(out)


def intersect_ranges(a: Iterable[SlotRange], b: Iterable[SlotRange]) -> Ranges:
    """The slots in both `a` and `b`."""
    a_m = merge_ranges(a)
    return subtract_ranges(a_m, subtract_ranges(a_m, b))


def count_slots(ranges: Iterable[SlotRange]) -> int:
    return sum(r.count for r in merge_ranges(ranges))


def iter_slots(ranges: Iterable[SlotRange]) -> Iterator[int]:
    for r in merge_ranges(ranges):
        yield from range(r.start, r.end + 1)


def take_high(ranges: Iterable[SlotRange], n: int) -> Ranges:
    """The highest `n` slots of `ranges` (all of them if there are fewer)."""
    picked: list[SlotRange] = []
    for r in reversed(merge_ranges(ranges)):
        if n <= 0:
            break
        if r.count <= n:
            picked.append(r)
            n -= r.count
        else:
            picked.append(SlotRange(r.end - n + 1, r.end))
            n = 0
    return merge_ranges(picked)


def take_low(ranges: Iterable[SlotRange], n: int) -> Ranges:
    """The lowest `n` slots of `ranges` (all of them if there are fewer)."""
    picked: list[SlotRange] = []
    for r in merge_ranges(ranges):
        if n <= 0:
            break
        if r.count <= n:
            picked.append(r)
            n -= r.count
        else:
            picked.append(SlotRange(r.start, r.start + n - 1))
            n = 0
    return merge_ranges(picked)


def format_ranges(ranges: Iterable[SlotRange]) -> str:
    merged = merge_ranges(ranges)
    return ",".join(str(r) for r in merged) if merged else "none"


ALL_SLOTS: Ranges = (SlotRange(0, TOTAL_SLOTS - 1),)


def short_id(node_id: str | None) -> str:
    """The first 8 characters of a node id, as logs and plans print it."""
    return (node_id or "?")[:8]


@dataclass(frozen=True)
class Placement:
    """Where a pod runs: Kubernetes node and zone, when known."""

    node: str | None = None
    zone: str | None = None


@dataclass(frozen=True)
class Peer:
    """What one node says about another node (or itself), from its CLUSTER SHARDS reply."""

    node_id: str
    ip: str
    port: int
    role: str  # PRIMARY | REPLICA
    health: str  # ONLINE | FAILED | LOADING
    replication_offset: int = 0
    shard_id: str | None = None
    # The slots of this peer's shard as the reporting node sees them (primaries only; empty for replicas).
    slots: Ranges = ()


@dataclass(frozen=True)
class OpenSlot:
    """A slot left MIGRATING (to `peer_id`) or IMPORTING (from `peer_id`) by a legacy migration."""

    slot: int
    state: str  # MIGRATING | IMPORTING
    peer_id: str


@dataclass(frozen=True)
class MigrationJob:
    """One atomic slot migration job from CLUSTER GETSLOTMIGRATIONS (Valkey ≥ 9.0)."""

    job_id: str | None
    source_id: str
    target_id: str
    ranges: Ranges
    state: str
    operation: str  # EXPORT | IMPORT, from the reporting node's side

    @property
    def active(self) -> bool:
        return self.state.lower() not in FINISHED_MIGRATION_STATES


@dataclass(frozen=True)
class NodeState:
    """One expected pod as observed: identity, role, slots, replication and resources."""

    ordinal: int
    address: str  # host:port as dialled
    ip: str  # resolved IP (CLUSTER MEET takes IPs only)
    node_id: str
    role: str = PRIMARY
    primary_id: str | None = None  # for replicas
    slots: Ranges = ()
    open_slots: tuple[OpenSlot, ...] = ()
    migrations: tuple[MigrationJob, ...] = ()
    version: tuple[int, int, int] = (0, 0, 0)
    config_epoch: int = 0
    current_epoch: int = 0
    cluster_state: str = "fail"
    known_nodes: tuple[Peer, ...] = ()  # including itself and failed peers
    link_up: bool = False  # replica: master_link_status up
    repl_offset: int = 0
    keys: int = 0
    used_memory: int = 0
    maxmemory: int = 0
    placement: Placement | None = None
    port: int = 6379
    node_timeout_ms: int = 0  # cluster-node-timeout as running (CONFIG GET); 0 = not read

    @property
    def is_primary(self) -> bool:
        return self.role == PRIMARY

    @property
    def is_replica(self) -> bool:
        return self.role == REPLICA

    @property
    def slot_count(self) -> int:
        return count_slots(self.slots)

    @property
    def peers(self) -> tuple[Peer, ...]:
        """The other nodes this node knows (itself excluded)."""
        return tuple(p for p in self.known_nodes if p.node_id != self.node_id)

    @property
    def is_alone(self) -> bool:
        """True when the node knows no other node: it was never met, or was reset."""
        return not self.peers

    @property
    def is_empty(self) -> bool:
        """An empty primary: no slots, no keys, no replication link."""
        return self.is_primary and not self.slots and self.keys == 0

    @property
    def synced(self) -> bool:
        """A replica that protects its shard: link up and a non-zero offset (field notes: offset 0 can win an election)."""
        return self.is_replica and self.link_up and self.repl_offset > 0

    def peer(self, node_id: str) -> Peer | None:
        for p in self.known_nodes:
            if p.node_id == node_id:
                return p
        return None

    def label(self) -> str:
        return f"ordinal {self.ordinal} ({short_id(self.node_id)})"


@dataclass(frozen=True)
class ClusterView:
    """Every expected pod as observed at one moment, in ordinal order."""

    nodes: tuple[NodeState, ...]
    _by_ordinal: dict = field(init=False, repr=False, compare=False, hash=False)
    _by_id: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        nodes = tuple(sorted(self.nodes, key=lambda n: n.ordinal))
        object.__setattr__(self, "nodes", nodes)
        by_ord = {n.ordinal: n for n in nodes}
        by_id = {n.node_id: n for n in nodes}
        if len(by_ord) != len(nodes):
            raise ValueError("two observed nodes share an ordinal")
        if len(by_id) != len(nodes):
            raise ValueError("two observed nodes share a node id")
        object.__setattr__(self, "_by_ordinal", by_ord)
        object.__setattr__(self, "_by_id", by_id)

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def ordinals(self) -> tuple[int, ...]:
        return tuple(n.ordinal for n in self.nodes)

    def by_ordinal(self, ordinal: int) -> NodeState:
        return self._by_ordinal[ordinal]

    def get_ordinal(self, ordinal: int) -> NodeState | None:
        return self._by_ordinal.get(ordinal)

    def by_id(self, node_id: str | None) -> NodeState | None:
        return self._by_id.get(node_id) if node_id else None

    def ordinal_of(self, node_id: str | None) -> int | None:
        n = self.by_id(node_id)
        return n.ordinal if n else None

    def primaries(self) -> tuple[NodeState, ...]:
        """Primaries that own at least one slot, in ordinal order."""
        return tuple(n for n in self.nodes if n.is_primary and n.slots)

    def empty_primaries(self) -> tuple[NodeState, ...]:
        return tuple(n for n in self.nodes if n.is_primary and not n.slots)

    def replicas_of(self, node_id: str) -> tuple[NodeState, ...]:
        return tuple(n for n in self.nodes if n.is_replica and n.primary_id == node_id)

    def slot_owners(self) -> dict[int, str]:
        """slot → node id, from each node's claim on its own slots."""
        owners: dict[int, str] = {}
        for n in self.nodes:
            if n.is_primary:
                for s in iter_slots(n.slots):
                    owners[s] = n.node_id
        return owners

    def owner_of(self, slot: int) -> NodeState | None:
        for n in self.nodes:
            if n.is_primary and any(slot in r for r in n.slots):
                return n
        return None

    def owned_ranges(self) -> Ranges:
        return merge_ranges(r for n in self.nodes if n.is_primary for r in n.slots)

    def unowned_ranges(self) -> Ranges:
        return subtract_ranges(ALL_SLOTS, self.owned_ranges())

    def min_version(self) -> tuple[int, int, int]:
        return min((n.version for n in self.nodes), default=(0, 0, 0))

    def open_slots(self) -> tuple[tuple[NodeState, OpenSlot], ...]:
        return tuple((n, o) for n in self.nodes for o in n.open_slots)

    def active_migrations(self) -> tuple[MigrationJob, ...]:
        """Atomic migrations in flight, one entry per job (a job is listed on both its source and target)."""
        seen: dict[tuple, MigrationJob] = {}
        for n in self.nodes:
            for job in n.migrations:
                if not job.active:
                    continue
                key = (job.job_id or "", job.source_id, job.target_id, merge_ranges(job.ranges))
                if key not in seen or job.operation == EXPORT:
                    seen[key] = job
        return tuple(sorted(seen.values(), key=lambda j: (j.source_id, merge_ranges(j.ranges))))

    def foreign_peers(self) -> dict[str, tuple[Peer, ...]]:
        """Node ids some node knows that are not any observed node: id → what each reporter says about it."""
        out: dict[str, list[Peer]] = {}
        for n in self.nodes:
            for p in n.peers:
                if p.node_id not in self._by_id:
                    out.setdefault(p.node_id, []).append(p)
        return {k: tuple(v) for k, v in sorted(out.items())}

    def topology_seen_by(self, node: NodeState, roles: bool = True) -> frozenset:
        """(node id, role, slots) of every non-failed node that `node` knows, itself included; with `roles`
        false only the slot owners (the slot map clients are served)."""
        return frozenset(
            (p.node_id, p.role, merge_ranges(p.slots)) for p in node.known_nodes
            if p.health != FAILED and (roles or p.role == PRIMARY and p.slots)
        )

    def claimed_topology(self, roles: bool = True) -> frozenset:
        """(node id, role, slots) as each observed node claims for itself (`roles`: as topology_seen_by)."""
        return frozenset((n.node_id, n.role, merge_ranges(n.slots)) for n in self.nodes
                         if roles or n.is_primary and n.slots)

    def agrees(self, roles: bool = True) -> bool:
        """Every node reports the same slot → owner map (and, with `roles`, every node's role), matching what
        each node claims."""
        return self.disagreement(roles) is None

    def disagreement(self, roles: bool = True) -> str | None:
        """The first node whose view differs from what the nodes claim, and how; None when they agree."""
        claimed = self.claimed_topology(roles)
        names = {n.node_id: n.label() for n in self.nodes}
        for n in self.nodes:
            seen = self.topology_seen_by(n, roles)
            if seen == claimed:
                continue
            for node_id, role, slots in sorted(claimed - seen):
                other = next((p for p in n.known_nodes if p.node_id == node_id), None)
                who = names.get(node_id, short_id(node_id))
                if other is None:
                    return f"{n.label()} does not know {who} yet"
                if other.health == FAILED:
                    return f"{n.label()} marks {who} failed"
                if other.role != role:
                    return f"{n.label()} sees {who} as {other.role}, it is a {role}"
                return (f"{n.label()} sees {who} with slots {format_ranges(other.slots) or 'none'}, "
                        f"it claims {format_ranges(slots) or 'none'}")
            extra = sorted(seen - claimed)
            if extra:
                return f"{n.label()} still lists {names.get(extra[0][0], short_id(extra[0][0]))} as it was"
        return None

    def fully_covered(self) -> bool:
        return count_slots(self.owned_ranges()) == TOTAL_SLOTS

    def contested(self) -> tuple[tuple[Ranges, tuple[NodeState, ...]], ...]:
        """Slots two observed primaries both claim, with the claimants (highest config epoch first).

        Valkey settles such a claim by config epoch as soon as the two nodes talk again (the higher epoch
        wins); it lasts only while they cannot reach each other, e.g. after every pod moved to a new IP."""
        out = []
        owners = [n for n in self.nodes if n.is_primary and n.slots]
        for i, a in enumerate(owners):
            for b in owners[i + 1:]:
                both = intersect_ranges(a.slots, b.slots)
                if both:
                    pair = tuple(sorted((a, b), key=lambda n: (-n.config_epoch, n.ordinal)))
                    out.append((both, pair))
        return tuple(out)

    def resolved(self) -> "ClusterView":
        """The view as Valkey will settle it: each contested slot stays with the claimant of higher epoch."""
        contested = self.contested()
        if not contested:
            return self
        nodes = {n.ordinal: n for n in self.nodes}
        for ranges, (_, loser) in contested:
            n = nodes[loser.ordinal]
            nodes[n.ordinal] = replace(n, slots=subtract_ranges(n.slots, ranges))
        return ClusterView(tuple(nodes.values()))
