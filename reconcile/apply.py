"""Apply an approved plan: lock, settle, drift check, the plan's steps, result.

``apply_plan`` executes exactly the plan document it is given (the caller has
already checked it against its approval). One run:

1. takes the archive's apply lock (``plans/.apply.lock``; a stale one left by
   a killed apply is reported, never silently ignored);
2. replays ``journal.jsonl`` and settles every request an earlier run sent
   without seeing the answer, by reading the org (``reconcile.settle`` decides
   from what was read);
3. runs the steps of the pending changes (``reconcile.steps``), one group of
   writes (one action on one sobject) after another: the group's read steps
   (the records it touches re-read, or records with a create's key looked
   for), its drift check against the plan's ``before`` values
   (``reconcile.drift``), its write. Each group is read once, just before it
   is written. By default drift stops the run before the drifted group
   (``DriftError``): it and the later groups are not written, the earlier ones
   stay written; ``skip_drifted`` records the drifted changes and writes the rest;
4. writes by the path (sObject Collections or a Bulk API 2.0 job,
   ``reconcile.writers``) that ``reconcile.steps`` decides, each request framed
   by a ``send`` and a ``result`` journal event fsynced to disk. A write whose
   answer leaves its outcome open (``OutcomeUnknown``: a 5xx, a dropped
   connection) is never re-sent as it was: it is settled at once, as in 2, and
   only what the org shows was not written is sent again;
5. when nothing is pending any more, writes ``apply.json`` once.

Request-level stops (the org's limit, our share of it, an expired session, reads
failing after the adapter's retries, answers lost again and again) end the run
cleanly: the changes not yet written stay pending and running apply again resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from reconcile import drift, settle
from reconcile.archive import JOURNAL as JOURNAL_NAME
from reconcile.archive import RECORD_FORMAT_VERSION, RESULT, sealed_chunks
from reconcile.backoff import Backoff
from reconcile.canonical import canonical_bytes
from reconcile.clock import Clock, utc_now
from reconcile.config import Config
from reconcile.errors import ApiLimitExceeded, DriftError, LockedError, OutcomeUnknown, SalesforceError
from reconcile.fsutil import write_atomic
from reconcile.journal import Journal, JournalState
from reconcile.model import Action, Change, ChangeStatus, PlanKind, PlanState, change_from_dict, pointed_ref
from reconcile.ports import BulkIngest, OrgWriter
from reconcile.steps import (
    Step,
    StepKind,
    Via,
    apply_steps,
    bulk_jobs,
    bulk_row_bytes,
    create_key,
    key_field,
    planned_record,
    write_path,
    write_rank,
    write_requests,
)
from reconcile.writers import NO_RESULT, BulkWriter, CollectionsWriter, ItemResult, StartedJob, WriteItem, Writer, fixed_chunks

__all__ = ["apply_plan", "report_from_result", "ApplyReport", "ChangeResult",
           "TRANSIENT_ITEM_CODES", "DEPENDENCY_FAILED"]

# Item-level codes that mean "not saved this time, try again later".
TRANSIENT_ITEM_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
# reconcile's own code for a create that needed a record the plan could not create.
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"



# -- results ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ChangeResult:
    """What happened to one change. ``fields``: {F: {before (plan), replaced
    (value read just before the write), after}}; ``drift``: {F: {planned, current}}."""
    change_id: str
    action: str
    sobject: str
    record_id: str | None
    status: ChangeStatus
    error_code: str | None = None
    message: str | None = None
    ref: str | None = None
    fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    drift: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every nested value (20 s at 100,000 changes)
        return {"change_id": self.change_id, "action": self.action, "sobject": self.sobject,
                "record_id": self.record_id, "status": str(self.status),
                "error_code": self.error_code, "message": self.message, "ref": self.ref,
                "fields": {f: dict(v) for f, v in self.fields.items()},
                "drift": {f: dict(v) for f, v in self.drift.items()}}


@dataclass(frozen=True)
class ApplyReport:
    """``status`` is applied / partially applied / failed once ``finished``;
    before that "applying" (changes written, some pending) or "approved"
    (nothing written yet, e.g. refused for drift)."""
    plan_id: str
    results: tuple[ChangeResult, ...]
    finished: bool
    status: str
    stop_reason: str | None
    api_calls: int
    drifted: tuple[ChangeResult, ...]
    created: Mapping[str, str] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def tally(self) -> str:
        """``"18 applied, 2 failed"``: the non-zero counts, for a person."""
        return ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()) if n) or "nothing to do"

    def to_dict(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "finished": self.finished, "status": self.status,
                "stop_reason": self.stop_reason, "api_calls": self.api_calls,
                "created": dict(self.created), "counts": dict(self.counts),
                "warnings": list(self.warnings),
                "results": [r.to_dict() for r in self.results],
                "drifted": [r.change_id for r in self.drifted]}


# -- the lock -----------------------------------------------------------------------------

class _ApplyLock:
    """``plans/.apply.lock`` (non-blocking) plus ``.apply.lock.json`` saying who holds it."""

    def __init__(self, root: Path, plan_id: str, now: Clock):
        self.root = root
        self.plan_id = plan_id
        self.now = now
        self.info_path = root / ".apply.lock.json"
        self.lock = FileLock(str(root / ".apply.lock"), mode=0o600)
        self.warnings: list[str] = []

    def __enter__(self) -> _ApplyLock:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(blocking=False)
        except Timeout:
            info = self._read_info()
            who = (f"pid {info.get('pid')} on {info.get('hostname')}, plan {info.get('plan_id')}, "
                   f"since {info.get('started_at')}") if info else "holder unknown"
            raise LockedError(f"another apply is running ({who}); wait for it to finish") from None
        try:
            stale = self._read_info()
            if stale:
                alive = _pid_alive(stale.get("pid")) and stale.get("hostname") == socket.gethostname()
                what = "may still be running" if alive else "did not finish"
                if stale.get("plan_id") == self.plan_id:
                    self.warnings.append(f"an earlier apply (pid {stale.get('pid')}) of plan "
                                         f"{stale.get('plan_id')} {what}; resuming")
                else:
                    self.warnings.append(f"an earlier apply (pid {stale.get('pid')}) of plan "
                                         f"{stale.get('plan_id')} {what}; run apply on that plan "
                                         f"again to finish it")
            info = {"pid": os.getpid(), "hostname": socket.gethostname(),
                    "plan_id": self.plan_id, "started_at": self.now()}
            write_atomic(self.info_path, canonical_bytes(info), overwrite=True)
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.info_path.unlink(missing_ok=True)
        finally:
            self.lock.release()

    def _read_info(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return info if isinstance(info, dict) else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the entry point --------------------------------------------------------------------------

def apply_plan(doc: Mapping[str, Any], plan_dir: Path, sf: OrgWriter, config: Config, *,
               skip_drifted: bool = False,
               progress: Callable[[int, int], None] | None = None,
               now: Clock = utc_now,
               plan_sha256: str | None = None,
               sleep: Callable[[float], None] = time.sleep,
               writer: Writer | None = None,
               jitter: Callable[[], float] = random.random,
               calls_before: int | None = None) -> ApplyReport:
    """Apply (or resume applying) ``doc``; see the module docstring.

    Raises ``DriftError`` (drift: the run stopped before the drifted group), ``LockedError``, or the
    ``SalesforceError`` that stopped the run (``ApiLimitExceeded``,
    ``SessionExpired``, ``TransientError``, ``OutcomeUnknown`` …). Every error
    raised after the lock was taken carries the run's ``ApplyReport`` as
    ``.report``. ``calls_before``: the connection's request count this run should
    start from (0 when the caller opened it for this apply, so its own checks count).
    """
    plan_dir = Path(plan_dir)
    plan_id = str(doc["plan_id"])
    with _ApplyLock(plan_dir.parent, plan_id, now) as lock:
        result_path = plan_dir / RESULT
        if result_path.exists():
            return report_from_result(json.loads(result_path.read_text(encoding="utf-8")))
        if plan_sha256 is None and (plan_dir / "plan.json").exists():
            plan_sha256 = hashlib.sha256((plan_dir / "plan.json").read_bytes()).hexdigest()
        # A rollback restores a state the org already had: its writes pass duplicate rules
        # that alert (a Block rule still refuses), and so stay on Collections, the only
        # path that carries the duplicate rule header (steps.write_path agrees).
        restores = doc.get("kind") == PlanKind.ROLLBACK.value
        bulk = (BulkWriter(sf, config) if writer is None and isinstance(sf, BulkIngest) and not restores
                else None)
        run = _Run(doc, plan_dir, sf, config, skip_drifted=skip_drifted, progress=progress,
                   now=now, plan_sha256=plan_sha256, sleep=sleep,
                   writer=writer or CollectionsWriter(sf, config, allow_duplicates=restores),
                   jitter=jitter, bulk_writer=bulk)
        if calls_before is not None:
            run.base_calls = calls_before
        return run.execute(lock.warnings)


def report_from_result(data: Mapping[str, Any]) -> ApplyReport:
    """An ``ApplyReport`` from a finished plan's ``apply.json``."""
    results = tuple(ChangeResult(change_id=r["change_id"], action=r["action"], sobject=r["sobject"],
                                 record_id=r.get("record_id"), status=ChangeStatus(r["status"]),
                                 error_code=r.get("error_code"), message=r.get("message"),
                                 ref=r.get("ref"), fields=r.get("fields") or {},
                                 drift=r.get("drift") or {})
                    for r in data.get("results", ()))
    return ApplyReport(plan_id=data["plan_id"], results=results, finished=True,
                       status=data["status"], stop_reason=None, api_calls=data.get("api_calls", 0),
                       drifted=tuple(r for r in results if r.status is ChangeStatus.DRIFTED),
                       created=data.get("created") or {}, counts=data.get("counts") or {},
                       warnings=tuple(data.get("warnings") or ()))


