"""The roll and the failback: pods of an outdated revision restarted replicas first, a manual failover before each primary, then every primary moved back to its home ordinal — each a loop of observe → decide → act."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, TextIO

from valkey_reconciler.errors import ConfigError, ConvergenceTimeout, PlanRefused, ReconcilerError, StepFailed
from valkey_reconciler.execute import Executor, StaleStep, next_batch
from valkey_reconciler.layout import Layout, layout
from valkey_reconciler.node import Node
from valkey_reconciler.observe import observe, parallel, parse_shards, read_node
from valkey_reconciler.plan import plan
from valkey_reconciler.pods import PodApi, PodApiError, PodInfo, PodSnapshot, make_pod_api, rollout_in_progress
from valkey_reconciler.steps import Step
from valkey_reconciler.view import FAILED, PRIMARY, ClusterView, NodeState, Placement, format_ranges
from valkey_reconciler.waits import Deadline, wait_until

ALLOW_DATA_LOSS_ENV = "VALKEY_ROLL_ALLOW_DATA_LOSS"
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")
WAIT_POLL_S = 0.2
# Waits re-read every node and the pod API: the pause doubles up to this while nothing changes.
WAIT_POLL_MAX_S = 1.0
WAIT_LOG_INTERVAL_S = 2.0
# Valkey abandons a manual failover the replica could not finish within 5 s (CLUSTER_MF_TIMEOUT); one
# attempt is awaited a little longer than that, then CLUSTER FAILOVER is sent again.
FAILOVER_ATTEMPT_S = 12.0
FAILOVER_ATTEMPTS = 3
# The same action decided again this many times in a row means it does not take effect: stop.
MAX_REPEATS = 3
ALL_DONE = "every pod is at the update revision and every primary is on its home ordinal"

ROLL = "roll"
FAILBACK = "failback"

# Event reasons on the StatefulSet (`kubectl describe statefulset` lists them).
EV_RESTART = "RestartPod"
EV_RESTARTED = "PodRestarted"
EV_FAILOVER = "Failover"
EV_FAILBACK = "Failback"
EV_ALONE = "RestartWithoutReplica"
EV_REFUSED = "RollRefused"
EV_DONE = "RollComplete"


# --- Decisions (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    reason: str

    def describe(self) -> str:
        return f"nothing to do: {self.reason}"


@dataclass(frozen=True)
class Wait:
    reason: str

    def describe(self) -> str:
        return f"wait: {self.reason}"


@dataclass(frozen=True)
class Converge:
    """The topology is not the desired one (a restarted pod came back as a new, empty node): run the plan."""

    steps: tuple[Step, ...]

    def describe(self) -> str:
        return f"converge: {self.steps[0].describe()} (+{len(self.steps) - 1} more step(s))"


@dataclass(frozen=True)
class Restart:
    """Delete a pod so that its StatefulSet recreates it at the update revision."""

    ordinal: int
    pod: PodInfo
    role: str  # "replica" | "primary"
    to_revision: str | None
    alone: bool = False  # the shard's only node: its slots are unavailable while it restarts
    data_loss: bool = False  # … and without persistence its data is gone
    slots: str = ""

    def describe(self) -> str:
        what = f"restart pod {self.pod.name} (ordinal {self.ordinal}, {self.role})"
        if self.alone:
            what += f", the only node of its shard (slots {self.slots})"
            what += ": ITS DATA IS LOST" if self.data_loss else ": its slots are unavailable until it is back"
        return what


@dataclass(frozen=True)
class Failover:
    """Manual CLUSTER FAILOVER on a synced replica (never FORCE or TAKEOVER)."""

    ordinal: int
    node_id: str
    primary_ordinal: int
    primary_id: str
    purpose: str  # ROLL | FAILBACK

    def describe(self) -> str:
        why = "before restarting its primary" if self.purpose == ROLL else "back to its home ordinal"
        return f"fail over to ordinal {self.ordinal} from ordinal {self.primary_ordinal} ({why})"


@dataclass(frozen=True)
class Refuse:
    message: str

    def describe(self) -> str:
        return f"refused: {self.message}"


Action = Done | Wait | Converge | Restart | Failover | Refuse


@dataclass(frozen=True)
class Policy:
    """What the roll may do: persistence (None: unknown) and whether a shard without replica may lose its data."""

    persistence: str | None
    allow_data_loss: bool = False
    restart_pods: bool = True  # False: no pod interface (outside Kubernetes and local mode); failback only

    @property
    def durable(self) -> bool:
        return bool(self.persistence)


def replica_synced(view: ClusterView, n: NodeState) -> bool:
    """Link up and a non-zero offset — or its primary's offset is 0 too (a cluster that never had a write)."""
    if not n.is_replica or not n.link_up:
        return False
    if n.repl_offset > 0:
        return True
    primary = view.by_id(n.primary_id)
    return primary is not None and primary.repl_offset == 0


