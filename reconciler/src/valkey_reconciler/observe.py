"""Reads every expected pod (in parallel, once all answer with auth) into one frozen ClusterView."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Sequence

import valkey

from valkey_reconciler.errors import AuthFailed, NodeUnreachable, StepFailed
from valkey_reconciler.migrate import parse_jobs
from valkey_reconciler.node import Node
from valkey_reconciler.view import (
    FAILED, IMPORTING, LOADING, MIGRATING, ONLINE, PRIMARY, REPLICA, ClusterView, MigrationJob, NodeState,
    OpenSlot, Peer, Placement, SlotRange, merge_ranges,
)
from valkey_reconciler.waits import TRANSIENT

READY_POLL_S = 0.1
MAX_PARALLEL = 32
ATOMIC_MIN_VERSION = (9, 0, 0)
ROLES = {"master": PRIMARY, "primary": PRIMARY, "replica": REPLICA, "slave": REPLICA}
HEALTH = {"online": ONLINE, "failed": FAILED, "fail": FAILED, "loading": LOADING}


def parallel(nodes: Sequence[Node], fn: Callable[[Node], Any]) -> list[Any]:
    """fn(node) for every node at once (threads); results in node order; the first error is re-raised."""
    if len(nodes) <= 1:
        return [fn(n) for n in nodes]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(nodes)), thread_name_prefix="observe") as pool:
        return list(pool.map(fn, nodes))


def _auth_error(node: Node, exc: Exception) -> AuthFailed:
    return AuthFailed(
        f"{node.label()} rejected user {node.user!r}: {exc}. Check VALKEY_USER and VALKEY_PASSWORD "
        "(the password of that ACL user on the pods); nothing was changed",
        ordinal=node.ordinal, address=node.address, user=node.user)


def _ping(node: Node) -> str | None:
    """None when the node answers PING with auth; else why not. Raises AuthFailed on a rejected login."""
    try:
        node.refresh()
    except OSError as exc:
        where = f"the hosts file {node.hosts_file} or DNS" if node.hosts_file else "DNS"
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        return (f"the name {node.host} does not resolve ({where}: {reason}); is the pod scheduled, and does "
                "the headless Service publish not-ready addresses?")
    try:
        node.client.ping()
        return None
    except (valkey.exceptions.AuthenticationError, valkey.exceptions.AuthenticationWrongNumberOfArgsError) as exc:
        raise _auth_error(node, exc) from None
    except valkey.exceptions.NoPermissionError as exc:
        raise _auth_error(node, exc) from None
    except valkey.exceptions.ResponseError as exc:
        if "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
            raise _auth_error(node, exc) from None
        node.close()
        return f"{type(exc).__name__}: {exc}"
    except TRANSIENT as exc:
        node.close()
        return f"{type(exc).__name__}: {exc}"


def wait_ready(nodes: Sequence[Node], timeout: float, log: Any = None) -> None:
    """Wait (bounded) until every pod answers PING with auth; on timeout name the pods that did not."""
    end = time.monotonic() + timeout
    pending = list(nodes)
    why: dict[int, str] = {}
    while True:
        results = parallel(pending, _ping)
        why = {n.ordinal: r for n, r in zip(pending, results) if r is not None}
        pending = [n for n in pending if n.ordinal in why]
        if not pending:
            return
        if time.monotonic() >= end:
            names = "; ".join(f"{n.label()}: {why[n.ordinal]}" for n in pending)
            raise NodeUnreachable(
                f"{len(pending)} pod(s) did not answer within {timeout:.0f}s: {names}. Check that the pod is "
                "running and ready (kubectl get pods; its log) and that its address and port are right, then "
                "run again", ordinals=[n.ordinal for n in pending])
        time.sleep(READY_POLL_S)


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    if isinstance(flat, dict):
        return {str(k): v for k, v in flat.items()}
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def parse_shards(reply: Sequence[Any]) -> tuple[Peer, ...]:
    """CLUSTER SHARDS → one Peer per node it lists (failed ones included)."""
    peers = []
    for raw in reply or []:
        shard = _pairs(raw)
        flat = [int(x) for x in shard.get("slots", [])]
        slots = merge_ranges(SlotRange(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))
        members = [_pairs(raw_node) for raw_node in shard.get("nodes", [])]
        # After a failover the dead primary stays listed in its shard as a failed "master" next to the
        # promoted one: the shard's slots belong to its primary that has not failed.
        heads = [n for n in members if ROLES.get(str(n.get("role", "")).lower()) == PRIMARY]
        live = [n for n in heads if HEALTH.get(str(n.get("health", "")).lower(), FAILED) != FAILED]
        owner = (live or heads or [None])[0]
        for n in members:
            role = ROLES.get(str(n.get("role", "")).lower(), REPLICA)
            if role == PRIMARY and n is not owner:
                slots_of = ()
            else:
                slots_of = slots if role == PRIMARY else ()
            peers.append(Peer(
                node_id=str(n["id"]), ip=str(n.get("ip") or n.get("endpoint") or ""),
                port=int(n.get("port") or n.get("tls-port") or 0), role=role,
                health=HEALTH.get(str(n.get("health", "")).lower(), FAILED),
                replication_offset=int(n.get("replication-offset") or 0),
                shard_id=str(shard["id"]) if shard.get("id") is not None else None,
                slots=slots_of,
            ))
    return tuple(peers)


def parse_version(info: dict[str, Any]) -> tuple[int, int, int]:
    text = str(info.get("valkey_version") or info.get("redis_version") or "0.0.0")
    parts = (text.split(".") + ["0", "0", "0"])[:3]
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)  # type: ignore[return-value]


def read_node(node: Node, placement: Placement | None = None) -> NodeState:
    """One pipelined round trip of reads → NodeState."""
    pipe = node.client.pipeline(transaction=False)
    pipe.execute_command("CLUSTER MYID")
    pipe.execute_command("CLUSTER SHARDS")
    pipe.execute_command("INFO", "server", "replication", "memory", "keyspace")
    pipe.execute_command("CLUSTER INFO")
    pipe.execute_command("CLUSTER NODES")
    pipe.execute_command("CLUSTER GETSLOTMIGRATIONS")  # 9.x only; 8.x answers an error we ignore
    pipe.execute_command("CONFIG", "GET", "cluster-node-timeout")  # without the right: 0, no fast join
    try:
        myid, shards, info, cinfo, cnodes, jobs, timeout = pipe.execute(raise_on_error=False)
    except valkey.exceptions.NoPermissionError as exc:
        raise _auth_error(node, exc) from None
    for what, value in (("CLUSTER MYID", myid), ("CLUSTER SHARDS", shards), ("INFO", info),
                        ("CLUSTER INFO", cinfo), ("CLUSTER NODES", cnodes)):
        if isinstance(value, valkey.exceptions.NoPermissionError):
            raise AuthFailed(f"user {node.user!r} may not run {what} on {node.label()}: {value}; "
                             "grant it in users.acl", ordinal=node.ordinal, command=what)
        if isinstance(value, valkey.exceptions.BusyLoadingError):
            raise value
        if isinstance(value, Exception):
            if "cluster support disabled" in str(value).lower():
                raise StepFailed(f"{node.label()} does not run in cluster mode (cluster-enabled no): {value}",
                                 ordinal=node.ordinal)
            raise StepFailed(f"{what} failed on {node.label()}: {value}", ordinal=node.ordinal)
    myid = str(myid)
    version = parse_version(info)
    flags_of = {str(v.get("node_id")): str(v.get("flags", "")) for v in (cnodes or {}).values()}
    # A MEET in progress shows up as a "handshake" entry under a random id: a placeholder, not a member.
    # A "noaddr" node lost its address (its IP answered with another id): no address to meet it at.
    peers = tuple(replace(p, ip="") if "noaddr" in flags_of.get(p.node_id, "") else p
                  for p in parse_shards(shards) if "handshake" not in flags_of.get(p.node_id, ""))
    me = next((p for p in peers if p.node_id == myid), None)
    # Role and primary come from the node's own CLUSTER NODES entry (parsed by valkey-py): right after
    # CLUSTER REPLICATE, 8.x lists a replica in a shard of its own in CLUSTER SHARDS until gossip
    # brings it its primary's shard id.
    own_entry = next((v for v in (cnodes or {}).values() if "myself" in str(v.get("flags", ""))), {})
    flags = str(own_entry.get("flags", ""))
    if own_entry:
        role = REPLICA if "slave" in flags or "replica" in flags else PRIMARY
    else:
        role = me.role if me is not None else PRIMARY
    primary_id = None
    if role == REPLICA:
        master_id = str(own_entry.get("master_id", "-"))
        if master_id not in ("-", "", "None"):
            primary_id = master_id
        elif me is not None:
            primary_id = next((p.node_id for p in peers if p.shard_id == me.shard_id and p.role == PRIMARY), None)
    # Own slots also come from the own CLUSTER NODES entry: on 8.x, right after a replica of this shard is
    # soft-reset into an empty primary it still carries the shard id, and CLUSTER SHARDS can then show
    # this primary's shard without its slots.
    slots: tuple = ()
    if role == PRIMARY:
        if own_entry:
            slots = merge_ranges(SlotRange(int(r[0]), int(r[-1])) for r in own_entry.get("slots", []))
        elif me is not None:
            slots = me.slots
    open_slots = tuple(sorted(
        (OpenSlot(slot=int(m["slot"]), state=MIGRATING if m["state"] == "migrating" else IMPORTING,
                  peer_id=str(m["node_id"])) for m in own_entry.get("migrations", [])),
        key=lambda o: (o.slot, o.state)))
    migrations: tuple = ()
    if version >= ATOMIC_MIN_VERSION and not isinstance(jobs, Exception):
        migrations = tuple(
            MigrationJob(job_id=j.get("name"), source_id=str(j.get("source_node")),
                         target_id=str(j.get("target_node")),
                         ranges=tuple(SlotRange(a, b) for a, b in j["ranges"]),
                         state=j["state"], operation=j["operation"])
            for j in parse_jobs(jobs))
    keyspace = info.get("db0") or {}
    if role == REPLICA:
        offset = int(info.get("slave_repl_offset", 0) or 0)
    else:
        offset = int(info.get("master_repl_offset", 0) or 0)
    return NodeState(
        ordinal=node.ordinal, address=node.address, ip=node.ip or node.host, node_id=myid, role=role,
        primary_id=primary_id, slots=slots, open_slots=open_slots, migrations=migrations, version=version,
        config_epoch=int(cinfo.get("cluster_my_epoch", 0) or 0),
        current_epoch=int(cinfo.get("cluster_current_epoch", 0) or 0),
        cluster_state=str(cinfo.get("cluster_state", "fail")), known_nodes=peers,
        link_up=role == REPLICA and info.get("master_link_status") == "up", repl_offset=offset,
        keys=int(keyspace.get("keys", 0) if isinstance(keyspace, dict) else 0),
        used_memory=int(info.get("used_memory", 0) or 0), maxmemory=int(info.get("maxmemory", 0) or 0),
        placement=placement, port=node.port, node_timeout_ms=_config_int(timeout, "cluster-node-timeout"),
    )


def _config_int(reply: Any, name: str) -> int:
    """One integer from a CONFIG GET reply (a dict, or a flat list on some paths); 0 when refused."""
    if isinstance(reply, Exception) or not reply:
        return 0
    value = _pairs(reply).get(name) if not isinstance(reply, dict) else reply.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def observe(nodes: Sequence[Node], timeout: float, placements: Sequence[Placement | None] | None = None,
            log: Any = None) -> ClusterView:
    """Read every pod at once into a ClusterView. When a read fails (a pod restarting or not answering yet, a
    rejected login), wait until every pod answers PING with auth, then read them all again.

    A node that drops between the PING and the reads (a restart) is waited for again, within `timeout`.
    """
    end = time.monotonic() + timeout

    def read(node: Node) -> NodeState:
        node.refresh()  # a pod that came back gets a new IP
        return read_node(node, placements[node.ordinal] if placements else None)

    try:
        # Most observations find every pod up: no PING round first (at 100 pods it costs as much as the reads).
        return ClusterView(nodes=tuple(parallel(nodes, read)))
    except TRANSIENT:
        pass
    while True:
        wait_ready(nodes, max(0.0, end - time.monotonic()), log)
        try:
            states = parallel(nodes, lambda n: read_node(n, placements[n.ordinal] if placements else None))
            return ClusterView(nodes=tuple(states))
        except TRANSIENT:
            if time.monotonic() >= end:
                raise
            time.sleep(READY_POLL_S)
