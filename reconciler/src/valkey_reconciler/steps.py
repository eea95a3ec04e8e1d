"""The vocabulary of changes the planner emits and the executor applies: one frozen, printable value per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .view import Ranges, count_slots, format_ranges, short_id


def _node(ordinal: int | None, node_id: str | None) -> str:
    if ordinal is None:
        return f"node {short_id(node_id)}"
    return f"ordinal {ordinal} ({short_id(node_id)})"


@dataclass(frozen=True)
class Step:
    """Base of every step: a stable snake_case `kind` for logs and a one-line `describe()` for people."""

    kind: ClassVar[str] = "step"

    def describe(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def node_ids(self) -> tuple[str, ...]:
        """The node ids this step expects to find; the executor re-observes instead of acting if one changed."""
        return ()

    def ordinals(self) -> tuple[int, ...]:
        """The pods this step touches (two steps with disjoint ordinals may run at once)."""
        return ()

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class CloseOpenSlot(Step):
    """Close a slot a legacy migration left open.

    With an importing node: finish toward it (set the owner MIGRATING again if needed, move the remaining
    keys, then `SETSLOT <slot> NODE <importing>` on the importing node, the old owner and every primary).
    Without one: `SETSLOT <slot> STABLE` on the migrating node, which still owns the slot and its keys.
    """

    kind: ClassVar[str] = "close_open_slot"
    slot: int
    migrating_ordinal: int | None
    migrating_id: str | None
    importing_ordinal: int | None
    importing_id: str | None

    @property
    def finish(self) -> bool:
        return self.importing_id is not None

    def describe(self) -> str:
        if self.finish:
            src = _node(self.migrating_ordinal, self.migrating_id) if self.migrating_id else "its owner"
            return (
                f"close open slot {self.slot}: finish moving it from {src} "
                f"to {_node(self.importing_ordinal, self.importing_id)}"
            )
        return (
            f"close open slot {self.slot}: set it stable on {_node(self.migrating_ordinal, self.migrating_id)}"
            " (nothing was imported)"
        )

    def node_ids(self) -> tuple[str, ...]:
        return tuple(i for i in (self.migrating_id, self.importing_id) if i)

    def ordinals(self) -> tuple[int, ...]:
        return tuple(o for o in (self.migrating_ordinal, self.importing_ordinal) if o is not None)


@dataclass(frozen=True)
class AwaitMigration(Step):
    """An atomic slot migration job is in flight: wait until it ends (success, or failed and retryable)."""

    kind: ClassVar[str] = "await_migration"
    source_ordinal: int
    source_id: str
    target_ordinal: int | None
    target_id: str
    ranges: Ranges
    job_id: str | None = None

    def describe(self) -> str:
        return (
            f"wait for the migration of {count_slots(self.ranges)} slots {format_ranges(self.ranges)} "
            f"from {_node(self.source_ordinal, self.source_id)} to {_node(self.target_ordinal, self.target_id)}"
        )

    def node_ids(self) -> tuple[str, ...]:
        return (self.source_id, self.target_id)

    def ordinals(self) -> tuple[int, ...]:
        return tuple(o for o in (self.source_ordinal, self.target_ordinal) if o is not None)


@dataclass(frozen=True)
class AwaitFailover(Step):
    """A primary that no pod is any more (its pod came back as a new node) still owns slots: wait until
    Valkey promotes its replica `replica_ordinal` (automatic failover after cluster-node-timeout), or, with
    no replica, until every node marks it failed."""

    kind: ClassVar[str] = "await_failover"
    node_id: str
    ranges: Ranges
    replica_ordinals: tuple[int, ...] = ()
    replaced_by: int | None = None

    def describe(self) -> str:
        if self.replica_ordinals:
            who = ", ".join(f"ordinal {o}" for o in self.replica_ordinals)
            return (f"wait for {who} to take over slots {format_ranges(self.ranges)} from the lost "
                    f"node {short_id(self.node_id)} (automatic failover)")
        return f"wait for every node to mark the lost node {short_id(self.node_id)} as failed"

    def ordinals(self) -> tuple[int, ...]:
        return self.replica_ordinals


@dataclass(frozen=True)
class AwaitAgreement(Step):
    """Two pods claim the same slots (they could not talk, e.g. after every pod moved to a new IP): wait
    until Valkey settles the claim by config epoch, now that they can reach each other."""

    kind: ClassVar[str] = "await_agreement"
    ranges: Ranges
    claimants: tuple[int, ...]

    def describe(self) -> str:
        who = " and ".join(f"ordinal {o}" for o in self.claimants)
        return f"wait for {who} to settle who owns slots {format_ranges(self.ranges)} (config epoch)"

    def ordinals(self) -> tuple[int, ...]:
        return self.claimants


@dataclass(frozen=True)
class SetConfigEpoch(Step):
    """`CLUSTER SET-CONFIG-EPOCH` on a fresh node before it meets anyone (distinct epochs avoid collisions)."""

    kind: ClassVar[str] = "set_config_epoch"
    ordinal: int
    node_id: str
    epoch: int

    def describe(self) -> str:
        return f"set config epoch {self.epoch} on {_node(self.ordinal, self.node_id)}"

    def node_ids(self) -> tuple[str, ...]:
        return (self.node_id,)

    def ordinals(self) -> tuple[int, ...]:
        return (self.ordinal,)


@dataclass(frozen=True)
class SetNodeTimeout(Step):
    """`CONFIG SET cluster-node-timeout` on one node, for a fast join.

    Valkey keeps a primary at `cluster_state:fail` for min(cluster-node-timeout, 5 s) (at least 0.5 s) after
    it last saw itself in a minority, and an empty primary that knows no slot owner yet always does: every
    new or fresh primary waits that long before it may serve. Lowered on such a node while it joins; put
    back (`lower` false) as soon as it serves. With `await_ok` (a node that does not serve yet: a new primary
    about to receive slots, or a forming primary at the end of its formation) the step first waits until it
    serves, then puts the timeout back (before any slot moves onto it).
    """

    kind: ClassVar[str] = "set_node_timeout"
    ordinal: int
    node_id: str
    timeout_ms: int
    lower: bool
    await_ok: bool = False

    def describe(self) -> str:
        if self.lower:
            return (f"lower cluster-node-timeout on {_node(self.ordinal, self.node_id)} to {self.timeout_ms} ms "
                    "while it joins (shortens Valkey's rejoin delay)")
        when = " once it reports cluster_state ok" if self.await_ok else ""
        return f"restore cluster-node-timeout on {_node(self.ordinal, self.node_id)} to {self.timeout_ms} ms{when}"

    def node_ids(self) -> tuple[str, ...]:
        return (self.node_id,)

    def ordinals(self) -> tuple[int, ...]:
        return (self.ordinal,)


@dataclass(frozen=True)
class Meet(Step):
    """Introduce the node at its current IP to the node at `via_ordinal` (a node already in the cluster, at a
    new IP, also the other way); verify membership."""

    kind: ClassVar[str] = "meet"
    ordinal: int
    node_id: str
    ip: str
    port: int
    via_ordinal: int
    via_id: str

    def describe(self) -> str:
        return (
            f"meet {_node(self.ordinal, self.node_id)} at {self.ip}:{self.port} "
            f"with {_node(self.via_ordinal, self.via_id)}"
        )

    def node_ids(self) -> tuple[str, ...]:
        return (self.node_id, self.via_id)

    def ordinals(self) -> tuple[int, ...]:
        return (self.ordinal, self.via_ordinal)


@dataclass(frozen=True)
class AssignSlots(Step):
    """`CLUSTER ADDSLOTSRANGE` for slots no node owns (no data can exist in them)."""

    kind: ClassVar[str] = "assign_slots"
    ordinal: int
    node_id: str
    ranges: Ranges

    def describe(self) -> str:
        return (
            f"assign {count_slots(self.ranges)} slots {format_ranges(self.ranges)} "
            f"to {_node(self.ordinal, self.node_id)}"
        )

    def node_ids(self) -> tuple[str, ...]:
        return (self.node_id,)

    def ordinals(self) -> tuple[int, ...]:
        return (self.ordinal,)


@dataclass(frozen=True)
class MigrateSlots(Step):
    """Move slots and their keys from one primary to another (atomic engine on 9.x, legacy on 8.x)."""

    kind: ClassVar[str] = "migrate_slots"
    source_ordinal: int
    source_id: str
    target_ordinal: int
    target_id: str
    ranges: Ranges

    def describe(self) -> str:
        return (
            f"migrate {count_slots(self.ranges)} slots {format_ranges(self.ranges)} "
            f"from {_node(self.source_ordinal, self.source_id)} to {_node(self.target_ordinal, self.target_id)}"
        )

    def node_ids(self) -> tuple[str, ...]:
        return (self.source_id, self.target_id)

    def ordinals(self) -> tuple[int, ...]:
        return (self.source_ordinal, self.target_ordinal)


@dataclass(frozen=True)
class Replicate(Step):
    """`CLUSTER REPLICATE` the primary; done when the link is up and the offset is non-zero."""

    kind: ClassVar[str] = "replicate"
    ordinal: int
    node_id: str
    primary_ordinal: int
    primary_id: str

    def describe(self) -> str:
        return f"make {_node(self.ordinal, self.node_id)} a replica of {_node(self.primary_ordinal, self.primary_id)}"

    def node_ids(self) -> tuple[str, ...]:
        return (self.node_id, self.primary_id)

    def ordinals(self) -> tuple[int, ...]:
        return (self.ordinal, self.primary_ordinal)


@dataclass(frozen=True)
class ResetNode(Step):
    """Make a node an empty, lone primary: FLUSHALL (only on a replica or a node without slots), then
    `CLUSTER RESET` (SOFT keeps the node id, HARD makes a new one and zeroes the epochs)."""

    kind: ClassVar[str] = "reset_node"
    ordinal: int
    node_id: str
    hard: bool = False

    def describe(self) -> str:
        mode = "hard" if self.hard else "soft"
        return f"reset {_node(self.ordinal, self.node_id)} ({mode}) to an empty primary"

    def node_ids(self) -> tuple[str, ...]:
        return (self.node_id,)

    def ordinals(self) -> tuple[int, ...]:
        return (self.ordinal,)


@dataclass(frozen=True)
class Forget(Step):
    """`CLUSTER FORGET` the id on every other node (each node then bans it for 60 s).

    `replaced_by` is the pod that came back as a new node in place of this id; `lost` the slots the id still
    owned (their data is gone, the slots become unowned and are assigned again); `note` is what the run
    logs about it (`node_replaced`, `slots_lost`)."""

    kind: ClassVar[str] = "forget"
    node_id: str
    reason: str = ""
    replaced_by: int | None = None
    lost: Ranges = ()
    note: str = ""

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"forget node {short_id(self.node_id)} on every node{why}"

    def node_ids(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Failover(Step):
    """Manual `CLUSTER FAILOVER` (never FORCE or TAKEOVER) on a replica: it becomes its shard's primary."""

    kind: ClassVar[str] = "failover"
    ordinal: int
    node_id: str
    primary_ordinal: int | None = None
    primary_id: str | None = None

    def describe(self) -> str:
        old = f" (taking over from {_node(self.primary_ordinal, self.primary_id)})" if self.primary_id else ""
        return f"fail over to {_node(self.ordinal, self.node_id)}{old}"

    def node_ids(self) -> tuple[str, ...]:
        return tuple(i for i in (self.node_id, self.primary_id) if i)

    def ordinals(self) -> tuple[int, ...]:
        return tuple(o for o in (self.ordinal, self.primary_ordinal) if o is not None)


