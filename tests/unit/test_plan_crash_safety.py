"""Crash safety of the plan itself: after any prefix of a plan (and a migration cut short), re-planning
reaches the same final layout, and the observe → plan → step loop terminates without repeating a step."""

import random

import pytest

from planner_sim import apply, built, converge, fresh_view, grow, interrupt, shape
from valkey_reconciler.layout import layout
from valkey_reconciler.plan import plan
from valkey_reconciler.steps import MigrateSlots
from valkey_reconciler.view import Placement

SEED = 20240611


def _places(count, nodes):
    return {o: Placement(node=f"k{o % nodes}", zone=f"z{o % 2}") for o in range(count)}


def _scenarios():
    """(name, view, masters, replicas, placements): fresh formations and every kind of existing change."""
    yield "fresh 1x0", fresh_view(1), 1, 0, None
    yield "fresh 3x1", fresh_view(6), 3, 1, None
    yield "fresh 2x2", fresh_view(6), 2, 2, None
    p = _places(9, 3)
    yield "fresh 3x2 on 3 k8s nodes", fresh_view(9, p), 3, 2, p
    yield "1x0 to 3x0", grow(built(1, 0), 2), 3, 0, None
    yield "3x0 to 6x0", grow(built(3, 0), 3), 6, 0, None
    yield "3x0 to 5x0", grow(built(3, 0), 2), 5, 0, None
    yield "3x1 to 5x1", grow(built(3, 1), 4), 5, 1, None
    p = _places(9, 3)
    yield "3x1 to 3x2 on 3 k8s nodes", grow(built(3, 1, p), 3, p), 3, 2, p
    yield "2x2 to 3x1", built(2, 2), 3, 1, None
    yield "4x0 to 2x1", built(4, 0), 2, 1, None
    yield "2x1 to 4x1", grow(built(2, 1), 4), 4, 1, None


SCENARIOS = list(_scenarios())


@pytest.mark.parametrize("name,view,masters,replicas,places", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_every_prefix_replans_to_the_same_layout(name, view, masters, replicas, places):
    rng = random.Random(f"{SEED}-{name}")
    target = layout(view, masters, replicas, places)
    steps = plan(view, target)
    assert steps, "scenario must need work"

    # The plan applied in order, without re-observing, reaches the layout.
    state = view
    for s in steps:
        state = apply(state, s)
    assert shape(state) == target.shape()

    state = view
    for k in range(len(steps) + 1):
        cases = [state]
        if k < len(steps) and isinstance(steps[k], MigrateSlots):
            # cut the migration short: legacy (part moved, next slot open) and atomic (job still running)
            cases.append(interrupt(state, steps[k], rng.random(), atomic=False))
            cases.append(interrupt(state, steps[k], rng.random(), atomic=True))
        for start in cases:
            assert layout(start, masters, replicas, places).shape() == target.shape(), f"layout moved after {k} steps"
            final, done = converge(start, masters, replicas, places)
            assert shape(final) == target.shape(), f"after {k} steps of {name}"
            assert len(done) == len(set(done)), "a step was repeated"
            assert len(done) <= len(steps) - k + 2
        if k < len(steps):
            state = apply(state, steps[k])


def test_random_partial_orders_of_independent_migrations_converge():
    """Migrations between disjoint pairs may finish in any order; every order converges to the layout."""
    view = grow(built(3, 1), 6)
    target = layout(view, 6, 1)
    steps = plan(view, target)
    migrations = [s for s in steps if isinstance(s, MigrateSlots)]
    rng = random.Random(SEED)
    last_meet = max(i for i, s in enumerate(steps) if s.kind == "meet")
    for _ in range(5):
        state = view
        for i, s in enumerate(steps):
            if not isinstance(s, MigrateSlots):
                state = apply(state, s)
                if i == last_meet:
                    for m in rng.sample(migrations, len(migrations)):
                        state = apply(state, m)
        final, _ = converge(state, 6, 1)
        assert shape(final) == target.shape()


# -- drain ------------------------------------------------------------------------------------------------


def _drain_scenarios():
    """(name, view, masters, replicas): every scale-down of the drain issue and the mixed ones."""
    from planner_sim import moved_primaries

    yield "6x0 to 3x0", built(6, 0), 3, 0
    yield "4x1 to 2x1, primaries on high ordinals", moved_primaries(built(4, 1), [4, 5, 6, 7]), 2, 1
    yield "4x1 to 2x1 in place", built(4, 1), 2, 1
    yield "3x2 to 3x1", built(3, 2), 3, 1
    yield "5x1 to 1x0", built(5, 1), 1, 0
    yield "2x3 to 3x1", built(2, 3), 3, 1
    yield "6x0 to 2x1", built(6, 0), 2, 1
    yield "3x1 to 2x1, one primary moved high", moved_primaries(built(3, 1), [5]), 2, 1


DRAIN_SCENARIOS = list(_drain_scenarios())


def _unprotected(view, size):
    """Slot-owning primaries without any replica although a surviving replica exists somewhere."""
    return [p.ordinal for p in view.primaries() if not view.replicas_of(p.node_id)]


@pytest.mark.parametrize("name,view,masters,replicas", DRAIN_SCENARIOS, ids=[s[0] for s in DRAIN_SCENARIOS])
def test_every_drain_prefix_replans_to_the_same_end_state(name, view, masters, replicas):
    from planner_sim import converge_drain, shrink
    from valkey_reconciler.plan import plan_drain
    from valkey_reconciler.steps import RemoveNode

    rng = random.Random(f"{SEED}-drain-{name}")
    steps = plan_drain(view, masters, replicas)
    assert steps, "scenario must need work"
    size = masters * (1 + replicas)
    target, _ = converge_drain(view, masters, replicas)
    end = shape(target)

    # The plan applied in order, without re-observing, reaches the same end state.
    state = view
    for s in steps:
        state = apply(state, s)
    assert shape(state) == end

    state = view
    for k in range(len(steps) + 1):
        cases = [state]
        if k < len(steps) and isinstance(steps[k], (MigrateSlots, RemoveNode)):
            cases.append(interrupt(state, steps[k], rng.random(), atomic=False))
            if isinstance(steps[k], MigrateSlots):
                cases.append(interrupt(state, steps[k], rng.random(), atomic=True))
        for start in cases:
            final, done = converge_drain(start, masters, replicas)
            assert shape(final) == end, f"after {k} steps of {name}"
            assert len(done) == len(set(done)), "a step was repeated"
            assert len(done) <= len(steps) - k + 2
            assert plan_drain(final, masters, replicas) == (), "a second drain is not a no-op"
            # the post-upgrade reconcile, on the pods left after the shrink, reaches the layout
            survivors = shrink(final, size)
            done_view, _ = converge(survivors, masters, replicas)
            assert shape(done_view) == layout(survivors, masters, replicas).shape()
        if k < len(steps):
            before = _unprotected(state, size) if replicas else []
            state = apply(state, steps[k])
            if replicas:
                # no step leaves a primary without a replica that had one before (protection never drops)
                assert set(_unprotected(state, size)) <= set(before), f"step {k} of {name}: {steps[k]}"
