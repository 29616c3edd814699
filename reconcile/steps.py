"""The apply steps of a plan: what apply sends, in which order, by which path.

``build_steps(plan, config)`` is pure and the only place that decides the
order of apply's requests and the write path of each group of changes
(sObject Collections or a Bulk API 2.0 job). Everything else reads its answer:

- ``plan.estimate_api_calls`` is the sum of the steps' ``requests``;
- ``reconcile show`` and the HTML page list the steps ("Apply steps");
- ``apply`` runs them in this order.

The order: check the org's identity; then each group of writes (one action on
one sobject) in write order — Account creates, the other creates (they may
point at a new Account), updates, deletes (Contacts and Leads before Accounts:
deleting an Account takes its Contacts) — each preceded by the reads that check
it, sent just before it is written: the records an update or delete touches are
re-read (``retrieve_size`` ids a request), the Contacts still pointing at
Accounts to delete are counted (after the Contact deletes were written), and
records that appeared with a planned create's key (e-mail, or an Account's Name)
are looked for. Each group's records are read once, by its own read steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from typing import Any

from reconcile.config import ASSIGNMENT_RULE_SOBJECTS, Config, bulk_job_calls, bulk_query_calls, worth_counting
from reconcile.model import Action, Change, SObject, change_from_dict, pointed_ref
from reconcile.soql import COUNT_CONTACTS_HEAD, COUNT_CONTACTS_TAIL, ValueTooLong, in_batches, in_query_head

__all__ = ["Step", "StepKind", "Via", "build_steps", "apply_steps", "read_steps", "write_step", "write_groups",
           "write_rank", "write_path", "batch_size", "write_requests", "create_key", "key_field", "SOBJECT_WRITE_ORDER",
           "bulk_jobs", "bulk_row_bytes", "planned_record"]

#: Accounts are written before the Contacts that need them (and deleted after them).
SOBJECT_WRITE_ORDER = (SObject.ACCOUNT.value, SObject.CONTACT.value, SObject.LEAD.value)
# A request URL has room for the query around the IN (…) list: this much is kept for it.
_URL_ROOM = 500
# A Bulk upload's header row and slack, kept out of ``config.bulk_job_bytes``.
_CSV_HEADER_ROOM = 64 * 1024
# What a record id takes in a CSV cell: a reference to a record the plan creates is
# counted as the 18-character id it becomes.
_ID_CHARS = 18


class StepKind(StrEnum):
    CHECK_ORG = "check org"
    REREAD = "re-read"
    COUNT_CONTACTS = "count contacts"
    FIND_NEW = "find new records"
    WRITE = "write"


class Via(StrEnum):
    """The API a step uses."""
    REST = "REST"
    RETRIEVE = "sObject Collections retrieve"
    SOQL = "SOQL query"
    BULK_QUERY = "Bulk API 2.0 query"
    COLLECTIONS = "sObject Collections"
    BULK = "Bulk API 2.0"


@dataclass(frozen=True)
class Step:
    """One step of apply. ``records``: how many records it reads, looks for or writes;
    ``batch_size``: records a request (a Bulk job for ``Via.BULK``); ``requests``: the
    API calls it spends; ``change_ids``: the changes it serves, in plan order;
    ``fields``: the fields it reads or writes."""
    kind: StepKind
    via: Via
    requests: int
    sobject: str | None = None
    action: Action | None = None
    records: int = 0
    batch_size: int = 0
    change_ids: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def what(self) -> str:
        """What the step does, in words: ``update 450 Contact record(s)``."""
        if self.kind is StepKind.CHECK_ORG:
            return "check that the connection is to the plan's org"
        if self.kind is StepKind.REREAD:
            return (f"re-read {self.records} {self.sobject} record(s) just before the {self.action}, "
                    "to check for drift")
        if self.kind is StepKind.COUNT_CONTACTS:
            return f"count the Contacts pointing at {self.records} Account(s) to delete"
        if self.kind is StepKind.FIND_NEW:
            key = "name" if self.sobject == SObject.ACCOUNT else "e-mail"
            return f"look for new {self.sobject} records with the {key} of {self.records} create(s)"
        return f"{self.action} {self.records} {self.sobject} record(s)"

    def size(self) -> str:
        """``200 a request`` / ``10000 a job``, or "" for a step without batches."""
        if not self.batch_size:
            return ""
        return f"{self.batch_size} a {'job' if self.via is Via.BULK else 'request'}"

    def describe(self) -> str:
        """One line for a person: ``update 450 Contact record(s) via sObject Collections
        (200 a request): 3 requests``."""
        size = f" ({self.size()})" if self.size() else ""
        return f"{self.what()} via {self.via}{size}: {self.requests} request{'' if self.requests == 1 else 's'}"


# -- the write path -----------------------------------------------------------------------

def write_path(sobject: str, count: int, config: Config, *, collections_only: bool = False) -> Via:
    """Bulk API 2.0 for a group above ``bulk_threshold``; sObject Collections otherwise.
    Leads and Accounts always go through Collections: only there can
    ``Sforce-Auto-Assign: FALSE`` keep assignment rules from moving owners; so does
    every write of a rollback (``collections_only``): only there can
    ``Sforce-Duplicate-Rule-Header: allowSave=true`` let a restore past rules that alert."""
    if (count > config.bulk_threshold and sobject not in ASSIGNMENT_RULE_SOBJECTS
            and not collections_only):
        return Via.BULK
    return Via.COLLECTIONS


def batch_size(via: Via, config: Config) -> int:
    """Records a request (Collections) or, at most, a job (Bulk)."""
    return max(1, config.bulk_job_size if via is Via.BULK else config.collection_size)


def write_requests(via: Via, count: int, config: Config, *, size: int | None = None,
                   action: Action | str = Action.UPDATE, jobs: int | None = None) -> int:
    """API calls to write ``count`` records by ``via``: one a Collections request, or
    ``bulk_job_calls(action)`` a Bulk job (``jobs`` of them when known, else one per
    ``size`` records). ``size``: records a request, when not the configured one."""
    if via is Via.BULK:
        if jobs is None:
            jobs = math.ceil(count / max(1, size or batch_size(via, config)))
        return jobs * bulk_job_calls(str(action))
    return math.ceil(count / max(1, size or batch_size(via, config)))


def bulk_row_bytes(record: Mapping[str, Any]) -> int:
    """At most how many bytes ``record`` takes as a row of a Bulk upload's CSV: each value
    quoted with every character doubled (a quote is), a comma, or ``#N/A`` for a null."""
    total = 1
    for value in record.values():
        total += 5 if value is None or value == "" else 2 * len(str(value).encode("utf-8")) + 3
    return total