def _raise(error: BaseException) -> Any:
    raise error


class _Stop(Exception):
    """Internal: the run stops with changes pending."""

    def __init__(self, error: SalesforceError):
        self.error = error


class _Run:
    def __init__(self, doc: Mapping[str, Any], plan_dir: Path, sf: OrgWriter, config: Config, *,
                 skip_drifted: bool, progress: Callable[[int, int], None] | None,
                 now: Clock, plan_sha256: str | None, sleep: Callable[[float], None],
                 writer: Writer, jitter: Callable[[], float], bulk_writer: Writer | None = None):
        self.doc = doc
        self.plan_id = str(doc["plan_id"])
        self.plan_dir = plan_dir
        self.sf = sf
        self.config = config
        self.skip_drifted = skip_drifted
        self.progress = progress
        self.now = now
        self.plan_sha256 = plan_sha256
        self.sleep = sleep
        self.writer = writer
        self.bulk_writer = bulk_writer
        self.jitter = jitter
        self.changes = [change_from_dict(c) for c in doc.get("changes", ())]
        self.by_id = {c.change_id: c for c in self.changes}
        self.by_ref = {c.ref: c for c in self.changes if c.ref}
        # 15-character ids of the records the plan's snapshot had (15- and 18-character ids name the same record)
        self.prior_known = {str(i)[:15] for i in (doc.get("prior_state") or {})}
        self.journal = Journal(plan_dir / "journal.jsonl", now=now)
        self.state = JournalState()
        self.own_calls = 0
        self.base_calls = getattr(sf, "calls", None)
        self.pending_by_group: dict[tuple[Action, str], int] = defaultdict(int)
        self.reads_left: dict[tuple[Action, str], int] = defaultdict(int)   # read requests per group
        self._group_now: tuple[Action, str] | None = None   # the group _groups is at, and what
        self._compared = drift.Compared()                   # its reads found
        self.key_of: Callable[[Change], str] = lambda change: create_key(change, config)
        if progress is not None and hasattr(sf, "bulk_progress"):
            sf.bulk_progress = self._tick_bulk   # records done while a Bulk job runs
        self.unknown_in_a_row = 0       # write answers lost one after another (see _settle_unknown)

    # -- bookkeeping --

    def _calls(self) -> int:
        current = getattr(self.sf, "calls", None)
        if isinstance(current, int) and isinstance(self.base_calls, int):
            return current - self.base_calls
        return self.own_calls

    def _log(self, event: str, **fields: Any) -> None:
        self.journal.calls = self._calls()
        self.state.fold(self.journal.append(event, **fields))

    def _pending(self) -> list[Change]:
        return [c for c in self.changes if not self.state.is_final(c.change_id)]

    def _tick(self) -> None:
        if not self.progress:
            return
        if self.pending_by_group:   # writing: kept up to date per request, no scan
            done = len(self.changes) - sum(self.pending_by_group.values())
        else:
            done = sum(1 for c in self.changes if self.state.is_final(c.change_id))
        self.progress(done, len(self.changes))

    def _tick_bulk(self, processed: int) -> None:
        """During a Bulk job: the records finished before it plus those the job has processed."""
        if self.progress:
            done = len(self.changes) - sum(self.pending_by_group.values())
            self.progress(min(done + processed, len(self.changes)), len(self.changes))

    def _retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        wanted = ["Id", *[f for f in fields if f != "Id"]]
        for chunk in fixed_chunks(list(ids), self.config.retrieve_size):
            self.own_calls += 1
            for record_id, row in zip(chunk, self.sf.retrieve(sobject, list(chunk), wanted), strict=True):
                if row is not None:
                    rows[record_id] = row
        return rows

    def _find_by_key(self, sobject: str, values: Iterable[str]) -> dict[str, list[str]]:
        """key (lower-cased) -> ids of records that hold it and the plan's snapshot did not have."""
        return {k: sorted(r["Id"] for r in rows) for k, rows in self._find_new(sobject, values).items()}

    def _find_new(self, sobject: str, values: Iterable[str],
                  fields: Sequence[str] = ()) -> dict[str, list[dict]]:
        """key (lower-cased) -> the records (``Id``, the key, ``fields``) that hold it and
        that the plan's snapshot did not have."""
        values = sorted({v for v in values if v})
        if not values:
            return {}
        key = key_field(sobject, self.config)
        self.own_calls += 1
        found: dict[str, list[dict]] = defaultdict(list)
        known = self.prior_known | {i[:15] for i in self.state.ids.values()}
        wanted = list(dict.fromkeys(["Id", key, *fields]))
        for row in self.sf.query_in(sobject, key, values, wanted):
            if str(row.get("Id"))[:15] in known:   # 15- and 18-character ids name the same record
                continue
            found[str(row.get(key) or "").strip().lower()].append(row)
        return {k: sorted(v, key=lambda r: str(r["Id"])) for k, v in found.items()}

    # -- the run --

    def execute(self, lock_warnings: list[str]) -> ApplyReport:
        self.state = self.journal.replay()
        warnings = list(lock_warnings)
        if self.state.torn_lines:
            warnings.append(f"the journal had {self.state.torn_lines} incomplete line(s) from an "
                            f"interrupted run; ignored (such a request was never sent)")
        self._log("start", run=self.state.runs + 1, pid=os.getpid(), host=socket.gethostname(),
                  plan_id=self.plan_id, warnings=warnings)
        self._tick()
        try:
            try:
                self._settle()
                self._groups()
            except (DriftError, _Stop):
                raise
            except SalesforceError as err:   # a read (settle, drift check) was refused
                raise self._stop(err) from None
        except _Stop as stop:
            report = self._report(stop_reason=stop.error.message)
            stop.error.report = report  # type: ignore[attr-defined]
            raise stop.error from None
        return self._finish()

    def _stop(self, error: SalesforceError, request: int | None = None) -> _Stop:
        pending = len(self._pending())
        where = f" at write request {request} of this plan" if request else ""
        message = (f"{error.message} — apply stopped{where} with {pending} change(s) pending; "
                   f"run `reconcile apply` on this plan again to resume")
        self._log("stop", reason=message, error_code=error.code, pending=pending)
        new = type(error)(message, code=error.code, status=error.status)
        return _Stop(new)

    # 1. settle requests an earlier run sent without seeing the answer

    def _settle(self) -> None:
        for number, send in sorted(self.state.unsettled.items()):
            self._settle_request(number, send)
            self._tick()

    def _settle_request(self, number: int, send: Mapping[str, Any]) -> None:
        """Settle request ``number`` (its ``send`` event) by reading the org: each change
        is applied (the org shows it), pending (it does not: send it again) or drifted.
        The Bulk jobs it created are settled first (an Open one aborted, a running one
        waited for), so that the records are read only once nothing can still write them."""
        action = Action(send["action"])
        sobject = send["sobject"]
        change_ids = list(send["change_ids"])
        payload = send.get("payload") or []
        settle_job = getattr(self.sf, "bulk_job_settle", None)
        for job_id in send.get("job_ids") or ():
            if settle_job is not None:
                self.own_calls += 1
                settle_job(job_id)
        if action is Action.CREATE:
            changes = [self.by_id[c] for c in change_ids]
            sent = sorted({f for rec in payload for f in rec} | {settle.CREATED})
            found = self._find_new(sobject, [self.key_of(c) for c in changes], sent)
            results = settle.settle_creates(number, changes, payload, found, self.key_of,
                                            sent_at=send.get("at"))
        elif action is Action.UPDATE:
            fields = sorted({f for rec in payload for f in rec if f != "Id"} | {settle.STAMP})
            rows = self._retrieve(sobject, list(dict.fromkeys(rec["Id"] for rec in payload)), fields)
            stamps = {c: (self.state.read.get(c) or {}).get(settle.STAMP) for c in change_ids}
            results = settle.settle_updates(number, [self.by_id[c] for c in change_ids], payload, rows,
                                            stamps=stamps)
        else:
            rows = self._retrieve(sobject, list(payload), ["Id"])
            results = settle.settle_deletes(number, change_ids, payload, rows)
        self._log("settle", request=number, action=str(action), sobject=sobject, results=results)

    # 2-3. each group of writes: read it, check it, write it

    def _groups(self) -> None:
        """Run the steps of the changes still pending (``reconcile.steps.apply_steps``), one
        group of writes after another: the group's reads, its drift check, its write. The
        records a group touches are read just before it is written, so an edit landing while
        an earlier group was written is seen; ``replaced`` is what that read saw."""
        pending = self._pending()
        if not pending:
            return
        steps = apply_steps(pending, self.config)
        self.pending_by_group.clear()
        self.reads_left.clear()
        for change in pending:
            self.pending_by_group[(change.action, change.sobject)] += 1
        for step in steps:
            if step.kind is not StepKind.WRITE:
                self.reads_left[(Action(str(step.action)), str(step.sobject))] += step.requests
        self._group_now, self._compared = None, drift.Compared()
        at = 0
        while at < len(steps):
            alongside = self._alongside(steps, at)
            if not alongside:
                self._run_step(steps[at])
                at += 1
                continue
            # A Bulk job whose rank has Collections groups after it (Contact and Lead updates:
            # neither waits for the other): the job is closed, the other groups are read,
            # checked and written while the org runs it, and it is waited for last. Each
            # request keeps its own send and result events.
            started = self._run_step(steps[at], start=True)
            try:
                for other in alongside:
                    self._run_step(other)
            except Exception as stop:   # a stop, drift, a refusal: the job is still waited for
                if started is not None:
                    try:
                        self._finish_job(*started)
                    except (SalesforceError, _Stop):
                        pass     # left open in the journal: the next run settles it
                    if isinstance(stop, DriftError):   # made before the job's results: again
                        raise self._drift_error(*stop.refused) from None  # type: ignore[attr-defined]
                raise
            if started is not None:
                retry = self._finish_job(*started)
                if retry:
                    self._write_group(started[1], started[2], retry, retried=True)
            at += 1 + len(alongside)

    def _run_step(self, step: Step, *, start: bool = False,
                  ) -> tuple[int, Action, str, list[WriteItem], StartedJob] | None:
        """One step of ``_groups``: a read of the current group, or its drift check and
        write. ``start``: send the write (one Bulk job) without waiting for it."""
        action, sobject = Action(str(step.action)), str(step.sobject)
        if (action, sobject) != self._group_now:     # a new group: what it needs may have failed
            self._group_now, self._compared = (action, sobject), drift.Compared()
            self._mark_dependents(self.by_id[i] for i in step.change_ids)
        group, compared = self._group_now, self._compared
        changes = [c for c in (self.by_id[i] for i in step.change_ids)
                   if not self.state.is_final(c.change_id)]
        if step.kind is not StepKind.WRITE:
            if changes:
                self._budget_check()
                self._read(step, changes, compared)
            self.reads_left[group] -= step.requests
            return None
        self._check_group(step, changes, compared)
        changes = [c for c in changes if not self.state.is_final(c.change_id)]
        self.pending_by_group[group] = len(changes)
        items = [self._item(c) for c in changes]
        if start:
            return self._start_job(action, sobject, items)
        self._write_group(action, sobject, items)
        return None

    def _alongside(self, steps: Sequence[Step], at: int) -> list[Step]:
        """The steps to run while the Bulk job of ``steps[at]`` runs: the groups of the same
        write rank right after it that are written through Collections, each with its read
        steps. Empty unless ``steps[at]`` is one Bulk job this connection can start and leave."""
        step = steps[at]
        if step.kind is not StepKind.WRITE or step.via is not Via.BULK:
            return []
        writer = self.bulk_writer
        if not isinstance(writer, BulkWriter) or not writer.can_start:
            return []
        action, sobject = Action(str(step.action)), str(step.sobject)
        pending = [self.by_id[c] for c in step.change_ids if not self.state.is_final(c)]
        if self._writer_for(sobject, len(pending))[0] is not Via.BULK:
            return []
        if len(bulk_jobs([bulk_row_bytes(planned_record(c)) for c in pending], self.config)) != 1:
            return []
        rank = write_rank(action, sobject)
        out: list[Step] = []
        nxt = at + 1
        while nxt < len(steps):
            end = nxt
            while end < len(steps) and steps[end].kind is not StepKind.WRITE:
                end += 1        # the group's reads, then its write
            if end == len(steps):
                break
            write = steps[end]
            if (write.via is not Via.COLLECTIONS
                    or write_rank(Action(str(write.action)), str(write.sobject)) != rank):
                break
            out.extend(steps[nxt:end + 1])
            nxt = end + 1
        return out

    def _start_job(self, action: Action, sobject: str, items: list[WriteItem],
                   ) -> tuple[int, Action, str, list[WriteItem], StartedJob] | None:
        """Send the group's one Bulk job without waiting for it (None: nothing is left
        open; what needs sending again was sent with the group's retries)."""
        if not items:
            return None
        writer = self.bulk_writer
        assert isinstance(writer, BulkWriter)
        number = self._begin(action, sobject, items, writer)
        try:
            return number, action, sobject, items, writer.start(action, sobject, items)
        except SalesforceError as err:
            retry = self._answered(number, action, sobject, items, partial(_raise, err))
            self._write_group(action, sobject, retry)
            return None

    def _finish_job(self, number: int, action: Action, sobject: str, items: list[WriteItem],
                    started: StartedJob) -> list[WriteItem]:
        writer = self.bulk_writer
        assert isinstance(writer, BulkWriter)
        return self._answered(number, action, sobject, items, lambda: writer.finish(started))

    def _read(self, step: Step, changes: list[Change], compared: drift.Compared) -> None:
        """One read step of a group; what it finds goes into ``compared``."""
        sobject = str(step.sobject)
        if step.kind is StepKind.REREAD:
            self._reread(sobject, changes, step.fields, compared)
        elif step.kind is StepKind.COUNT_CONTACTS:
            # Sent after the Contact deletes were written: every Contact still pointing
            # at one of these Accounts would be deleted with it.
            deletes = drift.account_deletes_to_count(changes, compared.current)
            if deletes:
                self.own_calls += 1
                counts = self.sf.count_contacts_by_account([str(c.record_id) for c in deletes])
                drift.accounts_in_use(deletes, compared, counts)
        elif step.kind is StepKind.FIND_NEW:
            found = self._find_by_key(sobject, [self.key_of(c) for c in changes])
            drift.new_duplicates(sobject, changes, found, self.key_of, compared)

    def _reread(self, sobject: str, changes: Sequence[Change], fields: Sequence[str],
                compared: drift.Compared) -> None:
        """Read the records ``changes`` touch and compare them with the plan. The values read
        (``current``) are what a write replaces; each keeps the record's ``SystemModstamp``
        too, so that settling a lost answer can tell a record someone else touched since."""
        ids = list(dict.fromkeys(c.record_id for c in changes if c.record_id))
        rows = self._retrieve(sobject, ids, [*fields, settle.STAMP])
        drift.compare_records(changes, rows, self._resolved, compared)
        for change in changes:
            if change.change_id in compared.current:
                compared.current[change.change_id][settle.STAMP] = rows[str(change.record_id)].get(settle.STAMP)

    def _check_group(self, step: Step, changes: list[Change], compared: drift.Compared) -> None:
        """The drift check of one group, on what its reads found just now. By default any
        drift stops the run before this group: nothing of it or of a later group is
        written (``DriftError``), the groups written before stay written. ``skip_drifted``
        records the drifted changes as drifted and writes the rest. A record that already
        holds the planned values is skipped."""
        if not changes:
            return
        checked = [c.change_id for c in changes]
        if compared.drifted and not self.skip_drifted:
            self._log("drift", checked=checked, current=compared.current, drifted=compared.drifted,
                      skipped=compared.skipped, final=False, refused=True)
            self._log("refused", drifted=len(compared.drifted), action=str(step.action),
                      sobject=str(step.sobject))
            raise self._drift_error(step, len(compared.drifted))
        self._log("drift", checked=checked, current=compared.current, drifted=compared.drifted,
                  skipped=compared.skipped, final=bool(compared.drifted))
        self._tick()

    def _drift_error(self, step: Step, drifted: int) -> DriftError:
        """The ``DriftError`` stopping the run before ``step``'s group: its message and
        report from the journal as it is now (made again once a Bulk job that ran alongside
        has its results, see ``_groups``)."""
        error = DriftError(self._drift_message(step, drifted))
        error.report = self._report(stop_reason="drift")  # type: ignore[attr-defined]
        error.refused = (step, drifted)  # type: ignore[attr-defined]
        return error

    def _drift_message(self, step: Step, drifted: int) -> str:
        written = sum(1 for c in self.changes if self.state.status_of(c.change_id) is ChangeStatus.APPLIED)
        done = (f"the {written} change(s) written before it stay written (this plan stays 'applying' "
                f"until an apply finishes it)" if written else "nothing was written")
        return (f"{drifted} record(s) changed in Salesforce since the plan was made (read just before "
                f"the {step.sobject} {step.action} group), so that group and the ones after it were not "
                f"written; {done}. To continue: `reconcile apply {self.plan_id[:12]} --skip-drifted` "
                f"writes the other changes and records the drifted ones, or make a new plan")

    def _resolved(self, value: Any) -> Any:
        ref = pointed_ref(value)
        return self.state.created.get(ref, value) if ref else value

    def _mark_dependents(self, changes: Iterable[Change]) -> None:
        """Fail those of ``changes`` still pending that point at a create which did not
        happen."""
        marks = []
        for change in changes:
            if self.state.is_final(change.change_id):
                continue
            for ref in change.refs():
                if ref in self.state.created:
                    continue
                target = self.by_ref.get(ref)
                status = self.state.status_of(target.change_id) if target else None
                if target is None or status in (ChangeStatus.FAILED, ChangeStatus.DRIFTED,
                                                ChangeStatus.SKIPPED, ChangeStatus.APPLIED):
                    why = "is not in the plan" if target is None else f"was not created ({status})"
                    marks.append({"change_id": change.change_id, "status": "failed",
                                  "error_code": DEPENDENCY_FAILED,
                                  "message": f"not written: it needs {ref}, which {why}"})
                    break
        if marks:
            self._log("mark", results=marks)

    def _item(self, change: Change) -> WriteItem:
        if change.action is Action.DELETE:
            return WriteItem(change.change_id, {"Id": change.record_id})
        record: dict[str, Any] = {}
        if change.action is Action.UPDATE:
            record["Id"] = change.record_id
        for name in change.fields:
            record[name] = self._resolved(change.after(name))
        return WriteItem(change.change_id, record)

    def _writer_for(self, sobject: str, count: int) -> tuple[Via, Writer]:
        """The writer for the path ``reconcile.steps`` chooses (Collections when this
        connection cannot run Bulk jobs)."""
        if write_path(sobject, count, self.config) is Via.BULK and self.bulk_writer is not None:
            return Via.BULK, self.bulk_writer
        return Via.COLLECTIONS, self.writer

    def _requests_needed(self) -> int:
        """The requests the steps still to run need: the reads of the groups not yet read
        and the writes of the changes still pending."""
        needed = sum(self.reads_left.values())
        for (action, sobject), n in self.pending_by_group.items():
            if n > 0:
                via, writer = self._writer_for(sobject, n)
                needed += write_requests(via, n, self.config, size=writer.batch_size, action=action)
        return needed

    def _write_group(self, action: Action, sobject: str, items: list[WriteItem], *,
                     retried: bool = False) -> None:
        """Write ``items``, then the ones to try again after a backoff, each round of those
        read again first (``_read_again``). ``retried``: ``items`` are already such retries
        (a Bulk job's failed rows)."""
        queue = items
        round_no = 0
        while queue:
            if retried:
                queue = self._read_again(action, sobject, queue)
                if not queue:
                    break
            retried = True
            retry: list[WriteItem] = []
            _via, writer = self._writer_for(sobject, len(queue))
            for chunk in writer.chunks(action, sobject, queue):
                retry.extend(self._request(action, sobject, list(chunk), writer))
            queue = retry
            if queue:
                delay = Backoff(self.config.backoff_seconds).delay(round_no, random=self.jitter)
                round_no += 1
                self.sleep(delay)

    def _read_again(self, action: Action, sobject: str, items: list[WriteItem]) -> list[WriteItem]:
        """Before items are sent again (a lock, a busy server, a lost answer): read their
        records again, as the group's read did, and check them against the plan. Only those
        still as planned are sent; one edited meanwhile is drifted (final: the other changes
        of its group are written already), one already as planned skipped, a create whose key
        has appeared drifted. The reads are requests the plan did not count: the budget check
        counts them."""
        changes = [self.by_id[item.change_id] for item in items]
        group = (action, sobject)
        ids = {c.record_id for c in changes}
        reads = 1 if action is Action.CREATE else -(-len(ids) // self.config.retrieve_size)
        self.reads_left[group] += reads
        self._budget_check()
        compared = drift.Compared()
        if action is Action.CREATE:
            found = self._find_by_key(sobject, [self.key_of(c) for c in changes])
            drift.new_duplicates(sobject, changes, found, self.key_of, compared)
        else:
            self._reread(sobject, changes, sorted({f for c in changes for f in c.fields}), compared)
        self.reads_left[group] -= reads
        self._log("drift", checked=[c.change_id for c in changes], current=compared.current,
                  drifted=compared.drifted, skipped=compared.skipped, final=True)
        left = [item for item in items if not self.state.is_final(item.change_id)]
        self.pending_by_group[group] -= len(items) - len(left)
        self._tick()
        return left

    def _budget_check(self, number: int | None = None) -> None:
        """Stop before the next request (write request ``number``, or a group's read) when
        the requests still needed would pass the configured share of the org's daily API
        requests."""
        usage = getattr(self.sf, "usage", None)
        if not usage or not usage.total:
            return
        needed = self._requests_needed()
        allowed = self.config.api_share * usage.total
        if usage.used + needed > allowed:
            error = ApiLimitExceeded(
                f"the org has used {usage.used:,} of its {usage.total:,} daily API calls; the "
                f"{needed:,} request(s) still needed would pass the configured share "
                f"({self.config.api_share:.0%})", code="API_SHARE")
            raise self._stop(error, number)

    def _request(self, action: Action, sobject: str, chunk: list[WriteItem],
                 writer: Writer) -> list[WriteItem]:
        """Send one request (a collections call or a Bulk job); return the items to retry."""
        number = self._begin(action, sobject, chunk, writer)
        return self._answered(number, action, sobject, chunk, lambda: writer.write(action, sobject, chunk))

    def _begin(self, action: Action, sobject: str, chunk: list[WriteItem], writer: Writer) -> int:
        """Journal request ``number``'s ``send`` (after the budget check); its number."""
        number = self.state.requests + 1
        self._budget_check(number)
        change_ids = [item.change_id for item in chunk]
        self._log("send", request=number, action=str(action), sobject=sobject, change_ids=change_ids,
                  payload=writer.payload(action, sobject, chunk))
        self.own_calls += 1
        if hasattr(writer, "on_job"):   # a Bulk job: journal its id as soon as it exists
            writer.on_job = lambda job_id: self._log("job", request=number, job_id=job_id)
        return number

    def _answered(self, number: int, action: Action, sobject: str, chunk: list[WriteItem],
                  call: Callable[[], list[ItemResult]]) -> list[WriteItem]:
        """Journal request ``number``'s answer (``call()``); return the items to retry."""
        change_ids = [item.change_id for item in chunk]
        try:
            answers = call()
        except OutcomeUnknown as err:
            return self._settle_unknown(number, action, sobject, chunk, err)
        except SalesforceError as err:
            code = err.code or type(err).__name__
            self._log("result", request=number, error_code=code,
                      results=[{"change_id": c, "status": "pending", "error_code": code,
                                "message": err.message} for c in change_ids])
            raise self._stop(err, number) from None
        by_change = {a.change_id: a for a in answers}
        results, retry = [], []
        for item in chunk:
            change = self.by_id[item.change_id]
            answer = by_change.get(item.change_id)
            entry: dict[str, Any] = {"change_id": item.change_id}
            if answer is None:
                entry.update(status="failed", error_code=NO_RESULT,
                             message="Salesforce returned no result for this record")
            elif answer.success:
                entry.update(status="applied", id=answer.id or change.record_id)
                if change.ref:
                    entry["ref"] = change.ref
            elif action is Action.DELETE and answer.error_code == "ENTITY_IS_DELETED":
                entry.update(status="applied", error_code=answer.error_code,
                             message=f"already deleted ({answer.message})")
            elif answer.error_code in TRANSIENT_ITEM_CODES:
                attempt = self.state.attempts.get(item.change_id, 0) + 1
                final = attempt >= self.config.max_attempts
                entry.update(status="failed" if final else "pending", error_code=answer.error_code,
                             attempt=attempt,
                             message=(f"{answer.message} (gave up after {attempt} attempts)"
                                      if final else answer.message))
                if not final:
                    retry.append(item)
            else:
                entry.update(status="failed", error_code=answer.error_code, message=answer.message)
            results.append(entry)
        self._log("result", request=number, results=results)
        self.unknown_in_a_row = 0
        done = len(chunk) - len(retry)
        self.pending_by_group[(action, sobject)] -= done
        self._tick()
        return retry

    def _settle_unknown(self, number: int, action: Action, sobject: str, chunk: list[WriteItem],
                        err: OutcomeUnknown) -> list[WriteItem]:
        """Request ``number`` got an answer that leaves its outcome open (a 5xx, a lost
        connection): it is never sent again as it was. Read the org now (settle), and
        return only the items the org shows were not written, to be sent again. When the
        read fails too, or answers keep being lost, the run stops; the next one settles."""
        self.unknown_in_a_row += 1
        if self.unknown_in_a_row > self.config.max_attempts:
            raise self._stop(err, number) from None
        try:
            self._settle_request(number, self.state.unsettled[number])
        except SalesforceError:
            raise self._stop(err, number) from None
        retry = [item for item in chunk if not self.state.is_final(item.change_id)]
        self.pending_by_group[(action, sobject)] -= len(chunk) - len(retry)
        self._tick()
        return retry

    # 4-5. results

    def _result(self, change: Change) -> ChangeResult:
        state = self.state
        status = state.status_of(change.change_id)
        error_code, message = state.errors.get(change.change_id, (None, None))
        replaced = state.replaced.get(change.change_id, {})
        record_id = change.record_id or state.ids.get(change.change_id)
        fields = {f: {"before": spec.before,
                      "replaced": replaced.get(f) if change.action is not Action.CREATE else None,
                      "after": self._resolved(spec.after)}
                  for f, spec in change.fields.items()}
        return ChangeResult(change_id=change.change_id, action=str(change.action),
                            sobject=change.sobject, record_id=record_id, status=status,
                            error_code=error_code, message=message, ref=change.ref, fields=fields,
                            drift=state.drift.get(change.change_id, {}))

    def _report(self, *, stop_reason: str | None, finished: bool = False,
                status: str | None = None, results: tuple[ChangeResult, ...] | None = None) -> ApplyReport:
        if results is None:
            results = tuple(self._result(c) for c in self.changes)
        counts = {str(s): 0 for s in ChangeStatus}
        for r in results:
            counts[str(r.status)] += 1
        if status is None:
            status = str(PlanState.APPLYING if self.state.requests else PlanState.APPROVED)
        return ApplyReport(plan_id=self.plan_id, results=results, finished=finished, status=status,
                           stop_reason=stop_reason, api_calls=self.state.calls,
                           drifted=tuple(r for r in results if r.drift),
                           created=dict(self.state.created), counts=counts,
                           warnings=tuple(self.state.warnings))

    def _finish(self) -> ApplyReport:
        results = tuple(self._result(c) for c in self.changes)
        statuses = [r.status for r in results]
        if all(s is ChangeStatus.APPLIED or (s is ChangeStatus.SKIPPED) for s in statuses):
            status = PlanState.APPLIED
        elif not any(s is ChangeStatus.APPLIED for s in statuses):
            status = PlanState.FAILED
        else:
            status = PlanState.PARTIALLY_APPLIED
        report = self._report(stop_reason=None, finished=True, status=str(status), results=results)
        document = {
            "format_version": RECORD_FORMAT_VERSION,
            "plan_id": self.plan_id,
            "plan_sha256": self.plan_sha256,
            "started_at": self.state.started_at,
            "finished_at": self.now(),
            "status": str(status),
            "created": dict(self.state.created),
            "counts": dict(report.counts),
            "api_calls": self.state.calls,
            "runs": self.state.runs,
            "requests": self.state.requests,
            "warnings": list(self.state.warnings),
        }
        # The journal is complete once `finish` is on disk; the result pins its bytes, and is
        # sealed like every archive record, so `verify` and rollback can check both.
        self._log("finish", status=str(status), counts=dict(report.counts))
        with open(self.plan_dir / JOURNAL_NAME, "rb") as journal:   # hashed as it is read
            document["journal_sha256"] = hashlib.file_digest(journal, "sha256").hexdigest()
        # written a few thousand results at a time (the same bytes as record_bytes(seal(...))):
        # at 100,000 changes the whole list as dicts and as text would be hundreds of MB
        write_atomic(self.plan_dir / RESULT,
                     sealed_chunks(document, "results", lambda: (r.to_dict() for r in results)))
        return report
