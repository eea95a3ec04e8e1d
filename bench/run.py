"""Benchmark scenarios, valkey-reconciler side by side with valkey-cli --cluster on the same nodes,
server config and data, alternating tools within one run (the machine is shared: compare ratios).

    .venv/bin/python bench/run.py formation --sizes 3,20,50 --repeats 3
    .venv/bin/python bench/run.py rebalance --engine 9 --keys 1000000 --repeats 3
    .venv/bin/python bench/run.py noop --masters 20 --repeats 5

Each prints a Markdown table for docs/benchmarks.md; tool logs go to the printed work directory.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import LoadClient, median  # noqa: E402

VALUE_SIZE = 200
CLI_PIPELINE = 10  # valkey-cli's default --cluster-pipeline


def formation(args) -> None:
    work = harness.workdir()
    print(f"work dir: {work}", file=sys.stderr)
    rows = []
    for size in args.sizes:
        masters, replicas = size, 1
        times = {"valkey-cli": [], "valkey-reconciler": []}
        for repeat in range(args.repeats):
            for tool in ("valkey-cli", "valkey-reconciler"):
                nodes = harness.start_nodes(work, harness.FIRST_BENCH_CLUSTER, masters * (1 + replicas), args.engine)
                try:
                    log = work / f"formation-{size}-{tool}-{repeat}.log"
                    started = time.monotonic()
                    if tool == "valkey-cli":
                        harness.run_cli(nodes, "--cluster", "create", *nodes.addresses(), "--cluster-replicas",
                                        str(replicas), "--cluster-yes", log=log)
                    else:
                        harness.run_reconciler(nodes, masters, replicas, log=log)
                    harness.wait_converged(nodes, masters, replicas)
                    times[tool].append(time.monotonic() - started)
                    print(f"  {size}x1 {tool} run {repeat + 1}: {times[tool][-1]:.2f} s", file=sys.stderr)
                finally:
                    nodes.stop_all()
        cli, ours = median(times["valkey-cli"]), median(times["valkey-reconciler"])
        rows.append(f"| {size}×1 | {cli:.2f} s | {ours:.2f} s | {ours / cli:.2f}× |")
    print(f"\nFormation to fully converged, Valkey {args.engine}.x, medians of {args.repeats}:\n")
    print("| size | valkey-cli create | valkey-reconciler | ratio |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    shutil.rmtree(work, ignore_errors=True)


def rebalance(args) -> None:
    work = harness.workdir()
    print(f"work dir: {work}", file=sys.stderr)
    results = {"valkey-cli": [], "valkey-reconciler": []}
    for repeat in range(args.repeats):
        for tool in ("valkey-cli", "valkey-reconciler"):
            nodes = harness.start_nodes(work, harness.FIRST_BENCH_CLUSTER, 6, args.engine)
            try:
                # Same start for both tools: nodes 0-2 hold the data, nodes 3-5 are empty and outside.
                harness.run_reconciler(nodes, 3, 0, count=3)
                harness.wait_converged(nodes, 3, 0, count=3)
                harness.load(nodes, args.keys, VALUE_SIZE)
                dataset = harness.dataset_bytes(nodes)
                client = LoadClient(nodes, rate=args.rate)
                client.start()
                time.sleep(2.0)  # a 2 s window of client latency before the move, for the "before" p99
                log = work / f"rebalance-{tool}-{repeat}.log"
                started = time.monotonic()
                if tool == "valkey-cli":
                    seed = nodes.nodes[0].address
                    for count, node in enumerate(nodes.nodes[3:], start=4):
                        harness.run_cli(nodes, "--cluster", "add-node", node.address, seed, log=log)
                        harness.wait_all_know(nodes, count)
                    # MIGRATE into a node whose cluster_state is not ok yet fails with CLUSTERDOWN; a
                    # new primary turns ok only after its rejoin delay, so wait as a person would.
                    harness.wait_converged(nodes, 3, 0)
                    harness.run_cli(nodes, "--cluster", "rebalance", seed, "--cluster-use-empty-masters",
                                    "--cluster-pipeline", str(args.cli_pipeline), log=log)
                else:
                    harness.run_reconciler(nodes, 6, 0, log=log)
                harness.wait_converged(nodes, 6, 0)
                elapsed = time.monotonic() - started
                client.stop()
                moved_keys = harness.keys_on(nodes, range(3, 6))
                moved_mb = dataset * moved_keys / args.keys / 1e6
                results[tool].append({
                    "seconds": elapsed, "mb_s": moved_mb / elapsed,
                    "p99_before": client.p99_ms(started - 2.0, started),
                    "p99_during": client.p99_ms(started, started + elapsed),
                    "rate": client.rate_between(started, started + elapsed),
                    "errors": len(client.errors), "moved_mb": moved_mb,
                })
                print(f"  {tool} run {repeat + 1}: {elapsed:.2f} s, {moved_mb:.0f} MB moved, "
                      f"{len(client.errors)} client errors {client.errors[:3]}", file=sys.stderr)
            finally:
                nodes.stop_all()
    print(f"\nRebalance 3 → 6 primaries, {args.keys} keys of {VALUE_SIZE} B, Valkey {args.engine}.x, "
          f"medians of {args.repeats}, client at {args.rate:.0f} ops/s:\n")
    print("| tool | time | MB moved | MB/s | client errors | client p99 before | client p99 during |")
    print("|---|---|---|---|---|---|---|")
    for tool, runs in results.items():
        def m(key):
            values = [run[key] for run in runs if run[key] is not None]
            return median(values) if values else float("nan")
        print(f"| {tool} | {m('seconds'):.2f} s | {m('moved_mb'):.0f} | {m('mb_s'):.1f} | "
              f"{sum(run['errors'] for run in runs)} | {m('p99_before'):.1f} ms | {m('p99_during'):.1f} ms |")
    cli, ours = median([r["seconds"] for r in results["valkey-cli"]]), median([r["seconds"] for r in results["valkey-reconciler"]])
    print(f"\nvalkey-reconciler throughput: {cli / ours:.1f}× valkey-cli's")
    shutil.rmtree(work, ignore_errors=True)


def noop(args) -> None:
    work = harness.workdir()
    nodes = harness.start_nodes(work, harness.FIRST_BENCH_CLUSTER, args.masters * 2, args.engine)
    try:
        harness.run_reconciler(nodes, args.masters, 1)
        harness.wait_converged(nodes, args.masters, 1)
        times = [harness.run_reconciler(nodes, args.masters, 1) for _ in range(args.repeats)]
    finally:
        nodes.stop_all()
    print(f"\nNo-op reconcile on a converged {args.masters}×1 cluster, Valkey {args.engine}.x: "
          f"median {median(times):.3f} s of {args.repeats} (min {min(times):.3f} s, max {max(times):.3f} s)")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)
    f = sub.add_parser("formation")
    f.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[3, 20, 50])
    r = sub.add_parser("rebalance")
    r.add_argument("--keys", type=int, default=1_000_000)
    r.add_argument("--rate", type=float, default=1000.0)
    r.add_argument("--cli-pipeline", type=int, default=CLI_PIPELINE)
    n = sub.add_parser("noop")
    n.add_argument("--masters", type=int, default=20)
    for p in (f, r, n):
        p.add_argument("--engine", choices=("9", "8"), default="9")
        p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    {"formation": formation, "rebalance": rebalance, "noop": noop}[args.scenario](args)


if __name__ == "__main__":
    main()
