"""Bounded waits: poll a condition briefly and often until it holds or the bound runs out."""

from __future__ import annotations

import time
from typing import Callable

import valkey

from valkey_reconciler.errors import ConvergenceTimeout

POLL_INTERVAL_S = 0.05
# Errors that mean "not yet" while a node restarts, loads its data or forgets a peer.
TRANSIENT = (valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError,
             valkey.exceptions.BusyLoadingError, OSError)


class Deadline:
    """The overall bound of one run; every wait takes the smaller of its own bound and what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def wait_until(pending: Callable[[], str | None], timeout: float, what: str,
               poll: float = POLL_INTERVAL_S, **data: object) -> float:
    """Call `pending` until it returns None (done); it returns a description of what is still missing.

    Returns the seconds waited. Transient connection errors count as "not yet". On timeout raises
    ConvergenceTimeout saying what was awaited and what was still missing.
    """
    start = time.monotonic()
    end = start + timeout
    missing = "not checked yet"
    while True:
        try:
            missing = pending()
        except TRANSIENT as exc:
            missing = f"{type(exc).__name__}: {exc}"
        if missing is None:
            return time.monotonic() - start
        if time.monotonic() >= end:
            raise ConvergenceTimeout(f"timed out after {timeout:.0f}s waiting for {what}; still: {missing}",
                                     waited_for=what, missing=missing, **data)
        time.sleep(min(poll, max(0.0, end - time.monotonic())))
