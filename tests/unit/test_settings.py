"""Settings: environment and flags → frozen Settings; every bad input names the variable or flag."""

from __future__ import annotations

import dataclasses

import pytest

from valkey_reconciler.errors import EXIT_BAD_SETTINGS, ConfigError
from valkey_reconciler.settings import DEFAULT_TIMEOUT_SECONDS, load

ENV = {"VALKEY_CLUSTER_NAME": "cache", "VALKEY_MASTERS": "3", "VALKEY_REPLICAS_PER_MASTER": "1",
       "VALKEY_PASSWORD": "s3cret-pass"}


def test_environment_alone_gives_the_in_cluster_pod_addresses():
    s = load(["reconcile"], ENV)
    assert (s.masters, s.replicas_per_master, s.user, s.port) == (3, 1, "admin", 6379)
    assert s.expected_pods == 6
    assert s.addresses[5] == ("valkey-cache-5.valkey-cache-headless.default.svc.cluster.local", 6379)
    assert s.timeout == DEFAULT_TIMEOUT_SECONDS and s.log_format == "auto" and not s.dry_run


def test_flags_win_over_the_environment():
    s = load(["reconcile", "--masters", "2", "--replicas-per-master", "0", "--namespace", "prod",
              "--user", "reconciler", "--port", "7000", "--timeout", "12.5", "--dry-run"], ENV)
    assert (s.masters, s.replicas_per_master, s.user, s.port, s.timeout, s.dry_run) == \
        (2, 0, "reconciler", 7000, 12.5, True)
    assert s.addresses[1] == ("valkey-cache-1.valkey-cache-headless.prod.svc.cluster.local", 7000)


def test_node_flags_replace_the_address_scheme_in_ordinal_order():
    env = {"VALKEY_PASSWORD": "pw"}
    s = load(["reconcile", "--masters", "1", "--replicas-per-master", "1",
              "--node", "10.0.0.2:6379", "--node", "[fd00::1]:6380"], env)
    assert s.addresses == (("10.0.0.2", 6379), ("fd00::1", 6380))
    assert s.explicit_nodes and s.cluster_name is None
    assert s.address(1) == "[fd00::1]:6380"


def test_pod_address_scheme_is_filled_per_ordinal():
    s = load(["reconcile"], {**ENV, "VALKEY_POD_ADDRESS": "127.0.9.{ordinal}"})
    assert [a for a, _ in s.addresses] == [f"127.0.9.{i}" for i in range(6)]


