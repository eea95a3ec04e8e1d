"""End-to-end rolls in local mode: a config change restarts every pod through the reconciler (replicas first, a manual failover before each primary, primaries back home) while a cluster client writes, on 9.1.2 and 8.1.8; a roll whose reconciler is killed mid-way and rerun; failback on the next reconcile."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import pytest
import valkey

from local_helpers import FAST_VALUES, LOCAL, Background, Local, Writer, preload, read_back, wait_all_gone

TOTAL_SLOTS = 16384
#: Keys loaded before the upgrade (enough that every restart reloads and resyncs real data).
KEYS = 5_000
#: The config change that rolls every pod (it lands in the ConfigMap's overrides.conf).
NEW_POLICY = "allkeys-lru"
ROLL_VALUES = [*FAST_VALUES, "--set", f"maxmemoryPolicy={NEW_POLICY}"]
#: Pause between two coverage samples of the poller.
POLL_PAUSE_SECONDS = 0.05
#: Socket timeouts of the poller's and the checks' admin connections.
ADMIN_TIMEOUT_SECONDS = 2.0
#: Bound on one upgrade (six restarts with data) and on events appearing.
UPGRADE_TIMEOUT_SECONDS = 240
EVENT_WAIT_SECONDS = 120
#: Bound on a manual failover done by the test itself.
FAILOVER_WAIT_SECONDS = 30


# --- helpers -------------------------------------------------------------------------------------------


def admin(local: Local, ip: str) -> valkey.Valkey:
    password = local.secrets()[f"valkey-{local.release}-credentials"]["admin-password"]
    return valkey.Valkey(host=ip, port=6379, username="admin", password=password, decode_responses=True,
                         socket_timeout=ADMIN_TIMEOUT_SECONDS, socket_connect_timeout=ADMIN_TIMEOUT_SECONDS)


def ordinals_by_ip(local: Local) -> dict[str, int]:
    return {p["ip"]: p["ordinal"] for p in local.state()["pods"].values()}


def pairs(flat) -> dict:
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def shards(local: Local) -> list[tuple[int, tuple[int, ...]]]:
    """(primary ordinal, replica ordinals) per slot-owning shard, as ordinal 0's pod reports it."""
    by_ip = ordinals_by_ip(local)
    ip = next(ip for ip, o in by_ip.items() if o == 0)
    with admin(local, ip) as c:
        reply = c.execute_command("CLUSTER SHARDS")
    out = []
    for raw in reply:
        shard = pairs(raw)
        if not shard["slots"]:
            continue
        nodes = [pairs(n) for n in shard["nodes"]]
        primary = next(by_ip[n["ip"]] for n in nodes if n["role"] in ("master", "primary"))
        replicas = tuple(sorted(by_ip[n["ip"]] for n in nodes if n["role"] not in ("master", "primary")))
        out.append((primary, replicas))
    return sorted(out)


def assert_primaries_home(local: Local) -> None:
    layout = shards(local)
    assert len(layout) == 3 and all(len(r) == 1 for _, r in layout), layout
    away = [(p, r) for p, r in layout if p != min((p, *r))]
    assert not away, f"primaries not on their home (lowest) ordinal: {away}"


@dataclass
class CoveragePoller(Background):
    """Polls CLUSTER SHARDS on every running pod, all the time: each sample must show all 16384 slots in
    shards whose primary is online. A pod that does not answer (restarting) is skipped."""

    local: Local
    samples: int = 0
    gaps: list[str] = field(default_factory=list)
    join_seconds = ADMIN_TIMEOUT_SECONDS * 20
    what = "coverage poller"

    def _run(self) -> None:
        clients: dict[str, valkey.Valkey] = {}
        while not self._stop.is_set():
            for ip in list(ordinals_by_ip(self.local)):
                client = clients.get(ip) or clients.setdefault(ip, admin(self.local, ip))
                try:
                    reply = client.execute_command("CLUSTER SHARDS")
                except (valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError,
                        valkey.exceptions.BusyLoadingError):
                    continue
                covered = 0
                for raw in reply:
                    shard = pairs(raw)
                    nodes = [pairs(n) for n in shard["nodes"]]
                    if any(n["role"] in ("master", "primary") and n["health"] == "online" for n in nodes):
                        slots = [int(s) for s in shard["slots"]]
                        covered += sum(slots[i + 1] - slots[i] + 1 for i in range(0, len(slots) - 1, 2))
                self.samples += 1
                if covered != TOTAL_SLOTS:
                    self.gaps.append(f"{ip}: {covered}/{TOTAL_SLOTS} slots with an online primary")
            time.sleep(POLL_PAUSE_SECONDS)
        for client in clients.values():
            client.close()


