"""Starts and stops real valkey-server nodes on loopback through image/entrypoint.sh, one IP per node."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path

import valkey

from .binaries import ENGINES, server_binary

CLIENT_PORT = 6379
BUS_PORT = 16379

#: The repository this package lives in (local/src/valkey_local/nodes.py → repo root).
REPO_ROOT = Path(__file__).resolve().parents[3]
ENTRYPOINT = REPO_ROOT / "image" / "entrypoint.sh"
TEMPLATES = (REPO_ROOT / "valkey.conf", REPO_ROOT / "users.acl")

#: Bound on a node becoming ready (process up, PING answered, no dataset loading).
READY_TIMEOUT_SECONDS = 15.0
#: Bound on a graceful stop. Above the entrypoint's shutdown-timeout (10 s): on SIGTERM a 9.x
#: primary may first wait for a replica to take over, and an RDB node saves before exiting.
STOP_TIMEOUT_SECONDS = 20.0
#: Bound on a SIGKILLed process disappearing.
KILL_TIMEOUT_SECONDS = 5.0
#: Poll interval inside the bounded waits.
POLL_SECONDS = 0.02
#: Socket timeout of the clients handed out by Node.client().
CLIENT_SOCKET_TIMEOUT_SECONDS = 10.0
#: Length in bytes of generated passwords (hex-encoded: twice as many characters, all [0-9a-f],
#: inside the entrypoint's replication-password rule of 16..128 letters and digits).
PASSWORD_BYTES = 16
#: Cluster index 0 (127.0.0.x) is reserved; the last octet holds ordinal + 1.
MIN_CLUSTER, MAX_CLUSTER = 1, 255
MAX_ORDINAL = 253


class NodeError(RuntimeError):
    """A node did not start, become ready or stop as expected; the message carries its log tail."""


@dataclass(frozen=True)
class Passwords:
    """The five ACL users' passwords (docs/design.md, "ACL users")."""

    admin: str
    client: str
    replication: str
    reconciler: str
    monitor: str

    @classmethod
    def generate(cls) -> "Passwords":
        return cls(**{f.name: secrets.token_hex(PASSWORD_BYTES) for f in fields(cls)})

    def env(self) -> dict[str, str]:
        """The entrypoint's password variables (VALKEY_ADMIN_PASSWORD, ...)."""
        return {f"VALKEY_{f.name.upper()}_PASSWORD": getattr(self, f.name) for f in fields(self)}

    def __repr__(self) -> str:  # never show a password in a test report or a log
        return "Passwords(<hidden>)"


def node_ip(cluster: int, ordinal: int) -> str:
    """Loopback address of `ordinal` in test cluster `cluster`: 127.0.<cluster>.<ordinal+1>."""
    if not MIN_CLUSTER <= cluster <= MAX_CLUSTER:
        raise ValueError(f"cluster index {cluster} is outside {MIN_CLUSTER}..{MAX_CLUSTER} (0 is reserved)")
    if not 0 <= ordinal <= MAX_ORDINAL:
        raise ValueError(f"ordinal {ordinal} is outside 0..{MAX_ORDINAL}")
    return f"127.0.{cluster}.{ordinal + 1}"


# PIDs of every node process started in this Python process and not yet seen to exit, so a test
# session can prove it left nothing running.
_LIVE: dict[int, "Node"] = {}


def live_nodes() -> list["Node"]:
    """Nodes started by this process whose server is still running."""
    return [node for node in list(_LIVE.values()) if node.running]


