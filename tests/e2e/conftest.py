"""The `local` fixture shared by the e2e tests: local-runner releases that are always torn down."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from local_helpers import Local, wait_all_gone

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture
def local(request, tmp_path):
    """Factory of runner releases, each on its own loopback range; `down --purge` at teardown and
    a check, by PID, that nothing it started still runs."""
    plugin = request.config.pluginmanager.get_plugin(str(ROOT_CONFTEST))
    assert plugin is not None, f"{ROOT_CONFTEST} is not loaded"
    made: list[tuple[Local, int]] = []

    def make(engine: str = "9", release: str = "e2e") -> Local:
        cluster, lock = plugin.allocate_cluster()
        release_name = f"{release}{len(made)}" if made else release
        made.append((Local(tmp_path / "state", release_name, cluster, engine), lock))
        return made[-1][0]

    yield make
    leftovers = set()
    for runner, lock in made:
        if (runner.dir / "state.json").exists():
            runner.run("down", "--purge")
        left = wait_all_gone(runner.pids())
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        leftovers |= left
        os.close(lock)
    assert not leftovers, f"processes left running after `down`: {sorted(leftovers)}"
