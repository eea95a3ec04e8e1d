"""`valkey-reconciler drain`: finds every current pod, refuses an unsafe scale-down, then empties and removes the
pods a smaller size deletes (observe → plan_drain → execute one step → observe again)."""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence, TextIO

import valkey

from valkey_reconciler import kube
from valkey_reconciler.converge import converge
from valkey_reconciler.errors import EXIT_OK, PlanRefused, StepFailed
from valkey_reconciler.execute import Executor, StaleStep
from valkey_reconciler.layout import expected_size
from valkey_reconciler.node import Node, make_nodes, resolve
from valkey_reconciler.observe import observe, parse_shards, read_node
from valkey_reconciler.plan import drain_gates, plan_drain
from valkey_reconciler.settings import MAX_MASTERS, Settings, load
from valkey_reconciler.steps import Forget, RemoveNode, Step
from valkey_reconciler.view import FAILED, ClusterView, short_id
from valkey_reconciler.waits import Deadline, wait_until

# Most ordinals probed beyond the new size (a StatefulSet's ordinals are contiguous: probing stops at the
# first name that does not resolve).
PROBE_LIMIT = 1024
# Bound on gossip agreeing (after a recent change) before the gates judge the cluster's health.
SETTLE_TIMEOUT_S = 15.0
SETTLE_POLL_S = 0.2


def _scheme_addresses(argv: Sequence[str] | None, count: int) -> tuple[tuple[str, int], ...]:
    """(host, port) of ordinals 0 … count−1 by the pod address scheme, through the settings' own substitution."""
    args = list(argv) if argv is not None else sys.argv[1:]
    return load(args + ["--masters", str(count), "--replicas-per-master", "0"]).addresses


def discover(settings: Settings, argv: Sequence[str] | None = None, log: Any = None) -> list[Node]:
    """Every current pod in ordinal order: the --node list as given, or the pod address scheme for the new
    size plus the ordinals above it whose names resolve (the headless Service publishes not-ready pods)."""
    assert settings.masters is not None and settings.replicas_per_master is not None
    nodes = make_nodes(settings)
    if settings.explicit_nodes:
        return nodes
    size = expected_size(settings.masters, settings.replicas_per_master)
    limit = min(size + PROBE_LIMIT, MAX_MASTERS)
    addresses = _scheme_addresses(argv, limit)
    for ordinal in range(size, limit):
        host, port = addresses[ordinal]
        try:
            resolve(host, settings.hosts_file)
        except OSError:
            if log is not None:
                log.info("drain_probe_end", ordinal=ordinal, address=f"{host}:{port}",
                         message="name does not resolve: no pod at this ordinal")
            break
        nodes.append(Node(ordinal=ordinal, host=host, port=port, user=settings.user, password=settings.password,
                          hosts_file=settings.hosts_file))
    return nodes


def _unknown_member(node_id: str, ip: str, pods: int) -> PlanRefused:
    return PlanRefused(
        f"node {short_id(node_id)} at {ip} is a member of the cluster but is none of the {pods} pods found "
        f"(ordinals 0…{pods - 1}); if it is a pod whose name did not resolve, wait until it does (or list every "
        "pod with --node) and drain again; if it is not one of ours, remove it by hand (CLUSTER FORGET on every "
        "node) first",
        node_id=node_id, ip=ip, reason="unknown_node")


def membership_check(nodes: Sequence[Node], log: Any) -> None:
    """Nothing to drain by the pods found: ask one pod that answers for the cluster's members and refuse if
    one of them is none of those pods (a pod beyond the new size whose name did not resolve)."""
    ips: set[str] = set()
    for node in nodes:
        try:
            ips.add(node.refresh())
        except OSError:
            continue
    for node in nodes:
        if node.ip is None:
            continue
        try:
            reply = node.cmd("CLUSTER SHARDS")
        except (valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError, OSError):
            continue
        for peer in parse_shards(reply):
            if peer.health != FAILED and peer.ip and peer.ip not in ips:
                raise _unknown_member(peer.node_id, peer.ip, len(nodes))
        return
    log.warning("drain_membership_unchecked", message="no pod answered; membership not cross-checked")


def _members(view: ClusterView) -> ClusterView:
    return ClusterView(tuple(n for n in view if not n.is_alone))


def settled_view(nodes: Sequence[Node], deadline: Deadline, placements: Any, log: Any) -> ClusterView:
    """Observe until the cluster members agree on slots and roles (bounded), or refuse."""
    end = time.monotonic() + min(SETTLE_TIMEOUT_S, deadline.remaining())
    while True:
        view = observe(nodes, deadline.remaining(), placements, log)
        if _members(view).agrees():
            return view
        if time.monotonic() >= end:
            raise PlanRefused(
                f"the cluster's nodes still disagree about slot owners or roles after {SETTLE_TIMEOUT_S:.0f}s: "
                "a change is still spreading or a node is cut off; check `valkey-reconciler status`, wait, and "
                "drain again", reason="cluster_not_settled")
        time.sleep(SETTLE_POLL_S)


