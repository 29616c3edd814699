"""Switchable faults and request statistics of the sandbox org.

Both are thread-safe and settable from Python (``sb.faults.http_503(2)``) and
over HTTP: ``POST /__sandbox/faults`` with a JSON object whose keys are the
method names below and whose values are the arguments -- an object (keyword
arguments), a list (positional), a scalar (the single argument) or ``true``
(no argument)::

    {"http_503": {"n": 2, "path_contains": "composite"},
     "lock_rows": {"ids": ["003..."], "times": 2},
     "limit_after": 10, "expire_session": true, "renew_session": true,
     "drop_after_write": 1,
     "validation_error": {"ids": ["003..."], "message": "Title is locked"},
     "fail_bulk_jobs": {"n": 1, "message": "InternalServerError : retry later"},
     "fail_after_commit": {"status": 503, "rate": 0.2, "seed": 7,
                           "writes": ["collections", "bulk_close"]},
     "clear": true}

``GET /__sandbox/faults`` shows what is armed; ``GET /__sandbox/stats`` the
statistics, ``POST /__sandbox/stats/reset`` clears them.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from reconcile.sandbox import ids as idmod
from reconcile.sandbox.store import item_error

FAULT_METHODS = ("http_503", "lock_rows", "limit_after", "expire_session", "renew_session",
                 "drop_after_write", "validation_error", "fail_bulk_jobs", "fail_after_commit", "clear")

#: The writes ``fail_after_commit`` can answer with an error after saving them: an sObject
#: Collections create/update/delete, the upload of a Bulk API 2.0 ingest job's data, its close.
COMMIT_WRITES = ("collections", "bulk_upload", "bulk_close")
#: What each status says. 500 and 503 are the org's own JSON errors (REST API Developer
#: Guide, "Status Codes and Error Responses":
#: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm);
#: 502 and 504 come from a gateway in front of the org, so they are not Salesforce JSON.
COMMIT_ERRORS = {
    500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you "
                               "contact support: 1234567890-12345 (-1234567890)"),
    502: (None, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    503: ("SERVER_UNAVAILABLE", "A server that's necessary for this call is unavailable. Other "
                                "types of requests could still work."),
    504: (None, "<html><body><h1>504 Gateway Time-out</h1></body></html>"),
}


def commit_error(status: int) -> dict[str, Any]:
    """The body of a ``fail_after_commit`` answer: ``body`` (Salesforce's JSON error list)
    or ``text`` (a gateway's HTML page)."""
    code, message = COMMIT_ERRORS[status]
    if code is None:
        return {"text": message.encode("utf-8")}
    return {"body": [{"errorCode": code, "message": message}]}


class Faults:
    # What is armed; set (and reset) by ``clear``.
    _after_commit: dict[str, Any] | None
    _http_503: list[list]
    _locks: dict[str, int]
    _limit_after: int | None
    _expired: bool
    _drop: int
    _validation: dict[str, str]
    _bulk_failures: list[str]

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    # -- arming ------------------------------------------------------------

    def http_503(self, n: int = 1, path_contains: str | None = None) -> None:
        """The next ``n`` API requests whose path contains ``path_contains``
        (any, when None) answer 503 SERVER_UNAVAILABLE."""
        with self._lock:
            self._http_503.append([int(n), path_contains])

    def lock_rows(self, ids: Iterable[str] | str, times: int = 1) -> None:
        """Writes to these records fail item-level with UNABLE_TO_LOCK_ROW,
        ``times`` times each."""
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            for raw in ids:
                self._locks[idmod.normalize(raw) or raw] = int(times)

    def limit_after(self, n: int) -> None:
        """After ``n`` more API requests every request answers 403
        REQUEST_LIMIT_EXCEEDED (until ``clear``)."""
        with self._lock:
            self._limit_after = int(n)

    def expire_session(self) -> None:
        """Every API request answers 401 INVALID_SESSION_ID until ``renew_session``."""
        with self._lock:
            self._expired = True

    def renew_session(self) -> None:
        with self._lock:
            self._expired = False

    def drop_after_write(self, n: int = 1) -> None:
        """The next ``n`` write requests (sObject Collections, or the close of a
        Bulk API 2.0 ingest job) are processed, then the connection is closed
        without a response."""
        with self._lock:
            self._drop += int(n)

    def validation_error(self, ids: Iterable[str] | str,
                         message: str = "This record is locked by a validation rule.") -> None:
        """Updates of these records fail item-level with
        FIELD_CUSTOM_VALIDATION_EXCEPTION (validation rules do not run on delete)."""
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            for raw in ids:
                self._validation[idmod.normalize(raw) or raw] = message

    def fail_bulk_jobs(self, n: int = 1,
                       message: str = "InternalServerError : the job failed; try again") -> None:
        """The next ``n`` Bulk API 2.0 jobs (ingest: when closed, before any row
        is written; query: when created) end ``Failed`` with this errorMessage."""
        with self._lock:
            self._bulk_failures.extend([message] * int(n))

    def fail_after_commit(self, status: int = 503, n: int | None = None, rate: float | None = None,
                          seed: int = 0, writes: Iterable[str] | str = COMMIT_WRITES) -> None:
        """Writes are saved, then answered with HTTP ``status`` (500, 502, 503 or 504)
        instead of their result, so the client cannot tell that they were. Which writes:
        the next ``n`` (default 1), or with ``rate`` a share of them (0.2: one in five on
        average, drawn from ``random.Random(seed)``, so a test sees the same ones every
        run), among ``writes`` (``collections``, ``bulk_upload``, ``bulk_close``)."""
        status = int(status)
        if status not in COMMIT_ERRORS:
            raise ValueError(f"fail_after_commit: status must be one of {sorted(COMMIT_ERRORS)}")
        kinds = (writes,) if isinstance(writes, str) else tuple(writes)
        unknown = [k for k in kinds if k not in COMMIT_WRITES]
        if unknown:
            raise ValueError(f"fail_after_commit: unknown write {unknown[0]!r}; known: "
                             f"{', '.join(COMMIT_WRITES)}")
        if rate is not None and not 0.0 <= float(rate) <= 1.0:
            raise ValueError("fail_after_commit: rate is a share between 0 and 1")
        with self._lock:
            self._after_commit = {"status": status, "kinds": kinds,
                                  "left": None if rate is not None else int(1 if n is None else n),
                                  "rate": None if rate is None else float(rate),
                                  "rng": random.Random(seed), "hits": 0}

    def clear(self) -> None:
        with self._lock:
            self._after_commit = None
            self._http_503 = []
            self._locks = {}
            self._limit_after = None
            self._expired = False
            self._drop = 0
            self._validation = {}
            self._bulk_failures = []

    def apply_json(self, body: dict) -> None:
        """Arm faults from a ``POST /__sandbox/faults`` body."""
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        for name, arg in body.items():
            if name not in FAULT_METHODS:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULT_METHODS)}")
            method = getattr(self, name)
            if arg is False:
                continue
            if isinstance(arg, dict):
                method(**arg)
            elif isinstance(arg, list) and name not in ("lock_rows", "validation_error"):
                method(*arg)
            elif arg is True or arg is None:
                method()
            else:
                method(arg)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "http_503": [list(rule) for rule in self._http_503],
                "lock_rows": dict(self._locks),
                "limit_after": self._limit_after,
                "session_expired": self._expired,
                "drop_after_write": self._drop,
                "validation_error": dict(self._validation),
                "fail_bulk_jobs": list(self._bulk_failures),
                "fail_after_commit": None if self._after_commit is None else {
                    k: v for k, v in self._after_commit.items() if k != "rng"},
            }

    # -- consulted by the server -------------------------------------------

    def take_503(self, path: str) -> bool:
        with self._lock:
            for rule in self._http_503:
                if rule[1] is None or rule[1] in path:
                    rule[0] -= 1
                    if rule[0] <= 0:
                        self._http_503.remove(rule)
                    return True
            return False

    @property
    def session_expired(self) -> bool:
        return self._expired

    def take_limit(self) -> bool:
        """True when this request is over the armed limit."""
        with self._lock:
            if self._limit_after is None:
                return False
            if self._limit_after > 0:
                self._limit_after -= 1
                return False
            return True

    def take_drop(self) -> bool:
        with self._lock:
            if self._drop > 0:
                self._drop -= 1
                return True
            return False

    def take_after_commit(self, kind: str) -> int | None:
        """The status to answer this saved write (``kind`` in ``COMMIT_WRITES``) with, or None."""
        with self._lock:
            armed = self._after_commit
            if armed is None or kind not in armed["kinds"]:
                return None
            if armed["rate"] is not None:
                hit = armed["rng"].random() < armed["rate"]
            else:
                hit = armed["left"] > 0
                armed["left"] -= hit
                if armed["left"] <= 0:
                    self._after_commit = None
            armed["hits"] += hit
            return armed["status"] if hit else None

    def take_bulk_failure(self) -> str | None:
        """The errorMessage the next bulk job fails with, or None."""
        with self._lock:
            return self._bulk_failures.pop(0) if self._bulk_failures else None

    def row_error(self, operation: str, record_id: str) -> dict | None:
        """The store's fault hook: an item error for this record, or None."""
        with self._lock:
            if operation in ("update", "delete") and self._locks.get(record_id, 0) > 0:
                self._locks[record_id] -= 1
                if not self._locks[record_id]:
                    del self._locks[record_id]
                return item_error("UNABLE_TO_LOCK_ROW",
                                  f"unable to obtain exclusive access to this record or 1 "
                                  f"records: {record_id}")
            if operation == "validate" and record_id in self._validation:
                return item_error("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                  self._validation[record_id])
            return None


class Stats:
    """What the org saw. ``requests`` counts every API request (failed ones
    too); ``write_requests`` the requests that write records (create, update,
    delete; retrieve is a read); ``records_written`` the records a write
    applied; ``log`` is (method, path, summary) per API request;
    ``writes`` is (method, sobject, id, fields) per applied record write;
    ``auto_assign`` is the ``Sforce-Auto-Assign`` header (None when absent)
    of every request that wrote Leads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.requests = 0
            self.write_requests = 0
            self.records_written = 0
            self.log: list[tuple[str, str, str]] = []
            self.writes: list[tuple[str, str, str, dict]] = []
            self.auto_assign: list[str | None] = []

    def record(self, method: str, path: str, summary: str, *, write: bool = False,
               applied: Sequence[tuple] = (), lead_auto_assign: tuple[bool, str | None] = (False, None),
               ) -> None:
        with self._lock:
            self.requests += 1
            self.log.append((method, path, summary))
            if write:
                self.write_requests += 1
            self.records_written += len(applied)
            self.writes.extend(applied)
            if lead_auto_assign[0]:
                self.auto_assign.append(lead_auto_assign[1])

    def record_writes(self, applied: list[tuple]) -> None:
        """Records written outside any request (a Bulk job running in the background)."""
        with self._lock:
            self.records_written += len(applied)
            self.writes.extend(applied)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "write_requests": self.write_requests,
                "records_written": self.records_written,
                "log": [list(entry) for entry in self.log],
                "writes": [list(entry) for entry in self.writes],
                "auto_assign": list(self.auto_assign),
            }