def _not_ready(view: ClusterView, snapshot: PodSnapshot | None) -> str | None:
    """Why the cluster is not in a state to restart or fail over anything yet, or None."""
    if snapshot is not None:
        busy = rollout_in_progress(snapshot.statefulset)
        if busy:
            return busy
        for n in view:
            pod = snapshot.pod(n.ordinal)
            if pod is None:
                return f"pod of ordinal {n.ordinal} does not exist yet (being recreated)"
            if pod.terminating:
                return f"pod {pod.name} is terminating"
            if not pod.ready:
                return f"pod {pod.name} is not ready"
    bad = [n.label() for n in view if n.cluster_state != "ok"]
    if bad:
        return "cluster_state is not ok on " + ", ".join(bad)
    if not view.agrees():
        return "the nodes do not yet agree on the slot map and roles"
    for n in view:
        if n.is_replica and not replica_synced(view, n):
            return f"replica {n.label()} is not synced with its primary yet (link {'up' if n.link_up else 'down'}, " \
                   f"offset {n.repl_offset})"
    return None


def _best_replica(view: ClusterView, primary: NodeState) -> NodeState | None:
    """The most up-to-date synced replica (highest offset, then lowest ordinal)."""
    candidates = [r for r in view.replicas_of(primary.node_id) if replica_synced(view, r)]
    if not candidates:
        return None
    return sorted(candidates, key=lambda r: (-r.repl_offset, r.ordinal))[0]


def _roll_action(view: ClusterView, snapshot: PodSnapshot, outdated: Sequence[NodeState],
                 policy: Policy) -> Action:
    update = snapshot.statefulset.update_revision
    # A shard that has no replica and no persistence loses its data on restart: refuse before touching any pod.
    alone = [n for n in outdated if n.is_primary and _best_replica(view, n) is None]
    if alone and not policy.durable and not policy.allow_data_loss:
        names = ", ".join(f"{n.label()} (slots {format_ranges(n.slots)})" for n in alone)
        whose = "its shard has" if len(alone) == 1 else "their shards have"
        state = "off" if policy.persistence is not None else "unknown (VALKEY_PERSISTENCE is not set)"
        return Refuse(
            f"{names} must be restarted for the new revision, but {whose} no replica and persistence is "
            f"{state}: the restart would lose that data. Set "
            f"cluster.replicasPerMaster >= 1 so the roll can fail over first, or turn persistence on, or accept "
            f"the loss with rollout.allowDataLoss=true ({ALLOW_DATA_LOSS_ENV}=true); no pod was restarted")
    replicas = [n for n in outdated if n.is_replica]
    if replicas:
        n = replicas[0]
        return Restart(n.ordinal, snapshot.pod(n.ordinal), "replica", update)  # type: ignore[arg-type]
    n = outdated[0]
    best = _best_replica(view, n)
    if best is not None:
        return Failover(best.ordinal, best.node_id, n.ordinal, n.node_id, ROLL)
    role = "primary" if n.slots else "empty primary"
    return Restart(n.ordinal, snapshot.pod(n.ordinal), role, update,  # type: ignore[arg-type]
                   alone=bool(n.slots), data_loss=bool(n.slots) and not policy.durable,
                   slots=format_ranges(n.slots))


