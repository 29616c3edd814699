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
from datetime import datetime, timedelta
from typing import Any

from reconcile.drift import NOT_VISIBLE
from reconcile.model import Change
from reconcile.rules import same_value

__all__ = ["settle_creates", "settle_updates", "settle_deletes", "STAMP", "CREATED", "CLOCK_SKEW"]

#: The field that moves whenever anyone (or anything) saves the record.
STAMP = "SystemModstamp"
#: When the org created the record (an audit field the org sets on create:
#: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/system_fields.htm).
CREATED = "CreatedDate"
#: How far the org's clock may be behind this machine's: a record created up to this long
#: before the ``send`` event's time (written by this machine's clock, just before the
#: request left) may still be the request's. A minute covers machines whose clocks are
#: synchronised (within a second) with room to spare; a record made earlier than that was
#: made by someone else. The written values must match too, so the margin alone never
#: lets another's record be claimed.
CLOCK_SKEW = timedelta(seconds=60)


def _instant(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def _made_by(record: Mapping[str, Any], sent: Mapping[str, Any], sent_at: datetime | None) -> bool:
    """Whether ``record`` (as read now) can be the one ``sent`` created: it holds every
    value sent, and was created no earlier than the send (less ``CLOCK_SKEW``)."""
    if not all(same_value(f, record.get(f), v) for f, v in sent.items()):
        return False
    created = _instant(record.get(CREATED))
    return sent_at is None or (created is not None and created >= sent_at - CLOCK_SKEW)


def settle_creates(number: int, changes: Sequence[Change], payload: Sequence[Mapping[str, Any]],
                   found: Mapping[str, Sequence[Mapping[str, Any]]], key_of: Callable[[Change], str],
                   sent_at: str | None = None) -> list[dict[str, Any]]:
    """``payload``: the records the request sent, in ``changes`` order; ``found``: key ->
    the records holding it that the plan did not know before, each with ``Id``, the fields
    sent and ``CreatedDate``; ``sent_at``: the time of the request's ``send`` event.

    A record found is claimed (applied) only when it holds the values sent and was created
    after the send (``_made_by``). None found: pending (send it again). Found, but none
    that can be the request's: drifted, neither sent nor claimed (a rollback would
    otherwise delete another's record)."""
    since = _instant(sent_at) if sent_at else None
    unclaimed = {key: list(rows) for key, rows in found.items()}
    results: list[dict[str, Any]] = []
    for change, sent in zip(changes, payload, strict=True):
        rows = unclaimed.get(key_of(change), [])
        mine = next((r for r in rows if _made_by(r, sent, since)), None)
        if mine is not None:
            rows.remove(mine)
            record_id = mine["Id"]
            results.append({"change_id": change.change_id, "status": "applied", "id": record_id,
                            "ref": change.ref,
                            "message": f"created by request {number} (settled: the record "
                                       f"{record_id} exists)"})
        elif rows:
            ids = ", ".join(str(r["Id"]) for r in rows)
            what = "name" if change.sobject == "Account" else "e-mail"
            results.append({"change_id": change.change_id, "status": "drifted",
                            "fields": {"Id": {"planned": None, "current": ids}},
                            "message": f"a record with this {what} appeared since the plan: {ids} "
                                       f"(not the one request {number} would have created: its "
                                       f"values or creation time differ); not sent, not claimed"})
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