def test_the_password_is_never_shown_in_the_settings_repr():
    s = load(["reconcile"], ENV)
    assert "s3cret-pass" not in repr(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.masters = 5  # type: ignore[misc]


@pytest.mark.parametrize("argv,env_change,named", [
    (["reconcile"], {"VALKEY_PASSWORD": None}, "VALKEY_PASSWORD"),
    (["reconcile"], {"VALKEY_MASTERS": None}, "VALKEY_MASTERS"),
    (["reconcile"], {"VALKEY_MASTERS": "0"}, "VALKEY_MASTERS"),
    (["reconcile"], {"VALKEY_MASTERS": "three"}, "VALKEY_MASTERS"),
    (["reconcile"], {"VALKEY_REPLICAS_PER_MASTER": "-1"}, "VALKEY_REPLICAS_PER_MASTER"),
    (["reconcile", "--masters", "0"], {}, "--masters"),
    (["reconcile"], {"VALKEY_PORT": "70000"}, "VALKEY_PORT"),
    (["reconcile"], {"VALKEY_TIMEOUT_SECONDS": "0"}, "VALKEY_TIMEOUT_SECONDS"),
    (["reconcile"], {"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    (["reconcile"], {"VALKEY_PERSISTENCE": "always"}, "VALKEY_PERSISTENCE"),
    (["reconcile"], {"VALKEY_CLUSTER_NAME": None}, "VALKEY_CLUSTER_NAME"),
    (["reconcile"], {"VALKEY_POD_ADDRESS": "valkey-{name}.svc"}, "{ordinal}"),
    (["reconcile"], {"VALKEY_POD_ADDRESS": "valkey-{pod}-{ordinal}"}, "{pod}"),
    (["reconcile"], {"VALKEY_HOSTS_FILE": "/nonexistent/hosts"}, "VALKEY_HOSTS_FILE"),
    (["reconcile", "--node", "10.0.0.1"], {}, "--node"),
    (["reconcile", "--node", "10.0.0.1:6379"], {}, "--node"),  # 1 node but 3 x (1 + 1) expected
    (["reconcile"], {"VALKEY_NODE_TIMEOUT_MS": "0"}, "VALKEY_NODE_TIMEOUT_MS"),
    (["reconcile", "--node-timeout-ms", "5s"], {}, "--node-timeout-ms"),
    (["reconcile"], {"VALKEY_FAST_JOIN": "maybe"}, "VALKEY_FAST_JOIN"),
    (["reconcile", "--password", "x"], {}, "--password"),
    ([], {}, "reconcile"),
])
def test_bad_settings_raise_config_error_naming_the_setting(argv, env_change, named):
    env = {**ENV, **{k: v for k, v in env_change.items() if v is not None}}
    for k, v in env_change.items():
        if v is None:
            env.pop(k, None)
    with pytest.raises(ConfigError) as caught:
        load(argv, env)
    assert named in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_SETTINGS


def test_status_with_explicit_nodes_needs_no_layout():
    s = load(["status", "--node", "10.0.0.1:6379", "--json", "--check"], {"VALKEY_PASSWORD": "pw"})
    assert s.masters is None and s.replicas_per_master is None and s.json and s.check


def test_drain_takes_every_current_pod_but_never_fewer_than_the_new_size():
    env = {"VALKEY_PASSWORD": "pw"}
    nodes = [arg for i in range(4) for arg in ("--node", f"10.0.0.{i + 1}:6379")]
    s = load(["drain", "--masters", "1", "--replicas-per-master", "1", *nodes], env)
    assert s.expected_pods == 4
    with pytest.raises(ConfigError, match="--node"):
        load(["drain", "--masters", "3", "--replicas-per-master", "1", *nodes], env)
    with pytest.raises(ConfigError, match="--node"):
        load(["reconcile", "--masters", "1", "--replicas-per-master", "1", *nodes], env)


@pytest.mark.parametrize("env_value,expected", [
    (None, None),  # unset: persistence is not known
    ("", ""),  # set but empty: the chart's "persistence off"
    ("  ", ""),
    ("rdb", "rdb"),
    ("aof", "aof"),
    ("aof, rdb", "rdb,aof"),
], ids=["unset", "empty", "blank", "rdb", "aof", "both-reordered"])
def test_persistence_from_the_environment_keeps_set_but_empty_as_off(env_value, expected):
    env = dict(ENV) if env_value is None else {**ENV, "VALKEY_PERSISTENCE": env_value}
    assert load(["reconcile"], env).persistence == expected


def test_an_empty_persistence_flag_means_off_and_wins_over_the_environment():
    assert load(["reconcile", "--persistence", ""], {**ENV, "VALKEY_PERSISTENCE": "rdb"}).persistence == ""
    assert load(["drain", "--persistence", "aof"], {**ENV, "VALKEY_PERSISTENCE": ""}).persistence == "aof"


def test_other_blank_variables_still_read_as_unset():
    s = load(["reconcile"], {**ENV, "VALKEY_PORT": "", "LOG_FORMAT": " ", "VALKEY_USER": ""})
    assert (s.port, s.log_format, s.user) == (6379, "auto", "admin")


def test_fast_join_is_on_by_default_and_the_node_timeout_is_read_from_the_nodes():
    s = load(["reconcile"], ENV)
    assert (s.fast_join, s.node_timeout_ms) == (True, None)
    s = load(["reconcile", "--fast-join", "off"], {**ENV, "VALKEY_NODE_TIMEOUT_MS": "15000"})
    assert (s.fast_join, s.node_timeout_ms) == (False, 15000)