def _failback_action(view: ClusterView, desired: Layout) -> Failover | None:
    """The first shard whose primary is not its home ordinal (the lowest ordinal of the shard)."""
    for shard in desired.shards:
        if shard.home == shard.primary:
            continue
        home = view.get_ordinal(shard.home)
        primary = view.get_ordinal(shard.primary)
        if home is None or primary is None or home.primary_id != primary.node_id or not replica_synced(view, home):
            continue
        return Failover(home.ordinal, home.node_id, primary.ordinal, primary.node_id, FAILBACK)
    return None


def decide(view: ClusterView, desired: Layout, snapshot: PodSnapshot | None, policy: Policy) -> Action:
    """The next action of the roll and failback, from the observed cluster, its desired layout and the pods.

    Topology first (the regular plan); done at once when no pod is outdated and every primary is home; else
    wait until every pod is back, ready, synced and agreed on; then outdated replicas one at a time (lowest
    ordinal first), then each outdated primary: a manual failover to its most up-to-date replica (the old primary is then an outdated replica: restarted next)
    or, for a shard without replica, a restart alone (refused without persistence unless allowed); last,
    primaries back to their home ordinals. Pure and deterministic."""
    steps = plan(view, desired, persistence=policy.persistence)
    if steps:
        return Converge(tuple(steps))
    outdated = []
    if snapshot is not None and policy.restart_pods:
        outdated = [n for n in view if (p := snapshot.pod(n.ordinal)) is not None and snapshot.outdated(p)]
    rolling = snapshot is not None and rollout_in_progress(snapshot.statefulset)
    if not outdated and not rolling and all(s.home == s.primary for s in desired.shards):
        # Nothing to restart or fail back: no need to wait until every node has heard every replica's role.
        return Done(ALL_DONE)
    why = _not_ready(view, snapshot)
    if why:
        return Wait(why)
    if outdated:
        return _roll_action(view, snapshot, outdated, policy)
    back = _failback_action(view, desired)
    if back is not None:
        return back
    return Done(ALL_DONE)


def allow_data_loss(environ: Mapping[str, str]) -> bool:
    raw = environ.get(ALLOW_DATA_LOSS_ENV, "")
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{ALLOW_DATA_LOSS_ENV} must be true or false, got {raw!r} (the chart sets it from "
                      "rollout.allowDataLoss); nothing was changed", setting=ALLOW_DATA_LOSS_ENV)


# --- Doing ----------------------------------------------------------------------------------------------


