"""Benchmark plumbing: node sets, the two tools under test (valkey-cli and valkey-reconciler), data
loading, a rate-limited cluster client, and convergence checks — shared by bench/run.py's scenarios."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import valkey
from valkey.cluster import ClusterNode, ValkeyCluster
from valkey.crc import key_slot

from valkey_local.binaries import cli_binary
from valkey_local.nodes import NodeSet

REPO_ROOT = Path(__file__).resolve().parents[1]
RECONCILER = REPO_ROOT / ".venv" / "bin" / "valkey-reconciler"
SLOTS = 16384
#: Bench runs use cluster indices 5..9 (tests take 10 and up, local mode 1).
FIRST_BENCH_CLUSTER = 5
#: A primary cannot report cluster_state:ok within CLUSTER_WRITABLE_DELAY (2 s) of its start, so the
#: clock starts only this long after the nodes did: otherwise every tool measures that floor.
WRITABLE_DELAY_MARGIN_SECONDS = 3.0
#: Bound on any tool run or convergence wait.
RUN_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 0.02
#: Server settings shared by both tools' runs: replicas sync at once, as in the issue's reference runs.
BENCH_OVERRIDES = "repl-diskless-sync-delay 0\n"
LOAD_BATCH = 10_000
MEMORY_DIR = Path("/dev/shm")


def median(values: list[float]) -> float:
    return statistics.median(values)


def start_nodes(workdir: Path, cluster: int, count: int, engine: str, overrides: str = BENCH_OVERRIDES) -> NodeSet:
    nodes = NodeSet(workdir / f"cluster-{cluster}-{time.monotonic_ns()}", cluster, count, engine=engine,
                    persistence="", overrides=overrides)
    started = time.monotonic()
    nodes.start()
    nodes.wait_ready(timeout=60)
    remaining = WRITABLE_DELAY_MARGIN_SECONDS - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)  # see WRITABLE_DELAY_MARGIN_SECONDS: a fixed lead-in, not a wait on a condition
    return nodes


def run_reconciler(nodes: NodeSet, masters: int, replicas: int, command: str = "reconcile",
                   log: Path | None = None, count: int | None = None) -> float:
    """Runs valkey-reconciler against the first `count` (default all) of `nodes`; returns its wall time."""
    env = {**os.environ, **nodes.reconciler_env(), "LOG_FORMAT": "json"}
    args = [str(RECONCILER), command, "--masters", str(masters), "--replicas-per-master", str(replicas)]
    for address in nodes.addresses()[:count]:
        args += ["--node", address]
    out = open(log, "ab") if log else subprocess.DEVNULL
    started = time.monotonic()
    try:
        subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=RUN_TIMEOUT_SECONDS)
    finally:
        if log:
            out.close()
    return time.monotonic() - started


def run_cli(nodes: NodeSet, *args: str, log: Path | None = None) -> float:
    """Runs valkey-cli 8.1.8 as admin (password through REDISCLI_AUTH, never argv); returns wall time."""
    env = {**os.environ, "REDISCLI_AUTH": nodes.passwords.admin}
    out = open(log, "ab") if log else subprocess.DEVNULL
    started = time.monotonic()
    try:
        subprocess.run([str(cli_binary()), "--user", "admin", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                       check=True, timeout=RUN_TIMEOUT_SECONDS)
    finally:
        if log:
            out.close()
    return time.monotonic() - started


def cluster_info(client: valkey.Valkey) -> dict:
    """CLUSTER INFO as a dict (valkey-py parses the reply)."""
    return client.execute_command("CLUSTER INFO")


def converged(nodes: NodeSet, masters: int, replicas: int, count: int | None = None) -> bool:
    """Every node (of the first `count`): cluster_state ok, knows every node, all slots assigned;
    every replica linked."""
    members = nodes.nodes[:count]
    total = len(members)
    replica_count = 0
    for node in members:
        client = node.client()
        try:
            info = cluster_info(client)
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != total:
                return False
            if int(info.get("cluster_slots_assigned", 0)) != SLOTS:
                return False
            repl = client.info("replication")
            if repl.get("role") == "slave":
                replica_count += 1
                if repl.get("master_link_status") != "up":
                    return False
        finally:
            client.close()
    return replica_count == masters * replicas


def wait_converged(nodes: NodeSet, masters: int, replicas: int, count: int | None = None) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while not converged(nodes, masters, replicas, count):
        if time.monotonic() > deadline:
            raise TimeoutError("cluster did not converge")
        time.sleep(POLL_SECONDS)


def wait_all_know(nodes: NodeSet, count: int) -> None:
    """valkey-cli add-node returns before the node joined; the next add-node fails until all agree."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while not all(_known_nodes_of(node) == count for node in nodes.nodes[:count]):
        if time.monotonic() > deadline:
            raise TimeoutError("nodes did not agree on membership")
        time.sleep(POLL_SECONDS)


