"""Turns environment variables and command-line flags into one validated, frozen `Settings`."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from valkey_reconciler.errors import ConfigError

COMMANDS = ("reconcile", "drain", "status")
DEFAULT_PORT = 6379
DEFAULT_NAMESPACE = "default"
DEFAULT_USER = "admin"
DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_POD_ADDRESS = "valkey-{name}-{ordinal}.valkey-{name}-headless.{namespace}.svc.cluster.local"
LOG_FORMATS = ("auto", "json", "console")
PERSISTENCE_MODES = ("", "rdb", "aof", "rdb,aof")
MAX_PORT = 65535
# Valkey cannot have more slot-owning primaries than it has slots.
MAX_MASTERS = 16384
POD_ADDRESS_FIELDS = ("name", "namespace", "ordinal")

# Environment variable → (flag, Settings field).
ENV_FLAGS = {
    "VALKEY_CLUSTER_NAME": ("--cluster-name", "cluster_name"),
    "VALKEY_NAMESPACE": ("--namespace", "namespace"),
    "VALKEY_MASTERS": ("--masters", "masters"),
    "VALKEY_REPLICAS_PER_MASTER": ("--replicas-per-master", "replicas_per_master"),
    "VALKEY_USER": ("--user", "user"),
    "VALKEY_PORT": ("--port", "port"),
    "VALKEY_POD_ADDRESS": ("--pod-address", "pod_address"),
    "VALKEY_HOSTS_FILE": ("--hosts-file", "hosts_file"),
    "VALKEY_TIMEOUT_SECONDS": ("--timeout", "timeout"),
    "VALKEY_PERSISTENCE": ("--persistence", "persistence"),
    "LOG_FORMAT": ("--log-format", "log_format"),
    "VALKEY_LOCK_FILE": ("--lock-file", "lock_file"),
    "VALKEY_NODE_TIMEOUT_MS": ("--node-timeout-ms", "node_timeout_ms"),
    "VALKEY_FAST_JOIN": ("--fast-join", "fast_join"),
}
SWITCH_VALUES = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False, "0": False}
# Valkey refuses a cluster-node-timeout below 1 ms; one day is beyond any sensible failure detector.
MAX_NODE_TIMEOUT_MS = 86_400_000


@dataclass(frozen=True)
class Settings:
    """Everything one run needs; built once, never changed."""

    command: str
    masters: int | None
    replicas_per_master: int | None
    addresses: tuple[tuple[str, int], ...]  # (host, port) per expected pod, in ordinal order
    user: str
    password: str = field(repr=False)
    cluster_name: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    port: int = DEFAULT_PORT
    hosts_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    persistence: str | None = None  # "" = off (the chart's cache contract), None = not known
    log_format: str = "auto"
    dry_run: bool = False
    json: bool = False
    check: bool = False
    explicit_nodes: bool = False
    lock_file: str | None = None  # the lock outside Kubernetes (lock.py picks the default path)
    if_idle: bool = False  # a scheduled run: exit 0 when another reconciler holds the lock
    node_timeout_ms: int | None = None  # cluster-node-timeout to restore after a fast join (None: the nodes')
    fast_join: bool = True  # lower cluster-node-timeout on empty primaries while they join

    @property
    def expected_pods(self) -> int:
        return len(self.addresses)

    def address(self, ordinal: int) -> str:
        host, port = self.addresses[ordinal]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (exit 2, message naming the flag) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see `valkey-reconciler {self.prog.split()[-1]} --help`)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cluster-name", help="the chart's name (VALKEY_CLUSTER_NAME)")
    common.add_argument("--namespace", help="namespace of the pods (VALKEY_NAMESPACE, default: default)")
    common.add_argument("--masters", help="desired primaries, >= 1 (VALKEY_MASTERS)")
    common.add_argument("--replicas-per-master", help="desired replicas per primary, >= 0 (VALKEY_REPLICAS_PER_MASTER)")
    common.add_argument("--user", help="ACL user to log in as (VALKEY_USER, default: admin); "
                        "the password comes only from VALKEY_PASSWORD")
    common.add_argument("--port", help="client port of every pod (VALKEY_PORT, default: 6379)")
    common.add_argument("--pod-address", help="pod address scheme with {name}, {namespace}, {ordinal} (VALKEY_POD_ADDRESS)")
    common.add_argument("--node", action="append", metavar="HOST:PORT",
                        help="an explicit node, repeated in ordinal order; replaces the pod address scheme")
    common.add_argument("--hosts-file", help="/etc/hosts-format file consulted before DNS (VALKEY_HOSTS_FILE)")
    common.add_argument("--timeout", help="bound in seconds on every wait (VALKEY_TIMEOUT_SECONDS, default: 300)")
    common.add_argument("--persistence", help="the chart's persistence: rdb,aof | rdb | aof | empty (VALKEY_PERSISTENCE)")
    common.add_argument("--log-format", help="json | console | auto (LOG_FORMAT, default: auto)")
    common.add_argument("--lock-file", help="lock file used outside Kubernetes so two reconcilers for the same "
                                            "nodes never act at once (VALKEY_LOCK_FILE)")
    common.add_argument("--node-timeout-ms", help="the nodes' cluster-node-timeout, restored after a fast join "
                                                  "(VALKEY_NODE_TIMEOUT_MS, default: what the other nodes run with)")
    common.add_argument("--fast-join", help="on | off: lower cluster-node-timeout on new, empty primaries while "
                                            "they join, so they serve after 0.5 s instead of up to 5 s; needs "
                                            "CONFIG SET (VALKEY_FAST_JOIN, default: on)")

    parser = _Parser(prog="valkey-reconciler",
                     description="Forms, scales and checks a Valkey cluster. "
                                 "The password is read from VALKEY_PASSWORD only.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, text in (("reconcile", "converge the cluster to the desired layout"),
                       ("drain", "empty the pods a scale-down removes, before the StatefulSet shrinks")):
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
        p.add_argument("--if-idle", action="store_true",
                       help="exit 0 without acting when another reconciler holds the lock "
                            "(scheduled runs; VALKEY_LOCK_MODE=skip)")
    p = sub.add_parser("status", parents=[common], help="show the cluster per shard",
                       description="show the cluster per shard")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--check", action="store_true", help="exit 1 unless the cluster is healthy")
    return parser


def _int(value: str, name: str, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}", setting=name) from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {number}", setting=name)
    return number


def parse_host_port(text: str, name: str = "--node") -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); errors name the flag and show the expected form."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\s:\[\]]+):(\d+)", text.strip())
    if not match:
        raise ConfigError(f"{name} {text!r} is not HOST:PORT (e.g. 10.0.0.1:6379 or [fd00::1]:6379)",
                          setting=name)
    host = match.group(1) or match.group(3)
    port = _int(match.group(2) or match.group(4), f"{name} {text!r} port", 1, MAX_PORT)
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{name} {text!r}: {host!r} is not an IPv6 address", setting=name) from None
    return host, port


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags (which win) and the environment into Settings, or raise ConfigError naming the problem."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.command is None:
        raise ConfigError("no command given: use one of reconcile, drain, status "
                          "(e.g. `valkey-reconciler reconcile --masters 3 --replicas-per-master 1`)")

    def pick(env: str, blank_is_unset: bool = True) -> tuple[str | None, str]:
        flag, attr = ENV_FLAGS[env]
        value = getattr(args, attr)
        if value is not None:
            return value, flag
        raw = environ.get(env)
        if raw is not None and blank_is_unset and raw.strip() == "":
            return None, env
        return raw, env

    masters_raw, masters_name = pick("VALKEY_MASTERS")
    replicas_raw, replicas_name = pick("VALKEY_REPLICAS_PER_MASTER")
    masters = _int(masters_raw, masters_name, 1, MAX_MASTERS) if masters_raw is not None else None
    replicas = _int(replicas_raw, replicas_name, 0) if replicas_raw is not None else None
    needs_layout = args.command in ("reconcile", "drain")
    if needs_layout or not args.node:
        if masters is None:
            raise ConfigError(f"VALKEY_MASTERS (--masters) is required for `{args.command}`: "
                              "set it to the desired number of primaries (>= 1)", setting="VALKEY_MASTERS")
        if replicas is None:
            raise ConfigError(f"VALKEY_REPLICAS_PER_MASTER (--replicas-per-master) is required for "
                              f"`{args.command}`: set it to the desired replicas per primary (>= 0)",
                              setting="VALKEY_REPLICAS_PER_MASTER")

    port_raw, port_name = pick("VALKEY_PORT")
    port = _int(port_raw, port_name, 1, MAX_PORT) if port_raw is not None else DEFAULT_PORT
    timeout_raw, timeout_name = pick("VALKEY_TIMEOUT_SECONDS")
    timeout = DEFAULT_TIMEOUT_SECONDS
    if timeout_raw is not None:
        try:
            timeout = float(timeout_raw)
        except ValueError:
            raise ConfigError(f"{timeout_name} must be a number of seconds, got {timeout_raw!r}",
                              setting=timeout_name) from None
        if not timeout > 0:
            raise ConfigError(f"{timeout_name} must be > 0 seconds, got {timeout_raw!r}", setting=timeout_name)

    log_format, log_name = pick("LOG_FORMAT")
    log_format = (log_format or "auto").strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"{log_name} must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}",
                          setting=log_name)

    # Set but empty is the chart's "persistence off" (""); only an unset variable is "not known" (None).
    persistence, persistence_name = pick("VALKEY_PERSISTENCE", blank_is_unset=False)
    if persistence is not None:
        persistence = persistence.strip().replace(" ", "")
        if persistence == "aof,rdb":
            persistence = "rdb,aof"
        if persistence not in PERSISTENCE_MODES:
            raise ConfigError(f"{persistence_name} must be one of rdb,aof | rdb | aof | empty, "
                              f"got {persistence!r}", setting=persistence_name)

    user, user_name = pick("VALKEY_USER")
    user = (user or DEFAULT_USER).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", user):
        raise ConfigError(f"{user_name} {user!r} is not a valid ACL user name", setting=user_name)
    password = environ.get("VALKEY_PASSWORD", "")
    if password == "":
        raise ConfigError(f"VALKEY_PASSWORD is not set: export the password of user {user!r} in the "
                          "environment (it is never accepted as a flag)", setting="VALKEY_PASSWORD")

    timeout_ms_raw, timeout_ms_name = pick("VALKEY_NODE_TIMEOUT_MS")
    node_timeout_ms = (_int(timeout_ms_raw, timeout_ms_name, 1, MAX_NODE_TIMEOUT_MS)
                       if timeout_ms_raw is not None else None)
    fast_raw, fast_name = pick("VALKEY_FAST_JOIN")
    fast_join = True
    if fast_raw is not None:
        if fast_raw.strip().lower() not in SWITCH_VALUES:
            raise ConfigError(f"{fast_name} must be on or off, got {fast_raw!r}", setting=fast_name)
        fast_join = SWITCH_VALUES[fast_raw.strip().lower()]

    hosts_file, hosts_name = pick("VALKEY_HOSTS_FILE")
    if hosts_file is not None and not os.path.isfile(hosts_file):
        raise ConfigError(f"{hosts_name} {hosts_file!r} does not exist or is not a file", setting=hosts_name)

    cluster_name, _ = pick("VALKEY_CLUSTER_NAME")
    namespace, _ = pick("VALKEY_NAMESPACE")
    namespace = namespace or DEFAULT_NAMESPACE
    expected = masters * (1 + replicas) if masters is not None and replicas is not None else None

    if args.node:
        addresses = tuple(parse_host_port(node) for node in args.node)
        if len(set(addresses)) != len(addresses):
            raise ConfigError("--node lists the same HOST:PORT twice: give each pod once, in ordinal order",
                              setting="--node")
        # drain is given every current pod: the survivors first, then the ones a scale-down removes.
        too_few = expected is not None and len(addresses) < expected
        if too_few or (expected is not None and args.command != "drain" and len(addresses) != expected):
            raise ConfigError(
                f"--node was given {len(addresses)} times but --masters {masters} x "
                f"(1 + --replicas-per-master {replicas}) = {expected} pods are expected: "
                "give one --node per pod, in ordinal order"
                + (" (drain: every current pod, at least that many)" if args.command == "drain" else ""),
                setting="--node")
    else:
        scheme, scheme_name = pick("VALKEY_POD_ADDRESS")
        scheme = scheme or DEFAULT_POD_ADDRESS
        unknown = set(re.findall(r"\{([^}]*)\}", scheme)) - set(POD_ADDRESS_FIELDS)
        if unknown:
            raise ConfigError(f"{scheme_name} {scheme!r} uses unknown field(s) "
                              f"{', '.join(sorted('{' + u + '}' for u in unknown))}: "
                              "only {name}, {namespace} and {ordinal} are replaced", setting=scheme_name)
        if "{ordinal}" not in scheme:
            raise ConfigError(f"{scheme_name} {scheme!r} lacks {{ordinal}}: every pod needs its own address",
                              setting=scheme_name)
        if "{name}" in scheme and not cluster_name:
            raise ConfigError("VALKEY_CLUSTER_NAME (--cluster-name) is required: the pod address scheme "
                              "uses {name}; set it to the chart's name, or pass --node HOST:PORT per pod",
                              setting="VALKEY_CLUSTER_NAME")
        assert expected is not None
        addresses = []
        for ordinal in range(expected):
            host = scheme.replace("{name}", cluster_name or "").replace("{namespace}", namespace) \
                .replace("{ordinal}", str(ordinal))
            if re.fullmatch(r".*:\d+", host) and host.count(":") == 1:
                addresses.append(parse_host_port(host, scheme_name))
            else:
                addresses.append((host, port))
        addresses = tuple(addresses)

    return Settings(
        command=args.command, masters=masters, replicas_per_master=replicas, addresses=addresses,
        user=user, password=password, cluster_name=cluster_name, namespace=namespace, port=port,
        hosts_file=hosts_file, timeout=timeout, persistence=persistence, log_format=log_format,
        dry_run=bool(getattr(args, "dry_run", False)), json=bool(getattr(args, "json", False)),
        check=bool(getattr(args, "check", False)), explicit_nodes=bool(args.node),
        lock_file=pick("VALKEY_LOCK_FILE")[0], if_idle=bool(getattr(args, "if_idle", False)),
        node_timeout_ms=node_timeout_ms, fast_join=fast_join,
    )
