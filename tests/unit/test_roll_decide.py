"""The roll's pure decision (valkey_reconciler.roll.decide): replicas first, failover before each primary, a
replica-less shard restarted alone only when that loses nothing or is allowed, waits while pods or the cluster
are not ready, failback to home ordinals — and a whole roll driven through the planner's simulator."""

from __future__ import annotations

import dataclasses

import pytest

from planner_sim import apply, built, moved_primaries
from valkey_reconciler import roll
from valkey_reconciler.errors import ConfigError
from valkey_reconciler.layout import layout
from valkey_reconciler.pods import ON_DELETE, ROLLING_UPDATE, PodInfo, PodSnapshot, SetInfo
from valkey_reconciler.roll import Converge, Done, Failover, Policy, Refuse, Restart, Wait, decide
from valkey_reconciler.steps import Failover as FailoverStep

OLD, NEW = "rev-old", "rev-new"
DURABLE = Policy(persistence="rdb,aof")
CACHE = Policy(persistence="")


def snapshot(view, revisions: dict[int, str] | None = None, strategy: str = ON_DELETE, ready=True, **sts) -> PodSnapshot:
    revisions = revisions if revisions is not None else {n.ordinal: OLD for n in view}
    pods = tuple(PodInfo(name=f"valkey-t-{o}", ordinal=o, revision=r, uid=f"uid-{o}-{r}", ready=ready)
                 for o, r in sorted(revisions.items()))
    fields = dict(name="valkey-t", uid="sts", strategy=strategy, replicas=len(view), update_revision=NEW,
                  current_revision=OLD, updated_replicas=sum(1 for r in revisions.values() if r == NEW),
                  ready_replicas=len(view) if ready else 0, generation=2, observed_generation=2)
    fields.update(sts)
    return PodSnapshot(SetInfo(**fields), pods)


def next_action(view, snap, policy=DURABLE, masters=3, replicas=1):
    return decide(view, layout(view, masters, replicas), snap, policy)


def simulate_roll(view, policy=DURABLE, masters=3, replicas=1, max_actions=40):
    """Run decide → act until Done: a restart puts the pod at the new revision (persistence on: same node,
    back synced), a failover is the planner simulator's manual failover. Returns the actions and end view."""
    revisions = {n.ordinal: OLD for n in view}
    actions = []
    for _ in range(max_actions):
        action = next_action(view, snapshot(view, revisions), policy, masters, replicas)
        if isinstance(action, Done):
            return actions, view, revisions
        assert not isinstance(action, (Wait, Refuse, Converge)), action
        actions.append(action)
        if isinstance(action, Restart):
            assert view.by_ordinal(action.ordinal).is_replica or action.alone, "a primary with a replica restarted"
            revisions[action.ordinal] = NEW
        else:
            view = apply(view, FailoverStep(action.ordinal, action.node_id, action.primary_ordinal, action.primary_id))
    raise AssertionError(f"no end after {max_actions} actions: {actions[-4:]}")


def test_3x1_roll_restarts_replicas_first_then_fails_over_before_each_primary_then_fails_back():
    actions, view, revisions = simulate_roll(built(3, 1))
    story = [(type(a).__name__, a.ordinal, getattr(a, "primary_ordinal", None), getattr(a, "purpose", None))
             for a in actions]
    assert story == [
        ("Restart", 3, None, None), ("Restart", 4, None, None), ("Restart", 5, None, None),
        ("Failover", 3, 0, "roll"), ("Restart", 0, None, None),
        ("Failover", 4, 1, "roll"), ("Restart", 1, None, None),
        ("Failover", 5, 2, "roll"), ("Restart", 2, None, None),
        ("Failover", 0, 3, "failback"), ("Failover", 1, 4, "failback"), ("Failover", 2, 5, "failback"),
    ]
    assert set(revisions.values()) == {NEW}
    assert [p.ordinal for p in view.primaries()] == [0, 1, 2]


def test_3x2_failover_picks_the_most_up_to_date_replica():
    view = built(3, 2)
    shard0 = view.replicas_of(view.by_ordinal(0).node_id)
    ahead = max(shard0, key=lambda n: n.ordinal)
    nodes = [dataclasses.replace(n, repl_offset=500 if n.ordinal == ahead.ordinal else 400) if n in shard0 else n
             for n in view]
    view = type(view)(tuple(nodes))
    revisions = {n.ordinal: (NEW if n.is_replica else OLD) for n in view}
    action = next_action(view, snapshot(view, revisions), masters=3, replicas=2)
    assert isinstance(action, Failover) and action.ordinal == ahead.ordinal and action.primary_ordinal == 0


def test_whole_3x2_roll_ends_with_every_pod_new_and_primaries_home():
    actions, view, revisions = simulate_roll(built(3, 2), masters=3, replicas=2)
    assert set(revisions.values()) == {NEW}
    assert sum(isinstance(a, Restart) for a in actions) == 9
    assert [p.ordinal for p in view.primaries()] == [0, 1, 2]


