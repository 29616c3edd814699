"""Settling a request an earlier apply sent without seeing the answer: pure functions.

The caller reads the org (the records a create would have made, found by their
key; the records an update or delete touched, by id) and passes what it read;
each function returns the journal's ``settle`` results, one per change: applied
(the org shows the request's effect), pending (it does not: write it again), or
drifted (an update whose record holds neither the planned nor the original
values, or was deleted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconcile.drift import NOT_VISIBLE
from reconcile.model import Change
from reconcile.rules import same_value

__all__ = ["settle_creates", "settle_updates", "settle_deletes", "STAMP"]

#: The field that moves whenever anyone (or anything) saves the record.
STAMP = "SystemModstamp"


def settle_creates(number: int, changes: Sequence[Change], found: Mapping[str, Sequence[str]],
                   key_of: Callable[[Change], str]) -> list[dict[str, Any]]:
    """``found``: key -> ids of records holding it that the plan did not know before."""
    unclaimed = {key: list(ids) for key, ids in found.items()}
    results: list[dict[str, Any]] = []
    for change in changes:
        ids = unclaimed.get(key_of(change), [])
        if ids:
            record_id = ids.pop(0)
            results.append({"change_id": change.change_id, "status": "applied", "id": record_id,
                            "ref": change.ref,
                            "message": f"created by request {number} (settled: the record "
                                       f"{record_id} exists)"})
        else:
            results.append({"change_id": change.change_id, "status": "pending",
                            "message": f"request {number} did not create it"})
    return results


def settle_updates(number: int, changes: Sequence[Change], payload: Sequence[Mapping[str, Any]],
                   rows: Mapping[str, Mapping[str, Any]],
                   stamps: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``payload``: the records the request sent (with ``Id``), in ``changes`` order;
    ``rows``: the records as read now, by id (a deleted one missing); ``stamps``: per
    change, the record's ``SystemModstamp`` as read just before the request (when known).

    Values and stamps together: the planned values → applied; the original values and
    the same stamp → the request did not write it (pending: send it again); the original
    values but a stamp that moved → someone saved the record meanwhile, and the request may
    have written it and been undone: drifted, never sent again; anything else → drifted."""
    stamps = stamps or {}
    results: list[dict[str, Any]] = []
    for change, record in zip(changes, payload, strict=True):
        row = rows.get(record["Id"])
        names = [f for f in record if f != "Id"]
        if row is not None and all(same_value(f, row.get(f), record[f]) for f in names):
            results.append({"change_id": change.change_id, "status": "applied",
                            "message": f"written by request {number} (settled)"})
        elif row is not None and all(same_value(f, row.get(f), change.before(f)) for f in names):
            read, now = stamps.get(change.change_id), row.get(STAMP)
            if read and now and read != now:
                results.append({"change_id": change.change_id, "status": "drifted",
                                "fields": {STAMP: {"planned": read, "current": now}},
                                "message": f"holds its original values, but was saved by someone else "
                                           f"(SystemModstamp {read} -> {now}) while request {number}'s "
                                           "answer was lost: it may have been written and changed back, "
                                           "so it is not sent again"})
            else:
                results.append({"change_id": change.change_id, "status": "pending",
                                "message": f"request {number} did not write it"})
        else:
            drift = {f: {"planned": change.before(f), "current": row.get(f) if row else None}
                     for f in names}
            results.append({"change_id": change.change_id, "status": "drifted", "fields": drift,
                            "message": f"the record is {NOT_VISIBLE}" if row is None else
                            f"holds neither the planned nor the original values "
                            f"after request {number}, whose answer was lost"})
    return results


def settle_deletes(number: int, change_ids: Sequence[str], payload: Sequence[str],
                   rows: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``payload``: the ids the request sent; ``rows``: those still readable, by id."""
    results: list[dict[str, Any]] = []
    for change_id, record_id in zip(change_ids, payload, strict=True):
        gone = record_id not in rows
        results.append({"change_id": change_id, "status": "applied" if gone else "pending",
                        "message": f"deleted by request {number} (settled)" if gone
                        else f"request {number} did not delete it"})
    return results
