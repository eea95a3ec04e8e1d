"""Field notes H1, restart variant: with persistence off a primary killed and restarted at once at the same IP
must not hand its replica an empty dataset; the entrypoint's restart delay lets the replica take over first."""

from __future__ import annotations

import time

from .drain_helpers import myid
from .helpers import (
    FAST_OVERRIDES, admin, load_keys, read_back, reconcile, replica_of, replication, wait_healthy, write_confirmed,
)

MASTERS, REPLICAS = 3, 1
KEYS = 3_000
# Writes to the killed primary's slots confirmed by WAIT 1 (the durability a replica gives with persistence off).
CONFIRMED = 1_000
WAIT_TIMEOUT_MS = 2_000
# 3 primaries split 16384 slots 0-5461, 5462-10922, 10923-16383; ordinal 0 owns the first range.
FIRST_SHARD_LAST_SLOT = 5461
# The entrypoint's computed delay for FAST_OVERRIDES' cluster-node-timeout 2000: 2 x 2000 ms.
RESTART_DELAY_S = 4
WAIT_LOG = "persistence off and nodes.conf from an earlier run found: waiting 4 s"
# Bound on the replica's promotion and on the restarted node answering (its delay included).
TAKEOVER_TIMEOUT_S = 20
POLL_S = 0.05


def wait_for(condition, what: str, timeout: float = TAKEOVER_TIMEOUT_S):
    end = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except OSError:
            result = None  # a node still in its restart delay refuses connections
        except Exception as exc:  # valkey-py wraps refused connections in its own ConnectionError
            if "connect" not in str(exc).lower():
                raise
            result = None
        if result:
            return result
        assert time.monotonic() < end, f"timed out after {timeout} s waiting for {what}"
        time.sleep(POLL_S)


def test_primary_restarted_at_once_does_not_wipe_its_replica(node_set, engine):
    nodes = node_set(MASTERS * (1 + REPLICAS), engine=engine, persistence="", overrides=FAST_OVERRIDES)
    run = reconcile(nodes, MASTERS, REPLICAS)
    assert run.code == 0, run.stderr
    assert wait_healthy(nodes, MASTERS, REPLICAS) == []
    model = load_keys(nodes, KEYS)
    primary = nodes.nodes[0]
    old_id = myid(primary)
    replica = replica_of(nodes, primary)

    confirmed = write_confirmed(primary, CONFIRMED, FIRST_SHARD_LAST_SLOT, WAIT_TIMEOUT_MS)
    model.update(confirmed)
    with admin(replica) as c:
        keys_before = c.dbsize()

    # A container restart: the same IP and data dir, the new process started at once.
    killed_at = time.monotonic()
    primary.kill()
    primary.start()

    wait_for(lambda: replication(replica)["role"] == "master", "the replica to take over")
    with admin(replica) as c:
        assert c.dbsize() == keys_before, "the replica lost keys while its primary restarted"
        pipe = c.pipeline(transaction=False)
        for key in confirmed:
            pipe.get(key)
        values = pipe.execute()
    assert values == list(confirmed.values())

    wait_for(lambda: primary.running and myid(primary), "the restarted node to answer")
    assert time.monotonic() - killed_at >= RESTART_DELAY_S
    assert WAIT_LOG in primary.log_path.read_text()
    assert myid(primary) != old_id, "with persistence off the restarted node must be a new node"

    run = reconcile(nodes, MASTERS, REPLICAS)
    assert run.code == 0, run.stderr
    assert wait_healthy(nodes, MASTERS, REPLICAS) == []
    # The restarted node joined the shard of its old replica, holding its data (a replica of it, or its
    # primary again if the reconciler failed back to the home ordinal with a manual failover).
    roles = {replication(primary)["role"], replication(replica)["role"]}
    assert roles == {"master", "slave"}
    follower = primary if replication(primary)["role"] == "slave" else replica
    leader = replica if follower is primary else primary
    assert replication(follower)["master_host"] == leader.ip
    wait_for(lambda: replication(follower)["master_link_status"] == "up", "the shard's replication link")
    assert read_back(nodes, model) == []
