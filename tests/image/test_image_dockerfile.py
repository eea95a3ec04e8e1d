"""Static checks of image/Dockerfile (no container engine here): pinned base, non-root, entrypoint wiring."""

from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def dockerfile(repo_root) -> str:
    return (repo_root / "image" / "Dockerfile").read_text()


def test_base_is_official_valkey_9_1_pinned_by_tag_and_digest(dockerfile):
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(froms) == 1
    assert re.fullmatch(r"valkey/valkey:9\.1\.\d+@sha256:[0-9a-f]{64}", froms[0])


def test_runs_as_the_images_non_root_valkey_user(dockerfile):
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users == ["999:999"]
    assert dockerfile.rindex("USER") > max(m.start() for m in re.finditer(r"^RUN ", dockerfile, re.MULTILINE))


def test_entrypoint_is_the_copied_script_and_copied_files_exist(dockerfile, repo_root):
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+(\S+)$", dockerfile, re.MULTILINE)
    for sources, _ in copies:
        for source in sources.split():
            assert (repo_root / source).is_file(), source
    entrypoint = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.MULTILINE).group(1)
    assert ("image/entrypoint.sh", entrypoint) in copies


def test_environment_defaults_match_the_entrypoint(dockerfile, repo_root):
    script = (repo_root / "image" / "entrypoint.sh").read_text()
    for name, value in re.findall(r"(VALKEY_\w+)=(\S+)", dockerfile.split("ENV", 1)[1].split("USER")[0]):
        assert f"{name}=${{{name}:-{value}}}" in script, name
