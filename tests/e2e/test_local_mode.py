"""End-to-end: the real chart rendered by real helm, run by the local runner (valkey-local) as real valkey-server and valkey-reconciler processes, through install, upgrades and restarts."""

from __future__ import annotations

import socket
import stat
import sys

import pytest

from local_helpers import (FAST_VALUES, Local, Writer, job_manifest_env, preload, read_back,
                           wait_all_gone)



def secret_values(local: Local) -> list[str]:
    return [v for values in local.secrets().values() for v in values.values()]


def assert_no_password_leaked(local: Local) -> None:
    """No password in any command output, nor in the state dir's files other than the store."""
    passwords = secret_values(local)
    for result in local.results:
        for password in passwords:
            assert password not in result.output, f"a password was printed by `valkey-local {result.args[0]}`"
    for path in local.dir.rglob("*"):
        if path.is_file() and path.name != "secrets.json" and path.suffix in ("", ".json", ".jsonl", ".yaml", ".log"):
            text = path.read_text(errors="replace")
            for password in passwords:
                assert password not in text, f"a password is written in {path}"


def hook_runs_since(local: Local, count: int) -> list[dict]:
    return local.events("hook")[count:]


def assert_hooks_ran_as_rendered(local: Local, runs: list[dict], expected: list[tuple[str, str]]) -> None:
    """The hook Jobs ran in this order, each with exactly the env names and args of its manifest."""
    assert [(r["phase"], r["job"]) for r in runs] == expected
    manifests = local.manifests()
    for run in runs:
        names, args = job_manifest_env(manifests, run["job"])
        assert run["env_names"] == names, f"{run['job']} ran with env {run['env_names']}, manifest has {names}"
        assert run["args"] == args
        assert "VALKEY_HOSTS_FILE" in run["runner_env_names"]
        assert run["exit_code"] == 0


def check_step(local: Local, writer: Writer, model: dict[str, str]) -> None:
    status = local.run("status", "--check")
    assert status.code == 0, status.explain()
    client = local.client()
    try:
        assert read_back(client, model) == [], "preloaded keys lost"
        acked = dict(writer.acked)
        assert acked, "the writer got no write acknowledged"
        assert read_back(client, acked) == [], "acknowledged writes lost"
    finally:
        client.close()
    assert writer.mismatches == []


def install_3x1(local: Local, *values: str):
    up = local.up(*FAST_VALUES, *values)
    assert up.code == 0, up.explain()
    assert "slots covered: 16384/16384" in up.stdout and "healthy" in up.stdout
    assert "valkey-cli" in up.stdout and "REDISCLI_AUTH" in up.stdout and "ValkeyCluster" in up.stdout
    assert stat.S_IMODE((local.dir / "secrets.json").stat().st_mode) == 0o600
    assert_hooks_ran_as_rendered(local, local.events("hook"), [("post-install", f"valkey-{local.release}-reconcile")])
    starts = local.events("pod_start")
    assert sorted(e["ordinal"] for e in starts) == list(range(6))
    kinds = [e["event"] for e in local.events()]
    assert kinds.index("hook") > max(i for i, k in enumerate(kinds) if k == "pod_start"), \
        "post-install ran before every pod was up"


def upgrade_to_4x1(local: Local, writer: Writer, model: dict[str, str], *values: str) -> None:
    before = local.secrets()
    hooks_before = len(local.events("hook"))
    events_before = len(local.events())
    result = local.upgrade(*FAST_VALUES, *values, "--set", "cluster.masters=4")
    assert result.code == 0, result.explain()
    assert local.secrets() == before, "generated passwords changed on upgrade (the chart's lookup keeps them)"
    release = local.release
    assert_hooks_ran_as_rendered(local, hook_runs_since(local, hooks_before),
                                 [("pre-upgrade", f"valkey-{release}-drain"),
                                  ("post-upgrade", f"valkey-{release}-reconcile")])
    events = local.events()[events_before:]
    order = [(e["event"], e.get("phase") or e.get("ordinal")) for e in events if e["event"] in ("hook", "pod_start")]
    assert order == [("hook", "pre-upgrade"), ("pod_start", 6), ("pod_start", 7), ("hook", "post-upgrade")], order
    check_step(local, writer, model)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["9", "8"], ids=["valkey9", "valkey8"])
def test_install_3x1_then_upgrade_to_4x1_with_data_and_live_client(local, engine):
    release = local(engine)
    install_3x1(release, "--set", "persistence=rdb")
    client = release.client()
    model = preload(client)
    client.close()
    writer = Writer(release)
    writer.start()
    try:
        check_step(release, writer, model)
        upgrade_to_4x1(release, writer, model, "--set", "persistence=rdb")
    finally:
        writer.stop()
    check_step(release, writer, model)
    assert_no_password_leaked(release)
    pids = release.pids()
    down = release.run("down")
    assert down.code == 0, down.explain()
    assert wait_all_gone(pids) == set(), "down left valkey-server processes running"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["9", "8"], ids=["valkey9", "valkey8"])
