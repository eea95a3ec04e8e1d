"""Growing a loaded cluster while a cluster-aware client writes and reads: nothing acknowledged is lost."""

from __future__ import annotations

import pytest

from .helpers import (
    FAST_OVERRIDES, Writer, fast_join_steps, load_keys, node_timeouts, read_back, reconcile, unexecuted_writes_absent,
    wait_healthy,
)

KEYS = 200_000
GROWTH = [((3, 0), (6, 0)), ((3, 1), (5, 1))]


@pytest.mark.slow
@pytest.mark.parametrize("before,after", GROWTH, ids=[f"{a[0]}x{a[1]}-to-{b[0]}x{b[1]}" for a, b in GROWTH])
def test_growing_under_load_keeps_every_acknowledged_write_and_balances_slots(node_set, engine, before, after):
    nodes = node_set(after[0] * (1 + after[1]), engine=engine, persistence="", overrides=FAST_OVERRIDES)
    formed = reconcile(nodes, *before)
    assert formed.code == 0, formed.stderr
    assert wait_healthy(nodes, *before) == []
    model = load_keys(nodes, KEYS)

    with Writer(nodes) as writer:
        grown = reconcile(nodes, *after)
    assert grown.code == 0, grown.stderr
    names = grown.event_names()
    assert "migration_progress" in names and "reconcile_finished" in names
    # The new primaries joined fast and were back at the cluster's timeout before receiving slots.
    new_primaries = range(before[0] * (1 + before[1]), before[0] * (1 + before[1]) + after[0] - before[0])
    assert {o for o, lowered in fast_join_steps(grown) if lowered} <= set(new_primaries)
    assert node_timeouts(nodes) == {n.ordinal: 2000 for n in nodes.nodes}

    assert writer.errors == [], writer.errors[:5]
    assert writer.ops > 100 and writer.reads_checked > 10
    assert wait_healthy(nodes, *after) == []
    assert read_back(nodes, model) == []
    assert read_back(nodes, writer.model) == []
    # valkey-py fails an ASK to a node it has not discovered (see helpers.Writer; 8.x legacy engine only).
    # The legacy engine opens slots toward a new primary one at a time at first, so the client nearly always
    # meets it by a MOVED first (with 256-slot rounds every 8.x run had one such failure; since, 1 in ~20
    # runs, under a full suite's load). No server-side order can rule it out, so on 8.x it is recorded and
    # the failed writes are proven never executed; on 9.x (no ASK at all) there must be none.
    assert engine == "8" or writer.unknown_node_asks == []
    assert unexecuted_writes_absent(nodes, writer) == []
