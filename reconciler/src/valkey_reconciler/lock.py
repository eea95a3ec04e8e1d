"""The reconciler lock: one run acts on a cluster at a time (a Kubernetes Lease in a cluster, an fcntl lock file without one)."""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import secrets
import socket
import tempfile
import threading
import time
import _thread
from typing import Any, Callable, Iterator, Mapping

from valkey_reconciler import kube, logs
from valkey_reconciler.errors import ConfigError, ReconcilerError

LOCK_MODE_ENV = "VALKEY_LOCK_MODE"
LOCK_FILE_ENV = "VALKEY_LOCK_FILE"
MODE_WAIT = "wait"
MODE_SKIP = "skip"
LOCK_MODES = (MODE_WAIT, MODE_SKIP)
# A holder that has not renewed its Lease for this long is presumed dead and may be taken over.
LEASE_DURATION_S = 30
# The holder renews three times per duration, so one or two failed API calls do not lose the Lease.
LEASE_RENEW_INTERVAL_S = 10.0
# Pause between two attempts to take a held Lease (each attempt is one or two API calls).
LEASE_POLL_S = 2.0
# Pause between two attempts to take a held lock file (a local system call).
FILE_POLL_S = 0.1
# While waiting, `lock_waiting` is logged at most this often.
WAIT_LOG_INTERVAL_S = 10.0
# Bound on one Kubernetes API call of the Lease.
LEASE_API_TIMEOUT_S = kube.API_TIMEOUT_S
LOCK_FILE_PREFIX = "valkey-reconciler-"
HOLDER_SUFFIX_BYTES = 3
LOCK_FILE_MODE = 0o600
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


class LockTimeout(ReconcilerError):
    """Another reconciler held the lock for longer than this run may wait; nothing was changed."""


class LockUnavailable(ReconcilerError):
    """The lock itself cannot be used (no Kubernetes API access, an unwritable lock file); nothing was changed."""


def lease_name(cluster_name: str) -> str:
    """The Lease of a cluster: `valkey-<name>-reconciler`, the name the chart's Role allows."""
    return f"valkey-{cluster_name}-reconciler"


def default_lock_file(addresses: Any) -> str:
    """A lock file under the system temp dir keyed by the sorted node addresses, so runs for the same nodes meet."""
    key = "\n".join(sorted(f"{host}:{port}" for host, port in addresses))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"{LOCK_FILE_PREFIX}{digest}.lock")


def holder_identity() -> str:
    """This run's identity: the pod's name (`HOSTNAME`) plus a random suffix, so two runs in one pod differ."""
    host = os.environ.get("HOSTNAME") or socket.gethostname() or "reconciler"
    return f"{host}-{secrets.token_hex(HOLDER_SUFFIX_BYTES)}"


class ReconcilerLock(abc.ABC):
    """One lock: `try_acquire` once, `acquire` with a bounded wait, `release`; `holder` names who has it."""

    #: How long a dead holder may keep the lock before it can be taken over (added to a hook run's wait).
    stale_after_s: float = 0.0
    poll_s: float = FILE_POLL_S

    def __init__(self, log: Any = None) -> None:
        self.log = log or logs.get()
        self.held = False
        # Why the last attempt could not tell whether the lock is free (an API error), or None.
        self.last_error: str | None = None

    @abc.abstractmethod
    def describe(self) -> str:
        """What the lock is, for messages."""

    @abc.abstractmethod
    def holder(self) -> str | None:
        """Who holds the lock now, or None."""

    @abc.abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if it is free (or stale); never waits."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock up (no-op if not held)."""

    @abc.abstractmethod
    def how_to_free(self, holder: str | None) -> str:
        """What a person should do about a holder that does not let go."""

    def acquire(self, timeout: float) -> None:
        """Take the lock, polling briefly, for at most `timeout` seconds; raise LockTimeout naming the holder."""
        end = time.monotonic() + timeout
        last_log = None
        while True:
            if self.try_acquire():
                self.log.info("lock_acquired", lock=self.describe())
                return
            now = time.monotonic()
            if now >= end:
                holder = self.holder()
                api = f" (last Kubernetes API error: {self.last_error})" if self.last_error else ""
                what = (f"another reconciler ({holder}) held {self.describe()} for more than {timeout:g}s"
                        if holder else f"could not take {self.describe()} within {timeout:g}s")
                raise LockTimeout(f"{what}{api}: {self.how_to_free(holder)}; nothing was changed",
                                  holder=holder, lock=self.describe())
            if last_log is None or now - last_log >= WAIT_LOG_INTERVAL_S:
                self.log.info("lock_waiting", lock=self.describe(), holder=self.holder(),
                              remaining_s=round(end - now, 1))
                last_log = now
            time.sleep(min(self.poll_s, max(0.0, end - now)))

    def start_renewing(self) -> None:
        """Keep the lock alive while the run acts (only a Lease needs it)."""

    def stop_renewing(self) -> None:
        """Stop keeping the lock alive."""


