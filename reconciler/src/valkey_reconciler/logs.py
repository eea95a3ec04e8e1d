"""Structured logging: JSON lines off a terminal, readable console on one, secrets never written."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Iterable, TextIO

import structlog

REDACTED = "[redacted]"
# Any key whose name suggests a credential is redacted whatever its value.
SECRET_KEY = re.compile(r"pass|secret|auth|token|credential|requirepass|primaryauth", re.IGNORECASE)

_secrets: tuple[str, ...] = ()


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if SECRET_KEY.search(str(k)) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    return value


def scrub(text: str) -> str:
    """`text` with every known secret replaced."""
    return _scrub(text)


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact credential-named keys and any known secret inside string values."""
    out = {}
    for key, value in event_dict.items():
        out[key] = REDACTED if SECRET_KEY.search(str(key)) else _scrub(value)
    return out


def configure(log_format: str = "auto", stream: TextIO | None = None, secrets: Iterable[str] = ()) -> None:
    """Set up structlog for this process. `secrets` are values that must never appear in any line."""
    global _secrets
    _secrets = tuple(s for s in secrets if s)
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    if log_format == "json":
        processors.append(structlog.processors.JSONRenderer())
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(name: str = "valkey_reconciler") -> Any:
    return structlog.get_logger(name)
