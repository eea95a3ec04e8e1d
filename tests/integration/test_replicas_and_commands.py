"""More replicas, --dry-run, a wrong password and `status --check`, against real nodes."""

from __future__ import annotations

import json

from .helpers import FAST_OVERRIDES, admin, reconcile, run_reconciler, topology, wait_healthy

VOLATILE = ("last_ping_sent", "last_pong_rcvd", "connected")


def snapshot(nodes) -> list:
    """Everything the reconciler could change, per node: identity, epochs, slots, roles, open slots."""
    out = []
    for node in nodes.nodes:
        with admin(node) as c:
            table = c.execute_command("CLUSTER NODES")
            info = c.execute_command("CLUSTER INFO")
            out.append((
                c.execute_command("CLUSTER MYID"), info["cluster_current_epoch"], info["cluster_my_epoch"],
                info["cluster_known_nodes"], info["cluster_slots_assigned"], c.dbsize(),
                sorted((addr, tuple(sorted((k, str(v)) for k, v in entry.items() if k not in VOLATILE)))
                       for addr, entry in table.items()),
            ))
    return out


def test_adding_a_replica_per_primary_attaches_them_round_robin_over_the_replication_user(node_set, engine):
    nodes = node_set(9, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    assert reconcile(nodes, 3, 1).code == 0
    run = reconcile(nodes, 3, 2)
    assert run.code == 0, run.stderr
    assert wait_healthy(nodes, 3, 2) == []

    ids = {}
    for node in nodes.nodes:
        with admin(node) as c:
            ids[c.execute_command("CLUSTER MYID")] = node.ordinal
    shards = topology(nodes.nodes[0])
    replicas_by_primary = {ids[p]: sorted(ids[r] for r in reps) for p, (_, reps) in shards.items()}
    # Existing links stay (3→0, 4→1, 5→2); new replicas go, in ordinal order, to the shard with the fewest.
    assert replicas_by_primary == {0: [3, 6], 1: [4, 7], 2: [5, 8]}
    for primary, replicas in replicas_by_primary.items():
        assert all(nodes.nodes[r].ip != nodes.nodes[primary].ip for r in replicas)
        with admin(nodes.nodes[primary]) as c:
            links = c.execute_command("CLIENT LIST", "TYPE", "replica")
            users = sorted(entry["user"] for entry in _client_list(links))
        assert users == ["replication", "replication"]


def _client_list(reply) -> list[dict]:
    if isinstance(reply, list):
        return reply
    return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in reply.splitlines()]


def test_dry_run_prints_the_plan_and_changes_nothing(node_set, engine):
    nodes = node_set(6, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    fresh = snapshot(nodes)
    run = reconcile(nodes, 3, 0, "--dry-run")
    assert run.code == 0, run.stderr
    assert "assign 5462 slots 0-5461 to ordinal 0" in run.stdout and "nothing was changed" in run.stdout
    assert snapshot(nodes) == fresh

    assert reconcile(nodes, 3, 0).code == 0
    assert wait_healthy(nodes, 3, 0) == []
    formed = snapshot(nodes)
    grow = reconcile(nodes, 6, 0, "--dry-run")
    assert grow.code == 0, grow.stderr
    assert "migrate" in grow.stdout and "meet ordinal 3" in grow.stdout
    assert "step_started" not in grow.event_names()
    assert snapshot(nodes) == formed


def test_wrong_password_exits_1_naming_the_pod_and_changes_nothing(node_set, engine):
    nodes = node_set(3, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    before = snapshot(nodes)
    run = reconcile(nodes, 3, 0, env={"VALKEY_PASSWORD": "not-the-password"})
    assert run.code == 1
    assert f"ordinal 0 ({nodes.nodes[0].address})" in run.stderr and "VALKEY_PASSWORD" in run.stderr
    assert "not-the-password" not in run.stderr + run.stdout
    assert run.elapsed < 20
    assert snapshot(nodes) == before


def test_status_check_passes_on_a_healthy_cluster_and_fails_on_an_open_slot(node_set, engine):
    nodes = node_set(6, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    assert reconcile(nodes, 3, 1).code == 0
    assert wait_healthy(nodes, 3, 1) == []
    layout = ["--masters", "3", "--replicas-per-master", "1"]

    healthy = run_reconciler(nodes, "status", "--check", *layout)
    assert healthy.code == 0, healthy.stdout + healthy.stderr
    assert "slots covered: 16384/16384" in healthy.stdout and "healthy" in healthy.stdout
    as_json = json.loads(run_reconciler(nodes, "status", "--json", *layout).stdout)
    assert as_json["healthy"] and len(as_json["shards"]) == 3
    assert all(len(s["replicas"]) == 1 and s["replicas"][0]["link"] == "up" for s in as_json["shards"])

    with admin(nodes.nodes[0]) as owner, admin(nodes.nodes[1]) as other:
        owner.execute_command("CLUSTER", "SETSLOT", 100, "MIGRATING", other.execute_command("CLUSTER MYID"))
    sick = run_reconciler(nodes, "status", "--check", *layout)
    assert sick.code == 1
    assert "slot 100 is open (migrating)" in sick.stdout
