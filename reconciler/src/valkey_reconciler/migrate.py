"""Moves slot ranges between primaries: atomic slot migration on Valkey 9+, SETSLOT + MIGRATE on 8.x."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import valkey

from valkey_reconciler.errors import ConvergenceTimeout, StepFailed
from valkey_reconciler.node import MIGRATE_TIMEOUT_MS, Node
from valkey_reconciler.waits import TRANSIENT

ATOMIC_MIN_VERSION = (9, 0, 0)
ATOMIC_POLL_S = 0.02
PROGRESS_INTERVAL_S = 2.0
# Legacy engine: slots handled per pipelined round, keys fetched per slot per GETKEYSINSLOT.
LEGACY_SLOT_BATCH = 256
# A legacy batch opens at most 1/LEGACY_OPEN_SHARE as many slots as the target already owns (at least one).
LEGACY_OPEN_SHARE = 4
LEGACY_KEY_BATCH = 1000
SETSLOT_CONNECTIONS = 8
MB = 1024 * 1024
# GETSLOTMIGRATIONS states after which a job does nothing more.
ATOMIC_DONE = "success"
ATOMIC_FAILED = ("failed", "cancelled")


def pairs(ranges: Iterable[Any]) -> tuple[tuple[int, int], ...]:
    """SlotRange objects or (start, end) tuples → sorted (start, end) tuples."""
    out = []
    for r in ranges:
        start, end = (r.start, r.end) if hasattr(r, "start") else (r[0], r[1])
        out.append((int(start), int(end)))
    return tuple(sorted(out))


def slot_list(ranges: Iterable[Any]) -> list[int]:
    return [s for start, end in pairs(ranges) for s in range(start, end + 1)]


def parse_ranges_text(text: str) -> tuple[tuple[int, int], ...]:
    """'0-99 200 300-301' (GETSLOTMIGRATIONS' slot_ranges) → ((0, 99), (200, 200), (300, 301))."""
    out = []
    for part in str(text).split():
        start, _, end = part.partition("-")
        out.append((int(start), int(end or start)))
    return tuple(sorted(out))


def parse_jobs(reply: Any) -> list[dict[str, Any]]:
    """CLUSTER GETSLOTMIGRATIONS (newest first): each job is a flat key/value list → dict."""
    jobs = []
    for entry in reply or []:
        if isinstance(entry, dict):
            job = dict(entry)
        else:
            job = {str(entry[i]): entry[i + 1] for i in range(0, len(entry) - 1, 2)}
        job["ranges"] = parse_ranges_text(job.get("slot_ranges", ""))
        job["operation"] = str(job.get("operation", "")).lower()
        job["state"] = str(job.get("state", "")).lower()
        jobs.append(job)
    return jobs


class JobInFlight(Exception):
    """The source was already migrating some of the slots; that job has ended, re-observe and re-plan."""


@dataclass
class Move:
    """One slot move: ranges from a source primary to a target primary (ids as observed)."""

    source: Node
    target: Node
    source_id: str
    target_id: str
    ranges: tuple[tuple[int, int], ...]

    @property
    def slots(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges)

    def describe(self) -> str:
        text = " ".join(f"{a}-{b}" if a != b else str(a) for a, b in self.ranges)
        return f"{self.slots} slots {text} from ordinal {self.source.ordinal} to ordinal {self.target.ordinal}"


class Progress:
    """Counts slots and keys moved and logs `migration_progress` at most every PROGRESS_INTERVAL_S."""

    def __init__(self, log: Any, move: Move, engine: str, bytes_per_key: float) -> None:
        self.log, self.move, self.engine, self.bytes_per_key = log, move, engine, bytes_per_key
        self.start = self.last = time.monotonic()
        self.slots_done = 0
        self.keys_done = 0
        self.lock = threading.Lock()

    def add(self, slots: int, keys: int, force: bool = False, **extra: Any) -> None:
        with self.lock:
            self.slots_done += slots
            self.keys_done += keys
            now = time.monotonic()
            if force or now - self.last >= PROGRESS_INTERVAL_S:
                self.last = now
                self.emit(**extra)

    def emit(self, **extra: Any) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        self.log.info("migration_progress", engine=self.engine, source_ordinal=self.move.source.ordinal,
                      target_ordinal=self.move.target.ordinal, slots_done=self.slots_done,
                      slots_total=self.move.slots, keys_done=self.keys_done,
                      keys_per_s=round(self.keys_done / elapsed, 1),
                      mb_per_s=round(self.keys_done * self.bytes_per_key / MB / elapsed, 2),
                      elapsed_s=round(elapsed, 3), **extra)


def bytes_per_key(node: Node) -> float:
    """Average dataset bytes per key on the source, to turn key counts into an MB/s estimate."""
    info = node.client.info("memory")
    keys = node.client.dbsize() or 0
    if not keys:
        return 0.0
    return float(info.get("used_memory_dataset", info.get("used_memory", 0))) / keys


def count_keys(node: Node, slots: Sequence[int]) -> int:
    pipe = node.client.pipeline(transaction=False)
    for slot in slots:
        pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
    return sum(int(n) for n in pipe.execute(raise_on_error=False) if isinstance(n, int))


def _first_error(results: Sequence[Any], what: str, node: Node, ignore: Callable[[str], bool] = lambda m: False) -> None:
    for result in results:
        if isinstance(result, Exception) and not ignore(str(result)):
            # Our own message: valkey-py's pipeline annotation would echo the command's arguments.
            raise StepFailed(f"{what} on {node.label()} failed: {result}", ordinal=node.ordinal, error=str(result))


# ----------------------------------------------------------------------------------------------
# Atomic slot migration (Valkey >= 9.0): the servers move the data; a job is all-or-nothing.


def atomic_jobs(node: Node) -> list[dict[str, Any]]:
    return parse_jobs(node.cmd("CLUSTER", "GETSLOTMIGRATIONS"))


def find_job(jobs: Sequence[dict[str, Any]], target_id: str, ranges: tuple[tuple[int, int], ...],
             exclude: set[str] = frozenset()) -> dict[str, Any] | None:
    """Newest export job for exactly these ranges toward target (the list is newest first)."""
    for job in jobs:
        if job["operation"] == "export" and job.get("target_node") == target_id \
                and job["ranges"] == ranges and job.get("name") not in exclude:
            return job
    return None


def migrate_atomic(move: Move, timeout: float, log: Any) -> int:
    """Run one CLUSTER MIGRATESLOTS job to success; failed/cancelled → StepFailed (the source keeps its data)."""
    slots = slot_list(move.ranges)
    keys = count_keys(move.source, slots)
    progress = Progress(log, move, "atomic", bytes_per_key(move.source))
    before = {job.get("name") for job in atomic_jobs(move.source)
              if job["ranges"] == move.ranges and job.get("target_node") == move.target_id}
    args: list[Any] = ["CLUSTER", "MIGRATESLOTS", "SLOTSRANGE"]
    for start, end in move.ranges:
        args += [start, end]
    args += ["NODE", move.target_id]
    try:
        move.source.cmd(*args)
    except valkey.exceptions.ResponseError as exc:
        if "already migrating" not in str(exc):
            raise StepFailed(f"CLUSTER MIGRATESLOTS {move.describe()} refused by {move.source.label()}: {exc}",
                             error=str(exc), source_ordinal=move.source.ordinal) from None
        # Another job holds some of these slots (started after our observation): let it end, then
        # the caller observes and plans again.
        await_jobs(move.source, None, timeout, log)
        raise JobInFlight(f"{move.source.label()} was already migrating some of {move.describe()}") from None
    end = time.monotonic() + timeout
    job = None
    while True:
        try:
            jobs = atomic_jobs(move.source)
            job = find_job(jobs, move.target_id, move.ranges, exclude=before)
        except TRANSIENT:
            job = None
        if job is not None:
            state = job["state"]
            if state == ATOMIC_DONE:
                progress.add(move.slots, keys, force=True, state=state)
                return keys
            if state in ATOMIC_FAILED:
                raise StepFailed(f"atomic migration of {move.describe()} ended {state}: "
                                 f"{job.get('message') or 'no message'}; the source keeps its slots and data, "
                                 "the next run plans again", state=state, job=job.get("name"))
            progress.add(0, 0, state=state, remaining_repl_size=job.get("remaining_repl_size"))
        if time.monotonic() >= end:
            raise ConvergenceTimeout(f"atomic migration of {move.describe()} did not finish within {timeout:.0f}s "
                                     f"(state {job['state'] if job else 'job not found'})")
        time.sleep(ATOMIC_POLL_S)


def await_jobs(source: Node, ranges: tuple[tuple[int, int], ...] | None, timeout: float, log: Any) -> None:
    """Wait until no export job on `source` (for `ranges`, or any) is still in flight."""
    end = time.monotonic() + timeout
    while True:
        live = [j for j in atomic_jobs(source) if j["operation"] == "export"
                and j["state"] != ATOMIC_DONE and j["state"] not in ATOMIC_FAILED
                and (ranges is None or j["ranges"] == ranges)]
        if not live:
            return
        if time.monotonic() >= end:
            raise ConvergenceTimeout(f"atomic migration on {source.label()} still {live[0]['state']} "
                                     f"after {timeout:.0f}s")
        time.sleep(ATOMIC_POLL_S * 5)


# ----------------------------------------------------------------------------------------------
# Legacy migration (Valkey 8.x): SETSLOT IMPORTING/MIGRATING, MIGRATE keys, SETSLOT NODE everywhere.


def _pipeline(node: Node, client: valkey.Valkey, commands: Sequence[Sequence[Any]], what: str,
              ignore: Callable[[str], bool] = lambda m: False) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    results = pipe.execute(raise_on_error=False)
    _first_error(results, what, node, ignore)
    return results


def _move_keys(move: Move, source_client: valkey.Valkey, slots: Sequence[int], user: str, password: str,
               progress: Progress, deadline: float) -> None:
    """MIGRATE every key of `slots` to the target in pipelined batches, until the slots hold no key."""
    pending = list(slots)
    target_ip = move.target.ip or move.target.host
    while pending:
        if time.monotonic() >= deadline:
            raise ConvergenceTimeout(f"moving keys of {len(pending)} slots from {move.source.label()} timed out")
        found = _pipeline(move.source, source_client,
                          [("CLUSTER", "GETKEYSINSLOT", s, LEGACY_KEY_BATCH) for s in pending],
                          "CLUSTER GETKEYSINSLOT")
        commands, moved, still = [], 0, []
        for slot, keys in zip(pending, found):
            if keys:
                # MIGRATE logs in to the target as `user`; the password exists only on this wire.
                commands.append(("MIGRATE", target_ip, move.target.port, "", 0, MIGRATE_TIMEOUT_MS,
                                 "AUTH2", user, password, "KEYS", *keys))
                moved += len(keys)
                still.append(slot)
        if commands:
            _pipeline(move.source, source_client, commands, "MIGRATE",
                      ignore=lambda m: m.startswith("NOKEY"))
            progress.add(0, moved)
        pending = still


def _setslot(node: Node, commands: Sequence[Sequence[Any]], what: str) -> None:
    """Send SETSLOT commands over SETSLOT_CONNECTIONS connections at once.

    Since 8.0 a primary with replicas holds each SETSLOT until its replicas acknowledge it, one command
    at a time per connection; spreading the commands over several connections lets the waits overlap.
    """
    chunks = [commands[i::SETSLOT_CONNECTIONS] for i in range(SETSLOT_CONNECTIONS) if commands[i::SETSLOT_CONNECTIONS]]
    run_concurrently([lambda c=c: _pipeline(node, node.client, c, what) for c in chunks])


def _settle_slots(move: Move, other_primaries: Sequence[Node], slots: Sequence[int]) -> None:
    """SETSLOT NODE target on the target first, then on the source and every other primary (H3)."""
    command = [("CLUSTER", "SETSLOT", s, "NODE", move.target_id) for s in slots]
    _setslot(move.target, command, "CLUSTER SETSLOT NODE")
    # A primary that already learnt the new owner through gossip answers OK as well.
    run_concurrently([lambda n=n: _setslot(n, command, "CLUSTER SETSLOT NODE")
                      for n in (move.source, *other_primaries)])


def legacy_batch_size(owned: int) -> int:
    """How many slots to open at once toward a target that owns `owned` slots.

    While a slot is open its source answers ASK for every key it does not hold, pointing at the target. A
    client that has not discovered the target yet (it owns no slot in the client's last topology) cannot
    follow that: valkey-py 6.2 fails the command (AttributeError, nothing sent). Clients discover a new
    primary from a MOVED for a slot it owns, so a new target first gets slots one at a time and the batches
    grow with what it owns: a client's first contact with it is then far likelier a MOVED than an ASK.
    """
    return max(1, min(LEGACY_SLOT_BATCH, owned // LEGACY_OPEN_SHARE))


def migrate_legacy(move: Move, other_primaries: Sequence[Node], user: str, password: str,
                   timeout: float, log: Any, open_slots: Sequence[int] = (), target_slots: int = 0) -> int:
    """Move `move.ranges` in rounds of slots (see legacy_batch_size; at most LEGACY_SLOT_BATCH), pipelined.

    `open_slots` are slots already IMPORTING on the target and MIGRATING on the source (an interrupted
    migration being finished): the SETSLOT IMPORTING/MIGRATING round is skipped for them. `target_slots`
    is how many slots the target owned before.
    """
    deadline = time.monotonic() + timeout
    progress = Progress(log, move, "legacy", bytes_per_key(move.source))
    source_client = move.source.migrate_client()
    already_open = set(open_slots)
    try:
        slots = slot_list(move.ranges)
        i = 0
        while i < len(slots):
            size = len(already_open) if i == 0 and already_open else legacy_batch_size(target_slots + i)
            batch = slots[i:i + size]
            i += len(batch)
            fresh = [s for s in batch if s not in already_open]
            if fresh:
                # IMPORTING on the target before MIGRATING on the source: an ASK must find it open.
                _setslot(move.target, [("CLUSTER", "SETSLOT", s, "IMPORTING", move.source_id) for s in fresh],
                         "CLUSTER SETSLOT IMPORTING")
                _setslot(move.source, [("CLUSTER", "SETSLOT", s, "MIGRATING", move.target_id) for s in fresh],
                         "CLUSTER SETSLOT MIGRATING")
            _move_keys(move, source_client, batch, user, password, progress, deadline)
            _settle_slots(move, other_primaries, batch)
            progress.add(len(batch), 0)
        progress.emit(state="success")
        return progress.keys_done
    finally:
        source_client.close()


def run_concurrently(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run independent migrations (disjoint source/target pairs) in threads; re-raise the first failure."""
    if len(jobs) == 1:
        return [jobs[0]()]
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="migrate") as pool:
        futures = [pool.submit(job) for job in jobs]
        results, first_error = [], None
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:  # every thread finishes before the error is reported
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results
