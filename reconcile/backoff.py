"""The one backoff policy: how long to wait before trying again.

Used by the adapter's retries of transient HTTP failures, apply's later rounds
for records the org could not lock, and the polling of Bulk API 2.0 jobs.

The n-th wait (n from 0) is ``first * 2**n`` seconds, at least what the server
asked for (``Retry-After``), at most ``cap``. With a random source the wait is
drawn from [wait/2, wait] ("equal jitter": retries from many clients spread
out, yet none comes sooner than half the schedule).

Why not a library: urllib3's ``Retry`` (already installed) computes its
backoff from the history of a request it retried itself and waits 0 before the
first retry; apply's rounds and Bulk polling are not urllib3 requests. tenacity
would own the loop, but the adapter's loop also signs in again and sorts
ambiguous failures from retryable ones. The formula is the part worth sharing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# No single wait is longer (seconds), whatever the attempt or Retry-After says.
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Backoff:
    first: float
    cap: float = MAX_BACKOFF

    def delay(self, n: int, *, random: Callable[[], float] | None = None, at_least: float = 0.0) -> float:
        """The wait before try ``n + 1``; ``random`` returns a number in [0, 1]."""
        wait = min(self.cap, max(self.first * 2.0 ** min(n, 64), at_least))
        if random is None:
            return wait
        return wait / 2 + random() * wait / 2
