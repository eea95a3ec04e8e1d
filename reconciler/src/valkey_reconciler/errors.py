"""The reconciler's error hierarchy: every failure carries its data and the exit code it maps to."""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2


class ReconcilerError(Exception):
    """Base of every error the reconciler reports; `data` holds the facts behind the message."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str = "", **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return self.message


class ConfigError(ReconcilerError):
    """A setting is missing or invalid; nothing was touched."""

    exit_code = EXIT_BAD_SETTINGS


class PlanRefused(ReconcilerError):
    """The observed state is one the planner will not touch (e.g. an outside node owns slots)."""


class StepFailed(ReconcilerError):
    """A step was rejected by Valkey or its post-condition did not hold."""


class ConvergenceTimeout(ReconcilerError):
    """A bounded wait ran out before its condition held."""


class NodeUnreachable(ReconcilerError):
    """One or more expected pods did not answer within the bound."""


class AuthFailed(ReconcilerError):
    """A pod rejected the reconciler's user or password."""
