"""Rollback: an inverse plan built from what an apply actually did.

Each applied update goes back to the value it replaced, expecting today's
value to be what the apply wrote; each created record is deleted (an Account
only when no other Contact points at it). Changes that failed, drifted or
were skipped are not touched. A field edited by someone since the apply is
not put in the plan: it is listed as skipped (EDITED_SINCE_APPLY) and left
alone; an edit made after the rollback is planned is caught by apply's drift
check. The result is a plan like any other: reviewed, approved, applied, and
itself reversible.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from reconcile.model import Action, Change, FieldChange, PlanBody, RowRef, Skipped, SkipReason, SObject, pointed_ref
from reconcile.rules import same_value
from reconcile.steps import write_rank


def restored_records(rollback_results: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Record ids that earlier rollbacks of the same plan restored (or found already
    restored): a later rollback leaves them alone and plans only what is left."""
    done: set[str] = set()
    for result in rollback_results:
        for item in result.get("results", []):
            if item.get("status") in ("applied", "skipped") and item.get("record_id"):
                done.add(item["record_id"])
    return frozenset(done)


def records_to_read(result: dict[str, Any], done: Collection[str] = frozenset()) -> dict[str, dict[str, set[str]]]:
    """{sobject: {record id: fields}} that the rollback must see as they are today."""
    wanted: dict[str, dict[str, set[str]]] = {}
    for item in _applied(result, done):
        rid = item.get("record_id")
        if rid:
            fields = wanted.setdefault(item["sobject"], {}).setdefault(rid, set())
            fields.update(item.get("fields", {}))
            if item.get("action") == Action.CREATE:
                fields.update(SAVE_STAMPS)     # was it saved again since it was created?
    return wanted


#: A record's creation and last save by a user (both set by the org: equal until the
#: record is saved again; https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/system_fields.htm).
SAVE_STAMPS = ("CreatedDate", "LastModifiedDate")


def _saved_since_created(record: Mapping[str, Any]) -> str | None:
    """Why a record the apply created counts as edited since, though the fields the apply
    wrote are unchanged: someone saved it after its creation (any field)."""
    try:
        created, modified = (datetime.fromisoformat(str(record[f])) for f in SAVE_STAMPS)
    except (KeyError, TypeError, ValueError):
        return None
    if modified <= created:
        return None
    return (f"saved since it was created (LastModifiedDate {record['LastModifiedDate']}, "
            f"CreatedDate {record['CreatedDate']})")


def _applied(result: dict[str, Any], done: Collection[str] = frozenset()) -> list[dict[str, Any]]:
    return [r for r in result.get("results", [])
            if r.get("status") == "applied" and r.get("record_id") not in done]


