"""reconcile's own error types.

Every error the user can see is a ``ReconcileError``: it carries a one-line
message (what is wrong, where, what to do) and knows its exit code. Nothing
above ``salesforce.py`` ever sees a simple-salesforce or requests exception.
"""

from __future__ import annotations


class ReconcileError(Exception):
    """Base class. ``str(err)`` is the one-line message shown to the user."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# -- the user used it wrong ---------------------------------------------------

class UsageError(ReconcileError):
    """Bad invocation, bad configuration, bad input file."""


class InputError(UsageError):
    """One or more problems in outcome files, each ``file:line:column: what``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = self.problems[0] if self.problems else "invalid input"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(head + more)


class ConfigError(UsageError):
    """Missing, half-set or refused connection, or bad configuration. ``code``: the
    OAuth or login error code when the org refused the sign-in."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class PreflightError(UsageError):
    """The org lacks a field, picklist value or permission the rules need."""


class PlanNotFound(UsageError):
    pass


class StateError(UsageError):
    """The step does not follow from the plan's state (e.g. apply before approve)."""


class IntegrityError(ReconcileError):
    """A plan, approval or result does not match its hash or what it points at."""


class DriftError(ReconcileError):
    """Records changed in Salesforce since the plan was made."""


class LockedError(ReconcileError):
    """Another apply holds the lock (or a stale lock from a dead process)."""


# -- Salesforce said no ---------------------------------------------------------

class SalesforceError(ReconcileError):
    """A request-level failure from the org. ``code`` is Salesforce's errorCode."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class SessionExpired(SalesforceError):
    """401 / INVALID_SESSION_ID that could not be renewed."""


class ApiLimitExceeded(SalesforceError):
    """REQUEST_LIMIT_EXCEEDED, or the configured share of the daily allowance reached."""


class PermissionDenied(SalesforceError):
    """403 other than a limit; the user lacks access."""


class TransientError(SalesforceError):
    """503, SERVER_UNAVAILABLE, UNABLE_TO_LOCK_ROW, connection reset: retried, then raised."""


class MalformedRequest(SalesforceError):
    """400 for a request reconcile built: a bug or an org mismatch, not retried."""


class OutcomeUnknown(SalesforceError):
    """A write was sent and no answer came back: it may or may not have been applied.

    Never retried blindly; the apply journal settles it by asking the org."""
