"""Shared pytest fixtures: the repository root and real Valkey node sets on loopback (valkey_local)."""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
import tempfile
from pathlib import Path

import pytest

from valkey_local.binaries import ENGINES
from valkey_local.nodes import CLIENT_PORT, NodeSet, live_nodes, node_ip

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Cluster indices handed to tests (127.0.<index>.x). 0 is reserved; 1..9 are left to local mode
#: and benchmarks run by hand.
FIRST_TEST_CLUSTER, LAST_TEST_CLUSTER = 10, 255
#: How long a probe of an address already in use may take.
PROBE_TIMEOUT_SECONDS = 0.2


def _cluster_range() -> range:
    """This xdist worker's own slice of cluster indices (gw0 → 10.., gw1 → next slice ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (LAST_TEST_CLUSTER - FIRST_TEST_CLUSTER + 1) // max(workers, 1)
    if size < 1:
        raise RuntimeError(f"{workers} xdist workers: too many to give each its own cluster index")
    first = FIRST_TEST_CLUSTER + index * size
    return range(first, first + size)


def _in_use(cluster: int) -> bool:
    """True when something (another run, another person's experiment) already listens there."""
    try:
        with socket.create_connection((node_ip(cluster, 0), CLIENT_PORT), timeout=PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


_cluster_cycle = itertools.cycle(_cluster_range())
#: Lock files that keep concurrent pytest runs on this machine (several people, several sessions)
#: from taking the same cluster index.
LOCK_DIR = Path(tempfile.gettempdir()) / "valkey-local-clusters"


def allocate_cluster() -> tuple[int, int]:
    """A cluster index from this worker's slice that no other run holds and nothing listens on,
    with the open file descriptor whose lock reserves it (close it to release the index)."""
    LOCK_DIR.mkdir(exist_ok=True)
    for _ in range(len(_cluster_range())):
        cluster = next(_cluster_cycle)
        fd = os.open(LOCK_DIR / f"{cluster}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if _in_use(cluster):
            os.close(fd)
            continue
        return cluster, fd
    raise RuntimeError("no free cluster index left for this worker")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


class NodeSetFactory:
    """Makes NodeSets, each on its own cluster index and directory, and kills them all on close()."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.created: list[NodeSet] = []
        self._locks: list[int] = []

    def __call__(self, count: int, engine: str = "9", persistence: str = "rdb", overrides: str = "", *,
                 start: bool = True, **kwargs) -> NodeSet:
        cluster, lock = allocate_cluster()
        self._locks.append(lock)
        nodes = NodeSet(self._tmp.mktemp(f"cluster-{cluster}-"), cluster, count, engine=engine,
                        persistence=persistence, overrides=overrides, **kwargs)
        self.created.append(nodes)
        if start:
            nodes.start()
            nodes.wait_ready()
        return nodes

    def close(self) -> None:
        for nodes in self.created:
            nodes.kill_all()
        for lock in self._locks:
            os.close(lock)


@pytest.fixture
def node_set(tmp_path_factory):
    """Factory: node_set(count, engine="9", persistence="rdb", overrides="", *, start=True,
    passwords=None, env=None) -> NodeSet, started and ready unless start=False.

    Each call gets its own cluster index and directory. Every node is killed at teardown, also when
    the test fails.
    """
    factory = NodeSetFactory(tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_node_set(tmp_path_factory):
    """The node_set factory for module-scoped fixtures (one cluster shared by a module's tests)."""
    factory = NodeSetFactory(tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(params=ENGINES, ids=[f"valkey{engine}" for engine in ENGINES])
def engine(request) -> str:
    """Parametrizes a test over both engines ("9" = 9.1.2, "8" = 8.1.8)."""
    return request.param


@pytest.fixture(scope="session", autouse=True)
def no_valkey_left_running():
    """Fails the session (after killing them) if nodes started by the tests are still running."""
    yield
    leftovers = live_nodes()
    for node in leftovers:
        node.kill()
    assert not leftovers, f"valkey-server processes left running by the tests: {leftovers}"
