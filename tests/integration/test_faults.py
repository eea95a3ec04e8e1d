"""Bad runtime input on real servers: each case exits 1 with a message naming the pod and the fix, and changes
nothing (the cluster snapshot before and after is identical); two reconcilers started together."""

from __future__ import annotations

import os
import subprocess
import time

from .drain_helpers import snapshot
from .helpers import CLI_TIMEOUT_S, FAST_OVERRIDES, RECONCILER, Run, admin, reconcile, wait_healthy

# A short --timeout for the cases that end in a bounded wait.
SHORT_TIMEOUT = "3"
# A refusal that waits at most SHORT_TIMEOUT must end well within this.
REFUSAL_BOUND_S = 20
POD_ADDRESS = "pod-{ordinal}.faults.test"
PROCESS_BOUND_S = 240


def by_scheme(nodes, masters: int, replicas: int, hosts, *extra: str) -> Run:
    argv = [str(RECONCILER), "reconcile", "--masters", str(masters), "--replicas-per-master", str(replicas),
            "--pod-address", POD_ADDRESS, "--hosts-file", str(hosts), *extra]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_FORMAT": "json", **nodes.reconciler_env()}
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=PROCESS_BOUND_S)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def settled_snapshot(nodes, ordinals=None, timeout: float = 30, quiet: float = 1.0):
    """A snapshot once gossip is quiet: every read for `quiet` seconds agrees (bounded). Two reads 0.2 s apart
    were not enough on 8.x: a node that just joined can list itself under another shard for a while longer."""
    end = time.monotonic() + timeout
    last, since = snapshot(nodes, ordinals), time.monotonic()
    while True:
        time.sleep(0.2)
        now = snapshot(nodes, ordinals)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        assert time.monotonic() < end, "the cluster did not settle before the test"


def refused(run: Run, before, nodes) -> str:
    assert run.code == 1, (run.code, run.stderr)
    assert "step_started" not in run.event_names(), run.stderr
    assert snapshot(nodes) == before, "a refused run changed the cluster"
    assert nodes.passwords.reconciler not in run.stderr + run.stdout
    return run.stderr


def test_a_pod_that_never_answers_ends_after_the_bound_naming_it(node_set):
    nodes = node_set(4, engine="9", persistence="", overrides=FAST_OVERRIDES)
    nodes.nodes[3].stop()
    before = settled_snapshot(nodes, range(3))
    run = reconcile(nodes, 4, 0, "--timeout", SHORT_TIMEOUT)
    assert run.code == 1 and run.elapsed < REFUSAL_BOUND_S
    assert f"ordinal 3 ({nodes.nodes[3].address})" in run.stderr and "did not answer within 3s" in run.stderr
    assert "is running and ready" in run.stderr
    assert snapshot(nodes, range(3)) == before


def test_a_name_that_does_not_resolve_ends_after_the_bound_naming_it(node_set, tmp_path):
    nodes = node_set(3, engine="9", persistence="", overrides=FAST_OVERRIDES)
    hosts = tmp_path / "hosts"  # ordinal 2 is missing from the "DNS"
    hosts.write_text("".join(f"{n.ip} {POD_ADDRESS.format(ordinal=n.ordinal)}\n" for n in nodes.nodes[:2]))
    before = settled_snapshot(nodes)
    stderr = refused(by_scheme(nodes, 3, 0, hosts, "--timeout", SHORT_TIMEOUT), before, nodes)
    assert "pod-2.faults.test does not resolve" in stderr and "ordinal 2" in stderr
    assert str(hosts) in stderr and "headless Service" in stderr


def test_wrong_password_exits_1_naming_the_pod(node_set):
    nodes = node_set(3, engine="8", persistence="", overrides=FAST_OVERRIDES)
    before = settled_snapshot(nodes)
    stderr = refused(reconcile(nodes, 3, 0, env={"VALKEY_PASSWORD": "wrong-password-here"}), before, nodes)
    assert "ordinal 0" in stderr and "VALKEY_PASSWORD" in stderr and "wrong-password-here" not in stderr


