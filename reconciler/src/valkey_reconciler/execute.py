"""Applies one step (or a batch of independent ones) to the live pods and waits, bounded, until it holds."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import valkey

from valkey_reconciler import migrate
from valkey_reconciler.errors import ConvergenceTimeout, StepFailed
from valkey_reconciler.node import Node
from valkey_reconciler.observe import parallel, parse_shards
from valkey_reconciler.plan import JOIN_NODE_TIMEOUT_MS
from valkey_reconciler.steps import (
    AssignSlots, AwaitAgreement, AwaitFailover, AwaitMigration, CloseOpenSlot, Failover, Forget, Meet, MigrateSlots, Replicate, ResetNode,
    SetConfigEpoch, SetNodeTimeout, Step,
)
from valkey_reconciler.view import (
    FAILED, PRIMARY, TOTAL_SLOTS, ClusterView, SlotRange, count_slots, format_ranges, iter_slots,
)
from valkey_reconciler.waits import wait_until

# Valkey answers "Unknown node" to REPLICATE/FORGET until gossip has told the node about the peer.
GOSSIP_RETRY_S = 0.05
BATCHABLE = (SetConfigEpoch, SetNodeTimeout, Meet, AssignSlots, Replicate, Forget, AwaitMigration)
# A run of these kinds may go on into a run of the next kinds in the same batch (a formation: lowered
# timeouts, epochs, slots, meets, replicas, restored timeouts): the executor checks each of their
# preconditions live (an epoch already set, a peer not known yet, a node not serving yet), so an observation
# in between adds nothing but a read of every pod - seconds at 100 pods while gossip spreads. A run of
# timeouts goes on only when it lowers them.
CHAINS: dict[type, tuple[type, ...]] = {
    SetNodeTimeout: (SetConfigEpoch, AssignSlots, Meet),
    SetConfigEpoch: (AssignSlots, Meet),
    AssignSlots: (Meet, SetNodeTimeout),
    Meet: (Replicate, SetNodeTimeout),
    Replicate: (SetNodeTimeout,),
}


class StaleStep(Exception):
    """A pod's node id differs from what the plan expected: observe again and re-plan."""


def _run_of(steps: Sequence[Step]) -> list[Step]:
    """The leading steps of one batchable kind (replicas on distinct pods)."""
    first = steps[0]
    run = [first]
    seen = set(first.ordinals()[:1]) if isinstance(first, Replicate) else set()
    for step in steps[1:]:
        if type(step) is not type(first):
            break
        if isinstance(step, Replicate):
            if step.ordinal in seen:
                break
            seen.add(step.ordinal)
        run.append(step)
    return run


def _chains(run: Sequence[Step], following: Step) -> bool:
    if isinstance(run[0], SetNodeTimeout) and not all(s.lower for s in run):  # type: ignore[attr-defined]
        return False
    return type(following) in CHAINS.get(type(run[0]), ())


def next_batch(steps: Sequence[Step]) -> list[Step]:
    """The first step plus every following step that can run with it.

    Consecutive steps of one batchable kind go together (replicas on distinct pods), and such a run goes on
    into the next one where CHAINS allows; consecutive migrations whose source/target pods are pairwise
    disjoint go together (picked greedily among the consecutive migrations); consecutive open-slot closures
    go together while they share one migrating/importing pair.
    """
    if not steps:
        return []
    first = steps[0]
    batch = [first]
    if isinstance(first, BATCHABLE):
        batch = _run_of(steps)
        last_run = batch
        while len(batch) < len(steps) and _chains(last_run, steps[len(batch)]):
            last_run = _run_of(steps[len(batch):])
            batch += last_run
    elif isinstance(first, MigrateSlots):
        # Among the consecutive migrations, every one whose pods are disjoint from those already
        # picked runs now; the rest are planned again after the next observation.
        used = set(first.ordinals())
        for step in steps[1:]:
            if not isinstance(step, MigrateSlots):
                break
            if used & set(step.ordinals()):
                continue
            used |= set(step.ordinals())
            batch.append(step)
    elif isinstance(first, CloseOpenSlot):
        for step in steps[1:]:
            if not isinstance(step, CloseOpenSlot) or (step.migrating_id, step.importing_id) != \
                    (first.migrating_id, first.importing_id):
                break
            batch.append(step)
    return batch


