"""A plan at a glance: what ``show`` and the HTML page start from.

The plan's ``transitions`` (counted by ``plan.transitions``; recounted from
``changes`` for a plan written before they were recorded) with their example
changes resolved, and the skipped, review, duplicate and hand-off items grouped
by reason with counts. Every view prints these first and the per-record lists
after them (or not at all), so a plan of 100,000 changes reads like one of ten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconcile.plan import transitions as count_transitions

#: Codes and their meaning, for people who do not read SPEC §4 (shown where each is used).
REASON_LABELS: dict[str, str] = {
    "MULTIPUB_CONTACT": "Skipped (Multipub/Marketing owns this contact)",
    "CREATE_DISABLED": "New contact not created (plan without --allow-create)",
    "NOT_FOUND": "No Contact or Lead has this e-mail",
    "CONVERTED_LEAD": "Converted Lead: Salesforce does not allow updating it",
    "EDITED_SINCE_APPLY": "Edited by someone since the apply: left alone",
    "RECORD_GONE": "The record is deleted or not visible to this user",
    "ACCOUNT_IN_USE": "Other Contacts point at this Account: kept",
    "HUMAN_REVIEW_REASON_UPDATE_ON_INACTIVE": "Update requested, but CUPOLA says the person is inactive",
    "HUMAN_REVIEW_REASON_ACTIVE_NEW_CONTACT": "Update requested, but the person has no CUPOLA row",
    "EMAIL_TAKEN": "The new e-mail already belongs to another record",
    "CONFLICTING_OUTCOMES": "Contradictory outcomes for this person",
}

#: What a reviewer should do about each code; the page and ``show`` print it beside the count.
REASON_HELP: dict[str, str] = {
    "MULTIPUB_CONTACT": "Marketing owns Multipub people's Contacts (through SFMC): the request goes to them "
                        "in the hand-off files instead. Nothing to do here.",
    "CREATE_DISABLED": "The plan was made without --allow-create. Plan again with it to create these Contacts.",
    "NOT_FOUND": "No Contact or Lead holds the address. Check the address in the input; nothing is created.",
    "CONVERTED_LEAD": "Salesforce refuses updates to a converted Lead; the Contact it became is processed instead.",
    "EDITED_SINCE_APPLY": "Someone changed the field after the apply; the rollback leaves their edit alone.",
    "RECORD_GONE": "The record was deleted since the apply, or this user cannot see it (the API does not "
                   "say which); nothing is undone.",
    "ACCOUNT_IN_USE": "Other Contacts now point at an Account the apply created; it is kept.",
    "HUMAN_REVIEW_REASON_UPDATE_ON_INACTIVE": "An e-mail or title change for a person whose CUPOLA row is inactive. "
                                              "Decide by hand: update the record, or correct the input.",
    "HUMAN_REVIEW_REASON_ACTIVE_NEW_CONTACT": "An e-mail or title change for a person CUPOLA does not know. "
                                              "Decide by hand: update the record, or correct the input.",
    "EMAIL_TAKEN": "The new address is held by another record (or claimed twice in the input). Merge or fix "
                   "the records by hand, then plan again.",
    "CONFLICTING_OUTCOMES": "The input says contradictory things and observed_at cannot settle them. "
                            "Correct the input and plan again.",
}

#: CUPOLA, explained once wherever a review reason mentions it.
CUPOLA_HELP = ("CUPOLA: the pipeline's own record of each person; the input's cupola_status says whether "
               "the person's CUPOLA row is active, inactive, or missing. E-mail and title changes are written "
               "only for an active row (the active-only gate); status changes are not gated.")

DECIDED_BY_LABELS: dict[str, str] = {
    "LastModifiedDate": "latest LastModifiedDate (last edit by a user)",
    "SystemModstamp": "latest SystemModstamp (LastModifiedDate tied)",
    "Id": "greatest Id (both dates tied)",
}

HANDOFF_LABELS: dict[str, str] = {
    "inactive_people": "inactive people (output_document_inactive_people.csv)",
    "email_update_requests": "e-mail update requests (output_document_email_update_requests.csv)",
}

HANDOFF_HELP: dict[str, str] = {
    "inactive_people": "Multipub people who left: Marketing suppresses them through SFMC. Nothing is written "
                       "in Salesforce.",
    "email_update_requests": "Multipub people with a new address: Marketing updates it through SFMC. Nothing "
                             "is written in Salesforce.",
}

@dataclass(frozen=True)
class Transition:
    """One line of "what changes": a count and the change it counts."""
    key: str                                 # stable id for the page: t1, t2, …
    action: str
    sobject: str
    field: str | None
    before: Any
    after: Any
    various: bool
    count: int
    examples: tuple[Mapping[str, Any], ...]  # the example changes themselves
    entry: Mapping[str, Any]                 # the plan's transitions entry


@dataclass(frozen=True)
class Group:
    """Skipped or review items (or duplicate groups, hand-off rows) sharing one code."""
    code: str
    label: str
    help: str
    items: tuple[Mapping[str, Any], ...]

    @property
    def count(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Digest:
    counts: Mapping[str, int]
    field_changes: int
    transitions: tuple[Transition, ...]
    review: tuple[Group, ...]
    skipped: tuple[Group, ...]
    duplicates: tuple[Group, ...]
    handoff: tuple[Group, ...]
    mentions_cupola: bool


def _grouped(items: Sequence[Mapping[str, Any]], key: str, labels: Mapping[str, str],
             helps: Mapping[str, str] | None = None) -> tuple[Group, ...]:
    by_code: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        by_code.setdefault(str(item.get(key) or ""), []).append(item)
    groups = [Group(code, labels.get(code, code), (helps or {}).get(code, ""), tuple(members))
              for code, members in by_code.items()]
    return tuple(sorted(groups, key=lambda g: (-g.count, g.code)))


def plan_transitions(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The plan's ``transitions``, or counted from its changes (older plans)."""
    recorded = doc.get("transitions")
    if recorded is not None:
        return list(recorded)
    return list(count_transitions(doc.get("changes") or []))


def digest(doc: Mapping[str, Any], counts: Mapping[str, int]) -> Digest:
    changes = doc.get("changes") or []
    by_id = {c.get("change_id"): c for c in changes}
    views = []
    for i, entry in enumerate(plan_transitions(doc), 1):
        examples = tuple(by_id[cid] for cid in entry.get("examples") or () if cid in by_id)
        views.append(Transition(
            key=f"t{i}", action=str(entry.get("action")), sobject=str(entry.get("sobject")), field=entry.get("field"),
            before=entry.get("before"), after=entry.get("after"), various=bool(entry.get("various")),
            count=int(entry.get("count") or 0), examples=examples, entry=entry))
    review = _grouped(doc.get("review") or [], "reason", REASON_LABELS, REASON_HELP)
    return Digest(
        counts=counts,
        field_changes=sum(len(c.get("fields") or {}) for c in changes if c.get("action") == "update"),
        transitions=tuple(views),
        review=review,
        skipped=_grouped(doc.get("skipped") or [], "reason", REASON_LABELS, REASON_HELP),
        duplicates=_grouped(doc.get("duplicates") or [], "decided_by", DECIDED_BY_LABELS),
        handoff=_grouped(doc.get("handoff") or [], "file", HANDOFF_LABELS, HANDOFF_HELP),
        mentions_cupola=any(g.code.startswith("HUMAN_REVIEW_REASON") for g in review),
    )


def field_values(change: Mapping[str, Any], field: str | None) -> tuple[Any, Any]:
    values = ((change.get("fields") or {}).get(field) or {}) if field else {}
    return values.get("before"), values.get("after")
