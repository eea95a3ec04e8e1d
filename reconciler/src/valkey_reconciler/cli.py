"""The `valkey-reconciler` command: settings → observe → plan → execute one step → observe again."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Sequence, TextIO

import valkey

from valkey_reconciler import kube, logs, roll
from valkey_reconciler.errors import EXIT_FAILED, EXIT_OK, ConfigError, ReconcilerError, StepFailed
from valkey_reconciler.converge import converge
from valkey_reconciler.execute import Executor
from valkey_reconciler.layout import layout
from valkey_reconciler.lock import reconciler_lock
from valkey_reconciler.node import Node, make_nodes
from valkey_reconciler.observe import observe
from valkey_reconciler.plan import normal_node_timeout, plan
from valkey_reconciler.settings import Settings, load
from valkey_reconciler.status import problems, report, table
from valkey_reconciler.steps import Step
from valkey_reconciler.view import ClusterView
from valkey_reconciler.waits import Deadline

SETTLE_POLL_S = 0.1
SETTLE_LOG_INTERVAL_S = 1.0


def _settled(view: ClusterView) -> str | None:
    """Why a view whose plan is empty is not yet a working cluster (gossip still spreading), or None.

    Every node must serve and agree on the slot map; each replica's link to its primary was checked when it
    was attached. That every node has heard of every replica's role is not awaited: Valkey spreads a role
    only in that node's own heartbeats (every cluster-node-timeout/2 per peer), which adds seconds to a
    formation; until then a node only leaves that replica out of the replicas it lists to clients."""
    bad = [n.label() for n in view if n.cluster_state != "ok"]
    if bad:
        return "cluster_state is not ok on " + ", ".join(bad)
    differs = view.disagreement(roles=False)
    return f"the nodes do not yet agree on the slot map: {differs}" if differs else None


def reconcile(settings: Settings, nodes: list[Node], log: Any, out: TextIO) -> int:
    deadline = Deadline(settings.timeout)
    started = time.monotonic()
    placements = kube.placements(settings, log)
    place_map = {i: p for i, p in enumerate(placements) if p is not None}
    executor = Executor(nodes, settings.user, settings.password, log, settings.timeout)
    last_settle_log = 0.0
    masters, replicas = settings.masters, settings.replicas_per_master
    assert masters is not None and replicas is not None

    # The timeout a fast join restores: the setting, else what the nodes ran with when this run first saw them
    # (pinned then: once every primary of a forming cluster is lowered, no node shows the old value).
    node_timeout_ms = settings.node_timeout_ms

    def plan_steps(view: ClusterView) -> Sequence[Step]:
        nonlocal node_timeout_ms
        if node_timeout_ms is None:
            node_timeout_ms = normal_node_timeout(view, None)
        return plan(view, layout(view, masters, replicas, place_map), persistence=settings.persistence,
                    fast_join=settings.fast_join and executor.fast_join, node_timeout_ms=node_timeout_ms)

    def execute(batch: list[Step], view: ClusterView) -> None:
        try:
            executor.run(batch, view)
        except ReconcilerError as exc:
            exc.data.setdefault("step", batch[0].describe())
            raise

    def done(view: ClusterView, taken: int) -> int | None:
        nonlocal last_settle_log
        why = _settled(view)
        if why is None:
            taken += roll.run(settings, nodes, log, out, placements, view=view)  # restart outdated pods, then failback
            elapsed = round(time.monotonic() - started, 3)
            if settings.dry_run:
                print("nothing to do: the cluster already matches the desired layout", file=out)
            if taken == 0:
                log.info("reconcile_noop", message="cluster already converged; no step taken",
                         nodes=len(view), elapsed_s=elapsed)
            log.info("reconcile_finished", steps=taken, nodes=len(view), elapsed_s=elapsed,
                     masters=masters, replicas_per_master=replicas)
            return EXIT_OK
        if time.monotonic() - last_settle_log >= SETTLE_LOG_INTERVAL_S:
            log.info("settle_waiting", reason=why)
            last_settle_log = time.monotonic()
        if deadline.expired():
            raise StepFailed(f"the plan is complete but the cluster did not settle within "
                             f"{settings.timeout:.0f}s: {why}")
        time.sleep(SETTLE_POLL_S)
        return None

    return converge(observe=lambda: observe(nodes, deadline.remaining(), placements, log), plan=plan_steps,
                    execute=execute, done=done, executor=executor, deadline=deadline, timeout=settings.timeout,
                    dry_run=settings.dry_run, log=log, out=out)


def status(settings: Settings, nodes: list[Node], log: Any, out: TextIO) -> int:
    view = observe(nodes, settings.timeout, None, log)
    rep = report(view, settings.replicas_per_master)
    if settings.json:
        print(json.dumps(rep, indent=2, sort_keys=True), file=out)
    else:
        print(table(rep), file=out)
    if settings.check and problems(view, settings.replicas_per_master):
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        settings = load(argv)
    except ConfigError as exc:
        print(f"valkey-reconciler: bad settings: {exc}; nothing was changed", file=sys.stderr)
        return exc.exit_code
    logs.configure(settings.log_format, secrets=(settings.password,))
    log = logs.get().bind(command=settings.command)
    nodes = make_nodes(settings)
    try:
        if settings.command == "status":
            return status(settings, nodes, log, out)
        # Two reconcilers never act at once: a hook run waits, a scheduled (--if-idle) run steps aside.
        with reconciler_lock(settings, log) as act:
            if not act:
                return EXIT_OK
            if settings.command == "drain":
                from valkey_reconciler import drain  # finds the pods beyond the new size itself

                return drain.run(settings, log, out, argv)
            return reconcile(settings, nodes, log, out)
    except ReconcilerError as exc:
        log.error(f"{settings.command}_failed", error=str(exc), error_type=type(exc).__name__,
                  **{k: v for k, v in exc.data.items() if k not in ("error",)})
        print(f"valkey-reconciler: {settings.command} failed: {logs.scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except valkey.exceptions.ValkeyError as exc:
        # A node went away or refused mid-step: the next run re-observes and plans again.
        text = logs.scrub(f"{type(exc).__name__}: {exc}")
        log.error(f"{settings.command}_failed", error=text, error_type=type(exc).__name__)
        print(f"valkey-reconciler: {settings.command} failed: {text}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("valkey-reconciler: interrupted; the next run continues from the observed state", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for node in nodes:
            node.close()


if __name__ == "__main__":
    raise SystemExit(main())