def k8s_events(local: Local, since: int) -> list[dict]:
    return [e for e in local.events()[since:] if e["event"] == "k8s_event"]


def assert_new_config_everywhere(local: Local) -> None:
    for ip, ordinal in ordinals_by_ip(local).items():
        with admin(local, ip) as c:
            assert c.config_get("maxmemory-policy") == {"maxmemory-policy": NEW_POLICY}, f"ordinal {ordinal}"


def assert_every_pod_restarted_once_at_one_new_revision(local: Local, since: int, old_revision: str) -> None:
    starts = [e for e in local.events()[since:] if e["event"] == "pod_start"]
    assert sorted(e["ordinal"] for e in starts) == list(range(6)), starts
    revisions = {e["revision"] for e in starts}
    assert len(revisions) == 1 and old_revision not in revisions, revisions
    assert {p["revision"] for p in local.state()["pods"].values()} == revisions


def assert_replicas_first_and_failover_before_each_primary(events: list[dict], primaries: set[int],
                                                           replicas: set[int]) -> None:
    """The order the reconciler reported: every replica restarted before any failover; each old primary
    restarted only after a failover moved its slots away."""
    story = [(e["reason"], e["facts"]) for e in events if e["reason"] in ("RestartPod", "Failover", "Failback")]
    restarts = [f["ordinal"] for r, f in story if r == "RestartPod"]
    assert sorted(restarts) == list(range(6)), story
    first_failover = next(i for i, (r, _) in enumerate(story) if r == "Failover")
    assert {f["ordinal"] for r, f in story[:first_failover] if r == "RestartPod"} == replicas, story
    for i, (reason, facts) in enumerate(story):
        if reason == "RestartPod" and facts["ordinal"] in primaries:
            assert facts["role"] == "replica", f"a primary was restarted without a failover first: {story}"
            assert any(r == "Failover" and f["from_ordinal"] == facts["ordinal"] for r, f in story[:i]), story
    assert not any(r == "Failover" and f["from_ordinal"] in replicas for r, f in story), story
    failbacks = [f for r, f in story if r == "Failback"]
    assert sorted(f["ordinal"] for f in failbacks) == sorted(primaries), story


def start_clients(local: Local) -> tuple[dict[str, str], Writer, CoveragePoller]:
    client = local.client()
    try:
        model = preload(client, KEYS)
    finally:
        client.close()
    writer, poller = Writer(local), CoveragePoller(local)
    writer.start()
    poller.start()
    return model, writer, poller


def assert_nothing_lost(local: Local, model: dict[str, str], writer: Writer, poller: CoveragePoller) -> None:
    assert writer.errors == [], f"the client saw errors (only followed redirections are allowed): {writer.errors[:5]}"
    assert writer.mismatches == []
    assert len(writer.acked) > 100, "the writer got too few writes acknowledged to prove anything"
    client = local.client()
    try:
        assert read_back(client, model) == [], "preloaded keys lost"
        assert read_back(client, dict(writer.acked)) == [], "acknowledged writes lost"
    finally:
        client.close()
    assert poller.samples > 50, "the coverage poller took too few samples"
    assert poller.gaps == [], f"slots were uncovered: {poller.gaps[:5]}"


def install(local: Local) -> tuple[set[int], set[int], str]:
    """3×1 with persistence rdb,aof (the chart's default): primaries, replicas and the pods' revision."""
    up = local.up(*FAST_VALUES)
    assert up.code == 0, up.explain()
    layout = shards(local)
    primaries = {p for p, _ in layout}
    replicas = {r for _, rs in layout for r in rs}
    assert primaries == {0, 1, 2} and replicas == {3, 4, 5}, layout
    (revision,) = {p["revision"] for p in local.state()["pods"].values()}
    return primaries, replicas, revision


def wait_for_event(local: Local, since: int, reason: str, count: int) -> None:
    end = time.monotonic() + EVENT_WAIT_SECONDS
    while time.monotonic() < end:
        if sum(1 for e in k8s_events(local, since) if e["reason"] == reason) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count}x {reason} event within {EVENT_WAIT_SECONDS}s")


