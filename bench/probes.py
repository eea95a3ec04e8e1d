"""Measurements of Valkey itself that bound what any tool can reach (cited in docs/benchmarks.md).

    .venv/bin/python bench/probes.py gossip --nodes 100        # how long until every node knows every other
    .venv/bin/python bench/probes.py migrate-to-failing-target  # does atomic migration wait for the target?
    .venv/bin/python bench/probes.py formation-floor --masters 50  # our formation by hand, no tool overhead
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
from valkey.exceptions import ResponseError  # noqa: E402
from valkey_reconciler.plan import JOIN_NODE_TIMEOUT_MS, PROJECT_NODE_TIMEOUT_MS, join_node_timeout  # noqa: E402
from valkey_reconciler.view import TOTAL_SLOTS  # noqa: E402

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


def formation_floor(args) -> None:
    """valkey-reconciler's formation sequence done by hand, with no observation and no tool start-up: lowered
    timeouts, epochs and slots on the lone primaries (pipelined), MEETs (anchor to every node, each primary to
    its replica), REPLICATE, then the 500 ms moment once a primary sees every slot served. Prints when every
    primary saw all 16384 slots served (gossip) and when the cluster was fully converged (bench criterion)."""
    work = harness.workdir()
    masters, size = args.masters, 2 * args.masters
    lowered = join_node_timeout(masters, size, PROJECT_NODE_TIMEOUT_MS)
    for _ in range(args.repeats):
        nodes = harness.start_nodes(work, harness.FIRST_BENCH_CLUSTER, size, args.engine)
        clients = [n.client() for n in nodes.nodes]
        pool = ThreadPoolExecutor(MEET_THREADS)
        try:
            started = time.monotonic()
            ids = list(pool.map(lambda c: c.execute_command("CLUSTER MYID"), clients))
            share = TOTAL_SLOTS // masters

            def prepare(i: int) -> None:
                pipe = clients[i].pipeline(transaction=False)
                pipe.execute_command("CONFIG", "SET", "cluster-node-timeout", lowered)
                pipe.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                last = TOTAL_SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
                pipe.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
                pipe.execute()

            list(pool.map(prepare, range(masters)))

            def meet(i: int) -> None:
                pipe = clients[i].pipeline(transaction=False)
                others = nodes.nodes[1:] if i == 0 else [nodes.nodes[i + masters]] if i < masters else []
                for other in others:
                    pipe.execute_command("CLUSTER", "MEET", other.ip, other.port)
                pipe.execute()

            list(pool.map(meet, range(masters)))

            def replicate(i: int) -> None:
                while True:
                    try:
                        clients[i].execute_command("CLUSTER", "REPLICATE", ids[i - masters])
                        return
                    except ResponseError as exc:
                        if "Unknown node" not in str(exc) or time.monotonic() - started > PROBE_TIMEOUT_SECONDS:
                            raise
                        time.sleep(POLL_SECONDS)

            list(pool.map(replicate, range(masters, size)))
            serving: set[int] = set()
            covered_at = None
            while len(serving) < masters:
                infos = list(pool.map(lambda c: c.execute_command("CLUSTER INFO"), clients[:masters]))
                if covered_at is None and all(int(i["cluster_slots_ok"]) == TOTAL_SLOTS for i in infos):
                    covered_at = time.monotonic() - started
                for i, info in enumerate(infos):
                    if i in serving:
                        continue
                    if info["cluster_state"] == "ok":
                        clients[i].execute_command("CONFIG", "SET", "cluster-node-timeout", PROJECT_NODE_TIMEOUT_MS)
                        serving.add(i)
                    elif int(info["cluster_slots_ok"]) == TOTAL_SLOTS:
                        clients[i].execute_command("CONFIG", "SET", "cluster-node-timeout", JOIN_NODE_TIMEOUT_MS)
                if time.monotonic() - started > PROBE_TIMEOUT_SECONDS:
                    raise SystemExit("the primaries did not all serve in time")
                time.sleep(POLL_SECONDS)
            harness.wait_converged(nodes, masters, 1)
            print(f"{masters}x1 by hand: every primary saw every slot served after {covered_at:.2f} s; "
                  f"fully converged after {time.monotonic() - started:.2f} s")
        finally:
            pool.shutdown()
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
    f = sub.add_parser("formation-floor")
    f.add_argument("--masters", type=int, default=50)
    f.add_argument("--repeats", type=int, default=3)
    f.add_argument("--engine", choices=("9", "8"), default="9")
    args = parser.parse_args()
    {"gossip": gossip, "migrate-to-failing-target": migrate_to_failing_target,
     "formation-floor": formation_floor}[args.probe](args)


if __name__ == "__main__":
    main()
