"""The command line without servers: bad settings exit 2, the console script, batching of steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from valkey_reconciler import cli
from valkey_reconciler.execute import next_batch
from valkey_reconciler.steps import AssignSlots, Meet, MigrateSlots, Replicate, SetConfigEpoch, SetNodeTimeout
from valkey_reconciler.view import SlotRange

RECONCILER = Path(sys.executable).parent / "valkey-reconciler"


def test_bad_settings_exit_2_and_name_the_variable(monkeypatch, capsys):
    monkeypatch.delenv("VALKEY_PASSWORD", raising=False)
    code = cli.main(["reconcile", "--masters", "3", "--replicas-per-master", "0", "--node", "192.0.2.1:6379",
                     "--node", "192.0.2.2:6379", "--node", "192.0.2.3:6379"])
    assert code == 2
    err = capsys.readouterr().err
    assert "VALKEY_PASSWORD" in err and "nothing was changed" in err


def test_the_console_script_is_installed_and_shows_help():
    run = subprocess.run([str(RECONCILER), "reconcile", "--help"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0
    assert "--replicas-per-master" in run.stdout and "--node" in run.stdout and "--dry-run" in run.stdout
    assert "--password" not in run.stdout


R = (SlotRange(0, 9),)


def test_a_batch_joins_steps_of_one_kind_and_disjoint_migrations():
    meets = [Meet(ordinal=i, node_id=f"n{i}", ip=f"10.0.0.{i}", port=6379, via_ordinal=0, via_id="n0")
             for i in (1, 2)]
    assign = AssignSlots(ordinal=0, node_id="n0", ranges=R)
    assert next_batch([*meets, assign]) == meets

    m = lambda s, t: MigrateSlots(source_ordinal=s, source_id=f"n{s}", target_ordinal=t, target_id=f"n{t}", ranges=R)
    plan = [m(0, 6), m(1, 6), m(1, 7), m(2, 7), Replicate(ordinal=8, node_id="n8", primary_ordinal=6,
                                                        primary_id="n6")]
    assert next_batch(plan) == [m(0, 6), m(1, 7)]

    reps = [Replicate(ordinal=3, node_id="n3", primary_ordinal=0, primary_id="n0"),
            Replicate(ordinal=3, node_id="n3", primary_ordinal=1, primary_id="n1")]
    assert next_batch(reps) == reps[:1]


def test_a_formation_runs_as_one_batch_and_a_restore_waits_for_the_next_observation():
    lower = SetNodeTimeout(ordinal=0, node_id="n0", timeout_ms=500, lower=True)
    epoch = SetConfigEpoch(ordinal=0, node_id="n0", epoch=1)
    assign = AssignSlots(ordinal=0, node_id="n0", ranges=R)
    meet = Meet(ordinal=1, node_id="n1", ip="10.0.0.1", port=6379, via_ordinal=0, via_id="n0")
    rep = Replicate(ordinal=1, node_id="n1", primary_ordinal=0, primary_id="n0")
    restore = SetNodeTimeout(ordinal=0, node_id="n0", timeout_ms=5000, lower=False, await_ok=True)
    formation = [lower, epoch, assign, meet, rep, restore]
    assert next_batch(formation) == formation
    # a restored timeout chains into nothing; migrations never chain
    mig = MigrateSlots(source_ordinal=0, source_id="n0", target_ordinal=1, target_id="n1", ranges=R)
    assert next_batch([restore, meet]) == [restore]
    assert next_batch([meet, mig]) == [meet]
    assert next_batch([rep, assign]) == [rep]
