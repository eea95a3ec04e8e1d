"""Two reconciler processes for the same nodes on one machine: the file lock lets one act while the other waits, skips or times out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# The process side: the real settings loader and the real reconciler_lock; "acting" is writing to a
# shared journal until the test creates the release file.
SCRIPT = r"""
import os, sys, time
from valkey_reconciler import logs
from valkey_reconciler.errors import ReconcilerError
from valkey_reconciler.lock import reconciler_lock
from valkey_reconciler.settings import load

settings = load(sys.argv[1:])
logs.configure("json", secrets=(settings.password,))
try:
    with reconciler_lock(settings) as act:
        if not act:
            sys.exit(0)
        with open(os.environ["TEST_JOURNAL"], "a") as f:
            f.write(f"start {os.getpid()}\n")
        end = time.monotonic() + float(os.environ["TEST_HOLD_BOUND_S"])
        while not os.path.exists(os.environ["TEST_RELEASE"]) and time.monotonic() < end:
            time.sleep(0.02)
        with open(os.environ["TEST_JOURNAL"], "a") as f:
            f.write(f"end {os.getpid()}\n")
except ReconcilerError as exc:
    print(f"valkey-reconciler: reconcile failed: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""
WAIT_BOUND_S = 20.0
HOLD_BOUND_S = 30.0
POLL_S = 0.02
NODES = 3


class Runner:
    """Starts the script processes with one node list, keeps their PIDs, and kills what is left at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.journal = tmp_path / "journal"
        self.release = tmp_path / "release"
        self.journal.touch()
        # Host names that resolve nowhere: the lock never dials a node, and no other test uses them.
        tag = uuid.uuid4().hex[:8]
        self.nodes = [f"lock-{tag}-{i}:6379" for i in range(NODES)]
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *extra: str, env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        args = ["reconcile", "--masters", str(NODES), "--replicas-per-master", "0"]
        for node in self.nodes:
            args += ["--node", node]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("VALKEY_", "KUBERNETES_"))}
        # TMPDIR: the default lock file (keyed by the node list) lands in this test's directory.
        full_env.update({"TMPDIR": str(self.tmp), "VALKEY_PASSWORD": "not-used-by-the-lock",
                         "TEST_JOURNAL": str(self.journal), "TEST_RELEASE": str(self.release),
                         "TEST_HOLD_BOUND_S": str(HOLD_BOUND_S), **(env or {})})
        err = self.tmp / f"stderr-{len(self.procs)}"
        with open(err, "w") as f:
            proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *args, *extra], env=full_env,
                                    stdout=subprocess.DEVNULL, stderr=f)
        self.procs.append((proc, err))
        return proc, err

    def wait_for(self, condition, what: str) -> None:
        end = time.monotonic() + WAIT_BOUND_S
        while not condition():
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {WAIT_BOUND_S}s waiting for {what}")
            time.sleep(POLL_S)

    def journal_lines(self) -> list[str]:
        return self.journal.read_text().split()

    def acting(self, proc: subprocess.Popen) -> bool:
        return f"start {proc.pid}" in self.journal.read_text()

    @staticmethod
    def events(err: Path) -> list[dict]:
        out = []
        for line in err.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def cleanup(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT_BOUND_S)


@pytest.fixture
def runner(tmp_path):
    r = Runner(tmp_path)
    yield r
    r.cleanup()
    assert all(p.poll() is not None for p, _ in r.procs)


def test_second_waits_while_the_first_acts_then_acts_alone(runner):
    first, _ = runner.start()
    runner.wait_for(lambda: runner.acting(first), "the first process to act")
    second, second_err = runner.start()
    runner.wait_for(lambda: any(e["event"] == "lock_waiting" for e in runner.events(second_err)),
                    "the second process to report lock_waiting")
    assert not runner.acting(second), "the second process acted while the first held the lock"
    waiting = next(e for e in runner.events(second_err) if e["event"] == "lock_waiting")
    assert f"pid {first.pid}" in waiting["holder"]
    runner.release.touch()
    assert first.wait(timeout=WAIT_BOUND_S) == 0
    assert second.wait(timeout=WAIT_BOUND_S) == 0
    assert runner.journal_lines() == ["start", str(first.pid), "end", str(first.pid),
                                      "start", str(second.pid), "end", str(second.pid)]


def test_scheduled_run_finds_the_lock_held_and_exits_0_with_lock_busy_skipped(runner):
    first, _ = runner.start()
    runner.wait_for(lambda: runner.acting(first), "the first process to act")
    scheduled, err = runner.start(env={"VALKEY_LOCK_MODE": "skip"})
    assert scheduled.wait(timeout=WAIT_BOUND_S) == 0
    (busy,) = [e for e in runner.events(err) if e["event"] == "lock_busy_skipped"]
    assert f"pid {first.pid}" in busy["holder"]
    assert not runner.acting(scheduled)
    assert first.poll() is None, "the holder must be unaffected"
    runner.release.touch()
    assert first.wait(timeout=WAIT_BOUND_S) == 0
    assert runner.journal_lines() == ["start", str(first.pid), "end", str(first.pid)]


def test_scheduled_run_acts_when_the_lock_is_free(runner):
    runner.release.touch()
    scheduled, err = runner.start(env={"VALKEY_LOCK_MODE": "skip"})
    assert scheduled.wait(timeout=WAIT_BOUND_S) == 0
    assert runner.journal_lines() == ["start", str(scheduled.pid), "end", str(scheduled.pid)]
    assert [e["event"] for e in runner.events(err)] == ["lock_acquired", "lock_released"]


def test_waiting_run_gives_up_at_its_bound_naming_the_holder(runner):
    first, _ = runner.start()
    runner.wait_for(lambda: runner.acting(first), "the first process to act")
    second, err = runner.start("--timeout", "1")
    assert second.wait(timeout=WAIT_BOUND_S) == 1
    text = err.read_text()
    assert f"pid {first.pid}" in text and "nothing was changed" in text and "lock file" in text
    assert not runner.acting(second)
    runner.release.touch()
    assert first.wait(timeout=WAIT_BOUND_S) == 0


def test_a_killed_holder_frees_the_lock_for_the_waiter(runner):
    first, _ = runner.start()
    runner.wait_for(lambda: runner.acting(first), "the first process to act")
    second, second_err = runner.start()
    runner.wait_for(lambda: any(e["event"] == "lock_waiting" for e in runner.events(second_err)),
                    "the second process to report lock_waiting")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=WAIT_BOUND_S)
    runner.wait_for(lambda: runner.acting(second), "the waiter to act after the holder was killed")
    runner.release.touch()
    assert second.wait(timeout=WAIT_BOUND_S) == 0
