"""e2e helpers: drive the `valkey-local` CLI, read its state dir, and a cluster-aware writer that records every acknowledged write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import valkey
import yaml
from valkey.cluster import ValkeyCluster

LOCAL = Path(sys.executable).parent / "valkey-local"
RECONCILER = Path(sys.executable).parent / "valkey-reconciler"
#: Bound on one runner command in a test.
COMMAND_TIMEOUT_SECONDS = 240
#: Values that keep the e2e runs short without changing what they prove: no wait before a replica's
#: first full sync, a shorter node timeout, hook Jobs that fail at once instead of retrying, and a
#: reconciler bound below the command bound.
FAST_VALUES = [
    "--set-string", "extraConfig=repl-diskless-sync-delay 0",
    "--set", "cluster.nodeTimeoutMs=2000",
    "--set", "hooks.backoffLimit=0",
    "--set", "hooks.timeoutSeconds=150",
]
#: The writer's pause between two operations (a few hundred ops/s: enough to cross every step).
WRITER_PAUSE_SECONDS = 0.002
#: Bound on the writer noticing a stop request.
WRITER_JOIN_SECONDS = 30
#: Keys loaded before the first upgrade.
PRELOAD_KEYS = 20_000
PRELOAD_BATCH = 2_000


@dataclass
class Result:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def explain(self) -> str:
        return f"`valkey-local {' '.join(self.args)}` exited {self.code}:\n{self.output}"


class Local:
    """One release of the runner in a test's own state dir and loopback range."""

    def __init__(self, state_dir: Path, release: str, cluster_index: int, engine: str) -> None:
        self.state_dir = Path(state_dir)
        self.release = release
        self.cluster_index = cluster_index
        self.engine = engine
        self.results: list[Result] = []

    @property
    def dir(self) -> Path:
        return self.state_dir / self.release

    def run(self, *args: str, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT_SECONDS) -> Result:
        argv = [*args, "--release", self.release, "--state-dir", str(self.state_dir)]
        if args and args[0] == "secret":
            argv = [*args, "--release", self.release, "--state-dir", str(self.state_dir)]
        start = time.monotonic()
        proc = subprocess.run([str(LOCAL), *argv], capture_output=True, text=True, timeout=timeout,
                              input=stdin, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        result = Result(list(argv), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)
        self.results.append(result)
        return result

    def up(self, *values: str, **kw) -> Result:
        return self.run("up", "--engine", self.engine, "--cluster-index", str(self.cluster_index),
                        "--namespace", "e2e", *values, **kw)

    def upgrade(self, *values: str) -> Result:
        return self.run("upgrade", *values)

    # --- state dir ------------------------------------------------------------------------------
    def state(self) -> dict:
        return json.loads((self.dir / "state.json").read_text())

    def secrets(self) -> dict[str, dict[str, str]]:
        return json.loads((self.dir / "secrets.json").read_text())["secrets"]

    def events(self, kind: str | None = None) -> list[dict]:
        path = self.dir / "events.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in rows if kind is None or r["event"] == kind]

    def manifests(self) -> list[dict]:
        return [d for d in yaml.safe_load_all((self.dir / "manifests.yaml").read_text()) if d]

    def pids(self) -> set[int]:
        """Every PID the runner ever started for this release."""
        return {e["pid"] for e in self.events("pod_start")}

    def addresses(self) -> list[tuple[str, int]]:
        pods = sorted(self.state()["pods"].values(), key=lambda p: p["ordinal"])
        return [(p["ip"], 6379) for p in pods if p.get("pid")]

    def client(self) -> ValkeyCluster:
        password = self.secrets()[f"valkey-{self.release}-credentials"]["client-password"]
        host, port = self.addresses()[0]
        return ValkeyCluster(host=host, port=port, username="client", password=password,
                             decode_responses=True, socket_timeout=5, socket_connect_timeout=2)


def job_manifest_env(manifests: list[dict], job: str) -> tuple[list[str], list[str]]:
    """(env names, args) of a hook Job as rendered, read independently of the runner."""
    for doc in manifests:
        if doc.get("kind") == "Job" and doc["metadata"]["name"] == job:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return [e["name"] for e in container.get("env") or []], list(container.get("args") or [])
    raise AssertionError(f"Job {job} not in the saved manifests")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_all_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = {p for p in pids if alive(p)}
        if not left:
            return left
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def preload(client: ValkeyCluster, count: int = PRELOAD_KEYS) -> dict[str, str]:
    model = {}
    for start in range(0, count, PRELOAD_BATCH):
        pipe = client.pipeline()
        for i in range(start, min(count, start + PRELOAD_BATCH)):
            model[f"pre:{i}"] = f"p{i}"
            pipe.set(f"pre:{i}", f"p{i}")
        pipe.execute()
    return model


def read_back(client: ValkeyCluster, model: dict[str, str]) -> list[str]:
    """Keys of `model` whose value does not read back (pipelined per node by the cluster client)."""
    keys = list(model)
    wrong = []
    for start in range(0, len(keys), PRELOAD_BATCH):
        chunk = keys[start:start + PRELOAD_BATCH]
        pipe = client.pipeline()
        for key in chunk:
            pipe.get(key)
        for key, value in zip(chunk, pipe.execute()):
            if value != model[key]:
                wrong.append(key)
    return wrong


class Background:
    """A `_run` loop on a daemon thread until `stop()`; the loop checks `self._stop`. `stop()` fails the test
    when the thread does not end within `join_seconds`."""

    join_seconds: float = WRITER_JOIN_SECONDS
    what: str = "background thread"
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(self.join_seconds)
        assert not self._thread.is_alive(), f"the {self.what} did not stop"


@dataclass
class Writer(Background):
    """Writes unique keys through ValkeyCluster (as `client`) and reads an earlier one back, all the
    time; records what was acknowledged and every error."""

    local: Local
    acked: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    what = "writer thread"

    def _run(self) -> None:
        client = self.local.client()
        i = 0
        try:
            while not self._stop.is_set():
                key, value = f"w:{i}", f"v{i}:{time.monotonic_ns()}"
                try:
                    client.set(key, value)
                    self.acked[key] = value
                    probe = f"w:{i // 2}"
                    if probe in self.acked:
                        got = client.get(probe)
                        if got != self.acked[probe]:
                            self.mismatches.append(f"{probe}: {got!r} != {self.acked[probe]!r}")
                except Exception as error:  # recorded, never hidden: the outcome of that write is unknown
                    self.errors.append(f"{type(error).__name__}: {error}")
                    if isinstance(error, valkey.exceptions.ValkeyClusterException):
                        client.close()  # lost every node it knew (all pods moved): start from the state dir
                        try:
                            client = self.local.client()
                        except Exception as again:
                            self.errors.append(f"{type(again).__name__}: {again}")
                i += 1
                time.sleep(WRITER_PAUSE_SECONDS)
        finally:
            client.close()