def test_upgrade_to_2x2_restart_all_on_new_ips_then_3x1_with_rdb_aof(local, engine):
    release = local(engine)
    persistence = ["--set", "persistence=rdb"]
    install_3x1(release, *persistence)
    client = release.client()
    model = preload(client)
    client.close()
    writer = Writer(release)
    writer.start()
    try:
        upgrade_to_4x1(release, writer, model, *persistence)
        hooks_before = len(release.events("hook"))
        result = release.upgrade(*FAST_VALUES, *persistence, "--set", "cluster.masters=2",
                                 "--set", "cluster.replicasPerMaster=2")
        assert result.code == 0, result.explain()
        assert_hooks_ran_as_rendered(release, hook_runs_since(release, hooks_before),
                                     [("pre-upgrade", "valkey-e2e-drain"), ("post-upgrade", "valkey-e2e-reconcile")])
        check_step(release, writer, model)

        old_ips = {name: pod["ip"] for name, pod in release.state()["pods"].items()}
        result = release.run("restart", "--all", "--new-ip")
        assert result.code == 0, result.explain()
        new_ips = {name: pod["ip"] for name, pod in release.state()["pods"].items()}
        assert all(new_ips[name] != old_ips[name] for name in old_ips)
        check_step(release, writer, model)

        hooks_before = len(release.events("hook"))
        result = release.upgrade(*FAST_VALUES, "--set", "persistence=rdb\\,aof", "--set", "cluster.masters=3",
                                 "--set", "cluster.replicasPerMaster=1")
        assert result.code == 0, result.explain()
        assert_hooks_ran_as_rendered(release, hook_runs_since(release, hooks_before),
                                     [("pre-upgrade", "valkey-e2e-drain"), ("post-upgrade", "valkey-e2e-reconcile")])
        check_step(release, writer, model)
    finally:
        writer.stop()
    assert_no_password_leaked(release)


RENAME_ENV = r"""#!{python}
# Post-renderer: renames VALKEY_MASTERS in every Job's env, as a chart bug would.
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
for doc in docs:
    if doc.get("kind") == "Job":
        for item in doc["spec"]["template"]["spec"]["containers"][0].get("env") or []:
            if item["name"] == "VALKEY_MASTERS":
                item["name"] = "VALKEY_MASTER_COUNT"
sys.stdout.write(yaml.safe_dump_all(docs))
"""


def test_hook_job_with_a_renamed_env_var_fails_naming_it(local, tmp_path):
    release = local("9")
    post_renderer = tmp_path / "rename-env.py"
    post_renderer.write_text(RENAME_ENV.format(python=sys.executable))
    post_renderer.chmod(0o755)
    result = release.up(*FAST_VALUES, "--set", "cluster.masters=1", "--set", "cluster.replicasPerMaster=0",
                        "--post-renderer", str(post_renderer))
    assert result.code != 0
    assert f"post-install hook Job valkey-{release.release}-reconcile failed" in result.stderr
    assert "VALKEY_MASTERS" in result.stderr, "the failure does not name the variable the Job lacks"
    [run] = release.events("hook")
    assert "VALKEY_MASTER_COUNT" in run["env_names"] and "VALKEY_MASTERS" not in run["env_names"]
    assert run["exit_code"] == 2


def test_missing_user_secret_is_named_and_nothing_starts_until_it_is_stored(local):
    release = local("9")
    values = [*FAST_VALUES, "--set", "cluster.masters=1", "--set", "cluster.replicasPerMaster=0",
              "--set", "credentials.secret=app-credentials"]
    result = release.up(*values)
    assert result.code == 2, result.explain()
    assert "'app-credentials'" in result.stderr and "secret set app-credentials" in result.stderr
    assert release.events("pod_start") == []

    stored = release.run("secret", "set", "app-credentials", "admin-password", stdin="Adm1nPassw0rdFromStdin\n")
    assert stored.code == 0, stored.explain()
    stored = release.run("secret", "set", "app-credentials", "client-password", "--generate")
    assert stored.code == 0, stored.explain()
    result = release.up(*values)
    assert result.code == 0, result.explain()
    status = release.run("status", "--check")
    assert status.code == 0, status.explain()
    captured = release.run("secret", "get", "app-credentials", "admin-password")
    assert captured.stdout == "Adm1nPassw0rdFromStdin"
    release.results.remove(captured)  # the one command whose job is to hand the value to a $(...)
    assert_no_password_leaked(release)


def test_address_in_use_is_named_and_nothing_starts(local):
    release = local("9")
    ip = f"127.0.{release.cluster_index}.1"
    with socket.socket() as squatter:
        squatter.bind((ip, 6379))
        squatter.listen()
        result = release.up(*FAST_VALUES, "--set", "cluster.masters=1", "--set", "cluster.replicasPerMaster=0")
    assert result.code == 1, result.explain()
    assert f"{ip}:6379 (pod valkey-{release.release}-0) is already in use" in result.stderr
    assert release.events("pod_start") == []
