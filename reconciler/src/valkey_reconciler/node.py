"""One authenticated connection per pod, dialled by IP (names resolved through a hosts file, then DNS)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import valkey

CLIENT_NAME = "valkey-reconciler"
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 15.0
# MIGRATE's own timeout (ms) bounds each batch of keys between two nodes; the socket waits longer.
MIGRATE_TIMEOUT_MS = 30_000
MIGRATE_SOCKET_TIMEOUT_S = 60.0
POOL_CONNECTIONS = 32
# How long a thread waits for a free pooled connection before giving up.
POOL_WAIT_S = 60.0


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _hosts_lookup(host: str, hosts_file: str) -> str | None:
    with open(hosts_file, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and host in fields[1:]:
                return fields[0]
    return None


def resolve(host: str, hosts_file: str | None = None) -> str:
    """Name → IP. CLUSTER MEET takes IP addresses only, so every address is resolved before use.

    Raises OSError when the name does not resolve (yet): a pod that has no IP is an unready pod.
    """
    if is_ip(host):
        return host
    if hosts_file:
        found = _hosts_lookup(host, hosts_file)
        if found:
            return found
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} does not resolve")
    return str(infos[0][4][0])


@dataclass
class Node:
    """A pod as dialled: its ordinal, the address it was given as, and the IP that address resolves to."""

    ordinal: int
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    hosts_file: str | None = None
    ip: str | None = None
    _client: Any = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def label(self) -> str:
        return f"ordinal {self.ordinal} ({self.address})"

    def refresh(self) -> str:
        """Re-resolve the address; reconnect if the pod's IP changed (a restarted pod gets a new one)."""
        ip = resolve(self.host, self.hosts_file)
        if ip != self.ip:
            self.close()
            self.ip = ip
        return ip

    @property
    def client(self) -> valkey.Valkey:
        if self._client is None:
            if self.ip is None:
                self.refresh()
            # Concurrent migrations each open several connections to the same primary (SETSLOT
            # fan-out); a blocking pool makes a thread wait for a free one instead of failing.
            pool = valkey.BlockingConnectionPool(
                host=self.ip, port=self.port, username=self.user, password=self.password,
                decode_responses=True, socket_timeout=COMMAND_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S, client_name=CLIENT_NAME,
                max_connections=POOL_CONNECTIONS, timeout=POOL_WAIT_S,
            )
            self._client = valkey.Valkey(connection_pool=pool)
        return self._client

    def migrate_client(self) -> valkey.Valkey:
        """A separate connection whose socket outlasts MIGRATE's own timeout."""
        if self.ip is None:
            self.refresh()
        return valkey.Valkey(
            host=self.ip, port=self.port, username=self.user, password=self.password,
            decode_responses=True, socket_timeout=MIGRATE_SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S, client_name=CLIENT_NAME,
        )

    def cmd(self, *args: Any) -> Any:
        return self.client.execute_command(*args)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
                self._client.connection_pool.disconnect()
            except Exception:  # closing a dead connection has nothing left to report
                pass
            self._client = None


def make_nodes(settings: Any) -> list[Node]:
    """One Node per expected pod, in ordinal order (not yet resolved or connected)."""
    return [Node(ordinal=i, host=host, port=port, user=settings.user, password=settings.password,
                 hosts_file=settings.hosts_file) for i, (host, port) in enumerate(settings.addresses)]
