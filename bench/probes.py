"""Measurements of Valkey itself that bound what any tool can reach (cited in docs/benchmarks.md).

    .venv/bin/python bench/probes.py gossip --nodes 100        # how long until every node knows every other
    .venv/bin/python bench/probes.py migrate-to-failing-target  # does atomic migration wait for the target?
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from valkey.crc import key_slot  # noqa: E402

POLL_SECONDS = 0.05
PROBE_TIMEOUT_SECONDS = 120.0
MEET_THREADS = 16
MOVED_SLOTS = 100  # slots 0-99, moved to the new node


def _known(client) -> int:
    """Nodes this node knows with a finished handshake (CLUSTER NODES as parsed by valkey-py)."""
    return sum(1 for v in client.execute_command("CLUSTER NODES").values() if "handshake" not in v.get("flags", ""))


def gossip(args) -> None:
    """Fresh nodes met three ways; time until each node knows all the others (no slots assigned)."""
    work = harness.workdir()
    for mode in ("from-one-node", "both-ways", "full-mesh"):
        nodes = harness.start_nodes(work, harness.FIRST_BENCH_CLUSTER, args.nodes, args.engine)
        clients = [n.client() for n in nodes.nodes]
        try:
            started = time.monotonic()
            first = nodes.nodes[0]
            if mode == "full-mesh":
                def meet_later(i: int) -> None:
                    pipe = clients[i].pipeline(transaction=False)
                    for other in nodes.nodes[i + 1:]:
                        pipe.execute_command("CLUSTER", "MEET", other.ip, other.port)
                    pipe.execute()
                with ThreadPoolExecutor(MEET_THREADS) as pool:
                    list(pool.map(meet_later, range(args.nodes)))
            else:
                pipe = clients[0].pipeline(transaction=False)
                for other in nodes.nodes[1:]:
                    pipe.execute_command("CLUSTER", "MEET", other.ip, other.port)
                pipe.execute()
                if mode == "both-ways":
                    for client in clients[1:]:
                        client.execute_command("CLUSTER", "MEET", first.ip, first.port)
            sent = time.monotonic() - started
            while min(_known(c) for c in clients) < args.nodes:
                if time.monotonic() - started > PROBE_TIMEOUT_SECONDS:
                    raise SystemExit(f"{mode}: not every node knows every other after {PROBE_TIMEOUT_SECONDS:.0f} s")
                time.sleep(POLL_SECONDS)
            print(f"{args.nodes} nodes, MEET {mode}: MEETs sent in {sent:.2f} s, every node knows every other "
                  f"after {time.monotonic() - started:.2f} s")
        finally:
            for client in clients:
                client.close()
            nodes.stop_all()
    shutil.rmtree(work, ignore_errors=True)


def migrate_to_failing_target(args) -> None:
    """3 primaries; a fresh node is met and, as soon as it knows the slot owners (so still inside its rejoin
    delay), CLUSTER MIGRATESLOTS moves slots 0-99 to it. Prints the job's end and what the target answers."""
    work = harness.workdir()
    nodes = harness.start_nodes(work, harness.FIRST_BENCH_CLUSTER, 4, "9")
    try:
        harness.run_reconciler(nodes, 3, 0, count=3)
        harness.wait_converged(nodes, 3, 0, count=3)
        source, target = nodes.nodes[0].client(), nodes.nodes[3].client()
        key = next(k for k in (f"k{i}" for i in range(100_000)) if key_slot(k.encode()) < MOVED_SLOTS)
        source.set(key, "v")
        target_id = target.execute_command("CLUSTER MYID")
        source.execute_command("CLUSTER", "MEET", nodes.nodes[3].ip, nodes.nodes[3].port)
        started = time.monotonic()
        while sum(1 for v in target.execute_command("CLUSTER NODES").values()
                  if v.get("slots") and "handshake" not in v.get("flags", "")) < 3:
            time.sleep(0.01)
        source.execute_command("CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", 0, MOVED_SLOTS - 1, "NODE", target_id)
        while True:
            jobs = source.execute_command("CLUSTER GETSLOTMIGRATIONS")
            job = jobs[0] if jobs else None
            state = (dict(zip(job[::2], job[1::2])) if isinstance(job, list) else job or {}).get("state")
            if state in ("success", "failed", "cancelled"):
                break
            time.sleep(0.01)
        cluster_state = target.execute_command("CLUSTER INFO")["cluster_state"]
        try:
            answer = f"GET -> {target.get(key)!r}"
        except Exception as exc:  # the point of the probe: what a client redirected there gets
            answer = f"GET -> {type(exc).__name__}: {exc}"
        print(f"job ended {state} {time.monotonic() - started:.2f} s after the meet; target cluster_state "
              f"{cluster_state}; {answer}")
    finally:
        nodes.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("gossip")
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--engine", choices=("9", "8"), default="9")
    sub.add_parser("migrate-to-failing-target")
    args = parser.parse_args()
    {"gossip": gossip, "migrate-to-failing-target": migrate_to_failing_target}[args.probe](args)


if __name__ == "__main__":
    main()