def test_a_member_that_is_none_of_the_pods_is_refused(node_set, engine):
    nodes = node_set(4, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    assert reconcile(nodes, 3, 0).code == 0
    assert wait_healthy(nodes, 3, 0) == []
    stranger = nodes.nodes[3]
    with admin(nodes.nodes[0]) as c:
        c.execute_command("CLUSTER", "MEET", stranger.ip, stranger.port)
    with admin(stranger) as c:
        end = time.monotonic() + CLI_TIMEOUT_S
        while int(c.execute_command("CLUSTER INFO")["cluster_known_nodes"]) < 4:
            assert time.monotonic() < end
            time.sleep(0.05)
        stranger_id = c.execute_command("CLUSTER MYID")
    # every pod knows the stranger before the run
    for n in nodes.nodes[:3]:
        with admin(n) as c:
            end = time.monotonic() + CLI_TIMEOUT_S
            while stranger_id not in {v["node_id"] for v in c.execute_command("CLUSTER NODES").values()}:
                assert time.monotonic() < end
                time.sleep(0.05)
    before = settled_snapshot(nodes)
    stderr = refused(reconcile(nodes, 3, 0), before, nodes)
    assert f"node {stranger_id[:8]} at {stranger.ip}" in stderr and "none of the 3 expected pods" in stderr
    assert f"CLUSTER FORGET {stranger_id}" in stderr


def test_slots_owned_by_a_member_that_is_none_of_the_pods_are_refused(node_set):
    nodes = node_set(4, engine="9", persistence="", overrides=FAST_OVERRIDES)
    assert reconcile(nodes, 4, 0).code == 0
    assert wait_healthy(nodes, 4, 0) == []
    before = settled_snapshot(nodes)
    run = reconcile(nodes, 3, 0)  # ordinal 3 owns slots but is not one of the 3 expected pods
    stderr = refused(run, before, nodes)
    assert "slots 12288-16383 are owned by node" in stderr and "not one of the expected pods" in stderr


def test_mixed_versions_refuse_moving_slots_naming_pods_and_versions(node_set):
    nodes = node_set(4, engine="9", persistence="", overrides=FAST_OVERRIDES, start=False)
    nodes.nodes[3].engine = "8"  # a pod already on another release (an upgrade half done)
    nodes.start()
    nodes.wait_ready()
    assert reconcile(nodes, 3, 0).code == 0
    assert wait_healthy(nodes, 3, 0) == []
    before = settled_snapshot(nodes)
    stderr = refused(reconcile(nodes, 4, 0), before, nodes)
    assert "different Valkey versions (9.1.2 on ordinals 0, 1, 2; 8.1.8 on ordinal 3)" in stderr
    assert "finish the upgrade" in stderr
    ok = reconcile(nodes, 3, 0)  # nothing to move: a no-op is allowed while versions are mixed
    assert ok.code == 0 and "reconcile_noop" in ok.event_names(), ok.stderr


def test_two_reconcilers_started_together_one_acts_and_both_end_converged(node_set, engine):
    nodes = node_set(6, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    argv = [str(RECONCILER), "reconcile", "--masters", "3", "--replicas-per-master", "1",
            "--timeout", str(CLI_TIMEOUT_S)]
    for n in nodes.nodes:
        argv += ["--node", n.address]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_FORMAT": "json", **nodes.reconciler_env()}
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    runs = []
    for p in procs:
        out, err = p.communicate(timeout=PROCESS_BOUND_S)
        runs.append(Run(p.returncode, out, err, 0.0))
    assert [r.code for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    steps = [r.event_names().count("step_started") for r in runs]
    assert sorted(steps)[0] == 0 and sorted(steps)[1] > 0, steps
    waited = [r for r in runs if "lock_waiting" in r.event_names() or "reconcile_noop" in r.event_names()]
    assert waited, [r.event_names() for r in runs]
    assert wait_healthy(nodes, 3, 1) == []
