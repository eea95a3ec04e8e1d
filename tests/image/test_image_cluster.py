"""Tests of the rendered users.acl on a real 3-primary cluster (9.1.2): each user's rights, replication
through the replication user, atomic and legacy slot migration, and valkey-py ValkeyCluster as client."""

from __future__ import annotations

import pytest
import valkey
from valkey.cluster import ValkeyCluster

from image_cluster import (
    FAST_SYNC_OVERRIDES,
    SYNC_TIMEOUT_SECONDS,
    form_cluster,
    replication_info,
    wait_until,
)

PRIMARIES = 3
REPLICA, REPLICA_PRIMARY = 3, 0  # ordinal 3 replicates ordinal 0
MIGRATE_TIMEOUT_MS = 5000
LIBRARY = "#!lua name=probe\nserver.register_function('probe', function() return 1 end)"


@pytest.fixture(scope="module")
def cluster(module_node_set):
    nodes = module_node_set(PRIMARIES + 1, overrides=FAST_SYNC_OVERRIDES)
    ids = form_cluster(nodes, PRIMARIES, {REPLICA: REPLICA_PRIMARY})
    nodes.ids = ids
    return nodes


@pytest.fixture
def client_cluster(cluster):
    """valkey-py ValkeyCluster logged in as the `client` user."""
    seed = cluster.nodes[0]
    rc = ValkeyCluster(host=seed.ip, port=seed.port, username="client", password=cluster.passwords.client,
                       decode_responses=True)
    yield rc
    rc.close()


def dryrun(node, user: str, *command) -> str:
    with node.client() as admin:
        return admin.execute_command("ACL DRYRUN", user, *command)


def tag_on(rc: ValkeyCluster, node_ip: str, exclude: set[int] = frozenset()) -> tuple[str, int]:
    """A hash tag whose slot the primary at `node_ip` owns."""
    for n in range(10_000):
        tag = f"t{n}"
        slot = rc.keyslot(tag)
        if slot not in exclude and rc.nodes_manager.get_node_from_slot(slot).host == node_ip:
            return tag, slot
    raise AssertionError(f"no hash tag maps to {node_ip}")


# --- default, admin --------------------------------------------------------------------------------

def test_default_user_cannot_log_in(cluster):
    node = cluster.nodes[0]
    with valkey.Valkey(host=node.ip, port=node.port) as anonymous:
        with pytest.raises(valkey.exceptions.AuthenticationError):
            anonymous.ping()
    with pytest.raises(valkey.exceptions.AuthenticationError):
        valkey.Valkey(host=node.ip, port=node.port, username="default", password="").ping()
    assert dryrun(node, "default", "ping") != "OK"


ADMIN_COMMANDS = [
    ("flushall",), ("config", "set", "maxmemory", "0"), ("config", "get", "primaryauth"),
    ("acl", "setuser", "x"), ("shutdown",), ("debug", "sleep", "0"), ("module", "list"),
    ("eval", "return 1", "0"), ("function", "load", LIBRARY), ("monitor",), ("keys", "*"),
    ("cluster", "setslot", "0", "stable"), ("client", "kill", "id", "1"),
]


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=" ".join)
def test_admin_may_run_every_command(cluster, command):
    assert dryrun(cluster.nodes[0], "admin", *command) == "OK"


def test_admin_runs_config_set_and_scripts_but_debug_is_disabled_by_config(cluster):
    with cluster.nodes[0].client() as admin:
        assert admin.execute_command("ACL WHOAMI") == "admin"
        old = admin.config_get("maxmemory")["maxmemory"]
        assert admin.config_set("maxmemory", "100mb")
        admin.config_set("maxmemory", old)
        assert admin.eval("return 1", 0) == 1
        # enable-debug-command no: DEBUG is refused to everyone, admin included (field notes §1).
        with pytest.raises(valkey.exceptions.ResponseError, match="DEBUG command not allowed"):
            admin.execute_command("DEBUG", "SLEEP", "0")


