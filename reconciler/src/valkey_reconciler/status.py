"""The health report of an observed cluster: per-shard table, JSON, and the checks behind `status --check`."""

from __future__ import annotations

from typing import Any

from valkey_reconciler.view import FAILED, TOTAL_SLOTS, ClusterView, count_slots, format_ranges

MB = 1024 * 1024


def report(view: ClusterView, replicas_per_master: int | None) -> dict[str, Any]:
    shards = []
    for p in sorted((n for n in view if n.is_primary), key=lambda n: n.ordinal):
        shards.append({
            "primary": {"ordinal": p.ordinal, "address": p.address, "node_id": p.node_id},
            "slots": p.slot_count, "ranges": format_ranges(p.slots), "keys": p.keys,
            "used_memory": p.used_memory, "maxmemory": p.maxmemory, "cluster_state": p.cluster_state,
            "replicas": [{"ordinal": r.ordinal, "address": r.address, "node_id": r.node_id,
                          "link": "up" if r.link_up else "down", "offset": r.repl_offset, "keys": r.keys,
                          "cluster_state": r.cluster_state}
                         for r in sorted(view.replicas_of(p.node_id), key=lambda r: r.ordinal)],
        })
    orphans = [{"ordinal": n.ordinal, "address": n.address, "primary_id": n.primary_id}
               for n in view if n.is_replica and view.by_id(n.primary_id) is None]
    issues = problems(view, replicas_per_master)
    return {"healthy": not issues, "problems": issues, "shards": shards, "orphan_replicas": orphans,
            "slots_covered": count_slots(view.owned_ranges()), "nodes": len(view)}


def problems(view: ClusterView, replicas_per_master: int | None) -> list[str]:
    """Every reason the cluster is not healthy; empty means healthy."""
    out = []
    for n in view:
        if n.cluster_state != "ok":
            out.append(f"{n.label()} reports cluster_state {n.cluster_state}")
    covered = count_slots(view.owned_ranges())
    if covered != TOTAL_SLOTS:
        out.append(f"{TOTAL_SLOTS - covered} of {TOTAL_SLOTS} slots are not covered "
                   f"({format_ranges(view.unowned_ranges())})")
    for n, o in view.open_slots():
        out.append(f"slot {o.slot} is open ({o.state}) on {n.label()}")
    for job in view.active_migrations():
        out.append(f"an atomic migration of {format_ranges(job.ranges)} is in flight ({job.state})")
    differs = view.disagreement(roles=False)
    if differs:
        out.append(f"the nodes do not agree on the slot map: {differs}")
    for node_id, reports in view.foreign_peers().items():
        # A pod's old identity (it came back as a new node) or a node that is none of the pods.
        state = "failed" if all(p.health == FAILED for p in reports) else "alive"
        out.append(f"node {node_id[:8]} ({state}) is known to the cluster but is none of the pods; "
                   "`valkey-reconciler reconcile` forgets an old identity or names a stranger")
    if replicas_per_master is not None:
        for p in view.primaries():
            # Offset 0 counts as synced only while the primary has never had a write either.
            linked = [r for r in view.replicas_of(p.node_id)
                      if r.link_up and (r.repl_offset > 0 or p.repl_offset == 0)]
            if len(linked) != replicas_per_master:
                out.append(f"primary {p.label()} has {len(linked)} linked replica(s), "
                           f"{replicas_per_master} wanted")
    return out


def table(rep: dict[str, Any]) -> str:
    lines = [f"{'shard':<6}{'primary':<28}{'slots':>7}{'keys':>11}{'memory':>11}  replicas (link)"]
    for i, s in enumerate(rep["shards"]):
        p = s["primary"]
        reps = ", ".join(f"{r['ordinal']} {r['address']} ({r['link']})" for r in s["replicas"]) or "-"
        lines.append(f"{i:<6}{str(p['ordinal']) + ' ' + p['address']:<28}{s['slots']:>7}{s['keys']:>11}"
                     f"{s['used_memory'] / MB:>9.1f}MB  {reps}")
    for o in rep["orphan_replicas"]:
        lines.append(f"replica ordinal {o['ordinal']} {o['address']} follows an unknown primary "
                     f"{(o['primary_id'] or '?')[:8]}")
    lines.append(f"slots covered: {rep['slots_covered']}/{TOTAL_SLOTS}; nodes: {rep['nodes']}; "
                 f"{'healthy' if rep['healthy'] else 'NOT healthy'}")
    lines += [f"  - {p}" for p in rep["problems"]]
    return "\n".join(lines)