def bulk_jobs(row_bytes: Sequence[int], config: Config) -> list[int]:
    """How many records each Bulk job of a group takes, in order: as few jobs as the limits
    allow (``config.bulk_job_size`` records and ``config.bulk_job_bytes`` of CSV a job), cut
    into even sizes (10,001 records in two jobs are 5,001 and 5,000, never 10,000 and 1)."""
    n = len(row_bytes)
    if not n:
        return []
    limit = max(1, config.bulk_job_bytes - _CSV_HEADER_ROOM)
    ends = list(accumulate(row_bytes))
    jobs = max(1, math.ceil(n / max(1, config.bulk_job_size)), math.ceil(ends[-1] / limit))
    while True:
        sizes = [n // jobs + (1 if i < n % jobs else 0) for i in range(jobs)]
        start, fits = 0, True
        for size in sizes:
            used = ends[start + size - 1] - (ends[start - 1] if start else 0)
            if used > limit and size > 1:
                fits = False
                break
            start += size
        if fits or jobs >= n:
            return sizes
        jobs += 1


def planned_record(change: Change) -> dict[str, Any]:
    """The record apply sends for ``change`` as far as the plan knows it (a reference to a
    record the plan creates stands for its 18-character id): for sizing Bulk jobs."""
    if change.action is Action.DELETE:
        return {"Id": change.record_id}
    record: dict[str, Any] = {"Id": change.record_id} if change.action is Action.UPDATE else {}
    for name in change.fields:
        after = change.after(name)
        record[name] = "x" * _ID_CHARS if pointed_ref(after) else after
    return record


def key_field(sobject: str, config: Config) -> str:
    """The field that tells a planned create apart in the org: an Account's Name field,
    a Contact's or Lead's e-mail field."""
    return config.account_name_field if sobject == SObject.ACCOUNT else config.email_field


def create_key(change: Change, config: Config) -> str:
    """What tells a planned create apart in the org (lower-cased): an Account's Name, a
    Contact's or Lead's e-mail. The drift check and settling look records up by it."""
    if change.sobject != SObject.ACCOUNT and change.email:
        return change.email.lower()
    spec = change.fields.get(key_field(change.sobject, config))
    return str((spec.after if spec is not None else None) or "").strip().lower()


# -- the steps ------------------------------------------------------------------------------

def _as_changes(plan: Mapping[str, Any] | Iterable[Change | Mapping[str, Any]]) -> list[Change]:
    items = plan.get("changes") or () if isinstance(plan, Mapping) else plan
    return [c if isinstance(c, Change) else change_from_dict(c) for c in items]


def write_rank(action: Action, sobject: str) -> tuple[int, int]:
    """Where a group of writes goes: creates, updates, deletes; Account creates before
    the other creates (they may point at a new Account), Account deletes after the
    others (deleting an Account takes its Contacts with it)."""
    if action is Action.CREATE:
        return 0, 0 if sobject == SObject.ACCOUNT else 1
    if action is Action.DELETE:
        return 2, 1 if sobject == SObject.ACCOUNT else 0
    return 1, 0


def write_groups(changes: Iterable[Change]) -> list[tuple[Action, str, list[Change]]]:
    """(action, sobject, changes) in write order; groups of the same rank and the changes
    inside a group keep plan order."""
    groups: dict[tuple[Action, str], list[Change]] = {}
    for change in changes:
        groups.setdefault((change.action, str(change.sobject)), []).append(change)
    ordered = sorted(groups, key=lambda key: write_rank(*key))   # stable: first-seen order within a rank
    return [(action, sobject, groups[(action, sobject)]) for action, sobject in ordered]


def write_step(action: Action, sobject: str, group: list[Change], config: Config, *,
               collections_only: bool = False) -> Step:
    """The write step of one group (``write_groups``): its path, batch size and requests
    (a Bulk group: as few jobs as Salesforce's limits allow, of even sizes)."""
    via = write_path(sobject, len(group), config, collections_only=collections_only)
    jobs = bulk_jobs([bulk_row_bytes(planned_record(c)) for c in group], config) if via is Via.BULK else None
    return Step(kind=StepKind.WRITE, via=via, sobject=sobject, action=action,
                records=len(group), batch_size=max(jobs) if jobs else batch_size(via, config),
                requests=write_requests(via, len(group), config, action=action,
                                        jobs=len(jobs) if jobs else None),
                change_ids=tuple(c.change_id for c in group),
                fields=tuple(sorted({f for c in group for f in c.fields})))


def _find_queries(sobject: str, keys: set[str], config: Config, instance_url: str | None) -> int:
    """The ``key IN (…)`` queries apply sends for ``keys``: exactly the adapter's batching
    when the org's instance URL (part of every request URL) is known; otherwise a quoted
    literal and a comma per key, with room for the rest of the URL kept."""
    if not instance_url:
        return max(1, math.ceil(sum(len(k) + 3 for k in keys) / (config.max_query_url - _URL_ROOM)))
    field = key_field(sobject, config)
    return _in_queries(in_query_head(sobject, field, ["Id", field]), ")", sorted(k for k in keys if k),
                       config, instance_url)


def _in_queries(head: str, tail: str, values: list[str], config: Config, instance_url: str) -> int:
    """How many ``head + values + tail`` queries the adapter sends for ``values``."""
    base = f"{instance_url.rstrip('/')}/services/data/v{config.api_version}/query/?q="
    try:
        return sum(1 for _ in in_batches(head, tail, values, config.max_query_url - len(base)))
    except ValueTooLong:
        return 0    # the adapter refuses such a value before sending anything


def read_steps(action: Action, sobject: str, group: list[Change], config: Config,
               instance_url: str | None = None) -> list[Step]:
    """The reads that check one group of writes (``write_groups``), sent just before it is
    written: the records an update or delete touches (and, before Account deletes, the
    Contacts still pointing at them), or the records that appeared with a create's key.
    ``instance_url``: the org's (``https://…``), for the exact count of queries."""
    if action is Action.CREATE:
        unique = set(create_key(c, config) for c in group)   # apply asks for each key once
        via, requests = Via.SOQL, _find_queries(sobject, unique, config, instance_url)
        if worth_counting(requests, config):
            # the adapter's choice by cost: a COUNT() of the rows a Bulk query would read, then
            # that query when it is cheaper (counted here with one results page: a large org
            # whose count makes the batches cheaper spends 1 + the batches instead)
            via, requests = Via.BULK_QUERY, 1 + bulk_query_calls(0, config)
        return [Step(kind=StepKind.FIND_NEW, via=via, sobject=sobject, action=action, records=len(unique),
                     requests=requests, change_ids=tuple(c.change_id for c in group))]
    ids = list(dict.fromkeys(c.record_id for c in group if c.record_id))
    size = max(1, config.retrieve_size)
    steps = [Step(kind=StepKind.REREAD, via=Via.RETRIEVE, sobject=sobject, action=action, records=len(ids),
                  batch_size=size, requests=math.ceil(len(ids) / size),
                  change_ids=tuple(c.change_id for c in group),
                  fields=tuple(sorted({f for c in group for f in c.fields})))]
    if action is Action.DELETE and sobject == SObject.ACCOUNT:
        accounts = list(dict.fromkeys(str(c.record_id) for c in group))
        requests = (_in_queries(COUNT_CONTACTS_HEAD, COUNT_CONTACTS_TAIL, accounts, config, instance_url)
                    if instance_url else 1)
        steps.append(Step(kind=StepKind.COUNT_CONTACTS, via=Via.SOQL, sobject=sobject, action=action,
                          records=len(group), requests=requests,
                          change_ids=tuple(c.change_id for c in group)))
    return steps


def apply_steps(changes: Iterable[Change], config: Config, *, instance_url: str | None = None,
                collections_only: bool = False) -> list[Step]:
    """Each group of writes of ``changes`` in write order, preceded by its read steps: what
    apply sends after checking the org, in this order. Groups of one rank do not depend on
    each other; a Bulk group goes first among them, so that apply can leave its job
    running while it reads and writes the others."""
    groups = write_groups(changes)
    bulk = [write_path(sobject, len(group), config, collections_only=collections_only) is Via.BULK
            for _action, sobject, group in groups]
    order = sorted(range(len(groups)), key=lambda i: (write_rank(groups[i][0], groups[i][1]), not bulk[i]))
    steps: list[Step] = []
    for i in order:   # sorted() is stable: plan order otherwise
        action, sobject, group = groups[i]
        steps.extend(read_steps(action, sobject, group, config, instance_url))
        steps.append(write_step(action, sobject, group, config, collections_only=collections_only))
    return steps


def build_steps(plan: Mapping[str, Any] | Iterable[Change | Mapping[str, Any]], config: Config, *,
                instance_url: str | None = None, collections_only: bool = False) -> list[Step]:
    """Every step apply takes for ``plan`` (a plan document, or its changes), in order.
    ``instance_url``: the org's, when ``plan`` is not a document that names it;
    ``collections_only``: a rollback's changes (a rollback document says so itself)."""
    changes = _as_changes(plan)
    if isinstance(plan, Mapping):
        if instance_url is None:
            instance_url = (plan.get("org") or {}).get("instance_url")
        collections_only = collections_only or plan.get("kind") == "rollback"
    return [Step(kind=StepKind.CHECK_ORG, via=Via.REST, requests=1),
            *apply_steps(changes, config, instance_url=instance_url, collections_only=collections_only)]