class FileLock(ReconcilerLock):
    """An fcntl (flock) lock on a file: the kernel frees it when the holding process exits, however it exits.

    Only processes on one machine see it: reconcilers for the same nodes on different machines without
    Kubernetes must not be run at once.
    """

    def __init__(self, path: str, log: Any = None) -> None:
        super().__init__(log)
        self.path = path
        self._fd: int | None = None
        self.identity = f"pid {os.getpid()} on {socket.gethostname()}"

    def describe(self) -> str:
        return f"lock file {self.path}"

    def holder(self) -> str | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            return None
        return text or None

    def how_to_free(self, holder: str | None) -> str:
        return ("wait for that reconciler to finish and run again (the lock is freed the moment its process "
                "exits), or stop it first")

    def try_acquire(self) -> bool:
        if self.held:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, LOCK_FILE_MODE)
        except OSError as exc:
            raise LockUnavailable(
                f"cannot open the lock file {self.path}: {exc.strerror}; set {LOCK_FILE_ENV} (--lock-file) to a "
                "writable path shared by every reconciler of this cluster on this machine; nothing was changed",
                path=self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        # The holder's identity lives in the file for waiters to report; it is truncated on release.
        os.ftruncate(fd, 0)
        os.pwrite(fd, (self.identity + "\n").encode(), 0)
        self._fd = fd
        self.held = True
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            # The file stays: deleting it would let a waiter lock an unlinked file while a newcomer locks a new one.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            self.held = False
            self.log.info("lock_released", lock=self.describe())


def error_text(exc: Exception) -> str:
    """One line for an API error: `503 Service Unavailable` for an ApiException, else its first line."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status is not None:
        return logs.scrub(f"{status} {reason or ''}".strip())
    text = str(exc).strip()
    return logs.scrub(text.splitlines()[0] if text else type(exc).__name__)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def micro_time(moment: dt.datetime) -> dt.datetime:
    """A time the API server accepts as MicroTime.

    The API server parses MicroTime with exactly six fractional digits, and the client writes
    `datetime.isoformat()`, which drops the fraction when the microsecond is 0: move such a time by 1 µs.
    """
    moment = moment.astimezone(dt.timezone.utc)
    return moment if moment.microsecond else moment.replace(microsecond=1)


class LeaseLock(ReconcilerLock):
    """A coordination.k8s.io/v1 Lease taken with create or read + replace (resourceVersion: optimistic concurrency).

    The holder renews `renewTime` in a background thread; a Lease whose `renewTime + leaseDurationSeconds`
    is in the past belongs to a holder that stopped (a killed Job pod) and may be taken over.
    """

    poll_s = LEASE_POLL_S

    def __init__(self, api: Any, namespace: str, name: str, identity: str | None = None, log: Any = None,
                 duration_s: int = LEASE_DURATION_S, renew_interval_s: float = LEASE_RENEW_INTERVAL_S,
                 clock: Callable[[], dt.datetime] = utc_now,
                 on_lost: Callable[[], None] | None = None) -> None:
        super().__init__(log)
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity or holder_identity()
        self.duration_s = int(duration_s)
        self.stale_after_s = float(duration_s)
        self.renew_interval_s = renew_interval_s
        self.clock = clock
        # Losing the Lease while acting means another reconciler may act too: by default interrupt the run
        # (the reconciler is safe to stop at any point; the next run continues from the observed state).
        self.on_lost = on_lost or _thread.interrupt_main
        self.lost = False
        self.last_renewed: dt.datetime | None = None
        self._last_seen_holder: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def how_to_free(self, holder: str | None) -> str:
        return (f"wait for that run to finish (kubectl -n {self.namespace} get jobs; a scheduled heal run is "
                f"bounded by its own timeout) and run again; if no reconciler is running, the Lease frees itself "
                f"{self.duration_s}s after its holder's last renewal")

    # -- Kubernetes API calls --------------------------------------------------------------------------

    def _read(self) -> Any | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=LEASE_API_TIMEOUT_S)
        except ApiException as exc:
            if exc.status == HTTP_NOT_FOUND:
                return None
            raise

    def _body(self, resource_version: str | None, holder: str | None, acquire_time: Any, renew_time: Any,
              transitions: int) -> Any:
        from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta

        return V1Lease(
            api_version="coordination.k8s.io/v1", kind="Lease",
            metadata=V1ObjectMeta(name=self.name, namespace=self.namespace, resource_version=resource_version),
            spec=V1LeaseSpec(holder_identity=holder, lease_duration_seconds=self.duration_s,
                             acquire_time=acquire_time, renew_time=renew_time, lease_transitions=transitions))

    def _expired(self, spec: Any, now: dt.datetime) -> bool:
        renewed = spec.renew_time or spec.acquire_time
        if renewed is None:
            return True
        duration = spec.lease_duration_seconds or self.duration_s
        return renewed + dt.timedelta(seconds=duration) < now

    def _api_error(self, exc: Exception, action: str) -> None:
        from kubernetes.client.rest import ApiException

        if isinstance(exc, ApiException) and exc.status == HTTP_FORBIDDEN:
            raise LockUnavailable(
                f"the reconciler's ServiceAccount may not {action} {self.describe()} (403 Forbidden): its Role "
                f"needs get/update on leases named {self.name} and create on leases in coordination.k8s.io "
                "(the chart's Role has them; upgrade the chart); nothing was changed",
                lock=self.describe()) from None
        self.last_error = error_text(exc)
        self.log.warning("lock_api_error", lock=self.describe(), action=action, error=self.last_error)

    def holder(self) -> str | None:
        try:
            lease = self._read()
        except Exception:  # the wait loop reports API errors itself; here the last known holder will do
            return self._last_seen_holder
        if lease is None or lease.spec is None:
            return None
        self._last_seen_holder = lease.spec.holder_identity or None
        return self._last_seen_holder

    def try_acquire(self) -> bool:
        from kubernetes.client.rest import ApiException

        if self.held:
            return True
        self.last_error = None
        now = micro_time(self.clock())
        try:
            lease = self._read()
            if lease is None:
                self.api.create_namespaced_lease(
                    self.namespace, self._body(None, self.identity, now, now, 0),
                    _request_timeout=LEASE_API_TIMEOUT_S)
            else:
                spec = lease.spec
                current = spec.holder_identity if spec is not None else None
                self._last_seen_holder = current or None
                if current and current != self.identity and not self._expired(spec, now):
                    return False
                if current and current != self.identity:
                    self.log.warning("lock_takeover", lock=self.describe(), previous_holder=current,
                                     last_renewed=str(spec.renew_time))
                transitions = (spec.lease_transitions or 0) if spec is not None else 0
                if current != self.identity:
                    transitions += 1
                self.api.replace_namespaced_lease(
                    self.name, self.namespace,
                    self._body(lease.metadata.resource_version, self.identity, now, now, transitions),
                    _request_timeout=LEASE_API_TIMEOUT_S)
        except ApiException as exc:
            # 409: another reconciler created or replaced the Lease between our read and our write.
            if exc.status == HTTP_CONFLICT:
                return False
            self._api_error(exc, "take")
            return False
        except Exception as exc:  # the API server unreachable for a moment: the wait loop tries again
            self._api_error(exc, "take")
            return False
        self.held = True
        self.lost = False
        self.last_renewed = now
        self._last_seen_holder = self.identity
        return True

    def renew(self) -> bool:
        """Move renewTime to now if this run still holds the Lease; False (and `on_lost`) once it does not."""
        if not self.held:
            return False
        now = micro_time(self.clock())
        try:
            lease = self._read()
            if lease is None or lease.spec is None or lease.spec.holder_identity != self.identity:
                self._lose(lease.spec.holder_identity if lease is not None and lease.spec is not None else None)
                return False
            spec = lease.spec
            self.api.replace_namespaced_lease(
                self.name, self.namespace,
                self._body(lease.metadata.resource_version, self.identity, spec.acquire_time, now,
                           spec.lease_transitions or 0),
                _request_timeout=LEASE_API_TIMEOUT_S)
        except Exception as exc:  # retried on the next tick while the Lease is still ours
            self.log.warning("lock_renew_failed", lock=self.describe(),
                             error=error_text(exc))
            if self.last_renewed is not None and \
                    self.last_renewed + dt.timedelta(seconds=self.duration_s) < micro_time(self.clock()):
                self._lose(None)
            return False
        self.last_renewed = now
        return True

    def _lose(self, new_holder: str | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.held = False
        self.log.error("lock_lost", lock=self.describe(), holder=new_holder,
                       message="another reconciler may act now: this run stops; the next run continues "
                               "from the observed state")
        self.on_lost()

    def release(self) -> None:
        """Clear the holder so the next run need not wait for the Lease to expire."""
        self.stop_renewing()
        if not self.held:
            return
        self.held = False
        now = micro_time(self.clock())
        try:
            lease = self._read()
            if lease is None or lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            self.api.replace_namespaced_lease(
                self.name, self.namespace,
                self._body(lease.metadata.resource_version, None, None, now, lease.spec.lease_transitions or 0),
                _request_timeout=LEASE_API_TIMEOUT_S)
        except Exception as exc:  # the Lease then expires on its own
            self.log.warning("lock_release_failed", lock=self.describe(), expires_in_s=self.duration_s,
                             error=error_text(exc))
            return
        self.log.info("lock_released", lock=self.describe())

    def start_renewing(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.renew_interval_s):
                if not self.renew() and self.lost:
                    return

        self._thread = threading.Thread(target=loop, name="lease-renew", daemon=True)
        self._thread.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=LEASE_API_TIMEOUT_S * 2)
            self._thread = None


def lock_mode(settings: Any, environ: Mapping[str, str]) -> str:
    """`skip` for a scheduled run (`--if-idle` or VALKEY_LOCK_MODE=skip), else `wait`; anything else is refused."""
    if getattr(settings, "if_idle", False):
        return MODE_SKIP
    raw = getattr(settings, "lock_mode", None) or environ.get(LOCK_MODE_ENV) or MODE_WAIT
    mode = raw.strip().lower()
    if mode not in LOCK_MODES:
        raise ConfigError(f"{LOCK_MODE_ENV} must be one of {', '.join(LOCK_MODES)}, got {raw!r}: `wait` for a "
                          "run that must happen (hooks, people), `skip` for a scheduled heal run",
                          setting=LOCK_MODE_ENV)
    return mode


def make_lock(settings: Any, log: Any = None, environ: Mapping[str, str] | None = None) -> ReconcilerLock:
    """The Lease inside Kubernetes (pod address scheme and a cluster name), else the lock file."""
    environ = os.environ if environ is None else environ
    lock_file = getattr(settings, "lock_file", None) or environ.get(LOCK_FILE_ENV) or None
    in_cluster = bool(environ.get("KUBERNETES_SERVICE_HOST"))
    if lock_file or not in_cluster or settings.explicit_nodes or not settings.cluster_name:
        return FileLock(lock_file or default_lock_file(settings.addresses), log)
    try:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CoordinationV1Api()
    except Exception as exc:
        raise LockUnavailable(
            f"running in Kubernetes but cannot use its API for the Lease {lease_name(settings.cluster_name)}: "
            f"{exc}; mount the ServiceAccount token (automountServiceAccountToken: true, as the chart does), or "
            f"set {LOCK_FILE_ENV} if this is the only reconciler of the cluster; nothing was changed") from None
    return LeaseLock(api, settings.namespace, lease_name(settings.cluster_name), log=log)


@contextlib.contextmanager
def reconciler_lock(settings: Any, log: Any = None, environ: Mapping[str, str] | None = None,
                    lock: ReconcilerLock | None = None) -> Iterator[bool]:
    """Hold the cluster's reconciler lock around a run; yields True to act, False when a skip-mode run must exit 0.

    `status` and `--dry-run` change nothing and take no lock. In wait mode the run waits up to
    `settings.timeout` plus the time a dead holder keeps the lock, then raises LockTimeout.
    """
    environ = os.environ if environ is None else environ
    log = log or logs.get()
    if getattr(settings, "command", None) == "status" or getattr(settings, "dry_run", False):
        yield True
        return
    mode = lock_mode(settings, environ)
    lock = lock or make_lock(settings, log, environ)
    if mode == MODE_SKIP:
        if not lock.try_acquire():
            log.info("lock_busy_skipped", lock=lock.describe(), holder=lock.holder(), api_error=lock.last_error,
                     message="another reconciler is running (or the lock could not be read); "
                             "this scheduled run does nothing and the next one tries again")
            yield False
            return
        log.info("lock_acquired", lock=lock.describe())
    else:
        lock.acquire(settings.timeout + lock.stale_after_s)
    lock.start_renewing()
    try:
        yield True
    finally:
        lock.release()