# --- client ----------------------------------------------------------------------------------------

def test_client_reads_and_writes_every_data_type(client_cluster):
    rc = client_cluster
    assert rc.ping()
    assert rc.set("s", "v") and rc.get("s") == "v"
    rc.hset("h", mapping={"f": "1"})
    assert rc.hgetall("h") == {"f": "1"}
    rc.delete("l")
    rc.lpush("l", "a", "b")
    assert rc.lrange("l", 0, -1) == ["b", "a"]
    rc.sadd("set", "m")
    assert set(rc.smembers("set")) == {"m"}
    rc.zadd("z", {"m": 2.0})
    assert rc.zrange("z", 0, -1, withscores=True) == [("m", 2.0)]


def test_client_pipelines_across_slots(client_cluster):
    pipe = client_cluster.pipeline()
    for i in range(200):
        pipe.set(f"pipe-{i}", i)
    assert all(pipe.execute())
    pipe = client_cluster.pipeline()
    for i in range(200):
        pipe.get(f"pipe-{i}")
    assert pipe.execute() == [str(i) for i in range(200)]
    slots = {client_cluster.keyslot(f"pipe-{i}") for i in range(200)}
    owners = {client_cluster.nodes_manager.get_node_from_slot(slot).name for slot in slots}
    assert len(owners) == PRIMARIES


def test_client_runs_multi_exec_and_wait_on_one_slot(client_cluster, cluster):
    # ValkeyCluster has no cluster transactions; MULTI/EXEC runs on the connection of the slot's owner.
    tag, _ = tag_on(client_cluster, cluster.nodes[REPLICA_PRIMARY].ip)
    node = client_cluster.get_node_from_key(f"{{{tag}}}")
    conn = client_cluster.get_valkey_connection(node)
    assert conn.client_info()["user"] == "client"
    conn.delete(f"{{{tag}}}counter")
    with conn.pipeline(transaction=True) as tx:
        tx.set(f"{{{tag}}}a", "1").incr(f"{{{tag}}}counter").incr(f"{{{tag}}}counter")
        assert tx.execute() == [True, 1, 2]
    assert conn.execute_command("WAIT", 1, MIGRATE_TIMEOUT_MS) == 1  # its replica acknowledged


CLIENT_REFUSED = {
    "KEYS": lambda rc: rc.keys("*"),
    "FLUSHALL": lambda rc: rc.flushall(),
    "FUNCTION LOAD": lambda rc: rc.function_load(LIBRARY),
    "FUNCTION FLUSH": lambda rc: rc.function_flush(),
    "CONFIG GET": lambda rc: rc.config_get("primaryauth"),
    "CONFIG SET": lambda rc: rc.config_set("maxmemory", "0"),
    "CLIENT KILL": lambda rc: rc.execute_command("CLIENT KILL", "ID", "1", target_nodes=rc.get_primaries()[0]),
    "CLUSTER SETSLOT": lambda rc: rc.execute_command("CLUSTER SETSLOT", 0, "STABLE", target_nodes=rc.get_primaries()[0]),
    "EVAL": lambda rc: rc.eval("return 1", 0),
}


@pytest.mark.parametrize("command", CLIENT_REFUSED)
def test_client_is_refused_dangerous_command(client_cluster, command):
    with pytest.raises(valkey.exceptions.NoPermissionError):
        CLIENT_REFUSED[command](client_cluster)


def test_client_is_refused_debug_by_acl_as_well_as_by_config(client_cluster, cluster):
    # DEBUG is off for everyone (enable-debug-command no), which the server checks before the ACL;
    # the ACL refuses it too, so turning DEBUG on for admin would not open it to applications.
    with pytest.raises(valkey.exceptions.ResponseError, match="DEBUG command not allowed"):
        client_cluster.execute_command("DEBUG", "SLEEP", "0", target_nodes=client_cluster.get_primaries()[0])
    assert "no permissions" in dryrun(cluster.nodes[0], "client", "debug", "sleep", "0")