def _pairs(ranges: Sequence[SlotRange]) -> list[int]:
    out: list[int] = []
    for r in ranges:
        out += [r.start, r.end]
    return out


class Executor:
    """Runs steps against the pods; `nodes` are indexed by ordinal."""

    def __init__(self, nodes: Sequence[Node], user: str, password: str, log: Any, timeout: float) -> None:
        self.nodes = list(nodes)
        self.user = user
        self._password = password
        self.log = log
        self.timeout = timeout
        # Off once CONFIG SET is refused: the planner then stops lowering timeouts for this run.
        self.fast_join = True

    # -- helpers --------------------------------------------------------------------------------------

    def node(self, ordinal: int) -> Node:
        return self.nodes[ordinal]

    def _verify(self, batch: Sequence[Step], view: ClusterView) -> None:
        """Check live that every pod a step names still has the node id the plan saw."""
        expected: dict[int, str] = {}
        for step in batch:
            ids = step.node_ids()
            for ordinal in step.ordinals():
                state = view.get_ordinal(ordinal)
                if state is not None and state.node_id in ids:
                    expected[ordinal] = state.node_id
        live = parallel([self.node(o) for o in expected], lambda n: n.cmd("CLUSTER", "MYID"))
        for (ordinal, node_id), got in zip(expected.items(), live):
            if got != node_id:
                raise StaleStep(f"ordinal {ordinal} is now node {got[:8]}, the plan expected {node_id[:8]}")

    def _wait(self, pending: Callable[[], str | None], what: str) -> float:
        return wait_until(pending, self.timeout, what)

    def _shards(self, ordinals: Sequence[int]) -> dict[int, tuple]:
        replies = parallel([self.node(o) for o in ordinals], lambda n: n.cmd("CLUSTER SHARDS"))
        return {o: parse_shards(r) for o, r in zip(ordinals, replies)}

    def _member_ordinals(self, view: ClusterView, extra: Sequence[int] = ()) -> list[int]:
        """Pods that are part of the cluster (know someone), plus `extra`."""
        return sorted({n.ordinal for n in view if not n.is_alone} | set(extra))

    def _wait_owners(self, view: ClusterView, owners: dict[str, Sequence[SlotRange]], what: str,
                     members: Sequence[int] | None = None) -> float:
        """Wait until every member pod (default: all) reports each node id owning its ranges."""
        if members is None:
            members = self._member_ordinals(view, [view.by_id(i).ordinal for i in owners if view.by_id(i)])
        want = {i: set(iter_slots(r)) for i, r in owners.items()}

        def pending() -> str | None:
            for ordinal, peers in self._shards(members).items():
                have = {p.node_id: set(iter_slots(p.slots)) for p in peers if p.role == PRIMARY}
                for node_id, slots in want.items():
                    if not slots <= have.get(node_id, set()):
                        return f"ordinal {ordinal} does not yet see {node_id[:8]} owning all its new slots"
            return None

        return self._wait(pending, what)

    def _ensure_known(self, view: ClusterView, ordinals: Sequence[int], ids_of: Sequence[int], what: str) -> None:
        """Wait until each pod in `ordinals` knows every pod in `ids_of`; MEET directly where one does not.

        A freshly met node reaches the rest of the cluster by gossip within a second or so; commands
        naming it (MIGRATESLOTS, SETSLOT NODE, REPLICATE) fail with "Unknown node" until then.
        """
        introduced: set[tuple[int, int]] = set()

        def pending() -> str | None:
            for ordinal, peers in self._shards(ordinals).items():
                known = {p.node_id for p in peers}
                for other in ids_of:
                    if other == ordinal:
                        continue
                    peer = view.by_ordinal(other)
                    if peer.node_id not in known:
                        if (ordinal, other) not in introduced:
                            self.node(ordinal).cmd("CLUSTER", "MEET", peer.ip, peer.port)
                            introduced.add((ordinal, other))
                        return f"ordinal {ordinal} does not know ordinal {other} yet"
            return None

        self._wait(pending, what)

    # -- entry point ----------------------------------------------------------------------------------

    def run(self, batch: Sequence[Step], view: ClusterView, **context: Any) -> None:
        """Run a batch from next_batch: each run of one kind in turn, logged as it starts and finishes
        (`context` is added to those events)."""
        self._verify(batch, view)
        handlers = {
            CloseOpenSlot: self._close_open_slots, AwaitMigration: self._await_migrations,
            AwaitFailover: self._await_failover, AwaitAgreement: self._await_agreement,
            SetConfigEpoch: self._set_config_epochs, SetNodeTimeout: self._set_node_timeouts, Meet: self._meet,
            AssignSlots: self._assign_slots,
            MigrateSlots: self._migrate, Replicate: self._replicate, ResetNode: self._reset,
            Forget: self._forget, Failover: self._failover,
        }
        runs: list[list[Step]] = []
        for step in batch:
            if runs and type(runs[-1][0]) is type(step):
                runs[-1].append(step)
            else:
                runs.append([step])
        for run in runs:
            handler = handlers.get(type(run[0]))
            if handler is None:
                raise StepFailed(f"the executor does not know step kind {run[0].kind!r}", kind=run[0].kind)
            started = time.monotonic()
            for step in run:
                self.log.info("step_started", kind=step.kind, step=step.describe(), **context)
            handler(run, view)
            elapsed = round(time.monotonic() - started, 3)
            for step in run:
                self.log.info("step_finished", kind=step.kind, step=step.describe(), elapsed_s=elapsed, **context)

    # -- step kinds -----------------------------------------------------------------------------------

    def _set_config_epochs(self, batch: list[SetConfigEpoch], view: ClusterView) -> None:
        def apply(step: SetConfigEpoch) -> None:
            node = self.node(step.ordinal)
            try:
                node.cmd("CLUSTER", "SET-CONFIG-EPOCH", step.epoch)
            except valkey.exceptions.ResponseError as exc:
                # Valkey accepts this only on a node that knows no other node and has epoch 0.
                if int(node.cmd("CLUSTER INFO").get("cluster_my_epoch", 0)) != step.epoch:
                    raise StepFailed(f"{step.describe()} refused: {exc}", ordinal=step.ordinal) from None

        parallel_steps(batch, apply)

    def _set_node_timeouts(self, batch: list[SetNodeTimeout], view: ClusterView) -> None:
        def apply(step: SetNodeTimeout) -> None:
            node = self.node(step.ordinal)
            if step.await_ok:
                self._await_serving(node, step)
            try:
                node.cmd("CONFIG", "SET", "cluster-node-timeout", step.timeout_ms)
            except valkey.exceptions.NoPermissionError as exc:
                if step.lower:
                    self.fast_join = False
                    self.log.warning(
                        "fast_join_unavailable", ordinal=step.ordinal,
                        message=f"user {self.user!r} may not run CONFIG SET ({exc}): new primaries wait Valkey's "
                                "full rejoin delay (cluster-node-timeout, up to 5 s); grant +config|set to allow "
                                "the fast join")
                    return
                raise StepFailed(f"{step.describe()} refused: {exc}. Grant +config|set to user {self.user!r}, or "
                                 f"run CONFIG SET cluster-node-timeout {step.timeout_ms} on it by hand",
                                 ordinal=step.ordinal) from None

        parallel_steps(batch, apply)

    def _await_serving(self, node: Node, step: SetNodeTimeout) -> None:
        """Wait until a lowered primary reports cluster_state ok.

        Valkey checks the rejoin delay with the cluster-node-timeout in force at the moment the node could turn
        ok. So once the node sees every slot served and it is still not ok, it briefly runs the shortest
        timeout Valkey allows (the lowered value stays within the ping budget only while gossip spreads); the
        normal value follows as soon as it serves, well within that timeout."""
        nudged = []

        def pending() -> str | None:
            info = node.cmd("CLUSTER INFO")
            if info.get("cluster_state") == "ok":
                return None
            if not nudged and int(info.get("cluster_slots_ok", 0) or 0) == TOTAL_SLOTS \
                    and step.timeout_ms > JOIN_NODE_TIMEOUT_MS:
                node.cmd("CONFIG", "SET", "cluster-node-timeout", JOIN_NODE_TIMEOUT_MS)
                nudged.append(True)
            return f"{node.label()} reports cluster_state fail"

        self._wait(pending, f"{node.label()} to report cluster_state ok")

    def _meet(self, batch: list[Meet], view: ClusterView) -> None:
        # MEET takes IPs only. A fresh node is met from one side: when it also MEETs back, the anchor holds
        # two handshakes per node and a 100-node formation stalls for seconds. A known node at a new IP is
        # met both ways so neither side keeps advertising a stale address.
        sends: dict[int, list[tuple[str, int]]] = {}
        for step in batch:
            sends.setdefault(step.via_ordinal, []).append((step.ip, step.port))
            if not view.by_ordinal(step.ordinal).is_alone:
                via = view.by_ordinal(step.via_ordinal)
                sends.setdefault(step.ordinal, []).append((via.ip, via.port))

        def send(node: Node) -> None:
            # One pipeline per sender: a thread per MEET opened dozens of new connections to the anchor
            # while gossip kept it busy, and sending 150 MEETs then took up to 8 s instead of 50 ms.
            pipe = node.client.pipeline(transaction=False)
            for ip, port in sends[node.ordinal]:
                pipe.execute_command("CLUSTER", "MEET", ip, port)
            pipe.execute()

        parallel([self.node(o) for o in sorted(sends)], send)
        pairs = [(s.ordinal, s.via_ordinal) for s in batch]
        ordinals = sorted({o for pair in pairs for o in pair})

        def pending() -> str | None:
            # MEET answers OK even for an unreachable address: only a finished handshake proves it. A node
            # met again at a new IP keeps its id: the handshake ends when the peer records the new address.
            # Gossip then spreads each new member to the rest; the run's final settle waits for that.
            known = {o: {p.node_id: p.ip for p in peers} for o, peers in self._shards(ordinals).items()}
            for a, b in pairs:
                for x, y in ((a, b), (b, a)):
                    other = view.by_ordinal(y)
                    if other.node_id not in known[x]:
                        return f"ordinal {x} has not finished its handshake with ordinal {y}"
                    if known[x][other.node_id] != other.ip:
                        return f"ordinal {x} still records ordinal {y} at {known[x][other.node_id] or 'no address'}"
            return None

        self._wait(pending, f"{len(batch)} met node(s) to finish their handshake")

    def _assign_slots(self, batch: list[AssignSlots], view: ClusterView) -> None:
        parallel_steps(batch, lambda s: self.node(s.ordinal).cmd("CLUSTER", "ADDSLOTSRANGE", *_pairs(s.ranges)))
        # Each node now claims its slots; gossip spreads them and the final settle waits for agreement.

    def _engine(self, view: ClusterView) -> str:
        return "atomic" if view.min_version() >= migrate.ATOMIC_MIN_VERSION else "legacy"

    def _move(self, view: ClusterView, source_ordinal: int, target_ordinal: int, ranges: Sequence[SlotRange],
              open_slots: Sequence[int] = ()) -> migrate.Move:
        src, tgt = view.by_ordinal(source_ordinal), view.by_ordinal(target_ordinal)
        return migrate.Move(source=self.node(source_ordinal), target=self.node(target_ordinal),
                            source_id=src.node_id, target_id=tgt.node_id, ranges=migrate.pairs(ranges))

    def _others(self, view: ClusterView, move: migrate.Move) -> list[Node]:
        return [self.node(n.ordinal) for n in view
                if n.is_primary and not n.is_alone and n.ordinal not in (move.source.ordinal, move.target.ordinal)]

    def _migrate(self, batch: list[MigrateSlots], view: ClusterView) -> None:
        engine = self._engine(view)
        pairs = sorted({o for s in batch for o in s.ordinals()})
        # Legacy SETSLOT NODE runs on every primary, so all of them must know the new owners.
        members = self._member_ordinals(view) if engine == "legacy" else pairs
        self._ensure_known(view, sorted(set(members) | set(pairs)), pairs,
                           "the migrating primaries to know each other")
        targets = sorted({s.target_ordinal for s in batch})

        def not_ok() -> str | None:
            # A primary that was alone reports cluster_state fail for cluster-node-timeout (0.5-5 s)
            # after it joins; slots moved to it earlier would answer clients CLUSTERDOWN until then.
            states = parallel([self.node(o) for o in targets], lambda n: n.cmd("CLUSTER INFO"))
            bad = [o for o, info in zip(targets, states) if info.get("cluster_state") != "ok"]
            return f"cluster_state not ok yet on ordinal(s) {bad}" if bad else None

        self._wait(not_ok, "the target primaries to report cluster_state ok")
        jobs = []
        for step in batch:
            target = view.by_ordinal(step.target_ordinal)
            if not target.is_primary:
                # A replica named as target answers OK and then fails in the background (field notes).
                raise StepFailed(f"{step.describe()}: the target is a replica, not a primary",
                                 target_ordinal=step.target_ordinal)
            move = self._move(view, step.source_ordinal, step.target_ordinal, step.ranges)
            if engine == "atomic":
                jobs.append(lambda m=move: migrate.migrate_atomic(m, self.timeout, self.log))
            else:
                jobs.append(lambda m=move, owned=target.slot_count: migrate.migrate_legacy(
                    m, self._others(view, m), self.user, self._password, self.timeout, self.log,
                    target_slots=owned))
        try:
            migrate.run_concurrently(jobs)
        except migrate.JobInFlight as exc:
            raise StaleStep(str(exc)) from None
        # Source and target agree at once; the other nodes learn it by gossip (final settle waits).
        self._wait_owners(view, {s.target_id: tuple(s.ranges) for s in batch},
                          "source and target to see the migrated slots on their new owners",
                          members=sorted({o for s in batch for o in s.ordinals()}))

    def _close_open_slots(self, batch: list[CloseOpenSlot], view: ClusterView) -> None:
        first = batch[0]
        if not first.finish:
            for step in batch:
                node = self.node(step.migrating_ordinal) if step.migrating_ordinal is not None else None
                if node is None:
                    raise StepFailed(f"{step.describe()}: no pod to run SETSLOT STABLE on", slot=step.slot)
                node.cmd("CLUSTER", "SETSLOT", step.slot, "STABLE")
            return
        slots = [s.slot for s in batch]
        if first.migrating_ordinal is None:
            # Only the importing side is open (the owner forgot or never set MIGRATING): the owner must
            # be asked to migrate again before keys can move.
            owner = view.owner_of(first.slot)
            if owner is None:
                raise StepFailed(f"{first.describe()}: nobody owns slot {first.slot}", slot=first.slot)
            source_ordinal = owner.ordinal
        else:
            source_ordinal = first.migrating_ordinal
        source_state = view.by_ordinal(source_ordinal)
        open_on_source = {o.slot for o in source_state.open_slots if o.state == "migrating"}
        open_on_target = {o.slot for o in view.by_ordinal(first.importing_ordinal).open_slots
                          if o.state == "importing"}
        move = self._move(view, source_ordinal, first.importing_ordinal,
                          [SlotRange(s, s) for s in slots])
        reopen = [s for s in slots if s not in open_on_source or s not in open_on_target]
        for slot in reopen:
            if slot not in open_on_target:
                move.target.cmd("CLUSTER", "SETSLOT", slot, "IMPORTING", move.source_id)
            if slot not in open_on_source:
                move.source.cmd("CLUSTER", "SETSLOT", slot, "MIGRATING", move.target_id)
        target = view.by_ordinal(first.importing_ordinal)
        migrate.migrate_legacy(move, self._others(view, move), self.user, self._password, self.timeout, self.log,
                               open_slots=slots, target_slots=target.slot_count if target else 0)
        self._wait_owners(view, {move.target_id: tuple(SlotRange(s, s) for s in slots)},
                          "every node to see the closed slots on their new owner")

    def _await_failover(self, batch: list[AwaitFailover], view: ClusterView) -> None:
        members = self._member_ordinals(view)
        for step in batch:
            want = set(iter_slots(step.ranges))

            def pending(step: AwaitFailover = step) -> str | None:
                for ordinal, peers in self._shards(members).items():
                    ghost = next((p for p in peers if p.node_id == step.node_id), None)
                    if step.replica_ordinals:
                        if ghost is not None and ghost.role == PRIMARY and want & set(iter_slots(ghost.slots)):
                            return f"ordinal {ordinal} still sees {step.node_id[:8]} owning its slots"
                    elif ghost is not None and ghost.health != FAILED:
                        return f"ordinal {ordinal} does not yet mark {step.node_id[:8]} as failed"
                return None

            self.log.warning("awaiting_failover", node_id=step.node_id, replaced_by=step.replaced_by,
                             replicas=list(step.replica_ordinals), step=step.describe())
            try:
                self._wait(pending, step.describe())
            except ConvergenceTimeout as exc:
                raise StepFailed(
                    f"{exc}. Valkey fails over only once a majority of primaries mark the node failed "
                    "(cluster-node-timeout) and the replica's data is recent enough "
                    "(cluster-replica-validity-factor); check `valkey-reconciler status` and the replica's log, "
                    "then run reconcile again", node_id=step.node_id) from None

    def _await_agreement(self, batch: list[AwaitAgreement], view: ClusterView) -> None:
        ordinals = sorted({o for s in batch for o in s.claimants})

        def pending() -> str | None:
            mine = {}
            for ordinal, peers in self._shards(ordinals).items():
                me_id = view.by_ordinal(ordinal).node_id
                me = next((p for p in peers if p.node_id == me_id), None)
                mine[ordinal] = set(iter_slots(me.slots)) if me is not None and me.role == PRIMARY else set()
            for step in batch:
                a, b = step.claimants
                if mine[a] & mine[b]:
                    return f"ordinals {a} and {b} both still claim some of slots {step.ranges[0]}…"
            return None

        self._wait(pending, "the pods to settle slots claimed twice")

    def _await_migrations(self, batch: list[AwaitMigration], view: ClusterView) -> None:
        for step in batch:
            migrate.await_jobs(self.node(step.source_ordinal), migrate.pairs(step.ranges), self.timeout, self.log)

    def _replicate(self, batch: list[Replicate], view: ClusterView) -> None:
        def apply(step: Replicate) -> None:
            node = self.node(step.ordinal)
            primary = view.by_ordinal(step.primary_ordinal)
            introduced = []

            def pending() -> str | None:
                try:
                    node.cmd("CLUSTER", "REPLICATE", step.primary_id)
                    return None
                except valkey.exceptions.ResponseError as exc:
                    if "Unknown node" in str(exc):
                        if not introduced:
                            # Gossip would tell it about its primary within about a second; a direct
                            # MEET finishes the handshake within one cluster cron tick.
                            node.cmd("CLUSTER", "MEET", primary.ip, primary.port)
                            introduced.append(True)
                        return f"ordinal {step.ordinal} does not know its primary yet"
                    raise StepFailed(f"{step.describe()} refused by the node: {exc}", ordinal=step.ordinal) \
                        from None

            wait_until(pending, self.timeout, f"ordinal {step.ordinal} to accept CLUSTER REPLICATE",
                       poll=GOSSIP_RETRY_S)

        parallel_steps(batch, apply)
        replicas = [s.ordinal for s in batch]
        primary_ip = {s.ordinal: view.by_ordinal(s.primary_ordinal).ip for s in batch}
        primary_of = {s.ordinal: s.primary_ordinal for s in batch}

        def pending() -> str | None:
            infos = parallel([self.node(o) for o in replicas], lambda n: n.client.info("replication"))
            for ordinal, info in zip(replicas, infos):
                if info.get("role") != "slave" or info.get("master_host") != primary_ip[ordinal]:
                    return f"ordinal {ordinal} is not yet replicating its primary"
                if info.get("master_link_status") != "up":
                    return f"ordinal {ordinal} link {info.get('master_link_status')}"
                if int(info.get("slave_repl_offset", 0) or 0) <= 0:
                    # A replica at offset 0 can still win an election with no data (field notes) -
                    # unless its primary never had a write either (a fresh cluster on 8.x stays at
                    # offset 0 until the first replication PING, repl-ping-replica-period later).
                    primary_offset = int(self.node(primary_of[ordinal]).client.info("replication")
                                         .get("master_repl_offset", 0) or 0)
                    if primary_offset > 0:
                        return f"ordinal {ordinal} is linked but at offset 0"
            return None

        self._wait(pending, f"{len(replicas)} replica(s) to be linked with a non-zero offset")

    def _reset(self, batch: list[ResetNode], view: ClusterView) -> None:
        for step in batch:
            state = view.by_ordinal(step.ordinal)
            node = self.node(step.ordinal)
            if state.is_primary and state.slots:
                raise StepFailed(f"{step.describe()}: it owns {state.slot_count} slots; it must be emptied "
                                 "first (the reconciler never flushes a slot owner)", ordinal=step.ordinal)
            if state.is_primary and state.keys:
                # Keys outside any owned slot are leftovers of an old membership, never served.
                node.cmd("FLUSHALL")
            # A replica's CLUSTER RESET turns it into a primary and flushes its copy of the data.
            node.cmd("CLUSTER", "RESET", "HARD" if step.hard else "SOFT")

            def pending(node: Node = node) -> str | None:
                info = node.cmd("CLUSTER INFO")
                if int(info.get("cluster_known_nodes", 0)) != 1 or node.client.dbsize() != 0:
                    return f"{node.label()} still knows other nodes or holds keys"
                return None

            self._wait(pending, f"{node.label()} to be an empty, lone primary")

    def _forget(self, batch: list[Forget], view: ClusterView) -> None:
        for step in batch:
            # What happened to a pod's old identity is told once, when it is forgotten.
            if step.lost:
                self.log.error("slots_lost", message=step.note, node_id=step.node_id, ordinal=step.replaced_by,
                               slots=format_ranges(step.lost), slot_count=count_slots(step.lost))
            if step.replaced_by is not None:
                self.log.warning("node_replaced", message=step.note, old_id=step.node_id,
                                 ordinal=step.replaced_by,
                                 new_id=view.by_ordinal(step.replaced_by).node_id
                                 if view.get_ordinal(step.replaced_by) else None)
        forget_ids = {s.node_id for s in batch}
        targets = [self.node(n.ordinal) for n in view if n.node_id not in forget_ids and not n.is_alone]

        def apply(node: Node) -> None:
            for node_id in forget_ids:
                try:
                    node.cmd("CLUSTER", "FORGET", node_id)
                except valkey.exceptions.ResponseError as exc:
                    # Already forgotten, or it is this node's own primary (must be re-pointed first).
                    if "Unknown node" not in str(exc):
                        raise StepFailed(f"CLUSTER FORGET {node_id[:8]} on {node.label()} failed: {exc}",
                                         ordinal=node.ordinal) from None

        parallel(targets, apply)

        def pending() -> str | None:
            for ordinal, peers in self._shards([n.ordinal for n in targets]).items():
                if forget_ids & {p.node_id for p in peers}:
                    return f"ordinal {ordinal} still knows a forgotten node"
            return None

        self._wait(pending, "every node to forget the removed node(s)")

    def _failover(self, batch: list[Failover], view: ClusterView) -> None:
        for step in batch:
            node = self.node(step.ordinal)
            # Manual failover only: the replica catches up with its primary first, so no write is lost.
            node.cmd("CLUSTER", "FAILOVER")
            members = self._member_ordinals(view)

            def pending(step: Failover = step) -> str | None:
                for ordinal, peers in self._shards(members).items():
                    me = next((p for p in peers if p.node_id == step.node_id), None)
                    if me is None or me.role != PRIMARY or me.health == FAILED:
                        return f"ordinal {ordinal} does not yet see ordinal {step.ordinal} as primary"
                return None

            self._wait(pending, f"{step.describe()} to be seen by every node")


def parallel_steps(batch: Sequence[Step], fn: Callable[[Any], Any]) -> None:
    """fn(step) for each step at once; the first error is re-raised after all finished."""
    migrate.run_concurrently([lambda s=s: fn(s) for s in batch])


__all__ = ["Executor", "StaleStep", "next_batch"]
