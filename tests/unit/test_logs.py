"""Logging: JSON lines off a terminal, console when asked, and no secret ever written."""

from __future__ import annotations

import io
import json

from valkey_reconciler import logs


def test_json_lines_carry_the_event_name_and_fields():
    out = io.StringIO()
    logs.configure("auto", stream=out)  # a StringIO is not a terminal → JSON
    logs.get().info("step_finished", kind="meet", elapsed_s=0.12)
    record = json.loads(out.getvalue().strip())
    assert record["event"] == "step_finished" and record["kind"] == "meet" and record["elapsed_s"] == 0.12
    assert record["level"] == "info" and "timestamp" in record


def test_console_format_is_readable_text():
    out = io.StringIO()
    logs.configure("console", stream=out)
    logs.get().info("reconcile_noop", nodes=6)
    line = out.getvalue()
    assert "reconcile_noop" in line and "nodes=6" in line and not line.startswith("{")


def test_credential_named_keys_and_known_secrets_are_redacted():
    out = io.StringIO()
    logs.configure("json", stream=out, secrets=["hunter2-long-secret"])
    logs.get().info("step_started", password="pw-1", primaryauth="pw-2", auth_token="pw-3",
                    detail="MIGRATE ... AUTH2 reconciler hunter2-long-secret KEYS a",
                    nested={"secret": "pw-4", "ok": "fine"}, items=["hunter2-long-secret"])
    text = out.getvalue()
    for secret in ("pw-1", "pw-2", "pw-3", "pw-4", "hunter2-long-secret"):
        assert secret not in text
    record = json.loads(text)
    assert record["password"] == logs.REDACTED and record["nested"]["ok"] == "fine"
    assert logs.REDACTED in record["detail"]
    assert logs.scrub("x hunter2-long-secret y") == f"x {logs.REDACTED} y"