@dataclass(frozen=True)
class RemoveNode(Step):
    """Take a drained pod out of the cluster before its StatefulSet shrinks.

    Precondition, checked on a fresh read right before acting: the node still has `node_id`, no node
    replicates it and, when it is a primary, it owns no slot and holds no key (`require_empty`; a replica's
    keys are a copy of its primary's, which stays). Then `CLUSTER RESET HARD` (the node takes a new id and
    forgets every peer, so it cannot gossip its way back), then `CLUSTER FORGET` of the old id on every
    other member at once (each bans the id for 60 s, so none re-learns it from another)."""

    kind: ClassVar[str] = "remove_node"
    ordinal: int
    node_id: str
    require_empty: bool = True

    def describe(self) -> str:
        return f"remove {_node(self.ordinal, self.node_id)}: reset it (hard) and forget it on every node"

    def node_ids(self) -> tuple[str, ...]:
        return (self.node_id,)

    def ordinals(self) -> tuple[int, ...]:
        return (self.ordinal,)


STEP_TYPES: tuple[type[Step], ...] = (
    CloseOpenSlot,
    AwaitMigration,
    AwaitFailover,
    AwaitAgreement,
    SetConfigEpoch,
    Meet,
    AssignSlots,
    MigrateSlots,
    Replicate,
    ResetNode,
    Forget,
    Failover,
    RemoveNode,
)
