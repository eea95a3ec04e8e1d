"""The error hierarchy: data carried, exit codes, and the message as str()."""

from __future__ import annotations

import pytest

from valkey_reconciler.errors import (
    EXIT_BAD_SETTINGS, EXIT_FAILED, AuthFailed, ConfigError, ConvergenceTimeout, NodeUnreachable, PlanRefused,
    ReconcilerError, StepFailed,
)


@pytest.mark.parametrize("cls,code", [
    (ConfigError, EXIT_BAD_SETTINGS), (PlanRefused, EXIT_FAILED), (StepFailed, EXIT_FAILED),
    (ConvergenceTimeout, EXIT_FAILED), (NodeUnreachable, EXIT_FAILED), (AuthFailed, EXIT_FAILED),
])
def test_every_error_is_a_reconciler_error_with_its_exit_code_and_data(cls, code):
    err = cls("ordinal 2 did not answer", ordinal=2)
    assert isinstance(err, ReconcilerError)
    assert err.exit_code == code
    assert str(err) == "ordinal 2 did not answer" and err.data == {"ordinal": 2}