def remove_node(executor: Executor, step: RemoveNode, view: ClusterView, log: Any) -> None:
    """Fresh checks, CLUSTER RESET HARD, then forget the old id on every other member (see RemoveNode)."""
    node = executor.node(step.ordinal)
    fresh = read_node(node)
    if fresh.node_id != step.node_id:
        raise StaleStep(f"ordinal {step.ordinal} is now node {short_id(fresh.node_id)}, "
                        f"the plan expected {short_id(step.node_id)}")
    if step.require_empty and fresh.is_primary and (fresh.slots or fresh.keys):
        raise StepFailed(
            f"{step.describe()} refused: a fresh read shows it still owns {fresh.slot_count} slots and holds "
            f"{fresh.keys} keys; nothing was removed. Run drain again (it moves what is left first)",
            ordinal=step.ordinal, slots=fresh.slot_count, keys=fresh.keys)
    # Each pod's own claim (observed after the previous step) decides, not the doomed node's gossip: on 8.x
    # it lists a re-pointed replica in its shard for a moment after the replica has moved on.
    followers = [n for n in view if n.is_replica and n.primary_id == step.node_id]
    if followers:
        raise StepFailed(
            f"{step.describe()} refused: {', '.join(n.label() for n in followers)} still replicate(s) it; "
            "nothing was removed. Run drain again (it re-points them first)", ordinal=step.ordinal)
    # A replica's reset also drops its copy of the data; a primary with keys would be refused by Valkey.
    node.cmd("CLUSTER", "RESET", "HARD")
    wait_until(lambda: None if int(node.cmd("CLUSTER INFO").get("cluster_known_nodes", 0)) == 1
               else f"{node.label()} still knows other nodes", executor.timeout,
               f"{node.label()} to forget every peer after CLUSTER RESET HARD")
    log.info("node_reset", ordinal=step.ordinal, old_id=step.node_id, new_id=node.cmd("CLUSTER", "MYID"))
    executor.run([Forget(node_id=step.node_id, reason=f"ordinal {step.ordinal} was drained")], view)


def run(settings: Settings, log: Any, out: TextIO, argv: Sequence[str] | None = None) -> int:
    """The drain command; raises ReconcilerError (exit code attached) on refusal or failure."""
    started = time.monotonic()
    deadline = Deadline(settings.timeout)
    masters, replicas = settings.masters, settings.replicas_per_master
    assert masters is not None and replicas is not None
    size = expected_size(masters, replicas)
    nodes = discover(settings, argv, log)
    try:
        if len(nodes) <= size:
            membership_check(nodes, log)
            message = (f"nothing to drain: the new size {masters} x (1 + {replicas}) = {size} pods keeps every "
                       f"current pod ({len(nodes)} found)")
            print(message, file=out)
            log.info("drain_noop", message=message, pods=len(nodes), size=size,
                     elapsed_s=round(time.monotonic() - started, 3))
            return EXIT_OK
        placements = kube.fill(kube.placements(settings, log), len(nodes))
        place_map = {i: p for i, p in enumerate(placements) if p is not None}
        view = settled_view(nodes, deadline, placements, log)
        drain_gates(view, masters, replicas, place_map)
        executor = Executor(nodes, settings.user, settings.password, log, settings.timeout)

        def execute(batch: list[Step], view: ClusterView) -> None:
            if isinstance(batch[0], RemoveNode):
                remove_node(executor, batch[0], view, log)
            else:
                executor.run(batch, view)

        def done(view: ClusterView, taken: int) -> int:
            elapsed = round(time.monotonic() - started, 3)
            gone = f"ordinals {size}…{len(nodes) - 1}"
            if taken == 0:
                message = f"nothing to drain: {gone} are already empty and out of the cluster"
                log.info("drain_noop", message=message, pods=len(nodes), size=size, elapsed_s=elapsed)
            else:
                message = f"drained: {gone} are empty, reset and forgotten; the StatefulSet may shrink"
                log.info("drain_finished", message=message, steps=taken, elapsed_s=elapsed)
            print(message, file=out)
            return EXIT_OK

        return converge(observe=lambda: observe(nodes, deadline.remaining(), placements, log),
                        plan=lambda view: plan_drain(view, masters, replicas, place_map), execute=execute,
                        done=done, executor=executor, deadline=deadline, timeout=settings.timeout,
                        dry_run=settings.dry_run, log=log, out=out, title="drain plan", view=view)
    finally:
        for node in nodes:
            node.close()