def test_replicaless_shards_with_persistence_are_restarted_alone_and_say_so():
    actions, _, revisions = simulate_roll(built(3, 0), masters=3, replicas=0)
    assert [a.ordinal for a in actions] == [0, 1, 2]
    assert all(isinstance(a, Restart) and a.alone and not a.data_loss for a in actions)
    assert "unavailable" in actions[0].describe()


@pytest.mark.parametrize("persistence", ["", None], ids=["off", "unknown"])
def test_replicaless_shard_without_persistence_is_refused_before_any_restart(persistence):
    view = built(3, 0)
    action = next_action(view, snapshot(view), Policy(persistence=persistence), replicas=0)
    assert isinstance(action, Refuse)
    assert "lose" in action.message and "rollout.allowDataLoss" in action.message
    assert "replicasPerMaster" in action.message and "no pod was restarted" in action.message


def test_replicaless_shard_without_persistence_is_restarted_when_loss_is_allowed():
    view = built(3, 0)
    action = next_action(view, snapshot(view), Policy(persistence="", allow_data_loss=True), replicas=0)
    assert isinstance(action, Restart) and action.alone and action.data_loss
    assert "LOST" in action.describe()


def test_without_persistence_replicas_still_roll():
    view = built(3, 1)
    action = next_action(view, snapshot(view), CACHE)
    assert isinstance(action, Restart) and action.ordinal == 3 and not action.alone


def test_nothing_outdated_and_primaries_home_is_done():
    view = built(3, 1)
    assert isinstance(next_action(view, snapshot(view, {n.ordinal: NEW for n in view})), Done)


def test_failback_without_a_pod_interface_moves_each_primary_home():
    view = moved_primaries(built(3, 1), [3, 4, 5])
    action = next_action(view, None, Policy(persistence="rdb", restart_pods=False))
    assert isinstance(action, Failover) and (action.ordinal, action.primary_ordinal, action.purpose) == (0, 3, "failback")


def test_unknown_revisions_are_never_restarted():
    view = built(3, 1)
    assert isinstance(next_action(view, snapshot(view, {n.ordinal: None for n in view})), Done)


def test_pod_not_ready_or_missing_waits():
    view = built(3, 1)
    assert isinstance(next_action(view, snapshot(view, ready=False)), Wait)
    revisions = {n.ordinal: OLD for n in view if n.ordinal != 4}
    wait = next_action(view, snapshot(view, revisions))
    assert isinstance(wait, Wait) and "ordinal 4" in wait.reason


def test_unsynced_replica_waits_before_anything_is_restarted():
    view = built(3, 1)
    nodes = [dataclasses.replace(n, link_up=False) if n.ordinal == 4 else n for n in view]
    view = type(view)(tuple(nodes))
    wait = next_action(view, snapshot(view))
    assert isinstance(wait, Wait) and "ordinal 4" in wait.reason and "not synced" in wait.reason


def test_nothing_to_restart_or_fail_back_is_done_without_waiting_for_the_cluster_to_settle():
    view = built(3, 1)
    nodes = [dataclasses.replace(n, link_up=False) if n.ordinal == 4 else n for n in view]
    view = type(view)(tuple(nodes))
    assert isinstance(next_action(view, snapshot(view, {n.ordinal: NEW for n in view})), Done)
    assert isinstance(next_action(view, None, Policy(persistence="rdb", restart_pods=False)), Done)


def test_rolling_update_in_progress_waits():
    view = built(3, 1)
    snap = snapshot(view, {n.ordinal: (NEW if n.ordinal == 5 else OLD) for n in view}, strategy=ROLLING_UPDATE)
    wait = next_action(view, snap)
    assert isinstance(wait, Wait) and "RollingUpdate" in wait.reason


def test_topology_not_converged_comes_first():
    view = built(3, 1)
    # ordinal 3 came back as a fresh, lone node (persistence off): the plan re-attaches it before anything else
    fresh = dataclasses.replace(view.by_ordinal(3), node_id="f" * 40, role="primary", primary_id=None, link_up=False,
                                repl_offset=0, keys=0)
    fresh = dataclasses.replace(fresh, known_nodes=(dataclasses.replace(view.by_ordinal(3).known_nodes[0],
                                                                        node_id=fresh.node_id, role="primary"),))
    nodes = [fresh if n.ordinal == 3 else n for n in view]
    action = next_action(type(view)(tuple(nodes)), snapshot(view))
    assert isinstance(action, Converge)


@pytest.mark.parametrize("raw, expected", [("true", True), ("TRUE", True), ("1", True), ("false", False), ("", False)])
def test_allow_data_loss_setting(raw, expected):
    assert roll.allow_data_loss({roll.ALLOW_DATA_LOSS_ENV: raw}) is expected


def test_allow_data_loss_setting_refuses_garbage_naming_the_variable():
    with pytest.raises(ConfigError, match="VALKEY_ROLL_ALLOW_DATA_LOSS must be true or false"):
        roll.allow_data_loss({roll.ALLOW_DATA_LOSS_ENV: "maybe"})