def _known_nodes_of(node) -> int:
    client = node.client()
    try:
        return _known_nodes(client)
    finally:
        client.close()


def _known_nodes(client: valkey.Valkey) -> int:
    return int(cluster_info(client)["cluster_known_nodes"])


def slot_owners(nodes: NodeSet) -> dict[int, tuple[str, int]]:
    """slot → (ip, port) of its primary, from CLUSTER SHARDS of ordinal 0."""
    client = nodes.nodes[0].client()
    try:
        owners: dict[int, tuple[str, int]] = {}
        for shard in client.execute_command("CLUSTER SHARDS"):
            shard = _pairs(shard)
            primary = next((_pairs(n) for n in shard["nodes"] if _pairs(n)["role"] == "master"), None)
            if primary is None:
                continue
            slots = shard["slots"]
            for start, end in zip(slots[::2], slots[1::2]):
                for slot in range(int(start), int(end) + 1):
                    owners[slot] = (primary["ip"], int(primary["port"]))
        return owners
    finally:
        client.close()


def _pairs(item) -> dict:
    if isinstance(item, dict):
        return item
    return {item[i]: item[i + 1] for i in range(0, len(item), 2)}


def load(nodes: NodeSet, keys: int, value_size: int) -> None:
    """Writes `keys` string keys of `value_size` bytes, pipelined straight to each slot's primary."""
    owners = slot_owners(nodes)
    clients = {address: valkey.Valkey(host=address[0], port=address[1], username="admin",
                                      password=nodes.passwords.admin) for address in set(owners.values())}
    value = b"v" * value_size
    pipes = {address: client.pipeline(transaction=False) for address, client in clients.items()}
    pending = 0
    for i in range(keys):
        key = f"key:{i}"
        pipes[owners[key_slot(key.encode())]].set(key, value)
        pending += 1
        if pending >= LOAD_BATCH:
            for pipe in pipes.values():
                pipe.execute()
            pending = 0
    for pipe in pipes.values():
        pipe.execute()
    for client in clients.values():
        client.close()


def dataset_bytes(nodes: NodeSet) -> int:
    total = 0
    for node in nodes.nodes:
        client = node.client()
        try:
            total += int(client.info("memory")["used_memory_dataset"])
        finally:
            client.close()
    return total


def keys_on(nodes: NodeSet, ordinals: range) -> int:
    total = 0
    for ordinal in ordinals:
        client = nodes.nodes[ordinal].client()
        try:
            total += client.dbsize()
        finally:
            client.close()
    return total


@dataclass
class LoadClient:
    """A cluster client (user `client`) doing SET/GET at a fixed rate; records latencies and errors."""

    nodes: NodeSet
    rate: float = 1000.0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic start, latency seconds)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        first = self.nodes.nodes[0]
        client = ValkeyCluster(startup_nodes=[ClusterNode(first.ip, first.port)], username="client",
                               password=self.nodes.passwords.client)
        rng = random.Random(7)
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        i = 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now < next_at:
                    self._stop.wait(next_at - now)
                    continue
                next_at += interval
                key = f"probe:{rng.randrange(100_000)}"
                started = time.monotonic()
                try:
                    if i % 2:
                        client.set(key, i)
                    else:
                        client.get(key)
                    self.samples.append((started, time.monotonic() - started))
                except Exception as error:  # recorded and reported, never hidden
                    self.errors.append(f"{type(error).__name__}: {error}")
                i += 1
        finally:
            client.close()

    def p99_ms(self, since: float, until: float) -> float | None:
        window = sorted(latency for at, latency in self.samples if since <= at < until)
        if not window:
            return None
        return window[min(len(window) - 1, int(len(window) * 0.99))] * 1000

    def rate_between(self, since: float, until: float) -> float:
        count = sum(1 for at, _ in self.samples if since <= at < until)
        return count / max(until - since, 1e-9)


def workdir() -> Path:
    """Node directories go to memory where the machine has it: every node fsyncs nodes.conf on each cluster
    change, and 100 nodes doing so on this VM's shared disk stalled single nodes for up to 6 s (noise for
    both tools; persistence is off in these runs anyway)."""
    base = MEMORY_DIR if MEMORY_DIR.is_dir() and os.access(MEMORY_DIR, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="valkey-bench-", dir=base))
