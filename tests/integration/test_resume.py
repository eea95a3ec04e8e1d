"""Resumable everything: the reconciler SIGKILLed at seeded random points while it grows 3x1 → 6x1 or drains
6x1 → 3x1 (with data and a live cluster client), then run again: every rerun converges, no key is lost, no
slot is left open. One cluster per engine serves every trial, alternating up and down."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from .drain_helpers import POD_ADDRESS, run_drain, write_hosts
from .helpers import (
    CLI_TIMEOUT_S,
    FAST_OVERRIDES,
    RECONCILER,
    Writer,
    load_keys,
    read_back,
    reconcile,
    unexecuted_writes_absent,
    wait_healthy,
)

# Trials per engine (each one transition, alternating 3x1 → 6x1 and back): the issue asks for 20 per engine.
# On 8.1.8 a transition moves 8192 slots the legacy way (~25 s on 2 shared cores), the longest test of the
# suite; VALKEY_RESUME_TRIALS=N runs N on both engines (fewer for a quick local run).
DEFAULT_TRIALS = {"9": 20, "8": 20}
TRIALS_OVERRIDE = os.environ.get("VALKEY_RESUME_TRIALS")
SEED = int(os.environ.get("VALKEY_RESUME_SEED", "20261126"))
KEYS = 20_000
SMALL, LARGE = (3, 1), (6, 1)
# First guess of how long a transition acts (from its first step to its end) per engine (s); refined from
# the runs measured.
FIRST_ESTIMATE_S = {"9": 2.0, "8": 8.0}
POLL_S = 0.02
# Bound on one killed process disappearing.
KILL_BOUND_S = 10


def _command(nodes, kind: str, hosts) -> list[str]:
    m, r = (LARGE if kind == "up" else SMALL)
    if kind == "drain":
        return [str(RECONCILER), "drain", "--masters", str(m), "--replicas-per-master", str(r),
                "--pod-address", POD_ADDRESS, "--hosts-file", str(hosts), "--timeout", str(CLI_TIMEOUT_S)]
    argv = [str(RECONCILER), "reconcile", "--masters", str(m), "--replicas-per-master", str(r),
            "--timeout", str(CLI_TIMEOUT_S)]
    for n in nodes.nodes[:m * (1 + r)]:
        argv += ["--node", n.address]
    return argv


def killed_run(nodes, argv: list[str], delay: float, log_path) -> tuple[bool, str | None]:
    """Start the reconciler and, `delay` s after it began its first step, SIGKILL it (if still running).

    Returns (killed, kind of the last step begun). Counting from the first step puts the kills where work
    is under way, whatever the machine's load does to start-up time."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_FORMAT": "json", **nodes.reconciler_env()}
    with open(log_path, "w") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            end = time.monotonic() + CLI_TIMEOUT_S
            while proc.poll() is None and '"step_started"' not in log_path.read_text():
                assert time.monotonic() < end, "the reconciler never began a step"
                time.sleep(POLL_S)
            proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=KILL_BOUND_S)
            killed = True
        finally:
            if proc.poll() is None:  # an assertion above: never leave it running
                proc.kill()
                proc.wait(timeout=KILL_BOUND_S)
    last = None
    for line in log_path.read_text().splitlines():
        if '"step_started"' in line:
            last = line.split('"kind": "', 1)[-1].split('"', 1)[0]
    return killed, last


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["9", "8"], ids=["valkey9", "valkey8"])
def test_sigkill_at_random_points_then_rerun_converges_without_losing_a_key(node_set, engine, tmp_path):
    trials = int(TRIALS_OVERRIDE) if TRIALS_OVERRIDE else DEFAULT_TRIALS[engine]
    seed = SEED + int(engine)
    rng = random.Random(seed)
    nodes = node_set(12, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    for n in nodes.nodes[6:]:
        n.stop()
    assert reconcile(nodes, *SMALL).code == 0
    assert wait_healthy(nodes, *SMALL) == []
    model = load_keys(nodes, KEYS)
    estimate = {"up": FIRST_ESTIMATE_S[engine], "drain": FIRST_ESTIMATE_S[engine]}
    where: list[str] = []
    with Writer(nodes) as writer:
        for trial in range(trials):
            up = trial % 2 == 0
            kind = "up" if up else "drain"
            context = f"seed {seed}, trial {trial} ({'3x1 -> 6x1' if up else '6x1 -> 3x1'})"
            if up:
                for n in nodes.nodes[6:]:  # the StatefulSet grows: the pods come back fresh (persistence off)
                    n.start()
                for n in nodes.nodes[6:]:
                    n.wait_ready()
            hosts = write_hosts(nodes, tmp_path / "hosts")
            argv = _command(nodes, kind, hosts)
            delay = rng.uniform(0.0, estimate[kind])
            killed, last = killed_run(nodes, argv, delay, tmp_path / f"trial-{trial}.log")
            where.append(f"{kind}@{delay:.2f}s:{last if killed else 'finished'}")
            # Run again until done: the first rerun must converge.
            if up:
                rerun = reconcile(nodes, *LARGE)
            else:
                rerun = run_drain(nodes, *SMALL, hosts)
            assert rerun.code == 0, f"{context}: rerun after a kill at {delay:.2f}s ({last}) failed:\n" \
                                    f"{rerun.stderr[-3000:]}"
            if not up:
                for n in nodes.nodes[6:]:  # the StatefulSet shrinks
                    n.stop()
                finished = reconcile(nodes, *SMALL)
                assert finished.code == 0, f"{context}: reconcile after the drain failed:\n{finished.stderr[-3000:]}"
            if killed:
                estimate[kind] = 0.7 * estimate[kind] + 0.3 * (delay + rerun.elapsed)
            shape = LARGE if up else SMALL
            problems = wait_healthy(nodes, *shape)
            assert problems == [], f"{context}: {problems}"
            assert read_back(nodes, model) == [], f"{context}: loaded keys lost or changed"
    (tmp_path / "trials.txt").write_text(f"seed {seed}: {len(where)} trials: {', '.join(where)}\n")
    print(f"seed {seed}: {len(where)} trials: {', '.join(where)}")
    assert sum(1 for w in where if not w.endswith("finished")) >= trials // 2, (seed, where)
    assert writer.errors == [], (seed, writer.errors[:5])
    assert writer.ops > 100 and writer.reads_checked > 10
    assert read_back(nodes, writer.model) == [], f"seed {seed}: acknowledged writes lost"
    assert engine == "8" or writer.unknown_node_asks == []
    assert unexecuted_writes_absent(nodes, writer) == []
