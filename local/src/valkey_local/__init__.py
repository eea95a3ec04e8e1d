"""Runs Valkey nodes locally from image/entrypoint.sh on loopback, for tests, benchmarks and local mode."""

from .binaries import ENGINES, cli_binary, server_binary
from .nodes import BUS_PORT, CLIENT_PORT, Node, NodeSet, Passwords, node_ip

__all__ = [
    "BUS_PORT",
    "CLIENT_PORT",
    "ENGINES",
    "Node",
    "NodeSet",
    "Passwords",
    "cli_binary",
    "node_ip",
    "server_binary",
]
