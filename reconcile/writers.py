"""The writers apply sends its write steps through, behind one protocol (``Writer``).

``CollectionsWriter`` sends up to ``collection_size`` records a request through
sObject Collections (allOrNone=false). ``BulkWriter`` sends each chunk as one
Bulk API 2.0 ingest job, as few jobs as Salesforce's limits allow (100 MB of
CSV an upload; ``steps.bulk_jobs`` cuts a group into even jobs): for groups
larger than ``config.bulk_threshold``, where Collections would cost one request
per 200 records. Which writer a group uses is decided by ``reconcile.steps``;
``chunks`` cuts a group into the writer's requests.

Bulk API 2.0, in detail. A job costs a handful of requests whatever its size
(create, upload, close, polls; the result files it needs). Bulk results come back in
no particular order, so they are matched to the changes by id, never by
position: updates and deletes by ``sf__Id`` (the first 15 characters; a failed
row's uploaded ``Id`` when ``sf__Id`` is empty), creates by a key column unique
within the job — the e-mail for Contacts and Leads, the Name for Accounts.
Every item gets exactly one ``ItemResult``; one missing from every result file
is failed with ``NO_RESULT``, one left unprocessed (the job stopped early) with
``NOT_PROCESSED``.

Leads: Bulk API 2.0 has no ``Sforce-Auto-Assign`` header; a job may name an
``assignmentRuleId`` (we never do). That no assignment rule runs without one is
UNCONFIRMED (see ``Salesforce.bulk_ingest``), so Lead jobs cannot promise, as
the collections path does, that owners stay put (``reconcile.steps`` keeps
Leads on Collections).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from reconcile.config import Config
from reconcile.errors import OutcomeUnknown
from reconcile.model import Action, SaveResult
from reconcile.ports import BulkIngest, OrgWriter
from reconcile.steps import bulk_jobs, bulk_row_bytes, key_field

__all__ = ["Writer", "WriteItem", "ItemResult", "CollectionsWriter", "BulkWriter", "records_payload", "fixed_chunks",
           "parse_sf_error", "NO_RESULT", "NOT_PROCESSED"]

NO_RESULT = "NO_RESULT"
NOT_PROCESSED = "NOT_PROCESSED"
_OPERATION = {Action.CREATE: "insert", Action.UPDATE: "update", Action.DELETE: "delete"}
_T = TypeVar("_T")


@dataclass(frozen=True)
class WriteItem:
    """One record to write: create/update fields (update with ``Id``), or ``{"Id": id}`` to delete."""
    change_id: str
    record: Mapping[str, Any]


@dataclass(frozen=True)
class ItemResult:
    change_id: str
    success: bool
    id: str | None = None
    error_code: str | None = None
    message: str | None = None


class Writer(Protocol):
    """Sends one request. Results are keyed by change_id; a request that was
    refused as a whole raises reconcile's SalesforceError; one whose outcome is
    unknown raises OutcomeUnknown."""
    batch_size: int

    def chunks(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> Iterable[Sequence[WriteItem]]: ...

    def payload(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> Any: ...

    def write(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> list[ItemResult]: ...


def fixed_chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


def records_payload(action: Action, items: Sequence[WriteItem]) -> list[Any]:
    """What the journal's ``send`` event holds, whatever the writer: the records sent
    for a create or update, the ids for a delete. Settling an unanswered request reads it."""
    if action is Action.DELETE:
        return [item.record["Id"] for item in items]
    return [dict(item.record) for item in items]


class CollectionsWriter:
    """sObject Collections: up to ``collection_size`` records a request, allOrNone=false.
    ``allow_duplicates``: creates and updates pass duplicate rules that only alert
    (a rollback restores a state the org already had)."""

    def __init__(self, sf: OrgWriter, config: Config, *, allow_duplicates: bool = False):
        self.sf = sf
        self.batch_size = config.collection_size
        self.allow_duplicates = allow_duplicates

    def chunks(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> Iterable[Sequence[WriteItem]]:
        return fixed_chunks(items, self.batch_size)

    def payload(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> Any:
        return records_payload(action, items)

    def write(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> list[ItemResult]:
        payload = self.payload(action, sobject, items)
        if action is Action.CREATE:
            saved = (self.sf.create(sobject, payload, allow_duplicates=True) if self.allow_duplicates
                     else self.sf.create(sobject, payload))
        elif action is Action.UPDATE:
            saved = (self.sf.update(sobject, payload, allow_duplicates=True) if self.allow_duplicates
                     else self.sf.update(sobject, payload))
        else:
            saved = self.sf.delete(payload)
        if len(saved) != len(items):
            raise OutcomeUnknown(f"Salesforce answered {len(saved)} results for {len(items)} "
                                 f"{sobject} records; the outcome is unknown")
        out = []
        for item, result in zip(items, saved, strict=True):  # collections answer in request order
            expected = item.record.get("Id")
            if expected and result.id and result.id[:15] != str(expected)[:15]:
                raise OutcomeUnknown(f"Salesforce answered for record {result.id} where "
                                     f"{expected} was sent; the outcome is unknown")
            out.append(_item_result(item.change_id, result))
        return out


def _item_result(change_id: str, result: SaveResult) -> ItemResult:
    if result.success:
        return ItemResult(change_id, True, id=result.id)
    error = result.errors[0] if result.errors else None
    message = "; ".join(e.message for e in result.errors) or None
    return ItemResult(change_id, False, id=result.id,
                      error_code=error.status_code if error else "UNKNOWN_ERROR", message=message)



def parse_sf_error(text: str | None) -> tuple[str, str]:
    """``CODE:message:field1,field2 --`` → (CODE, message)."""
    text = (text or "").strip()
    if text.endswith("--"):
        text = text[:-2].rstrip()
    code, sep, rest = text.partition(":")
    if not sep:
        return (code or "UNKNOWN_ERROR"), ""
    message, sep, fields = rest.rpartition(":")
    if not sep or " " in fields.strip():
        message = rest                    # no trailing field list
    return code.strip() or "UNKNOWN_ERROR", message.strip()


@dataclass(frozen=True)
class StartedJob:
    """A Bulk job ``BulkWriter.start`` sent and ``finish`` has yet to wait for."""
    action: Action
    sobject: str
    items: tuple[WriteItem, ...]
    keys: Mapping[str, str]
    started: Any


class BulkWriter:
    """Bulk API 2.0 ingest: as few jobs as ``config.bulk_job_size`` records and
    ``config.bulk_job_bytes`` of CSV a job allow, of even sizes (``steps.bulk_jobs``)."""

    def __init__(self, sf: BulkIngest, config: Config):
        self.sf = sf
        self.config = config
        self.batch_size = config.bulk_job_size
        # Called with each job's id as soon as the job exists (apply journals it).
        self.on_job: Callable[[str], None] | None = None

    def chunks(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> Iterable[Sequence[WriteItem]]:
        start = 0
        for size in bulk_jobs([bulk_row_bytes(item.record) for item in items], self.config):
            yield items[start:start + size]
            start += size

    def payload(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> Any:
        return records_payload(action, items)

    def key_field(self, sobject: str) -> str:
        return key_field(sobject, self.config)

    @property
    def can_start(self) -> bool:
        """Whether a job can be started now and finished later (``start``/``finish``)."""
        return hasattr(self.sf, "bulk_ingest_start") and hasattr(self.sf, "bulk_ingest_finish")

    def write(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> list[ItemResult]:
        action = Action(action)
        keys = self._keys(action, sobject, items)
        extra = {"on_job": self.on_job} if self.on_job is not None else {}
        outcome = self.sf.bulk_ingest(_OPERATION[action], sobject, self._records(action, items), **extra)
        return self._answers(action, sobject, items, keys, outcome)

    def start(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> StartedJob:
        """Send one job (open, upload, close) without waiting for it: apply sends other
        groups' requests meanwhile, then calls ``finish``."""
        action = Action(action)
        keys = self._keys(action, sobject, items)
        extra = {"on_job": self.on_job} if self.on_job is not None else {}
        started = self.sf.bulk_ingest_start(_OPERATION[action], sobject,  # type: ignore[attr-defined]
                                            self._records(action, items), **extra)
        return StartedJob(action, sobject, tuple(items), keys, started)

    def finish(self, job: StartedJob) -> list[ItemResult]:
        """Wait for a job ``start`` sent; one ``ItemResult`` per item, as ``write``."""
        outcome = self.sf.bulk_ingest_finish(job.started)  # type: ignore[attr-defined]
        return self._answers(job.action, job.sobject, job.items, job.keys, outcome)

    @staticmethod
    def _records(action: Action, items: Sequence[WriteItem]) -> list[dict[str, Any]]:
        return ([{"Id": item.record["Id"]} for item in items] if action is Action.DELETE
                else [dict(item.record) for item in items])

    def _answers(self, action: Action, sobject: str, items: Sequence[WriteItem], keys: Mapping[str, str],
                 outcome: Any) -> list[ItemResult]:
        answers: dict[str, ItemResult] = {}

        def claim(row: Mapping[str, Any], what: str) -> str:
            """The change a result row answers (each answered once)."""
            key = self._row_key(action, sobject, row)
            change_id = keys.get(key) if key is not None else None
            if change_id is None:
                raise OutcomeUnknown(f"bulk job {outcome.job_id}: a {what} row matches no record "
                                     f"that was sent ({key!r}); the outcome is unknown")
            if change_id in answers:
                raise OutcomeUnknown(f"bulk job {outcome.job_id}: two result rows for {key!r}; "
                                     "the outcome is unknown")
            return change_id

        for row in outcome.successful:
            change_id = claim(row, "successful")
            answers[change_id] = ItemResult(change_id, True, id=row.get("sf__Id"))
        for row in outcome.failed:
            code, message = parse_sf_error(row.get("sf__Error"))
            change_id = claim(row, "failed")
            answers[change_id] = ItemResult(change_id, False, id=row.get("sf__Id") or None,
                                            error_code=code, message=message or None)
        for row in outcome.unprocessed:
            change_id = claim(row, "unprocessed")
            answers[change_id] = ItemResult(
                change_id, False, error_code=NOT_PROCESSED,
                message=f"bulk job {outcome.job_id} ended {outcome.state} before this record "
                        "was processed")
        out = []
        for item in items:
            answer = answers.get(item.change_id)
            if answer is None:
                answer = ItemResult(item.change_id, False, error_code=NO_RESULT,
                                    message=f"bulk job {outcome.job_id} returned no result for "
                                            "this record")
            out.append(answer)
        return out

    # -- matching ------------------------------------------------------------------

    def _keys(self, action: Action, sobject: str, items: Sequence[WriteItem]) -> dict[str, str]:
        keys: dict[str, str] = {}
        for item in items:
            if action is Action.CREATE:
                field = self.key_field(sobject)
                value = item.record.get(field)
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"bulk create {sobject} {item.change_id}: no {field} to "
                                     "match its result by")
                key = _fold(value)
            else:
                record_id = item.record.get("Id")
                if not isinstance(record_id, str) or len(record_id) < 15:
                    raise ValueError(f"bulk {action} {sobject} {item.change_id}: no record Id")
                key = record_id[:15]
            if key in keys:
                raise ValueError(f"bulk {action} {sobject}: {keys[key]} and {item.change_id} "
                                 f"share {key!r}; a job's results could not tell them apart")
            keys[key] = item.change_id
        return keys

    def _row_key(self, action: Action, sobject: str, row: Mapping[str, Any]) -> str | None:
        if action is Action.CREATE:
            value = row.get(self.key_field(sobject))
            return _fold(value) if isinstance(value, str) else None
        record_id = row.get("sf__Id") or row.get("Id")
        return record_id[:15] if isinstance(record_id, str) and len(record_id) >= 15 else None


def _fold(value: str) -> str:
    return value.strip().casefold()
