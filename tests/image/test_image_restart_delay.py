"""Tests of the entrypoint's restart delay with persistence off (field notes H1, restart variant)."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from image_cluster import run_entrypoint, wait_until

#: Test override: a 1000 ms node timeout makes the computed delay 2 x 1000 ms = 2 s.
SHORT_TIMEOUT_OVERRIDES = "cluster-node-timeout 1000\n"
SHORT_TIMEOUT_DELAY_SECONDS = 2
#: The template's own cluster-node-timeout (valkey.conf: 5000 ms), so the computed delay is 10 s.
TEMPLATE_DELAY_SECONDS = 10
WAIT_LOG = "persistence off and nodes.conf from an earlier run found: waiting"
#: Bound on the log line appearing and on a node that must not wait answering.
LOG_TIMEOUT_SECONDS = 5.0
#: Bound on a waiting node answering after its delay.
ANSWER_TIMEOUT_SECONDS = 15.0
#: Bound on SIGTERM ending the entrypoint during its wait.
TERM_TIMEOUT_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 0.2
POLL_SECONDS = 0.02


def accepts_connections(node) -> bool:
    try:
        with socket.create_connection((node.ip, node.port), timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def seconds_until_listening(node, timeout: float) -> float:
    """Starts `node` and returns how long until its port accepted a TCP connection (bounded)."""
    started = time.monotonic()
    node.start()
    wait_until(lambda: accepts_connections(node), timeout, f"{node!r} to accept connections")
    return time.monotonic() - started


def stopped_with_nodes_conf(node_set, persistence: str, overrides: str = "", env: dict | None = None):
    """A node that ran once (so it wrote nodes.conf) and is now stopped."""
    node = node_set(1, persistence=persistence, overrides=overrides, env=env).nodes[0]
    node.stop()
    assert (node.data_dir / "nodes.conf").exists()
    return node


def test_persistence_off_restart_waits_twice_the_node_timeout_before_listening(node_set):
    node = stopped_with_nodes_conf(node_set, "", SHORT_TIMEOUT_OVERRIDES)
    elapsed = seconds_until_listening(node, ANSWER_TIMEOUT_SECONDS)
    assert elapsed >= SHORT_TIMEOUT_DELAY_SECONDS, f"listening after {elapsed:.2f} s"
    log = node.log_path.read_text()
    assert log.count(WAIT_LOG) == 1
    assert f"waiting {SHORT_TIMEOUT_DELAY_SECONDS} s (2 x cluster-node-timeout 1000 ms)" in log
    node.wait_ready()
    assert not any(p.name == "dump.rdb" for p in node.data_dir.iterdir())


def test_persistence_off_restart_is_unreachable_during_the_wait(node_set):
    node = stopped_with_nodes_conf(node_set, "", SHORT_TIMEOUT_OVERRIDES)
    started = time.monotonic()
    node.start()
    wait_until(lambda: WAIT_LOG in node.log_path.read_text(), LOG_TIMEOUT_SECONDS, "the wait log line")
    # Probe throughout the part of the delay that is surely still running.
    probes = 0
    while time.monotonic() - started < SHORT_TIMEOUT_DELAY_SECONDS - 2 * CONNECT_TIMEOUT_SECONDS:
        assert not accepts_connections(node), f"accepted a connection {time.monotonic() - started:.2f} s in"
        probes += 1
        time.sleep(POLL_SECONDS)
    assert probes > 0
    assert (node.data_dir / "nodes.conf").exists(), "nodes.conf must be removed only after the wait"
    node.wait_ready(ANSWER_TIMEOUT_SECONDS)


def test_first_start_with_persistence_off_does_not_wait(node_set):
    node = node_set(1, persistence="", start=False).nodes[0]
    assert seconds_until_listening(node, LOG_TIMEOUT_SECONDS) < TEMPLATE_DELAY_SECONDS
    assert WAIT_LOG not in node.log_path.read_text()


@pytest.mark.parametrize("persistence", ["rdb", "aof"])
def test_restart_with_persistence_on_does_not_wait(node_set, persistence):
    node = stopped_with_nodes_conf(node_set, persistence)
    assert seconds_until_listening(node, LOG_TIMEOUT_SECONDS) < TEMPLATE_DELAY_SECONDS
    assert WAIT_LOG not in node.log_path.read_text()


def test_restart_delay_zero_disables_the_wait(node_set):
    node = stopped_with_nodes_conf(node_set, "", env={"VALKEY_RESTART_DELAY_SECONDS": "0"})
    assert seconds_until_listening(node, LOG_TIMEOUT_SECONDS) < TEMPLATE_DELAY_SECONDS
    assert WAIT_LOG not in node.log_path.read_text()


def test_explicit_restart_delay_replaces_the_computed_one(node_set):
    node = stopped_with_nodes_conf(node_set, "", env={"VALKEY_RESTART_DELAY_SECONDS": "01"})
    elapsed = seconds_until_listening(node, LOG_TIMEOUT_SECONDS)
    assert 1 <= elapsed < TEMPLATE_DELAY_SECONDS, f"listening after {elapsed:.2f} s"
    assert "waiting 1 s (VALKEY_RESTART_DELAY_SECONDS=01)" in node.log_path.read_text()


def test_sigterm_during_the_wait_stops_at_once_and_keeps_nodes_conf(node_set):
    node = stopped_with_nodes_conf(node_set, "")  # template timeout: a 10 s wait
    node.start()
    wait_until(lambda: WAIT_LOG in node.log_path.read_text(), LOG_TIMEOUT_SECONDS, "the wait log line")
    started = time.monotonic()
    node.signal(signal.SIGTERM)
    wait_until(lambda: not node.running, TERM_TIMEOUT_SECONDS, "the entrypoint to exit on SIGTERM")
    assert time.monotonic() - started < TEMPLATE_DELAY_SECONDS
    assert (node.data_dir / "nodes.conf").exists(), "a restart after an interrupted wait must wait again"


@pytest.mark.parametrize("value", ["ten", "-1", "1.5", " 3"])
def test_bad_restart_delay_is_refused_and_changes_nothing(node_set, value):
    node = stopped_with_nodes_conf(node_set, "")
    before = (node.data_dir / "nodes.conf").read_bytes()
    result = run_entrypoint({**node.environment(), "VALKEY_RESTART_DELAY_SECONDS": value})
    assert result.returncode != 0
    assert f"VALKEY_RESTART_DELAY_SECONDS='{value}' is not a whole number of seconds" in result.stderr
    assert (node.data_dir / "nodes.conf").read_bytes() == before


def test_bad_cluster_node_timeout_is_refused_when_a_delay_is_computed(node_set):
    node = stopped_with_nodes_conf(node_set, "")
    (node.template_dir / "overrides.conf").write_text("cluster-node-timeout 5s\n")
    before = (node.data_dir / "nodes.conf").read_bytes()
    result = run_entrypoint(node.environment())
    assert result.returncode != 0
    assert "cluster-node-timeout '5s'" in result.stderr and "whole number of milliseconds" in result.stderr
    assert (node.data_dir / "nodes.conf").read_bytes() == before
