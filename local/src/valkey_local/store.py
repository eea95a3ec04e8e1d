"""The local secret store: the Secrets of one release, kept in a mode-0600 JSON file in its state dir."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

#: File mode of the store: readable by its owner only.
STORE_MODE = 0o600


class SecretError(RuntimeError):
    """A Secret or key the manifests reference is not in the store; the message says how to add it."""


def _decode(obj: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, encoded in (obj.get("data") or {}).items():
        values[key] = base64.b64decode(str(encoded)).decode()
    for key, value in (obj.get("stringData") or {}).items():
        values[key] = str(value)
    return values


class SecretStore:
    """Secrets by name → {key: value}. Rendered Secrets are created once and, like the chart's
    `lookup`, keep the values they already have on every later render (`helm template` cannot look
    up, so it renders new random passwords each time); Secrets the user names in
    `credentials.secret` are added with `valkey-local secret set`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._data: dict[str, dict[str, Any]] = {"secrets": {}, "origin": {}}
        if self.path.exists():
            mode = self.path.stat().st_mode & 0o777
            if mode & 0o077:
                raise SecretError(f"{self.path} is readable by others (mode {mode:o}): "
                                  f"run `chmod 600 {self.path}` and rotate the passwords it holds")
            self._data = json.loads(self.path.read_text())

    @property
    def secrets(self) -> dict[str, dict[str, str]]:
        return self._data["secrets"]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, STORE_MODE)
        with os.fdopen(fd, "w") as handle:
            json.dump(self._data, handle, indent=1, sort_keys=True)
        os.chmod(tmp, STORE_MODE)
        os.replace(tmp, self.path)

    def merge_rendered(self, secrets: dict[str, dict[str, Any]]) -> list[str]:
        """Adds rendered Secrets; keys already stored keep their values. Returns the names created."""
        created = []
        for name, obj in secrets.items():
            values = _decode(obj)
            stored = self.secrets.get(name)
            if stored is None:
                self.secrets[name] = values
                self._data["origin"][name] = "chart"
                created.append(name)
            else:
                for key, value in values.items():
                    stored.setdefault(key, value)
        return created

    def set(self, name: str, key: str, value: str) -> None:
        if not value:
            raise SecretError(f"the value for Secret {name!r} key {key!r} is empty: give a non-empty value")
        self.secrets.setdefault(name, {})[key] = value
        self._data["origin"].setdefault(name, "user")

    def get(self, name: str, key: str, *, needed_by: str = "") -> str:
        where = f" (needed by {needed_by})" if needed_by else ""
        if name not in self.secrets:
            raise SecretError(
                f"Secret {name!r}{where} is not in the local secret store {self.path}. Create it with "
                f"`valkey-local secret set {name} {key} --release <release>` (reads the value from "
                "stdin), or leave credentials.secret empty so the chart generates one")
        values = self.secrets[name]
        if key not in values:
            raise SecretError(
                f"Secret {name!r} has no key {key!r}{where} (it has: {', '.join(sorted(values)) or 'none'}). "
                f"Add it with `valkey-local secret set {name} {key} --release <release>`")
        return values[key]