def test_client_follows_ask_redirect_during_legacy_migration(client_cluster, cluster):
    """Legacy SETSLOT IMPORTING/MIGRATING + MIGRATE (run as the reconciler user): GET of a moved key
    gets ASK from the source and the client retries with ASKING on the target."""
    rc = client_cluster
    source, target = cluster.nodes[1], cluster.nodes[2]
    tag, slot = tag_on(rc, source.ip)
    moved, stays = f"{{{tag}}}moved", f"{{{tag}}}stays"
    rc.set(moved, "m")
    rc.set(stays, "s")
    secret = cluster.passwords.reconciler
    with source.client("reconciler") as src, target.client("reconciler") as dst:
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", cluster.ids[source.ordinal])
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", cluster.ids[target.ordinal])
        src.execute_command("MIGRATE", target.ip, target.port, "", 0, MIGRATE_TIMEOUT_MS,
                            "AUTH2", "reconciler", secret, "KEYS", moved)
        assert dst.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 1
    with target.client() as admin:
        asking_before = admin.info("commandstats").get("cmdstat_asking", {}).get("calls", 0)
    assert rc.get(moved) == "m"
    assert rc.get(stays) == "s"
    with target.client() as admin:
        assert admin.info("commandstats")["cmdstat_asking"]["calls"] > asking_before
    # Finish the migration so the cluster is consistent for the next tests.
    with source.client("reconciler") as src:
        src.execute_command("MIGRATE", target.ip, target.port, "", 0, MIGRATE_TIMEOUT_MS,
                            "AUTH2", "reconciler", secret, "KEYS", stays)
    for node in [target, source] + [n for n in cluster.nodes[:PRIMARIES] if n not in (source, target)]:
        with node.client("reconciler") as conn:
            conn.execute_command("CLUSTER SETSLOT", slot, "NODE", cluster.ids[target.ordinal])
    assert rc.get(stays) == "s"  # MOVED to the new owner
    assert rc.nodes_manager.get_node_from_slot(slot).host == target.ip


# --- monitor, reconciler, replication --------------------------------------------------------------

def test_monitor_reads_stats_but_not_config_or_keys(cluster):
    with cluster.nodes[0].client("monitor") as monitor:
        assert monitor.ping()
        assert "cluster_enabled" in monitor.info("cluster")
        assert monitor.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
        assert monitor.execute_command("CLUSTER NODES")
        assert monitor.client_list()
        monitor.slowlog_get()
        monitor.execute_command("LATENCY LATEST")
        monitor.execute_command("MEMORY STATS")
        for refused in (("CONFIG", "GET", "primaryauth"), ("GET", "s"), ("SET", "s", "x"), ("SCAN", "0"),
                        ("KEYS", "*"), ("CLIENT", "KILL", "ID", "1"), ("CLUSTER", "SETSLOT", "0", "STABLE")):
            with pytest.raises(valkey.exceptions.NoPermissionError):
                monitor.execute_command(*refused)


RECONCILER_ALLOWED = [
    ("cluster", "meet", "127.0.0.1", "6379"), ("cluster", "addslotsrange", "0", "1"),
    ("cluster", "setslot", "0", "stable"), ("cluster", "migrateslots", "slotsrange", "0", "1", "node", "x"),
    ("cluster", "getslotmigrations"), ("cluster", "replicate", "x"), ("cluster", "failover"),
    ("cluster", "forget", "x"), ("cluster", "reset", "hard"), ("cluster", "set-config-epoch", "1"),
    ("cluster", "countkeysinslot", "0"), ("cluster", "getkeysinslot", "0", "10"), ("cluster", "shards"),
    ("cluster", "nodes"), ("cluster", "myid"), ("cluster", "info"), ("info",), ("ping",),
    ("migrate", "127.0.0.1", "6379", "", "0", "1000", "auth2", "u", "p", "keys", "k"), ("dbsize",),
    ("flushall",), ("wait", "1", "0"), ("config", "get", "maxmemory"),
    ("config", "set", "cluster-node-timeout", "500"), ("client", "setname", "r"),
    ("client", "setinfo", "lib-name", "r"), ("readonly",), ("restore-asking", "k", "0", "x"),
]
RECONCILER_DENIED = [
    ("acl", "setuser", "x"), ("acl", "list"), ("config", "rewrite"),
    ("module", "list"), ("debug", "sleep", "0"), ("shutdown",), ("monitor",), ("eval", "return 1", "0"),
    ("function", "load", LIBRARY), ("publish", "c", "m"), ("subscribe", "c"), ("client", "kill", "id", "1"),
]


