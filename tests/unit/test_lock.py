"""The reconciler lock: the Lease logic against the kubernetes client's own models and a tiny in-memory API server, and the lock file in one process."""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
import time
import types

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from valkey_reconciler import lock as lk
from valkey_reconciler.errors import ConfigError, ReconcilerError

NAMESPACE = "cache"
NAME = lk.lease_name("rel")
T0 = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
# The API server parses MicroTime with Go's layout 2006-01-02T15:04:05.000000Z07:00: exactly six digits.
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
WAIT_BOUND_S = 5.0
POLL_S = 0.01


class FakeLeaseApi:
    """The CoordinationV1Api methods the lock calls, against an in-memory store with real resourceVersion semantics.

    Bodies go through the client's own serialisation (what would go on the wire) and come back through its
    own deserialisation, so the lock sees what it would see from a real API server.
    """

    def __init__(self) -> None:
        self.client = ApiClient()
        self.store: dict[tuple[str, str], dict] = {}
        self.version = 0
        self.before_write = None  # called once before the next write: lets a test race another writer in
        self.fail_with: ApiException | None = None

    def _wire(self, body) -> dict:
        data = self.client.sanitize_for_serialization(body)
        for key in ("acquireTime", "renewTime"):
            value = data.get("spec", {}).get(key)
            if value is not None and not MICRO_TIME.match(value):
                raise ApiException(status=400, reason=f"BadRequest: cannot parse {key} {value!r} as MicroTime")
        return data

    def _out(self, data: dict):
        return self.client._ApiClient__deserialize(copy.deepcopy(data), "V1Lease")

    def _hook(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        hook, self.before_write = self.before_write, None
        if hook:
            hook()

    def read_namespaced_lease(self, name, namespace, **_kw):
        if self.fail_with is not None:
            raise self.fail_with
        if (namespace, name) not in self.store:
            raise ApiException(status=404, reason="Not Found")
        return self._out(self.store[(namespace, name)])

    def create_namespaced_lease(self, namespace, body, **_kw):
        self._hook()
        data = self._wire(body)
        key = (namespace, data["metadata"]["name"])
        if data["metadata"].get("resourceVersion"):
            raise ApiException(status=400, reason="BadRequest: resourceVersion should not be set on objects to be created")
        if key in self.store:
            raise ApiException(status=409, reason="AlreadyExists")
        self.version += 1
        data["metadata"]["resourceVersion"] = str(self.version)
        self.store[key] = data
        return self._out(data)

    def replace_namespaced_lease(self, name, namespace, body, **_kw):
        self._hook()
        data = self._wire(body)
        key = (namespace, name)
        if key not in self.store:
            raise ApiException(status=404, reason="Not Found")
        if data["metadata"].get("resourceVersion") != self.store[key]["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict: the object has been modified")
        self.version += 1
        data["metadata"]["resourceVersion"] = str(self.version)
        self.store[key] = data
        return self._out(data)

    def spec(self) -> dict:
        return self.store[(NAMESPACE, NAME)]["spec"]

    def resource_version(self) -> str:
        return self.store[(NAMESPACE, NAME)]["metadata"]["resourceVersion"]


class RecordingLog:
    """A logger that keeps (level, event, fields) so tests can assert what was reported."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def _add(self, level, event, **kw):
        self.records.append((level, event, kw))

    def info(self, event, **kw):
        self._add("info", event, **kw)

    def warning(self, event, **kw):
        self._add("warning", event, **kw)

    def error(self, event, **kw):
        self._add("error", event, **kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.records]


class Clock:
    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def api():
    return FakeLeaseApi()


@pytest.fixture
def clock():
    return Clock()


def make(api, clock, identity, log=None, **kw):
    lost = []
    lock = lk.LeaseLock(api, NAMESPACE, NAME, identity=identity, log=log or RecordingLog(), clock=clock,
                        on_lost=lambda: lost.append(identity), **kw)
    lock.lost_calls = lost
    return lock


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class TestLeaseAcquire:
    def test_acquire_free_lease_creates_it_with_holder_and_duration(self, api, clock):
        a = make(api, clock, "job-a-1")
        assert a.try_acquire() is True
        spec = api.spec()
        assert spec["holderIdentity"] == "job-a-1"
        assert spec["leaseDurationSeconds"] == lk.LEASE_DURATION_S
        assert spec["leaseTransitions"] == 0
        assert parse(spec["renewTime"]) - T0 < dt.timedelta(milliseconds=1)

    def test_times_are_written_with_six_fractional_digits_even_at_a_whole_second(self, api, clock):
        assert T0.microsecond == 0
        make(api, clock, "job-a-1").try_acquire()
        assert MICRO_TIME.match(api.spec()["renewTime"]) and MICRO_TIME.match(api.spec()["acquireTime"])

    def test_a_fresh_lease_held_by_another_is_not_taken(self, api, clock):
        assert make(api, clock, "job-a-1").try_acquire()
        version = api.resource_version()
        clock.advance(lk.LEASE_DURATION_S - 1)
        b = make(api, clock, "heal-b-2")
        assert b.try_acquire() is False
        assert b.holder() == "job-a-1"
        assert api.resource_version() == version, "a refused attempt must not write"

    def test_released_lease_is_taken_at_once_and_counts_a_transition(self, api, clock):
        a = make(api, clock, "job-a-1")
        a.try_acquire()
        a.release()
        assert "holderIdentity" not in api.spec()
        b = make(api, clock, "heal-b-2")
        assert b.try_acquire() is True
        assert api.spec()["holderIdentity"] == "heal-b-2"
        assert api.spec()["leaseTransitions"] == 1

    def test_conflict_between_read_and_replace_loses_cleanly(self, api, clock):
        make(api, clock, "job-a-1").try_acquire()
        clock.advance(lk.LEASE_DURATION_S + 1)  # a's Lease has expired: b and c both try to take it over
        b, c = make(api, clock, "heal-b-2"), make(api, clock, "hook-c-3")
        api.before_write = lambda: c.try_acquire()  # c writes after b read and before b replaces
        assert b.try_acquire() is False, "b's replace carried a stale resourceVersion and must get 409"
        assert b.held is False
        assert c.held is True and api.spec()["holderIdentity"] == "hook-c-3"

    def test_create_race_loses_cleanly(self, api, clock):
        b, c = make(api, clock, "heal-b-2"), make(api, clock, "hook-c-3")
        api.before_write = lambda: c.try_acquire()  # both saw no Lease; c creates first
        assert b.try_acquire() is False
        assert api.spec()["holderIdentity"] == "hook-c-3"

    def test_expired_lease_is_taken_over(self, api, clock):
        make(api, clock, "job-a-1").try_acquire()
        clock.advance(lk.LEASE_DURATION_S + 1)
        log = RecordingLog()
        b = make(api, clock, "heal-b-2", log=log)
        assert b.try_acquire() is True
        assert api.spec()["holderIdentity"] == "heal-b-2"
        assert api.spec()["leaseTransitions"] == 1
        (takeover,) = [kw for _, e, kw in log.records if e == "lock_takeover"]
        assert takeover["previous_holder"] == "job-a-1"


class TestLeaseRenewAndRelease:
    def test_renew_moves_renew_time_and_keeps_the_holder(self, api, clock):
        a = make(api, clock, "job-a-1")
        a.try_acquire()
        acquired = api.spec()["acquireTime"]
        clock.advance(lk.LEASE_RENEW_INTERVAL_S)
        assert a.renew() is True
        assert api.spec()["holderIdentity"] == "job-a-1"
        assert api.spec()["acquireTime"] == acquired
        assert parse(api.spec()["renewTime"]) - T0 >= dt.timedelta(seconds=lk.LEASE_RENEW_INTERVAL_S)
        # renewed: still not expired for others one full duration after the first acquire
        clock.advance(lk.LEASE_DURATION_S - 1)
        assert make(api, clock, "heal-b-2").try_acquire() is False

    def test_renew_after_a_takeover_reports_the_loss(self, api, clock):
        a = make(api, clock, "job-a-1")
        a.try_acquire()
        clock.advance(lk.LEASE_DURATION_S + 1)
        make(api, clock, "heal-b-2").try_acquire()
        assert a.renew() is False
        assert a.lost is True and a.lost_calls == ["job-a-1"]
        assert api.spec()["holderIdentity"] == "heal-b-2", "the loser must not write"

    def test_renew_keeps_trying_through_api_errors_until_the_lease_would_expire(self, api, clock):
        a = make(api, clock, "job-a-1")
        a.try_acquire()
        api.fail_with = ApiException(status=500, reason="Internal Server Error")
        clock.advance(lk.LEASE_RENEW_INTERVAL_S)
        assert a.renew() is False and a.lost is False
        clock.advance(lk.LEASE_DURATION_S)
        assert a.renew() is False and a.lost is True and a.lost_calls == ["job-a-1"]

    def test_background_thread_renews_while_held(self, api):
        a = lk.LeaseLock(api, NAMESPACE, NAME, identity="job-a-1", log=RecordingLog(), renew_interval_s=POLL_S)
        a.try_acquire()
        first = api.resource_version()
        a.start_renewing()
        try:
            end = time.monotonic() + WAIT_BOUND_S
            while api.resource_version() == first and time.monotonic() < end:
                time.sleep(POLL_S)
            assert api.resource_version() != first, "the Lease was not renewed in the background"
            assert api.spec()["holderIdentity"] == "job-a-1"
        finally:
            a.release()
        assert "holderIdentity" not in api.spec()

    def test_release_does_not_clobber_a_new_holder(self, api, clock):
        a = make(api, clock, "job-a-1")
        a.try_acquire()
        clock.advance(lk.LEASE_DURATION_S + 1)
        make(api, clock, "heal-b-2").try_acquire()
        version = api.resource_version()
        a.release()
        assert api.spec()["holderIdentity"] == "heal-b-2" and api.resource_version() == version


class TestLeaseErrors:
    def test_timeout_error_names_the_holder_and_what_to_do(self, api, clock):
        make(api, clock, "job-a-1").try_acquire()
        log = RecordingLog()
        b = make(api, clock, "heal-b-2", log=log)
        b.poll_s = POLL_S
        with pytest.raises(lk.LockTimeout) as err:
            b.acquire(timeout=0.2)
        message = str(err.value)
        assert "job-a-1" in message and f"Lease {NAMESPACE}/{NAME}" in message
        assert "kubectl -n cache get jobs" in message and "nothing was changed" in message
        assert isinstance(err.value, ReconcilerError) and err.value.exit_code == 1
        waiting = [kw for _, e, kw in log.records if e == "lock_waiting"]
        assert waiting and waiting[0]["holder"] == "job-a-1"

    def test_forbidden_is_a_clear_error_naming_the_rbac(self, api, clock):
        api.fail_with = ApiException(status=403, reason="Forbidden")
        with pytest.raises(lk.LockUnavailable) as err:
            make(api, clock, "job-a-1").try_acquire()
        assert "403" in str(err.value) and "leases" in str(err.value) and NAME in str(err.value)

    def test_api_outage_is_retried_then_reported_in_the_timeout(self, api, clock):
        api.fail_with = ApiException(status=503, reason="Service Unavailable")
        b = make(api, clock, "heal-b-2")
        b.poll_s = POLL_S
        with pytest.raises(lk.LockTimeout) as err:
            b.acquire(timeout=0.1)
        assert "Service Unavailable" in str(err.value)


def settings(**kw):
    base = dict(command="reconcile", dry_run=False, timeout=0.3, explicit_nodes=True, cluster_name="rel",
                namespace=NAMESPACE, addresses=(("127.0.10.1", 6379), ("127.0.10.2", 6379)))
    base.update(kw)
    return types.SimpleNamespace(**base)


class TestReconcilerLock:
    def test_skip_mode_with_the_lock_held_yields_false_and_logs_lock_busy_skipped(self, api, clock):
        make(api, clock, "job-a-1").try_acquire()
        log = RecordingLog()
        b = make(api, clock, "heal-b-2", log=log)
        with lk.reconciler_lock(settings(), log=log, environ={"VALKEY_LOCK_MODE": "skip"}, lock=b) as act:
            assert act is False
        (busy,) = [kw for _, e, kw in log.records if e == "lock_busy_skipped"]
        assert busy["holder"] == "job-a-1"
        assert api.spec()["holderIdentity"] == "job-a-1"

    def test_if_idle_setting_means_skip(self):
        assert lk.lock_mode(settings(if_idle=True), {}) == lk.MODE_SKIP
        assert lk.lock_mode(settings(), {}) == lk.MODE_WAIT

    def test_wait_mode_holds_the_lease_for_the_body_and_releases_it(self, api, clock):
        log = RecordingLog()
        a = make(api, clock, "job-a-1", log=log)
        with lk.reconciler_lock(settings(), log=log, environ={}, lock=a) as act:
            assert act is True
            assert api.spec()["holderIdentity"] == "job-a-1"
        assert "holderIdentity" not in api.spec()
        assert log.events().count("lock_acquired") == 1 and "lock_released" in log.events()

    def test_bad_lock_mode_is_refused_before_anything_is_taken(self, api, clock):
        a = make(api, clock, "job-a-1")
        with pytest.raises(ConfigError) as err:
            with lk.reconciler_lock(settings(), environ={"VALKEY_LOCK_MODE": "maybe"}, lock=a):
                pass
        assert "VALKEY_LOCK_MODE" in str(err.value) and "wait" in str(err.value) and "skip" in str(err.value)
        assert err.value.exit_code == 2
        assert not api.store

    @pytest.mark.parametrize("changes", [{"command": "status"}, {"dry_run": True}])
    def test_status_and_dry_run_take_no_lock(self, api, clock, changes):
        a = make(api, clock, "job-a-1")
        with lk.reconciler_lock(settings(**changes), environ={}, lock=a) as act:
            assert act is True
        assert not api.store


class TestChoiceAndFileLock:
    def test_without_kubernetes_the_file_lock_is_keyed_by_the_sorted_addresses(self):
        one = lk.make_lock(settings(), RecordingLog(), environ={})
        assert isinstance(one, lk.FileLock)
        swapped = settings(addresses=(("127.0.10.2", 6379), ("127.0.10.1", 6379)))
        other = settings(addresses=(("127.0.11.1", 6379),))
        assert lk.make_lock(swapped, RecordingLog(), environ={}).path == one.path
        assert lk.make_lock(other, RecordingLog(), environ={}).path != one.path

    def test_explicit_nodes_use_the_file_lock_even_inside_kubernetes(self):
        env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
        assert isinstance(lk.make_lock(settings(explicit_nodes=True), RecordingLog(), environ=env), lk.FileLock)

    def test_lock_file_setting_wins(self, tmp_path):
        path = str(tmp_path / "mine.lock")
        env = {"VALKEY_LOCK_FILE": path, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
        lock = lk.make_lock(settings(explicit_nodes=False), RecordingLog(), environ=env)
        assert isinstance(lock, lk.FileLock) and lock.path == path

    def test_inside_kubernetes_without_a_token_is_a_clear_error(self, monkeypatch):
        env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(lk.LockUnavailable) as err:
            lk.make_lock(settings(explicit_nodes=False), RecordingLog(), environ=env)
        assert NAME in str(err.value) and "automountServiceAccountToken" in str(err.value)

    def test_two_file_locks_exclude_each_other_and_report_the_holder(self, tmp_path):
        path = str(tmp_path / "x.lock")
        a, b = lk.FileLock(path, RecordingLog()), lk.FileLock(path, RecordingLog())
        assert a.try_acquire() is True
        assert b.try_acquire() is False
        assert b.holder() == a.identity
        b.poll_s = POLL_S
        with pytest.raises(lk.LockTimeout) as err:
            b.acquire(timeout=0.1)
        assert a.identity in str(err.value) and path in str(err.value)
        a.release()
        assert b.try_acquire() is True and b.holder() == b.identity
        b.release()

    def test_waiter_gets_the_file_lock_when_the_holder_releases(self, tmp_path):
        path = str(tmp_path / "x.lock")
        a, b = lk.FileLock(path, RecordingLog()), lk.FileLock(path, RecordingLog())
        a.try_acquire()
        b.poll_s = POLL_S
        timer = threading.Timer(0.1, a.release)
        timer.start()
        try:
            b.acquire(timeout=WAIT_BOUND_S)
            assert b.held
        finally:
            timer.join()
            b.release()

    def test_unwritable_lock_file_is_a_clear_error(self, tmp_path):
        path = str(tmp_path / "missing-dir" / "x.lock")
        with pytest.raises(lk.LockUnavailable) as err:
            lk.FileLock(path, RecordingLog()).try_acquire()
        assert path in str(err.value) and "VALKEY_LOCK_FILE" in str(err.value)