# --- tests ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["9", "8"], ids=["valkey9", "valkey8"])
def test_config_upgrade_rolls_all_pods_replicas_first_failover_first_no_write_lost_primaries_home(local, engine):
    release = local(engine, "roll")
    primaries, replicas, old_revision = install(release)
    model, writer, poller = start_clients(release)
    since = len(release.events())
    try:
        result = release.upgrade(*ROLL_VALUES)
    finally:
        writer.stop()
        poller.stop()
    assert result.code == 0, result.explain()
    assert "updateStrategy OnDelete" in result.stdout
    assert_every_pod_restarted_once_at_one_new_revision(release, since, old_revision)
    assert_new_config_everywhere(release)
    assert_nothing_lost(release, model, writer, poller)
    assert_replicas_first_and_failover_before_each_primary(k8s_events(release, since), primaries, replicas)
    assert_primaries_home(release)
    assert any(e["reason"] == "RollComplete" for e in k8s_events(release, since))


@pytest.mark.slow
def test_reconciler_killed_mid_roll_then_hook_rerun_completes_the_roll_nothing_lost(local):
    release = local("9", "roll")
    primaries, replicas, old_revision = install(release)
    model, writer, poller = start_clients(release)
    since = len(release.events())
    argv = ["upgrade", *ROLL_VALUES, "--release", release.release, "--state-dir", str(release.state_dir)]
    try:
        upgrade = subprocess.Popen([str(LOCAL), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            # The first failover is the most delicate moment of the roll: kill the reconciler right there.
            wait_for_event(release, since, "Failover", 1)
            (job,) = [e for e in release.events()[since:] if e["event"] == "hook_started"
                      and e["phase"] == "post-upgrade"]
            os.kill(job["pid"], signal.SIGKILL)
            out, _ = upgrade.communicate(timeout=UPGRADE_TIMEOUT_SECONDS)
        finally:
            if upgrade.poll() is None:
                upgrade.kill()
                upgrade.wait()
        assert upgrade.returncode == 1, out
        assert "post-upgrade hook Job" in out and "failed" in out, out
        restarted = {e["ordinal"] for e in release.events()[since:] if e["event"] == "pod_start"}
        assert replicas <= restarted and len(restarted) < 6, f"the kill did not land mid-roll: {restarted}"
        rerun = release.upgrade(*ROLL_VALUES)  # Helm: the same upgrade again runs the hooks again
    finally:
        writer.stop()
        poller.stop()
    assert rerun.code == 0, rerun.explain()
    assert_every_pod_restarted_once_at_one_new_revision(release, since, old_revision)
    assert_new_config_everywhere(release)
    assert_nothing_lost(release, model, writer, poller)
    assert_replicas_first_and_failover_before_each_primary(k8s_events(release, since), primaries, replicas)
    assert_primaries_home(release)


@pytest.mark.slow
def test_primaries_moved_away_by_manual_failovers_return_home_on_next_reconcile(local):
    release = local("8", "roll")
    primaries, replicas, revision = install(release)
    by_ordinal = {o: ip for ip, o in ordinals_by_ip(release).items()}
    for ordinal in sorted(replicas):
        with admin(release, by_ordinal[ordinal]) as c:
            c.execute_command("CLUSTER FAILOVER")
            end = time.monotonic() + FAILOVER_WAIT_SECONDS
            while c.info("replication")["role"] != "master":
                assert time.monotonic() < end, f"manual failover to ordinal {ordinal} did not complete"
                time.sleep(0.05)
    end = time.monotonic() + FAILOVER_WAIT_SECONDS
    while {p for p, _ in shards(release)} != replicas:
        assert time.monotonic() < end, f"ordinal 0 does not see the new primaries: {shards(release)}"
        time.sleep(0.05)
    since = len(release.events())
    result = release.upgrade()  # no values: the last ones again, nothing to restart; the hooks run
    assert result.code == 0, result.explain()
    assert_primaries_home(release)
    story = [(e["reason"], e["facts"]) for e in k8s_events(release, since)]
    assert sorted(f["ordinal"] for r, f in story if r == "Failback") == sorted(primaries), story
    assert not any(r == "RestartPod" for r, _ in story), story
    assert not [e for e in release.events()[since:] if e["event"] == "pod_start"]