def build_rollback(parent: dict[str, Any], result: dict[str, Any],
                   current: dict[str, dict[str, Any] | None],
                   account_contacts: dict[str, int], *, done: Collection[str] = frozenset(),
                   after: Sequence[str] = ()) -> PlanBody:
    """Pure: the parent plan, its apply result, today's records by id, and how many
    Contacts point at each Account the parent created → the inverse plan's body.
    ``done``: records earlier rollbacks (``after``, their plan ids) already restored."""
    parent_changes = {c["change_id"]: c for c in parent.get("changes", [])}
    created = result.get("created", {})
    changes: list[Change] = []
    skipped: list[Skipped] = []
    deleted_contacts_by_account: dict[str, int] = {}
    account_deletes: list[tuple[dict[str, Any], dict[str, Any]]] = []

    for item in _applied(result, done):
        original = parent_changes.get(item["change_id"], {})
        rid = item.get("record_id")
        sobject = SObject(item["sobject"])
        email = original.get("email", "")
        rows = tuple(RowRef(**r) for r in original.get("rows", []))
        today = current.get(rid) if rid else None
        if today is None:
            skipped.append(Skipped(email=email, sobject=sobject, record_id=rid,
                                   reason=SkipReason.RECORD_GONE,
                                   detail="the record is deleted or not visible to this user (a retrieve "
                                          "answered null); nothing undone"))
            continue
        written = {f: _resolve(v.get("after"), created) for f, v in item.get("fields", {}).items()}
        edited = {f: today.get(f) for f, v in written.items() if not same_value(f, today.get(f), v)}
        if item["action"] == Action.UPDATE:
            # Field by field: a field someone edited since the apply is left alone and
            # reported; the other fields this apply wrote still go back.
            if edited:
                skipped.append(Skipped(
                    email=email, sobject=sobject, record_id=rid, reason=SkipReason.EDITED_SINCE_APPLY,
                    detail="edited since the apply, left alone: " + "; ".join(
                        f"{f} is {today.get(f)!r}, the apply wrote {written[f]!r}" for f in sorted(edited))))
            fields = {f: FieldChange(before=written[f], after=_undo_value(v))
                      for f, v in sorted(item["fields"].items()) if f not in edited}
            if not fields:
                continue
            changes.append(Change(
                change_id=f"{sobject}:{rid}", action=Action.UPDATE, sobject=sobject, record_id=rid,
                ref=None, fields=fields, email=email, rows=rows,
                reasons=(f"undo {item['change_id']} of plan {parent['plan_id'][:12]}",)))
        elif item["action"] == Action.CREATE:
            fields = {f: FieldChange(before=written[f], after=None) for f in sorted(written)}
            change = Change(
                change_id=f"{sobject}:{rid}", action=Action.DELETE, sobject=sobject, record_id=rid,
                ref=None, fields=fields, email=email, rows=rows,
                reasons=(f"undo the create {item['change_id']} of plan {parent['plan_id'][:12]}",))
            if sobject is SObject.ACCOUNT:
                account_deletes.append((item, {"change": change, "email": email, "rid": rid}))
                continue
            saved = _saved_since_created(today)
            if edited or saved:
                skipped.append(Skipped(
                    email=email, sobject=sobject, record_id=rid, reason=SkipReason.EDITED_SINCE_APPLY,
                    detail="edited since the apply, not deleted: " + "; ".join(
                        [f"{f} is {today.get(f)!r}, the apply wrote {written[f]!r}" for f in sorted(edited)]
                        + ([saved] if saved and not edited else []))))
                continue
            account = written.get("AccountId")
            if account:
                deleted_contacts_by_account[account] = deleted_contacts_by_account.get(account, 0) + 1
            changes.append(change)
        # a delete is not undone: the record is in the Recycle Bin; restore it there.

    for _item, info in account_deletes:
        rid = info["rid"]
        others = account_contacts.get(rid, 0) - deleted_contacts_by_account.get(rid, 0)
        if others > 0:
            skipped.append(Skipped(email=info["email"], sobject=SObject.ACCOUNT, record_id=rid,
                                   reason=SkipReason.ACCOUNT_IN_USE,
                                   detail=f"{others} other Contact(s) point at this Account; it is kept"))
            continue
        changes.append(info["change"])

    # The document lists changes in write order (reconcile.steps decides it), Contacts
    # before Leads within an action, then by e-mail: the same undo makes the same plan.
    kind = {SObject.CONTACT: 0, SObject.LEAD: 1, SObject.ACCOUNT: 2}
    changes.sort(key=lambda c: (write_rank(c.action, c.sobject), kind[c.sobject], c.email, c.record_id or ""))
    prior = {rid: {"sobject": _sobject_of(result, rid), "fields": rec}
             for rid, rec in sorted(current.items()) if rec is not None}
    return PlanBody(prior_state=prior, changes=tuple(changes), duplicates=(), skipped=tuple(skipped),
                    review=(), unchanged=(),
                    notes=(f"rollback of plan {parent['plan_id']}",
                           *([(f"what is left after rollback(s) {', '.join(a[:12] for a in after)}: "
                               f"{len(done)} record(s) already restored are left alone")] if after else [])))


def _undo_value(spec: dict[str, Any]) -> Any:
    """The value an update replaced: what was read just before the write, else the plan's before."""
    replaced = spec.get("replaced")
    return replaced if replaced is not None else spec.get("before")


def _sobject_of(result: dict[str, Any], rid: str) -> str:
    for item in result.get("results", []):
        if item.get("record_id") == rid:
            return item["sobject"]
    return ""


def _resolve(value: Any, created: dict[str, str]) -> Any:
    ref = pointed_ref(value)
    return created.get(ref, value) if ref else value


def outcome_line(doc: Mapping[str, Any], report: Any) -> str:
    """What a finished rollback restored, in one line: everything nobody else edited, or
    what was refused and how to finish (``reconcile rollback`` on the parent plans the rest)."""
    parent = str(doc.get("parent_plan_id") or "")[:12]
    edited = [s for s in doc.get("skipped", []) if s.get("reason") == "EDITED_SINCE_APPLY"]
    left = f"; left alone: {len(edited)} record(s) someone edited since the apply" if edited else ""
    refused = [r for r in report.results if str(r.status) in ("failed", "drifted")]
    if not refused:
        updates = [c for c in doc.get("changes", []) if c.get("action") == "update"]
        deletes = len(doc.get("changes", [])) - len(updates)
        fields = sum(len(c.get("fields") or {}) for c in updates)
        removed = f"; {deletes} record(s) it created deleted" if deletes else ""
        return (f"rollback of plan {parent} restored every field nobody else edited ({fields} field(s) on "
                f"{len(updates)} record(s){removed}){left}")
    codes = sorted({str(r.error_code or r.status) for r in refused})
    state = ("partially rolled back" if any(str(r.status) == "applied" for r in report.results)
             else "not rolled back")
    return (f"rollback of plan {parent} is incomplete: {len(refused)} restore(s) not done ({', '.join(codes)}); "
            f"plan {parent} is {state} — once the org allows it (e.g. a Block duplicate rule "
            f"named above), `reconcile rollback {parent}` plans what is left{left}")