class Node:
    """One valkey-server started through image/entrypoint.sh (exec'd, so its PID is the server's)."""

    def __init__(
        self,
        root: Path,
        ordinal: int,
        ip: str,
        *,
        engine: str = "9",
        persistence: str = "rdb",
        passwords: Passwords,
        overrides: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        self.ordinal = ordinal
        self.ip = ip
        self.port = CLIENT_PORT
        self.engine = engine
        self.persistence = persistence
        self.passwords = passwords
        self.overrides = overrides
        self.extra_env = dict(env or {})
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.config_dir = self.root / "config"
        self.template_dir = self.root / "templates"
        self.log_path = self.root / "valkey.log"
        self.pid: int | None = None
        self._process: subprocess.Popen | None = None
        self.write_templates()

    def __repr__(self) -> str:
        return f"Node(ordinal={self.ordinal}, address={self.address}, pid={self.pid})"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def running(self) -> bool:
        if self._process is None:
            return False
        if self._process.poll() is None:
            return True
        _LIVE.pop(self._process.pid, None)
        return False

    def write_templates(self) -> None:
        """(Re)writes the templates from the repository's valkey.conf/users.acl and `overrides`."""
        self.template_dir.mkdir(parents=True, exist_ok=True)
        for template in TEMPLATES:
            shutil.copyfile(template, self.template_dir / template.name)
        overrides = self.template_dir / "overrides.conf"
        if self.overrides:
            overrides.write_text(self.overrides if self.overrides.endswith("\n") else self.overrides + "\n")
        elif overrides.exists():
            overrides.unlink()

    def environment(self) -> dict[str, str]:
        """The entrypoint's environment (docs/design.md, "The Valkey container")."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "POD_IP": self.ip,
            "VALKEY_PERSISTENCE": self.persistence,
            "VALKEY_TEMPLATE_DIR": str(self.template_dir),
            "VALKEY_CONFIG_DIR": str(self.config_dir),
            "VALKEY_DATA_DIR": str(self.data_dir),
            "VALKEY_SERVER_BIN": str(server_binary(self.engine)),
            **self.passwords.env(),
        }
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Runs the entrypoint, which execs the server; does not wait (see wait_ready)."""
        if self.running:
            raise NodeError(f"{self!r} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                ["sh", str(ENTRYPOINT)],
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        self.pid = self._process.pid
        _LIVE[self.pid] = self

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Waits until the server answers PING as admin and has finished loading its dataset."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                code = self._process.returncode if self._process else None
                raise NodeError(f"{self!r} exited with code {code} before it was ready:\n{self.log_tail()}")
            try:
                with self.client(socket_timeout=1.0, socket_connect_timeout=1.0) as conn:
                    if conn.ping() and int(conn.info("persistence")["loading"]) == 0:
                        return
            except valkey.exceptions.ValkeyError as error:  # refused, LOADING, not yet bound
                last_error = error
            time.sleep(POLL_SECONDS)
        raise NodeError(f"{self!r} not ready after {timeout} s (last error: {last_error}):\n{self.log_tail()}")

    def _wait_exit(self, timeout: float) -> bool:
        assert self._process is not None
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        _LIVE.pop(self._process.pid, None)
        return True

    def signal(self, signum: int) -> None:
        """Sends `signum` to the server if it is running (SIGSTOP/SIGCONT simulate a hang)."""
        if self.running:
            os.kill(self._process.pid, signum)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM, wait for the PID to exit (bounded), then SIGKILL if it did not."""
        if not self.running:
            return
        self.signal(signal.SIGCONT)  # a SIGSTOPped server would never handle SIGTERM
        self.signal(signal.SIGTERM)
        if not self._wait_exit(timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL and wait for the PID to exit."""
        if not self.running:
            return
        self.signal(signal.SIGKILL)
        if not self._wait_exit(KILL_TIMEOUT_SECONDS):
            raise NodeError(f"{self!r} survived SIGKILL for {KILL_TIMEOUT_SECONDS} s")

    def restart(self, ip: str | None = None, wipe: bool = False) -> None:
        """Stops the node, optionally moves it to `ip` and/or deletes its data dir, starts it, waits ready."""
        self.stop()
        if ip is not None:
            self.ip = ip
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start()
        self.wait_ready()

    def client(self, user: str = "admin", **kw) -> valkey.Valkey:
        """A plain (non-cluster) client to this node, logged in as `user`, decode_responses=True."""
        options = {
            "host": self.ip,
            "port": self.port,
            "username": user,
            "password": getattr(self.passwords, user),
            "decode_responses": True,
            "socket_timeout": CLIENT_SOCKET_TIMEOUT_SECONDS,
        }
        options.update(kw)
        return valkey.Valkey(**options)


class NodeSet:
    """The nodes of one test cluster: ordinal i listens on 127.0.<cluster>.<i+1>:6379."""

    def __init__(
        self,
        workdir: Path,
        cluster: int,
        count: int,
        *,
        engine: str = "9",
        persistence: str = "rdb",
        passwords: Passwords | None = None,
        overrides: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        node_ip(cluster, 0)  # validates the cluster index
        self.workdir = Path(workdir)
        self.cluster = cluster
        self.engine = engine
        self.persistence = persistence
        self.passwords = passwords or Passwords.generate()
        self.overrides = overrides
        self.env = dict(env or {})
        self.nodes: list[Node] = []
        self._new_nodes(count)

    def __repr__(self) -> str:
        return f"NodeSet(cluster={self.cluster}, engine={self.engine}, nodes={len(self.nodes)})"

    def _new_nodes(self, count: int) -> list[Node]:
        created = []
        for _ in range(count):
            ordinal = len(self.nodes)
            node = Node(
                self.workdir / f"node-{ordinal}",
                ordinal,
                node_ip(self.cluster, ordinal),
                engine=self.engine,
                persistence=self.persistence,
                passwords=self.passwords,
                overrides=self.overrides,
                env=self.env,
            )
            self.nodes.append(node)
            created.append(node)
        return created

    def start(self) -> None:
        """Starts every node that is not running; does not wait (see wait_ready)."""
        for node in self.nodes:
            if not node.running:
                node.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        for node in self.nodes:
            node.wait_ready(timeout)

    def add(self, n: int) -> list[Node]:
        """Creates `n` nodes with the next ordinals, starts them and waits until they are ready."""
        created = self._new_nodes(n)
        for node in created:
            node.start()
        for node in created:
            node.wait_ready()
        return created

    def stop_all(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERMs every running node at once, waits for each (bounded), SIGKILLs stragglers."""
        running = [node for node in self.nodes if node.running]
        for node in running:
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in running:
            if not node._wait_exit(max(0.0, deadline - time.monotonic())):
                node.kill()

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def reconciler_env(self) -> dict[str, str]:
        """Environment for running valkey-reconciler against these nodes as the reconciler user."""
        return {
            "VALKEY_USER": "reconciler",
            "VALKEY_PASSWORD": self.passwords.reconciler,
            "VALKEY_PERSISTENCE": self.persistence,
        }

    def __enter__(self) -> "NodeSet":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_all()
