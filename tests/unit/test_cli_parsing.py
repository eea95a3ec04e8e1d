"""Parsing of real Valkey replies (recorded from 9.1.2) into view values, without servers."""

from __future__ import annotations

from valkey_reconciler.migrate import find_job, parse_jobs, parse_ranges_text
from valkey_reconciler.observe import parse_shards, parse_version
from valkey_reconciler.view import PRIMARY, REPLICA, SlotRange

A = "2d2e48ca1a173f576460374a6549e815b976dad8"
B = "e7cac7235d012b6f75ad389ecbad8e7729f5a425"

SHARDS = [
    ["slots", [0, 99, 200, 16383], "nodes", [
        ["id", A, "port", 6379, "ip", "127.0.250.1", "endpoint", "127.0.250.1", "role", "master",
         "replication-offset", 42, "health", "online"],
        ["id", B, "port", 6379, "ip", "127.0.250.2", "endpoint", "127.0.250.2", "role", "replica",
         "replication-offset", 42, "health", "loading"]], "id", "shard-1"],
]

JOBS = [
    ["name", "newer", "operation", "EXPORT", "slot_ranges", "300-399 500-599", "target_node", B,
     "source_node", A, "create_time", 1795670486, "state", "success", "message", ""],
    ["name", "older", "operation", "EXPORT", "slot_ranges", "0-99", "target_node", B, "source_node", A,
     "create_time", 1795670478, "state", "failed", "message", "target down"],
]


def test_cluster_shards_become_peers_with_roles_health_and_slots():
    primary, replica = parse_shards(SHARDS)
    assert (primary.node_id, primary.role, primary.health, primary.replication_offset) == (A, PRIMARY, "online", 42)
    assert primary.slots == (SlotRange(0, 99), SlotRange(200, 16383))
    assert (replica.role, replica.health, replica.slots, replica.shard_id) == (REPLICA, "loading", (), "shard-1")


def test_getslotmigrations_jobs_are_matched_by_ranges_not_position():
    jobs = parse_jobs(JOBS)
    assert jobs[0]["ranges"] == ((300, 399), (500, 599)) and jobs[0]["operation"] == "export"
    assert find_job(jobs, B, ((0, 99),))["name"] == "older"
    assert find_job(jobs, B, ((0, 99),), exclude={"older"}) is None
    assert parse_ranges_text("7 10-12") == ((7, 7), (10, 12))


def test_versions_come_from_valkey_version_first():
    assert parse_version({"redis_version": "7.2.4", "valkey_version": "9.1.2"}) == (9, 1, 2)
    assert parse_version({"redis_version": "7.2.4"}) == (7, 2, 4)


def test_names_resolve_through_the_hosts_file_before_dns(tmp_path):
    from valkey_reconciler.node import resolve

    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.42.3  valkey-x-0.valkey-x-headless.ns.svc.cluster.local  alias # tail\n")
    assert resolve("valkey-x-0.valkey-x-headless.ns.svc.cluster.local", str(hosts)) == "127.0.42.3"
    assert resolve("alias", str(hosts)) == "127.0.42.3"
    assert resolve("10.1.2.3", str(hosts)) == "10.1.2.3"