@dataclass
class Roller:
    """Runs the loop against live pods; `nodes` are indexed by ordinal."""

    settings: Any
    nodes: list[Node]
    log: Any
    api: PodApi | None
    policy: Policy
    placements: Sequence[Placement | None] | None = None
    out: TextIO | None = None
    acted: int = 0
    _event_failed: bool = field(default=False, repr=False)

    def pod_name(self, ordinal: int) -> str:
        return f"valkey-{self.settings.cluster_name}-{ordinal}" if self.settings.cluster_name else f"ordinal {ordinal}"

    def event(self, reason: str, message: str, *, pod: str | None = None, warning: bool = False,
              **facts: Any) -> None:
        """The same line in the Job log and as an Event on the StatefulSet."""
        (self.log.warning if warning else self.log.info)("roll_event", reason=reason, message=message, pod=pod,
                                                          **facts)
        if self.api is None:
            return
        try:
            self.api.event(reason, message, pod=pod, warning=warning, facts=facts)
        except PodApiError as exc:  # the story stays in the Job log; the cluster work goes on
            if not self._event_failed:
                self.log.warning("event_not_recorded", reason=reason, error=str(exc))
            self._event_failed = True

    def run(self, view: ClusterView | None = None) -> int:
        """Loop until done; returns the number of actions taken. Each action gets the full timeout. `view`
        is a fresh observation to start from (the one reconcile just found settled)."""
        s = self.settings
        place_map = {i: p for i, p in enumerate(self.placements or []) if p is not None}
        deadline = Deadline(s.timeout)
        executor = Executor(self.nodes, s.user, s.password, self.log, s.timeout)
        last_key, repeats, last_wait_log, pause = None, 0, 0.0, WAIT_POLL_S
        if self.api is None:
            self.log.info("roll_unavailable", message="no pod interface here (outside Kubernetes and local mode): "
                                                      "outdated pods are not restarted; failback still runs")
        first = view
        while True:
            view = first if first is not None else observe(self.nodes, deadline.remaining(), self.placements, self.log)
            first = None
            desired = layout(view, s.masters, s.replicas_per_master, place_map)
            snapshot = self.api.snapshot() if self.api is not None else None
            action = decide(view, desired, snapshot, self.policy)
            if isinstance(action, Done):
                if self.acted:
                    self.event(EV_DONE, f"roll and failback finished after {self.acted} action(s)",
                               actions=self.acted)
                return self.acted
            if getattr(s, "dry_run", False):
                if self.out is not None:
                    print(f"roll: next action: {action.describe()}; --dry-run: nothing was changed", file=self.out)
                return 0
            if isinstance(action, Wait):
                if time.monotonic() - last_wait_log >= WAIT_LOG_INTERVAL_S:
                    self.log.info("roll_waiting", reason=action.reason)
                    last_wait_log = time.monotonic()
                if deadline.expired():
                    raise ConvergenceTimeout(f"the roll waited {s.timeout:.0f}s and the cluster is still not "
                                             f"ready for the next restart: {action.reason}", missing=action.reason)
                time.sleep(pause)
                pause = min(WAIT_POLL_MAX_S, pause * 2)
                continue
            if isinstance(action, Refuse):
                self.event(EV_REFUSED, action.message, warning=True)
                raise PlanRefused(action.message, reason="roll_would_lose_data")
            key = action.describe() if not isinstance(action, Converge) else action.steps[0].describe()
            repeats = repeats + 1 if key == last_key else 1
            last_key = key
            if repeats > MAX_REPEATS:
                raise StepFailed(f"roll action did not take effect after {MAX_REPEATS} attempts: {key}")
            executor.timeout = max(1.0, deadline.remaining())
            try:
                if isinstance(action, Converge):
                    self._converge(executor, action, view)
                elif isinstance(action, Restart):
                    self._restart(action, snapshot, deadline)
                else:
                    self._failover(action, view, deadline)
            except StaleStep as exc:
                self.log.info("roll_action_skipped", action=key, reason=str(exc))
                continue
            except ReconcilerError as exc:
                exc.data.setdefault("action", key)
                raise
            self.acted += 1
            deadline, pause = Deadline(s.timeout), WAIT_POLL_S

    def _converge(self, executor: Executor, action: Converge, view: ClusterView) -> None:
        executor.run(next_batch(action.steps), view, during="roll")

    def _restart(self, action: Restart, snapshot: PodSnapshot | None, deadline: Deadline) -> None:
        assert self.api is not None
        pod = action.pod
        facts = dict(ordinal=action.ordinal, role=action.role, from_revision=pod.revision,
                     to_revision=action.to_revision)
        if action.alone:
            loss = ("its data is LOST (persistence is off and rollout.allowDataLoss is true)" if action.data_loss
                    else "its slots are unavailable until it is back (it reloads its data from its volume)")
            self.event(EV_ALONE, f"pod {pod.name} is the only node of its shard (slots {action.slots}) and is "
                                 f"restarted without a failover: {loss}", pod=pod.name, warning=True, **facts)
        self.event(EV_RESTART, f"restarting pod {pod.name} (ordinal {action.ordinal}, {action.role}) for revision "
                               f"{action.to_revision} (was {pod.revision})", pod=pod.name, **facts)
        started = time.monotonic()
        self.api.delete(pod)

        def pending() -> str | None:
            now = self.api.snapshot().pod(action.ordinal)  # type: ignore[union-attr]
            if now is None:
                return f"pod {pod.name} is not recreated yet"
            if now.uid == pod.uid and pod.uid is not None:
                return f"pod {pod.name} is not deleted yet"
            if now.terminating or not now.ready:
                return f"pod {pod.name} is not ready yet"
            return None

        wait_until(pending, max(1.0, deadline.remaining()), f"pod {pod.name} to be recreated and ready",
                   poll=WAIT_POLL_S)
        node = self.nodes[action.ordinal]
        wait_until(lambda: None if (node.refresh() and node.client.ping()) else "no answer",
                   max(1.0, deadline.remaining()), f"pod {pod.name} to answer", poll=WAIT_POLL_S)
        # Without persistence the node is back empty with a new id, and its old id still owns the slots in
        # every other node's view: the next decision is the plan's (forget the old id, give the slots to the
        # new node, report the loss).
        then = "known to every node" if action.alone else "synced and known to every node"
        self.event(EV_RESTARTED, f"pod {pod.name} is back after {time.monotonic() - started:.1f}s; waiting until "
                                 f"it is {then}", pod=pod.name, **facts)

    def _failover(self, action: Failover, view: ClusterView, deadline: Deadline) -> None:
        node = self.nodes[action.ordinal]
        live = read_node(node)
        if live.node_id != action.node_id or not live.is_replica or live.primary_id != action.primary_id:
            raise StaleStep(f"ordinal {action.ordinal} is no longer the replica of ordinal {action.primary_ordinal} "
                            "the decision saw")
        reason = EV_FAILOVER if action.purpose == ROLL else EV_FAILBACK
        primary_pod = self.pod_name(action.primary_ordinal)
        facts = dict(ordinal=action.ordinal, from_ordinal=action.primary_ordinal, purpose=action.purpose)
        self.event(reason, f"manual CLUSTER FAILOVER: ordinal {action.ordinal} takes over the slots of ordinal "
                           f"{action.primary_ordinal} ({'before pod ' + primary_pod + ' is restarted' if action.purpose == ROLL else 'primary back on its home ordinal'})",
                   pod=self.pod_name(action.ordinal), **facts)
        for attempt in range(1, FAILOVER_ATTEMPTS + 1):
            # Manual failover: the primary stops writes, the replica catches up with its offset, then
            # takes over — no acknowledged write is lost (FORCE and TAKEOVER are never used).
            node.cmd("CLUSTER", "FAILOVER")
            try:
                wait_until(lambda: None if node.client.info("replication").get("role") == "master"
                           else "still a replica", min(FAILOVER_ATTEMPT_S, max(1.0, deadline.remaining())),
                           f"ordinal {action.ordinal} to become primary", poll=WAIT_POLL_S)
                break
            except ConvergenceTimeout:
                if attempt == FAILOVER_ATTEMPTS or deadline.expired():
                    raise StepFailed(f"manual failover to ordinal {action.ordinal} did not complete after "
                                     f"{attempt} attempt(s); check that a majority of primaries is reachable",
                                     ordinal=action.ordinal) from None
                self.log.warning("failover_retry", ordinal=action.ordinal, attempt=attempt)
        members = [n for n in self.nodes]

        def pending() -> str | None:
            replies = parallel(members, lambda n: n.cmd("CLUSTER SHARDS"))
            for member, reply in zip(members, replies):
                peers = {p.node_id: p for p in parse_shards(reply)}
                new, old = peers.get(action.node_id), peers.get(action.primary_id)
                if new is None or new.role != PRIMARY or new.health == FAILED:
                    return f"ordinal {member.ordinal} does not yet see ordinal {action.ordinal} as primary"
                if old is not None and old.role == PRIMARY:
                    return f"ordinal {member.ordinal} still sees ordinal {action.primary_ordinal} as primary"
            return None

        wait_until(pending, max(1.0, deadline.remaining()), f"every node to agree ordinal {action.ordinal} is primary",
                   poll=WAIT_POLL_S)


def run(settings: Any, nodes: list[Node], log: Any, out: TextIO | None = None,
        placements: Sequence[Placement | None] | None = None, environ: Mapping[str, str] | None = None,
        view: ClusterView | None = None) -> int:
    """The roll and failback after a converged `reconcile` (`view`: its last observation); returns the
    number of actions taken."""
    environ = os.environ if environ is None else environ
    allow = allow_data_loss(environ)
    api = make_pod_api(settings, log, environ)
    policy_ = Policy(settings.persistence, allow, restart_pods=api is not None)
    return Roller(settings, list(nodes), log, api, policy_, placements, out).run(view)


__all__ = ["Action", "Converge", "Done", "Failover", "Policy", "Refuse", "Restart", "Roller", "Wait", "decide",
           "replica_synced", "run"]
