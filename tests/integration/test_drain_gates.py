"""Each safety gate of `drain` on real servers: exit 1 (2 for bad settings), a message naming the problem and
the fix, and nothing changed (the cluster snapshot before and after is identical)."""

from __future__ import annotations

import pytest

from .drain_helpers import myid, run_drain, snapshot, write_hosts
from .helpers import FAST_OVERRIDES, admin, load_keys, reconcile, wait_healthy

MASTERS = 4
GATE_KEYS = 20_000
# Seconds a drain that has nothing to do may take (it runs on every upgrade).
NOOP_BOUND_S = 5


@pytest.fixture(scope="module")
def cluster(module_node_set, tmp_path_factory):
    nodes = module_node_set(MASTERS, engine="9", persistence="", overrides=FAST_OVERRIDES)
    formed = reconcile(nodes, MASTERS, 0)
    assert formed.code == 0, formed.stderr
    assert wait_healthy(nodes, MASTERS, 0) == []
    load_keys(nodes, GATE_KEYS)
    hosts = write_hosts(nodes, tmp_path_factory.mktemp("gates") / "hosts")
    return nodes, hosts


def refused(nodes, hosts, *args, masters=2, code=1, hosts_file=None):
    before = snapshot(nodes)
    run = run_drain(nodes, masters, 0, hosts_file or hosts, *args)
    assert run.code == code, (run.code, run.stdout, run.stderr)
    assert "step_started" not in run.event_names()
    assert snapshot(nodes) == before, "a refused drain changed the cluster"
    return run.stderr


def test_fewer_than_one_master_is_bad_settings(cluster):
    nodes, hosts = cluster
    err = refused(nodes, hosts, masters=0, code=2)
    assert "--masters must be between 1" in err and "nothing was changed" in err


def test_uncovered_slots_refuse(cluster):
    nodes, hosts = cluster
    for node in nodes.nodes:  # slot 0 owned by nobody anywhere: the cluster is down
        with admin(node) as c:
            c.execute_command("CLUSTER DELSLOTS", 0)
    try:
        err = refused(nodes, hosts)
        assert "slots 0 (1) are owned by no pod" in err and "bring their primary back" in err
    finally:
        with admin(nodes.nodes[0]) as c:
            c.execute_command("CLUSTER ADDSLOTS", 0)
    assert wait_healthy(nodes, MASTERS, 0) == []


def test_slot_open_on_several_nodes_refuses(cluster):
    nodes, hosts = cluster
    owner = myid(nodes.nodes[0])
    for o in (1, 2):
        with admin(nodes.nodes[o]) as c:
            c.execute_command("CLUSTER SETSLOT", 100, "IMPORTING", owner)
    try:
        err = refused(nodes, hosts)
        assert "slot 100 is open on several nodes" in err and "CLUSTER SETSLOT" in err
    finally:
        for o in (1, 2):
            with admin(nodes.nodes[o]) as c:
                c.execute_command("CLUSTER SETSLOT", 100, "STABLE")


def test_survivors_maxmemory_too_small_refuses(cluster):
    nodes, hosts = cluster
    for o in (0, 1):
        with admin(nodes.nodes[o]) as c:
            used = int(c.info("memory")["used_memory"])
            c.config_set("maxmemory", used + 512 * 1024)
    try:
        err = refused(nodes, hosts)
        assert "maxmemory" in err and "10% headroom" in err and "raise maxmemory" in err
    finally:
        for o in (0, 1):
            with admin(nodes.nodes[o]) as c:
                c.config_set("maxmemory", 0)


def test_a_member_beyond_a_name_that_does_not_resolve_refuses(cluster, tmp_path):
    nodes, hosts = cluster
    gap = write_hosts(nodes, tmp_path / "hosts", [0, 1, 3])  # ordinal 2 missing from "DNS"
    err = refused(nodes, hosts, hosts_file=gap)
    assert "is a member of the cluster but is none of the 2 pods found" in err
    assert nodes.nodes[2].ip in err or nodes.nodes[3].ip in err


def test_dry_run_prints_the_plan_and_changes_nothing(cluster):
    nodes, hosts = cluster
    before = snapshot(nodes)
    run = run_drain(nodes, 2, 0, hosts, "--dry-run")
    assert run.code == 0, run.stderr
    assert "--dry-run: nothing was changed" in run.stdout
    assert "migrate" in run.stdout and "remove ordinal 3" in run.stdout and "remove ordinal 2" in run.stdout
    assert snapshot(nodes) == before


def test_same_size_does_nothing_fast(cluster):
    nodes, hosts = cluster
    before = snapshot(nodes)
    run = run_drain(nodes, MASTERS, 0, hosts)
    assert run.code == 0, run.stderr
    assert "nothing to drain" in run.stdout and "drain_noop" in run.event_names()
    assert run.elapsed < NOOP_BOUND_S
    assert snapshot(nodes) == before
