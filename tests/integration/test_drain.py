"""Scale-down with real servers: `drain` (new size, before the shrink) under a live cluster client, the doomed
processes stopped, then `reconcile` with the new size; every acknowledged write must read back."""

from __future__ import annotations

import pytest

from .drain_helpers import (
    KEYS,
    WRITER_MIN_OPS,
    fail_over_to,
    myid,
    run_drain,
    survivor_problems,
    wait_ops,
    wait_survivors_healthy,
    write_hosts,
)
from .helpers import FAST_OVERRIDES, Writer, load_keys, read_back, reconcile, wait_healthy

# (start masters, start replicas, end masters, end replicas, replica ordinals failed over to beforehand)
TRANSITIONS = {
    "6x0-3x0": (6, 0, 3, 0, ()),
    # every primary moved onto the high ordinals: the two surviving shards must fail over first
    "4x1-2x1-primaries-high": (4, 1, 2, 1, (4, 5, 6, 7)),
    "3x2-3x1": (3, 2, 3, 1, ()),
    "3x1-2x2": (3, 1, 2, 2, ()),
    "5x1-1x0": (5, 1, 1, 0, ()),
}
# Every transition on both engines: 9.1.2 (atomic slot migration) and 8.1.8 (legacy SETSLOT + MIGRATE).
ON_8 = tuple(TRANSITIONS)
CASES = [pytest.param("9", name, id=f"valkey9-{name}") for name in TRANSITIONS] + [
    pytest.param("8", name, id=f"valkey8-{name}") for name in ON_8
]


@pytest.mark.parametrize("engine,name", CASES)
def test_scale_down_loses_no_acknowledged_write(node_set, tmp_path, engine, name):
    m0, r0, m1, r1, moved = TRANSITIONS[name]
    nodes = node_set(m0 * (1 + r0), engine=engine, persistence="", overrides=FAST_OVERRIDES)
    formed = reconcile(nodes, m0, r0)
    assert formed.code == 0, formed.stderr
    assert wait_healthy(nodes, m0, r0) == []
    if moved:
        fail_over_to(nodes, moved)
    loaded = load_keys(nodes, KEYS)
    hosts = write_hosts(nodes, tmp_path / "hosts")
    size = m1 * (1 + r1)
    doomed = list(range(size, len(nodes.nodes)))
    doomed_ids = [myid(nodes.nodes[o]) for o in doomed]

    with Writer(nodes) as writer:
        wait_ops(writer, WRITER_MIN_OPS)
        drained = run_drain(nodes, m1, r1, hosts)
        assert drained.code == 0, drained.stderr
        if doomed:
            assert "drain_finished" in drained.event_names(), drained.stderr
        else:
            assert "drained" not in drained.stdout and "nothing to drain" in drained.stdout
        for o in doomed:  # the StatefulSet shrinks
            nodes.nodes[o].stop()
        wait_ops(writer, WRITER_MIN_OPS)
        finished = reconcile(nodes, m1, r1)
        assert finished.code == 0, finished.stderr
        assert wait_survivors_healthy(nodes, m1, r1, doomed_ids) == []
        wait_ops(writer, WRITER_MIN_OPS)

    assert writer.errors == [], writer.errors[:5]
    assert writer.unknown_node_asks == []  # slots only move to surviving primaries, which the client knows
    assert read_back(nodes, loaded) == []
    assert read_back(nodes, writer.model) == []
    assert survivor_problems(nodes, m1, r1, doomed_ids) == []

    again = run_drain(nodes, m1, r1, write_hosts(nodes, tmp_path / "hosts", range(size)))
    assert again.code == 0, again.stderr
    assert "nothing to drain" in again.stdout and "step_started" not in again.event_names()
