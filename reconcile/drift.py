"""The drift check's comparisons: pure functions over what apply read just before writing.

The caller (apply) reads what one group of writes touches just before writing
it — re-reads the records, counts the Contacts of Accounts to delete, looks for
records that appeared with a create's key; these functions compare that with
the plan. Each problem is a dict ``{change_id, message,
fields: {F: {planned, current}}}`` as the journal's ``drift`` event records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconcile.model import Action, Change
from reconcile.rules import same_value

__all__ = ["Compared", "compare_records", "accounts_in_use", "new_duplicates",
           "ALREADY_DONE", "ALREADY_DELETED"]

ALREADY_DONE = "already holds the planned values"
# A retrieve answers null both for a deleted record and for one this user may not see.
NOT_VISIBLE = "deleted or not visible to this user"
ALREADY_DELETED = f"already {NOT_VISIBLE}"


@dataclass
class Compared:
    """``current``: change_id -> the planned fields' values now; ``drifted`` and ``skipped``
    (already done, already deleted): ``{change_id, message[, fields]}``."""
    current: dict[str, dict[str, Any]] = field(default_factory=dict)
    drifted: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def compare_records(changes: Sequence[Change], rows: Mapping[str, Mapping[str, Any]],
                    resolved: Callable[[Any], Any], into: Compared) -> None:
    """Updates and deletes against their records as read now (``rows`` by id; a deleted
    record missing). ``resolved``: a value with ``@{ref}`` replaced by the created id."""
    for change in changes:
        row = rows.get(change.record_id or "")
        if row is None:
            if change.action is Action.DELETE:
                into.skipped.append({"change_id": change.change_id, "message": ALREADY_DELETED})
            else:
                into.drifted.append({"change_id": change.change_id,
                                     "message": f"the {change.sobject} {change.record_id} is {NOT_VISIBLE}",
                                     "fields": {f: {"planned": change.before(f), "current": None}
                                                for f in change.fields}})
            continue
        values = {f: row.get(f) for f in change.fields}
        into.current[change.change_id] = values
        if change.action is Action.UPDATE and all(
                same_value(f, values[f], resolved(change.after(f))) for f in change.fields):
            into.skipped.append({"change_id": change.change_id, "message": ALREADY_DONE})
            continue
        differ = {f: {"planned": change.before(f), "current": values[f]}
                  for f in change.fields if not same_value(f, values[f], change.before(f))}
        if differ:
            into.drifted.append({"change_id": change.change_id, "fields": differ,
                                 "message": f"changed in Salesforce since the plan: {', '.join(differ)}"})


def account_deletes_to_count(accounts: Sequence[Change], current: Mapping[str, Any]) -> list[Change]:
    """The Account deletes whose Accounts still exist: their Contacts must be counted."""
    return [c for c in accounts if c.action is Action.DELETE and c.change_id in current]


def accounts_in_use(deletes: Sequence[Change], compared: Compared, counts: Mapping[str, int]) -> None:
    """An Account delete is drift while any Contact points at it: deleting an Account takes
    its Contacts with it. ``counts``: Contacts per Account id, counted just before the
    Account deletes are written, so after this run's Contact deletes: the Contacts the plan
    deletes are gone by then, and any left are ones it does not delete (or could not)."""
    by_key = {str(k)[:15]: v for k, v in counts.items()}
    for change in deletes:
        others = by_key.get(str(change.record_id)[:15], 0)
        if others > 0:
            compared.drifted.append({"change_id": change.change_id,
                                     "message": f"{others} Contact(s) still point at the Account "
                                                f"{change.record_id}; deleting it would delete them too",
                                     "fields": {"Contacts": {"planned": 0, "current": others}}})


def new_duplicates(sobject: str, changes: Sequence[Change], found: Mapping[str, Sequence[str]],
                   key_of: Callable[[Change], str], compared: Compared) -> None:
    """A create is drift when a record with its key (e-mail, Account Name) has appeared:
    ``found``: key -> ids of records the plan did not know."""
    for change in changes:
        ids = found.get(key_of(change))
        if ids:
            what = "this name" if sobject == "Account" else "this e-mail"
            article = "an" if sobject[0] in "AEIOU" else "a"
            compared.drifted.append({"change_id": change.change_id,
                                     "message": f"{article} {sobject} with {what} now exists: {', '.join(ids)}",
                                     "fields": {"Id": {"planned": None, "current": ", ".join(ids)}}})
