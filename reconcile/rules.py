"""Small pure rules the planner applies (SPEC §2): which record of a duplicate
group is written, which Account a new Contact joins, when a Lead is active."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from reconcile.config import Config
from reconcile.model import AccountInfo, DecidedBy, DuplicateGroup, OrgRecord, RecordStamp

_NEVER = datetime.min.replace(tzinfo=UTC)


def instant(value: Any) -> datetime:
    """A Salesforce timestamp (``2026-01-05T10:00:00.000+0000``) as an aware instant.

    Missing or unreadable stamps sort before every real one."""
    if not value:
        return _NEVER
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return _NEVER
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def norm_email(value: Any) -> str:
    return str(value or "").strip().lower()


def same_value(field_name: str, current: Any, expected: Any) -> bool:
    """A field's value as apply's drift check and rollback compare it: exactly, except
    that e-mail addresses compare trimmed and case-insensitively."""
    if field_name.lower().endswith("email") and isinstance(current, str) and isinstance(expected, str):
        return current.strip().lower() == expected.strip().lower()
    return current == expected


def norm_name(value: Any) -> str:
    """Account names are compared trimmed, case-insensitively, inner spaces collapsed."""
    return " ".join(str(value or "").split()).casefold()


def lead_is_active(record: OrgRecord, config: Config) -> bool:
    status = str(record.fields.get(config.lead_status_field) or "").strip()
    return bool(status) and status not in config.lead_inactive_statuses


def lead_already_inactive(record: OrgRecord, config: Config) -> str | None:
    """``inactive`` leaves a Lead alone whose Status is already another inactive value
    (e.g. Disqualified): why, or None."""
    status = str(record.fields.get(config.lead_status_field) or "").strip()
    if status and status != config.lead_inactive and status in config.lead_inactive_statuses:
        return f"Lead is already inactive ({config.lead_status_field} = {status})"
    return None


def lead_already_active(record: OrgRecord, config: Config) -> str | None:
    """``reactivate`` never moves a working Lead back to the first open Status: why, or None."""
    if lead_is_active(record, config):
        return (f"Lead is already active ({config.lead_status_field} = "
                f"{record.fields.get(config.lead_status_field)}); not moved back to {config.lead_reactivate}")
    return None


def _stamp(record: OrgRecord) -> RecordStamp:
    return RecordStamp(id=record.id,
                       LastModifiedDate=str(record.fields.get("LastModifiedDate") or ""),
                       SystemModstamp=str(record.fields.get("SystemModstamp") or ""))


def choose_record(records: Sequence[OrgRecord], email: str) -> tuple[OrgRecord, DuplicateGroup | None]:
    """The record to write among several of one type for one e-mail.

    Latest LastModifiedDate, then latest SystemModstamp, then greatest Id; the
    group says which field decided (the first one that separates the chosen
    record from the runner-up)."""
    def key(r: OrgRecord) -> tuple[datetime, datetime, str]:
        return (instant(r.fields.get("LastModifiedDate")), instant(r.fields.get("SystemModstamp")), r.id)

    ordered = sorted(records, key=key, reverse=True)
    chosen = ordered[0]
    if len(ordered) == 1:
        return chosen, None
    first, second = key(chosen), key(ordered[1])
    if first[0] != second[0]:
        decided = DecidedBy.LAST_MODIFIED
    elif first[1] != second[1]:
        decided = DecidedBy.SYSTEM_MODSTAMP
    else:
        decided = DecidedBy.ID
    others = tuple(_stamp(r) for r in sorted(ordered[1:], key=lambda r: r.id))
    return chosen, DuplicateGroup(sobject=chosen.sobject, email=email, chosen=_stamp(chosen),
                                  others=others, decided_by=decided)


def choose_account(accounts: Sequence[AccountInfo]) -> tuple[AccountInfo, str]:
    """Among Accounts of one name: most Contacts, then most recently modified, then greatest Id.

    Returns the account and the words for why (empty when there was no choice)."""
    def key(a: AccountInfo) -> tuple[int, datetime, datetime, str]:
        return (a.contact_count or 0, instant(a.last_modified), instant(a.system_modstamp), a.id)

    ordered = sorted(accounts, key=key, reverse=True)
    chosen = ordered[0]
    if len(ordered) == 1:
        return chosen, ""
    first, second = key(chosen), key(ordered[1])
    by = ("most Contacts" if first[0] != second[0] else
          "most recently modified" if first[1:3] != second[1:3] else "greatest Id")
    return chosen, (f"Account {chosen.id} ({chosen.name!r}, {chosen.contact_count or 0} Contacts) chosen from "
                    f"{len(ordered)} Accounts of that name by {by}")