@pytest.mark.parametrize("command", RECONCILER_ALLOWED, ids=" ".join)
def test_reconciler_may_run(cluster, command):
    assert dryrun(cluster.nodes[0], "reconciler", *command) == "OK"


@pytest.mark.parametrize("command", RECONCILER_DENIED, ids=" ".join)
def test_reconciler_may_not_run(cluster, command):
    assert "no permissions" in dryrun(cluster.nodes[0], "reconciler", *command)


def test_replica_syncs_through_the_replication_user(cluster):
    replica, primary = cluster.nodes[REPLICA], cluster.nodes[REPLICA_PRIMARY]
    assert replication_info(replica)["master_link_status"] == "up"
    with primary.client() as admin:
        replicas = [c for c in admin.client_list() if "S" in c["flags"]]
    assert [c["user"] for c in replicas] == ["replication"]
    assert replicas[0]["addr"].startswith(replica.ip + ":")  # bind-source-addr: it connects from its own IP


def test_replication_user_rights(cluster):
    node = cluster.nodes[0]
    for allowed in (("psync", "?", "-1"), ("replconf", "ack", "0"), ("ping",), ("select", "0"), ("set", "k", "v"),
                    ("del", "k"), ("cluster", "syncslots", "establish")):
        assert dryrun(node, "replication", *allowed) == "OK", allowed
    for denied in (("flushall",), ("flushdb",), ("swapdb", "0", "1"), ("get", "k"), ("config", "get", "x"),
                   ("cluster", "setslot", "0", "stable")):
        assert "no permissions" in dryrun(node, "replication", *denied), denied


def test_atomic_slot_migration_authenticates_as_replication_user(cluster, client_cluster):
    source, target = cluster.nodes[0], cluster.nodes[1]
    tag, slot = tag_on(client_cluster, source.ip)
    keys = [f"{{{tag}}}atomic-{i}" for i in range(50)]
    for key in keys:
        client_cluster.set(key, key)
    with source.client("reconciler") as src:
        in_slot = src.execute_command("CLUSTER COUNTKEYSINSLOT", slot)  # other tests may share the tag
        src.execute_command("CLUSTER MIGRATESLOTS", "SLOTSRANGE", slot, slot, "NODE", cluster.ids[target.ordinal])

        def job_state():
            for job in src.execute_command("CLUSTER GETSLOTMIGRATIONS"):
                fields = dict(zip(job[::2], job[1::2]))
                if fields["slot_ranges"] == f"{slot}-{slot}":
                    return fields["state"] if fields["state"] in ("success", "failed", "cancelled") else None
            return None

        assert wait_until(job_state, SYNC_TIMEOUT_SECONDS, "the slot migration job to finish") == "success"
    with target.client() as admin:
        assert admin.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == in_slot >= len(keys)
        denials = [entry for entry in admin.execute_command("ACL LOG") if entry["username"] == "replication"]
        assert not denials
    wait_until(lambda: client_cluster.get(keys[0]) == keys[0], SYNC_TIMEOUT_SECONDS, "the key to be served")
    assert [client_cluster.get(key) for key in keys] == keys
