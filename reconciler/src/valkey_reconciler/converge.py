"""The observe → plan → execute-one-batch → observe-again loop shared by `reconcile` and `drain`."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TextIO

from valkey_reconciler.errors import EXIT_OK, StepFailed
from valkey_reconciler.execute import StaleStep, next_batch
from valkey_reconciler.steps import Step
from valkey_reconciler.view import ClusterView
from valkey_reconciler.waits import Deadline

# The same step planned again this many times in a row means it does not take effect: stop.
MAX_REPEATS = 3


def print_plan(title: str, steps: Sequence[Step], out: TextIO) -> None:
    print(f"{title} ({len(steps)} step(s)); --dry-run: nothing was changed", file=out)
    for i, step in enumerate(steps, 1):
        print(f"{i:>4}. {step.describe()}", file=out)


def converge(*, observe: Callable[[], ClusterView], plan: Callable[[ClusterView], Sequence[Step]],
             execute: Callable[[list[Step], ClusterView], None], done: Callable[[ClusterView, int], int | None],
             executor: Any, deadline: Deadline, timeout: float, dry_run: bool, log: Any, out: TextIO,
             title: str = "plan", view: ClusterView | None = None) -> int:
    """Run batches until `plan` returns nothing and `done(view, steps_taken)` returns an exit code (None: observe
    and ask again). `view` is the first observation if the caller already has one. A step `execute` finds
    stale is skipped and the cluster observed again; the same batch planned more than MAX_REPEATS times in a
    row, or the deadline passing with steps left, raises StepFailed. With `dry_run` the first plan is printed
    under `title` and nothing is changed."""
    taken = 0
    last, repeats = None, 0
    while True:
        if view is None:
            view = observe()
        steps = plan(view)
        if not steps:
            code = done(view, taken)
            if code is not None:
                return code
            view = None
            continue
        log.info("plan_computed", steps=len(steps), plan=[s.describe() for s in steps])
        if dry_run:
            print_plan(title, steps, out)
            return EXIT_OK
        if deadline.expired():
            raise StepFailed(f"timed out after {timeout:.0f}s with {len(steps)} step(s) left; "
                             f"next: {steps[0].describe()}")
        batch = next_batch(steps)
        key = tuple(s.describe() for s in batch)
        repeats = repeats + 1 if key == last else 1
        last = key
        if repeats > MAX_REPEATS:
            raise StepFailed(f"step did not take effect after {MAX_REPEATS} attempts: {batch[0].describe()}",
                             kind=batch[0].kind)
        executor.timeout = max(1.0, deadline.remaining())
        try:
            execute(batch, view)  # logs step_started / step_finished per run of one kind
        except StaleStep as exc:
            log.info("step_skipped", kind=batch[0].kind, reason=str(exc))
        else:
            taken += len(batch)
        view = None
