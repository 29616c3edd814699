"""The apply journal: an append-only, fsynced record of every request apply makes.

``plans/<plan id>/journal.jsonl`` holds one JSON object a line (JSON Lines,
UTF-8, mode 0600). Each line is appended and fsynced by
``fsutil.append_line`` before ``append`` returns. Every event has ``event``
and ``at`` (UTC ISO-8601); most also carry ``calls``, the HTTP requests the
current run has made so far. The events:

``start``    a run began: ``run`` (1, 2, …), ``pid``, ``host``, ``plan_id``, ``warnings``,
             ``approval_sha256`` (the approval.json it runs under), ``archive`` (the
             plan folder it writes from: archive id, real path, device, inode).
``settle``   a request left without an answer by an earlier run, settled by
             asking the org: ``request`` and ``results`` (as in ``result``).
``drift``    the drift check of one group of writes, on what was read just before it:
             ``checked`` (change ids), ``current`` (per change the values read just now,
             i.e. what a write would replace), ``drifted`` (change_id, message,
             fields {F: {planned, current}}), ``skipped`` (change_id, message:
             the record already holds the planned values), ``final`` (true with
             ``--skip-drifted``: the drifted changes are done with; false: the
             run refuses and they stay pending), ``refused`` (true when the run
             stops before this group: then the ``skipped`` ones stay pending too,
             to be read again).
``refused``  the run stopped before a group because of drift: ``drifted`` (count),
             ``action``, ``sobject`` (the group); earlier groups stay written.
``mark``     reconcile's own verdict on changes it will not send (a create whose
             Account could not be created): ``results``.
``send``     written and fsynced BEFORE a request goes out: ``request`` (number,
             counting across runs), ``action``, ``sobject``, ``change_ids``,
             ``payload`` (the exact records or ids sent).
``job``      a Bulk API 2.0 job a request created, written as soon as the job exists
             (before its data is uploaded): ``request``, ``job_id``. A request killed
             while its job runs is settled by first asking the org about the job
             (an Open one is aborted, a running one waited for), then reading the records.
``result``   written AFTER the answer: ``request`` and ``results``, one per
             change: ``change_id``, ``status`` (applied | failed | pending),
             ``id``, ``ref`` (creates), ``error_code``, ``message``, ``attempt``.
             A request refused as a whole (limit, expired session, 503 after
             retries) gets a ``result`` putting its changes back to pending and
             an ``error_code``.
``stop``     the run stopped with changes pending: ``reason``.
``finish``   nothing is pending any more: ``status``, ``counts``.

Why a crash cannot make apply send a change twice
--------------------------------------------------
The ``send`` line is on disk before the request leaves, and the ``result``
line is written only after the answer arrived. After a crash there are three
cases for any request:

1. ``send`` and ``result`` both present: the outcome is known.
2. ``send`` complete, no ``result``: the request may or may not have reached
   Salesforce. ``replay`` lists it in ``unsettled``; the next run settles it
   by reading the org (update: does the record hold the ``after`` values;
   create: does a record with that e-mail/name exist that the plan's snapshot
   did not have, holding the values sent and created after the ``send``; delete:
   is the record gone) before sending anything.
3. ``send`` torn (the process died while writing it, so the line has no final
   newline or is not valid JSON): the fsync of that line never completed, and
   the request is only sent after that fsync returns — so the request was NOT
   sent. The torn line is ignored and counted in ``torn_lines``.
   ``append_line`` starts the next event on a fresh line, so a torn line never
   corrupts the one after it.

The journal holds change ids, record ids, field values and Salesforce's error
messages; never a token, a password or a session id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconcile.canonical import canonical_json
from reconcile.clock import Clock
from reconcile.errors import IntegrityError
from reconcile.fsutil import append_line, folder_identity, read_bytes
from reconcile.model import ChangeStatus

__all__ = ["Journal", "JournalState", "replay", "read_events", "FINAL_STATUSES"]

FINAL_STATUSES = frozenset({ChangeStatus.APPLIED, ChangeStatus.FAILED,
                            ChangeStatus.DRIFTED, ChangeStatus.SKIPPED})


@dataclass
class JournalState:
    """What the journal says so far. ``status`` holds only changes the journal
    mentions; a change it does not mention is pending. ``fold`` applies one
    event, so a running apply and a later ``replay`` agree by construction."""
    runs: int = 0
    requests: int = 0                     # write requests sent (send events), all runs
    started_at: str | None = None
    finished: bool = False
    torn_lines: int = 0
    status: dict[str, ChangeStatus] = field(default_factory=dict)
    errors: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # error_code, message
    ids: dict[str, str] = field(default_factory=dict)              # change_id -> record id (creates)
    created: dict[str, str] = field(default_factory=dict)          # ref -> new record id
    read: dict[str, dict[str, Any]] = field(default_factory=dict)  # change_id -> values last read
    replaced: dict[str, dict[str, Any]] = field(default_factory=dict)  # change_id -> values the write replaced
    drift: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)         # transient item failures so far
    sends: dict[str, int] = field(default_factory=dict)            # change_id -> requests that carried it
    unsettled: dict[int, dict[str, Any]] = field(default_factory=dict)  # request -> its send event
    warnings: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    _earlier_calls: int = 0
    _run_calls: int = 0

    @property
    def calls(self) -> int:
        """HTTP requests made by all runs (a lower bound if a run was killed)."""
        return self._earlier_calls + self._run_calls

    def status_of(self, change_id: str) -> ChangeStatus:
        return self.status.get(change_id, ChangeStatus.PENDING)

    def is_final(self, change_id: str) -> bool:
        return self.status_of(change_id) in FINAL_STATUSES

    def fold(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self._earlier_calls += self._run_calls
            self._run_calls = 0
            self.runs = max(self.runs + 1, int(event.get("run", 0)))
            self.stop_reason = None
            if self.started_at is None:
                self.started_at = event.get("at")
            self.warnings.extend(event.get("warnings", ()))
        if "calls" in event:
            self._run_calls = max(self._run_calls, int(event["calls"]))
        if kind == "send":
            number = int(event["request"])
            self.requests = max(self.requests + 1, number)
            self.unsettled[number] = event
            for change_id in event.get("change_ids", ()):
                self.sends[change_id] = self.sends.get(change_id, 0) + 1
        elif kind == "job":
            send = self.unsettled.get(int(event["request"]))
            if send is not None:
                send.setdefault("job_ids", []).append(event["job_id"])
        elif kind in ("result", "settle"):
            self.unsettled.pop(int(event["request"]), None)
            self._fold_results(event.get("results", ()))
        elif kind == "mark":
            self._fold_results(event.get("results", ()))
        elif kind == "drift":
            for change_id in event.get("checked", ()):
                self.drift.pop(change_id, None)
                self.errors.pop(change_id, None)
            for change_id, values in event.get("current", {}).items():
                self.read[change_id] = values
            for item in event.get("skipped", ()):
                # Final only when the run goes on to write: after a refusal the record is
                # read again next time, so a later edit of it is seen.
                if not event.get("refused"):
                    self.status[item["change_id"]] = ChangeStatus.SKIPPED
                self.errors[item["change_id"]] = (None, item.get("message"))
            for item in event.get("drifted", ()):
                self.drift[item["change_id"]] = item.get("fields", {})
                self.errors[item["change_id"]] = (None, item.get("message"))
                if event.get("final"):
                    self.status[item["change_id"]] = ChangeStatus.DRIFTED
        elif kind == "stop":
            self.stop_reason = event.get("reason")
        elif kind == "finish":
            self.finished = True

    def _fold_results(self, results: Any) -> None:
        for item in results:
            change_id = item["change_id"]
            status = ChangeStatus(item["status"])
            self.status[change_id] = status
            if item.get("error_code") or item.get("message"):
                self.errors[change_id] = (item.get("error_code"), item.get("message"))
            else:
                self.errors.pop(change_id, None)
            if item.get("attempt"):
                self.attempts[change_id] = int(item["attempt"])
            if status is ChangeStatus.APPLIED:
                if item.get("id"):
                    self.ids[change_id] = item["id"]
                    if item.get("ref"):
                        self.created[item["ref"]] = item["id"]
                if change_id in self.read and change_id not in self.replaced:
                    self.replaced[change_id] = self.read[change_id]
            if status is ChangeStatus.DRIFTED and item.get("fields"):
                self.drift[change_id] = item["fields"]


def read_events(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The journal's events in order, and how many torn lines were skipped."""
    events: list[dict[str, Any]] = []
    torn = 0
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return events, 0
    lines = raw.split(b"\n")
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        # The last chunk lacks its newline: the write was cut short.
        complete = number < len(lines) - 1
        try:
            event = json.loads(line.decode("utf-8")) if complete else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            event = None
        if not isinstance(event, dict) or "event" not in event:
            torn += 1
            continue
        events.append(event)
    return events, torn


