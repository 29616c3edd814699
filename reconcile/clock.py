"""The one clock: what time reconcile writes into plans, approvals, journals and
results.

``utc_now`` is the default ``now`` that ``workflow.Context`` and ``apply_plan``
take (pass your own to freeze time); ``RECONCILE_NOW`` freezes it from the
environment, for reproducible runs and tests. ``wall_seconds`` is the real time
for what another party checks against its own clock (a JWT's expiry), which
must never be frozen. Durations are measured with ``time.perf_counter``, not
here. Nothing else in ``reconcile/`` reads the time of day (an architecture
test checks it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

# A clock: returns now as an ISO-8601 UTC string ("2026-11-20T10:00:00.000Z").
Clock = Callable[[], str]


def utc_now() -> str:
    """Now, in UTC with milliseconds; ``RECONCILE_NOW`` freezes it."""
    frozen = os.environ.get("RECONCILE_NOW")
    if frozen:
        return frozen
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def wall_seconds() -> float:
    """Seconds since the epoch, never frozen: for tokens another server checks."""
    return time.time()
