"""Drain-test helpers: run `valkey-reconciler drain` by the pod address scheme (a hosts file plays DNS), snapshot
a cluster to prove a refusal changed nothing, and the oracle on the pods left after the shrink."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from .helpers import CLI_TIMEOUT_S, RECONCILER, RUN_TIMEOUT_S, Run, admin, shape_problems, shards, topology

POD_ADDRESS = "pod-{ordinal}.drain.test"
SETTLE_TIMEOUT_S = 30
POLL_S = 0.05
#: Keys loaded before each transition (the issue asks for at least 200k over many slots).
KEYS = 200_000
#: Bound on the writer having done some operations before and after the change.
WRITER_WARMUP_S = 10
WRITER_MIN_OPS = 100


def write_hosts(nodes, path: Path, ordinals=None) -> Path:
    """An /etc/hosts-format file naming every pod (or only `ordinals`) by the POD_ADDRESS scheme."""
    chosen = range(len(nodes.nodes)) if ordinals is None else ordinals
    lines = [f"{nodes.nodes[o].ip} {POD_ADDRESS.format(ordinal=o)}" for o in chosen]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_drain(nodes, masters: int, replicas: int, hosts: Path, *extra: str, env: dict | None = None,
              timeout: float = RUN_TIMEOUT_S) -> Run:
    """`valkey-reconciler drain` as the hook Job runs it: new size, pod address scheme, no --node."""
    argv = [str(RECONCILER), "drain", "--masters", str(masters), "--replicas-per-master", str(replicas),
            "--pod-address", POD_ADDRESS, "--hosts-file", str(hosts), *extra]
    if "--timeout" not in extra:
        argv += ["--timeout", str(CLI_TIMEOUT_S)]
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_FORMAT": "json",
                **nodes.reconciler_env(), **(env or {})}
    start = time.monotonic()
    proc = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def myid(node) -> str:
    with admin(node) as c:
        return c.execute_command("CLUSTER MYID")


def snapshot(nodes, ordinals=None) -> dict:
    """Per pod: its id, role, what it believes of the cluster (ids, roles, slots) and its key count."""
    out = {}
    for o in ordinals if ordinals is not None else range(len(nodes.nodes)):
        node = nodes.nodes[o]
        with admin(node) as c:
            info = c.info("replication")
            out[o] = {"id": c.execute_command("CLUSTER MYID"), "role": info["role"], "keys": c.dbsize(),
                      "topology": topology(node),
                      "open": next(v for v in c.execute_command("CLUSTER NODES").values()
                                   if "myself" in v["flags"])["migrations"]}
    return out


def survivor_problems(nodes, masters: int, replicas: int, doomed_ids=()) -> list[str]:
    """The oracle on the pods 0 … size−1: healthy, agreeing, 16384 slots evenly split, no open slot, the exact
    replica count with no replica on its primary's address, and no removed id known to anyone."""
    size = masters * (1 + replicas)
    survivors = nodes.nodes[:size]
    problems, views = [], {}
    for node in survivors:
        with admin(node) as c:
            if c.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                problems.append(f"{node.address}: cluster_state not ok")
            listed = c.execute_command("CLUSTER NODES")
            me = next(v for v in listed.values() if "myself" in v["flags"])
            if me["migrations"]:
                problems.append(f"{node.address}: open slots {me['migrations']}")
            known = {v["node_id"] for v in listed.values()}
            for gone in doomed_ids:
                if gone in known:
                    problems.append(f"{node.address} still knows removed node {gone[:8]}")
        views[node.address] = topology(node)
    first = views[survivors[0].address]
    for address, view in views.items():
        if view != first:
            problems.append(f"{address} disagrees on the slot map / roles")
    addresses = {}
    for s in shards(survivors[0]):
        for n in s["nodes"]:
            addresses[n["id"]] = n["ip"]
    return problems + shape_problems(first, masters, replicas, addresses)


def wait_survivors_healthy(nodes, masters: int, replicas: int, doomed_ids=(), timeout: float = SETTLE_TIMEOUT_S):
    end = time.monotonic() + timeout
    while True:
        problems = survivor_problems(nodes, masters, replicas, doomed_ids)
        if not problems or time.monotonic() >= end:
            return problems
        time.sleep(POLL_S)


def wait_ops(writer, more: int, timeout: float = WRITER_WARMUP_S) -> None:
    """Bounded wait until the writer has done `more` operations beyond its current count."""
    goal = writer.ops + more
    end = time.monotonic() + timeout
    while writer.ops < goal and time.monotonic() < end:
        time.sleep(POLL_S)
    assert writer.ops >= goal, f"the writer made only {writer.ops} operations (wanted {goal})"


def fail_over_to(nodes, ordinals, timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Manual CLUSTER FAILOVER on each replica ordinal; waits (bounded) until every node sees it as primary."""
    for o in ordinals:
        with admin(nodes.nodes[o]) as c:
            c.execute_command("CLUSTER FAILOVER")
        new = myid(nodes.nodes[o])
        end = time.monotonic() + timeout
        while True:
            seen = all(new in topology(n) for n in nodes.nodes)
            if seen or time.monotonic() >= end:
                assert seen, f"ordinal {o} did not become primary everywhere"
                break
            time.sleep(POLL_S)