GENESIS = "0" * 64


def complete_lines(path: Path) -> list[bytes]:
    """The journal's lines that were written whole (newline-terminated, valid JSON)."""
    return [line for _number, line in _numbered_complete_lines(path)]


def _numbered_complete_lines(path: Path) -> list[tuple[int, bytes]]:
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return []
    out = []
    for number, line in enumerate(raw.split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue  # torn: never sent (see the module docstring)
        out.append((number, line))
    return out


def has_sends(path: Path) -> bool:
    """Did any apply run send a request (a complete ``send`` line)? Stops at the first."""
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return False
    for line in raw.split(b"\n")[:-1]:       # the last chunk has no newline: torn or empty
        if b'"send"' in line:
            try:
                if json.loads(line.decode("utf-8")).get("event") == "send":
                    return True
            except (UnicodeDecodeError, ValueError):
                continue
    return False


def last_line_hash(path: Path) -> str:
    lines = complete_lines(path)
    return hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS


def check_chain(path: Path) -> str | None:
    """None if every complete line's ``prev`` is the hash of the complete line before
    it; otherwise where the chain breaks."""
    prev, prev_line = GENESIS, 0
    for number, (line_number, line) in enumerate(_numbered_complete_lines(path), 1):
        event = json.loads(line.decode("utf-8"))
        if event.get("prev") != prev:
            before = f"line {prev_line}" if prev_line else "the start of the file"
            return (f"line {line_number} (event {number}, {event.get('event')}) does not chain to "
                    f"{before} (that line, or this one, was edited, removed or inserted)")
        prev, prev_line = hashlib.sha256(line).hexdigest(), line_number
    return None


def replay(path: Path) -> JournalState:
    """Fold the journal into a ``JournalState`` (see the module docstring).

    The hash chain is checked first: a journal with an edited, removed or inserted
    line (a pending result marked ``applied``, say) is refused with ``IntegrityError``,
    never trusted."""
    path = Path(path)
    broken = check_chain(path)
    if broken:
        raise IntegrityError(f"{path.name} {broken}; nothing was sent. Run "
                             f"`reconcile verify {path.parent.name[:12]}` and restore the plan folder "
                             "from a backup")
    events, torn = read_events(path)
    state = JournalState(torn_lines=torn)
    for event in events:
        state.fold(event)
    return state


class Journal:
    """Appends events to one plan's journal; each append is durable on return."""

    def __init__(self, path: Path, *, now: Clock):
        self.path = Path(path)
        self._now = now
        self.calls = 0          # set by the caller: HTTP requests so far in this run
        self._prev: str | None = None

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event durably and return it (as ``JournalState.fold`` takes it).

        Each event carries ``prev``, the SHA-256 of the previous complete line, so
        ``verify`` can tell an edited or removed line from a torn last one."""
        if self._prev is None:
            self._prev = last_line_hash(self.path)
        if event == "start" and "approval_sha256" not in fields:
            # The approval this run executes under: an approval edited (and re-sealed)
            # after an apply began no longer matches it (approval.check_bound_to_journal).
            fields["approval_sha256"] = self._approval_sha256()
        if event == "start" and "archive" not in fields:
            # Which folder this run wrote from: apply refuses a copy (archive.check_not_copied).
            fields["archive"] = folder_identity(self.path.parent)
        record = {"event": event, "at": self._now(), "calls": self.calls, **fields, "prev": self._prev}
        line = canonical_json(record)
        append_line(self.path, line)
        self._prev = hashlib.sha256(line.encode("utf-8")).hexdigest()
        return record

    def _approval_sha256(self) -> str | None:
        try:
            return hashlib.sha256(read_bytes(self.path.parent / "approval.json")).hexdigest()
        except FileNotFoundError:
            return None

    def replay(self) -> JournalState:
        return replay(self.path)
