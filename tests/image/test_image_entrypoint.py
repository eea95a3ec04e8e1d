"""Tests of image/entrypoint.sh on its own: input checks, rendering, persistence modes, secrets hygiene."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest
import valkey

from image_cluster import run_entrypoint
from valkey_local.nodes import Passwords

PASSWORD_VARS = [
    "VALKEY_ADMIN_PASSWORD",
    "VALKEY_CLIENT_PASSWORD",
    "VALKEY_REPLICATION_PASSWORD",
    "VALKEY_RECONCILER_PASSWORD",
    "VALKEY_MONITOR_PASSWORD",
]
REQUIRED_VARS = [*PASSWORD_VARS, "POD_IP"]
MODES = {  # VALKEY_PERSISTENCE → (CONFIG GET save is empty, appendonly)
    "rdb,aof": (False, "yes"),
    "rdb": (False, "no"),
    "aof": (True, "yes"),
    "": (True, "no"),
}
EXTRA_SPELLINGS = {"rdb aof": (False, "yes"), "aof,rdb": (False, "yes"), "none": (True, "no"), "~": (True, "no")}
#: These tests restart nodes with persistence off only to check files and identity; the restart
#: delay itself is tested in test_image_restart_delay.py.
NO_RESTART_DELAY = {"VALKEY_RESTART_DELAY_SECONDS": "0"}


@pytest.fixture
def idle_node(node_set):
    """A node whose directories and environment exist but whose server is not started."""
    return node_set(1, persistence="", start=False).nodes[0]


def refuse(node, **changes):
    """Runs the entrypoint with node's environment changed (None removes a variable); checks it failed
    without rendering anything and without echoing a password."""
    env = node.environment()
    for name, value in changes.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    result = run_entrypoint(env)
    assert result.returncode != 0, result.stderr
    assert not (node.config_dir / "valkey.conf").exists()
    assert not (node.config_dir / "users.acl").exists()
    for password in dataclasses.astuple(node.passwords):
        assert password not in result.stdout + result.stderr
    return result.stderr


@pytest.mark.parametrize("variable", REQUIRED_VARS)
def test_missing_variable_exits_non_zero_naming_it(idle_node, variable):
    stderr = refuse(idle_node, **{variable: None})
    assert f"{variable} is not set" in stderr


@pytest.mark.parametrize("variable", PASSWORD_VARS)
def test_empty_password_is_refused(idle_node, variable):
    stderr = refuse(idle_node, **{variable: ""})
    assert f"{variable} is empty" in stderr


def test_password_with_newline_is_refused(idle_node):
    stderr = refuse(idle_node, VALKEY_ADMIN_PASSWORD="first\nuser evil on nopass +@all")
    assert "VALKEY_ADMIN_PASSWORD contains a line break" in stderr


@pytest.mark.parametrize(
    "password", ["a" * 15, "a" * 129, "abcdefgh ijklmnopq", 'abcdefgh"ijklmnopq', "abcdefgh$ijklmnopq", "abcdefgh-ijklmnop"]
)
def test_replication_password_outside_safe_charset_is_refused(idle_node, password):
    stderr = refuse(idle_node, VALKEY_REPLICATION_PASSWORD=password)
    assert "VALKEY_REPLICATION_PASSWORD" in stderr
    assert "letters A-Z, a-z and digits 0-9" in stderr or "16 to 128 characters" in stderr


@pytest.mark.parametrize("value", ["foo", "rdb,foo", "RDB", ","])
def test_bad_persistence_value_is_refused_naming_value_and_allowed_ones(idle_node, value):
    stderr = refuse(idle_node, VALKEY_PERSISTENCE=value)
    assert f"VALKEY_PERSISTENCE='{value}'" in stderr
    assert "rdb,aof | rdb | aof | none" in stderr


def test_bad_pod_ip_is_refused(idle_node):
    assert "POD_IP='pod-0.example' is not an IPv4 or IPv6 address" in refuse(idle_node, POD_IP="pod-0.example")


def test_missing_template_is_refused(idle_node):
    (idle_node.template_dir / "users.acl").unlink()
    assert "users.acl is missing" in refuse(idle_node)


def test_refused_start_changes_nothing_in_the_data_dir(idle_node):
    idle_node.data_dir.mkdir(parents=True)
    (idle_node.data_dir / "nodes.conf").write_text("stale identity")
    refuse(idle_node, VALKEY_MONITOR_PASSWORD=None)
    assert (idle_node.data_dir / "nodes.conf").read_text() == "stale identity"


@pytest.mark.parametrize("mode", [*MODES, *EXTRA_SPELLINGS])
def test_persistence_mode_is_applied_and_none_forgets_identity(node_set, mode):
    save_empty, appendonly = {**MODES, **EXTRA_SPELLINGS}[mode]
    node = node_set(1, persistence=mode, env=NO_RESTART_DELAY).nodes[0]
    with node.client() as conn:
        assert (conn.config_get("save")["save"] == "") is save_empty
        assert conn.config_get("appendonly")["appendonly"] == appendonly
        before = conn.execute_command("CLUSTER MYID")
    node.restart()
    with node.client() as conn:
        after = conn.execute_command("CLUSTER MYID")
    if save_empty and appendonly == "no":
        assert after != before, "with persistence off a restarted node must be a new node"
        assert not (node.data_dir / "dump.rdb").exists()
    else:
        assert after == before, "with persistence on a restarted node keeps its identity"


def test_persistence_off_deletes_nodes_conf_and_data_files(node_set):
    node = node_set(1, persistence="rdb", env=NO_RESTART_DELAY).nodes[0]
    with node.client() as conn:
        conn.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
        conn.save()
    node.stop()
    assert (node.data_dir / "nodes.conf").exists() and (node.data_dir / "dump.rdb").exists()
    (node.data_dir / "appendonlydir").mkdir()
    node.persistence = ""
    node.start()
    node.wait_ready()
    assert {p.name for p in node.data_dir.iterdir()} <= {"nodes.conf"}  # only the new node's own file
    with node.client() as conn:
        assert conn.execute_command("CLUSTER INFO")["cluster_slots_assigned"] == "0"


def test_engine_9_hands_over_on_sigterm(node_set):
    node = node_set(1).nodes[0]
    with node.client() as conn:
        assert conn.info("server")["valkey_version"].startswith("9.1.")
        assert conn.config_get("shutdown-on-sigterm")["shutdown-on-sigterm"] == "failover"
        assert conn.config_get("shutdown-timeout")["shutdown-timeout"] == "10"


def test_engine_8_starts_from_the_same_templates(node_set):
    nodes = node_set(1, engine="8", persistence="rdb,aof")
    node = nodes.nodes[0]
    with node.client() as conn:
        assert conn.info("server")["valkey_version"] == "8.1.8"
        assert conn.config_get("shutdown-on-sigterm")["shutdown-on-sigterm"] == "default"
        assert conn.config_get("appendonly")["appendonly"] == "yes"
    with node.client("client") as conn:
        assert conn.ping()
        with pytest.raises(valkey.exceptions.NoPermissionError):
            conn.flushall()


def test_dollar_signs_in_templates_and_overrides_survive(node_set):
    nodes = node_set(1, overrides='syslog-ident "$valkey-${POD_IP}"\n', start=False)
    node = nodes.nodes[0]
    template = node.template_dir / "valkey.conf"
    template.write_text(template.read_text() + "# keep $HOME and ${VALKEY_ADMIN_PASSWORD} as written\n")
    nodes.start()
    nodes.wait_ready()
    rendered = (node.config_dir / "valkey.conf").read_text()
    assert "# keep $HOME and ${VALKEY_ADMIN_PASSWORD} as written" in rendered
    assert f"bind {node.ip}" in rendered
    with node.client() as conn:
        assert conn.config_get("syslog-ident")["syslog-ident"] == "$valkey-${POD_IP}"


def test_client_password_with_spaces_is_hashed_and_works(node_set):
    passwords = dataclasses.replace(Passwords.generate(), client="pw +@all ~* &* nopass")
    node = node_set(1, passwords=passwords).nodes[0]
    acl = (node.config_dir / "users.acl").read_text()
    assert "+@all ~* &* nopass" not in acl
    with node.client("client") as conn:
        assert conn.ping()
        with pytest.raises(valkey.exceptions.NoPermissionError):
            conn.flushall()
    with pytest.raises(valkey.exceptions.AuthenticationError):
        node.client("client", password="pw").ping()


def test_no_password_in_rendered_files_log_argv_or_environment(node_set):
    node = node_set(1).nodes[0]
    conf = (node.config_dir / "valkey.conf").read_text()
    acl = (node.config_dir / "users.acl").read_text()
    cmdline = open(f"/proc/{node.pid}/cmdline", "rb").read().decode()
    environ = open(f"/proc/{node.pid}/environ", "rb").read().decode()
    log = node.log_path.read_text()
    secrets = dataclasses.asdict(node.passwords)
    for user, password in secrets.items():
        assert password not in acl, user
        assert password not in cmdline, user
        assert password not in environ, user
        assert password not in log, user
        if user != "replication":
            assert password not in conf, user
    lines_with_replication_password = [line for line in conf.splitlines() if secrets["replication"] in line]
    assert lines_with_replication_password == [f'primaryauth "{secrets["replication"]}"']
    assert acl.count("#") == 5  # five hashed passwords; no comment line left; default has none


def test_rendered_files_are_private(node_set):
    node = node_set(1).nodes[0]
    for name in ("valkey.conf", "users.acl"):
        mode = stat.S_IMODE(os.stat(node.config_dir / name).st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
