"""A legacy migration left half done (slot open, some keys moved) is finished toward the importing node."""

from __future__ import annotations

from valkey.crc import key_slot

from .helpers import FAST_OVERRIDES, admin, read_back, reconcile, wait_healthy

SLOT = 100
KEYS_IN_SLOT = 300
MOVED_BY_HAND = 100


def keys_for_slot(slot: int, count: int) -> list[str]:
    out, i = [], 0
    while len(out) < count:
        key = f"h3:{i}"
        if key_slot(key.encode()) == slot:
            out.append(key)
        i += 1
    return out


def test_an_interrupted_legacy_migration_is_finished_toward_the_importing_node(node_set, engine):
    nodes = node_set(3, engine=engine, persistence="", overrides=FAST_OVERRIDES)
    assert reconcile(nodes, 3, 0).code == 0
    assert wait_healthy(nodes, 3, 0) == []
    owner, importer = nodes.nodes[0], nodes.nodes[1]  # slot 100 is in ordinal 0's first range
    keys = keys_for_slot(SLOT, KEYS_IN_SLOT)
    model = {k: f"value-{k}" for k in keys}
    with admin(owner) as src, admin(importer) as dst:
        for key, value in model.items():
            src.set(key, value)
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        # What an interrupted `valkey-cli --cluster reshard` leaves behind (field notes H3).
        dst.execute_command("CLUSTER", "SETSLOT", SLOT, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", SLOT, "MIGRATING", dst_id)
        src.execute_command("MIGRATE", importer.ip, importer.port, "", 0, 5000, "AUTH2", "admin",
                            nodes.passwords.admin, "KEYS", *keys[:MOVED_BY_HAND])

    run = reconcile(nodes, 3, 0)
    assert run.code == 0, run.stderr
    assert any("close open slot 100" in s for e in run.events() if e["event"] == "step_started"
               for s in [e["step"]])
    assert wait_healthy(nodes, 3, 0) == []
    with admin(importer) as dst, admin(owner) as src:
        assert dst.execute_command("CLUSTER", "COUNTKEYSINSLOT", SLOT) == KEYS_IN_SLOT
        assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", SLOT) == 0
    assert read_back(nodes, model) == []
