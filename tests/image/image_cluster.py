"""Test-only helpers for tests/image: run the entrypoint directly, and form a tiny cluster with raw commands."""

from __future__ import annotations

import subprocess
import time
from valkey_local.nodes import ENTRYPOINT, Node, NodeSet

SLOT_COUNT = 16384
#: Bound on gossip agreeing on membership and on the first cluster_state:ok (which alone takes
#: about 2 s after a primary starts: CLUSTER_WRITABLE_DELAY, field notes "Other facts").
FORMATION_TIMEOUT_SECONDS = 30.0
#: Bound on a replica's first full sync and on an atomic slot migration job.
SYNC_TIMEOUT_SECONDS = 20.0
#: Bound on one entrypoint run that is expected to fail before starting the server.
ENTRYPOINT_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05
#: Test overrides: the first full sync starts at once instead of after the default 5 s.
FAST_SYNC_OVERRIDES = "repl-diskless-sync-delay 0\n"


def wait_until(condition, timeout: float, what: str):
    """Polls `condition` until it returns a truthy value (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def run_entrypoint(env: dict[str, str], timeout: float = ENTRYPOINT_TIMEOUT_SECONDS) -> subprocess.CompletedProcess:
    """Runs image/entrypoint.sh with exactly `env`, for runs that must stop before the server starts
    (on a timeout subprocess.run kills the process, which by then would be the exec'd server)."""
    return subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=timeout)


def node_id(node: Node) -> str:
    with node.client("reconciler") as conn:
        return conn.execute_command("CLUSTER MYID")


def form_cluster(nodes: NodeSet, primaries: int, replica_of: dict[int, int] | None = None) -> dict[int, str]:
    """Forms a cluster as the reconciler user: the first `primaries` ordinals share the slots evenly,
    `replica_of` maps replica ordinal → primary ordinal. Returns ordinal → node id."""
    replica_of = replica_of or {}
    members = nodes.nodes[: primaries + len(replica_of)]
    ids = {node.ordinal: node_id(node) for node in members}
    per_primary = SLOT_COUNT // primaries
    for index, node in enumerate(members[:primaries]):
        first = index * per_primary
        last = SLOT_COUNT - 1 if index == primaries - 1 else first + per_primary - 1
        with node.client("reconciler") as conn:
            # Distinct config epochs up front, as valkey-cli does, so no epoch collision has to be resolved.
            conn.execute_command("CLUSTER SET-CONFIG-EPOCH", index + 1)
            conn.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
    with members[0].client("reconciler") as conn:
        for node in members[1:]:
            conn.execute_command("CLUSTER MEET", node.ip, node.port)

    def everyone_knows_everyone() -> bool:
        for node in members:
            with node.client("reconciler") as conn:
                view = conn.execute_command("CLUSTER NODES")
            known = {entry["node_id"] for entry in view.values() if "handshake" not in entry["flags"]}
            if known != set(ids.values()):
                return False
        return True

    wait_until(everyone_knows_everyone, FORMATION_TIMEOUT_SECONDS, "every node to know every other node")
    for replica, primary in replica_of.items():
        with nodes.nodes[replica].client("reconciler") as conn:
            conn.execute_command("CLUSTER REPLICATE", ids[primary])
    for replica in replica_of:
        wait_until(lambda: replication_info(nodes.nodes[replica]).get("master_link_status") == "up",
                   SYNC_TIMEOUT_SECONDS, f"replica ordinal {replica} to sync")
    wait_until(lambda: all(cluster_state(node) == "ok" for node in members), FORMATION_TIMEOUT_SECONDS,
               "cluster_state:ok on every node")
    return ids


def cluster_state(node: Node) -> str:
    with node.client("monitor") as conn:
        return conn.execute_command("CLUSTER INFO")["cluster_state"]


def replication_info(node: Node) -> dict:
    with node.client("monitor") as conn:
        return conn.info("replication")
