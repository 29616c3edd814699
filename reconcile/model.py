"""reconcile's vocabulary: frozen dataclasses (with ``__slots__``: hundreds of
thousands of them at 100,000 outcomes) and StrEnums on the hot path.

StrEnums serialise as SPEC's strings. Plan items (Change, DuplicateGroup,
Skipped, ReviewItem, Unchanged) carry exactly the keys of SPEC §4's outline so
that ``plan.py`` can serialise them with ``dataclasses.asdict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class SObject(StrEnum):
    CONTACT = "Contact"
    LEAD = "Lead"
    ACCOUNT = "Account"


class OutcomeKind(StrEnum):
    INACTIVE = "inactive"
    REACTIVATE = "reactivate"
    EMAIL_CHANGE = "email_change"
    TITLE_CHANGE = "title_change"
    REPLACEMENT = "replacement"
    NEW_CONTACT = "new_contact"


class Cupola(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    NONE = ""  # no CUPOLA row


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class SkipReason(StrEnum):
    MULTIPUB_CONTACT = "MULTIPUB_CONTACT"
    CREATE_DISABLED = "CREATE_DISABLED"
    NOT_FOUND = "NOT_FOUND"
    CONVERTED_LEAD = "CONVERTED_LEAD"      # Salesforce refuses updates to a converted Lead
    # rollback plans only
    EDITED_SINCE_APPLY = "EDITED_SINCE_APPLY"
    RECORD_GONE = "RECORD_GONE"
    ACCOUNT_IN_USE = "ACCOUNT_IN_USE"


class ReviewReason(StrEnum):
    UPDATE_ON_INACTIVE = "HUMAN_REVIEW_REASON_UPDATE_ON_INACTIVE"
    ACTIVE_NEW_CONTACT = "HUMAN_REVIEW_REASON_ACTIVE_NEW_CONTACT"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    CONFLICTING_OUTCOMES = "CONFLICTING_OUTCOMES"


class DecidedBy(StrEnum):
    LAST_MODIFIED = "LastModifiedDate"
    SYSTEM_MODSTAMP = "SystemModstamp"
    ID = "Id"


class PlanKind(StrEnum):
    APPLY = "apply"
    ROLLBACK = "rollback"


class PlanState(StrEnum):
    PLANNED = "planned"
    APPROVED = "approved"
    APPLYING = "applying"
    APPLIED = "applied"
    PARTIALLY_APPLIED = "partially applied"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"
    PARTIALLY_ROLLED_BACK = "partially rolled back"   # a rollback plan applied in part


class ChangeStatus(StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    DRIFTED = "drifted"
    SKIPPED = "skipped"
    PENDING = "pending"


# -- references to records a plan creates ----------------------------------------

def pointer(ref: str) -> str:
    """The value a field holds when it points at a record the same plan creates."""
    return "@{" + ref + "}"


def pointed_ref(value: Any) -> str | None:
    """The ref inside ``"@{Account:acme corp}"``, or None for any other value."""
    if isinstance(value, str) and value.startswith("@{") and value.endswith("}") and len(value) > 3:
        return value[2:-1]
    return None


# -- input -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RowRef:
    """Where a determination came from: file name, 1-based line, and audit keys."""
    file: str
    line: int
    outcome: str
    source_id: str = ""
    observed_at: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One determination for one person (rows for the same e-mail already merged).

    ``email`` is normalised: trimmed and lower-cased. ``new_email`` likewise.
    Empty optional values are ``""``; a column the outcome does not own
    (``outcomes.OUTCOMES[kind].payload``) is always ``""``.
    """
    email: str
    kind: OutcomeKind
    new_email: str = ""
    new_title: str = ""
    first_name: str = ""
    last_name: str = ""
    organization: str = ""
    title: str = ""
    multipub_id: str = ""
    cupola_status: Cupola = Cupola.NONE
    observed_at: str = ""          # ISO-8601 as given, normalised to UTC 'Z' form
    source_id: str = ""
    rows: tuple[RowRef, ...] = ()
    # Rows of contradictory determinations this one overrode by a later observed_at.
    overridden: tuple[RowRef, ...] = ()
    # What a reviewer should know about how the rows were merged (plan ``notes``).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Conflict:
    """Rows for one e-mail with contradictory outcomes that observed_at could not settle."""
    email: str
    kinds: tuple[str, ...]
    rows: tuple[RowRef, ...]
    # One line per contradictory determination, e.g. "email_change new_email=a@x.com (outcomes.csv:3)".
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutcomeSet:
    """What ``inputs.read_outcomes`` returns: determinations, conflicts, input metadata."""
    outcomes: tuple[Outcome, ...]
    conflicts: tuple[Conflict, ...]
    inputs: tuple[Mapping[str, Any], ...]  # [{name, sha256, rows}]


# -- the org -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OrgRecord:
    """A record as read from Salesforce. ``fields`` holds every field read
    (``Id``, ``Email``, ``LastModifiedDate`` …) exactly as the API returned them."""
    sobject: SObject
    id: str
    fields: Mapping[str, Any]

    @property
    def email(self) -> str:
        return (self.fields.get("Email") or "").strip().lower()


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: str
    name: str
    contact_count: int
    last_modified: str
    system_modstamp: str


@dataclass(frozen=True, slots=True)
class OrgInfo:
    instance_url: str
    org_id: str
    api_version: str
    # From the Organization row: its Name, IsSandbox and OrganizationType (the edition).
    # None where unknown (plans made before they were recorded).
    name: str | None = None
    is_sandbox: bool | None = None
    organization_type: str | None = None

    @property
    def label(self) -> str:
        """PRODUCTION, Sandbox, or "org kind unknown"."""
        return org_label(self.is_sandbox)


def org_label(is_sandbox: bool | None) -> str:
    if is_sandbox is None:
        return "org kind unknown"
    return "Sandbox" if is_sandbox else "PRODUCTION"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the planner may know about the org. Read-only, built by snapshot.py."""
    org: OrgInfo
    records: tuple[OrgRecord, ...]                 # Contacts and Leads for every input/new e-mail
    accounts: tuple[AccountInfo, ...] = ()         # Accounts whose Name matches a new_contact organization


# -- the Salesforce edge -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RecordError:
    status_code: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveResult:
    """One record's result from a collections request, in request order."""
    id: str | None
    success: bool
    errors: tuple[RecordError, ...] = ()
    created: bool = False


@dataclass(frozen=True, slots=True)
class ApiUsage:
    used: int
    total: int


# -- the plan --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FieldChange:
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class Change:
    change_id: str
    action: Action
    sobject: SObject
    record_id: str | None          # None for a create
    ref: str | None                # for a create: how later changes point at it ("@{ref}")
    fields: Mapping[str, FieldChange]
    reasons: tuple[str, ...]       # the rules that fired, in words
    rows: tuple[RowRef, ...]
    email: str = ""                # the person's (normalised) e-mail; for creates, the drift check key

    def before(self, name: str) -> Any:
        return self.fields[name].before

    def after(self, name: str) -> Any:
        return self.fields[name].after

    def refs(self) -> list[str]:
        """The refs of records this plan creates that this change's values point at."""
        return [ref for spec in self.fields.values() if (ref := pointed_ref(spec.after))]


def change_from_dict(data: Mapping[str, Any]) -> Change:
    """A ``Change`` from a plan document's change (``fields``: {F: {before, after}})."""
    rows = tuple(RowRef(**{k: r[k] for k in _ROW_KEYS if k in r}) for r in data.get("rows") or ())
    return Change(change_id=str(data["change_id"]), action=Action(data["action"]),
                  sobject=SObject(data["sobject"]), record_id=data.get("record_id"),
                  ref=data.get("ref"),
                  fields={name: FieldChange(before=(spec or {}).get("before"), after=(spec or {}).get("after"))
                          for name, spec in (data.get("fields") or {}).items()},
                  reasons=tuple(data.get("reasons") or ()), rows=rows,
                  email=(data.get("email") or "").strip().lower())


_ROW_KEYS = ("file", "line", "outcome", "source_id", "observed_at")


@dataclass(frozen=True, slots=True)
class RecordStamp:
    id: str
    LastModifiedDate: str
    SystemModstamp: str


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    sobject: SObject
    email: str
    chosen: RecordStamp
    others: tuple[RecordStamp, ...]
    decided_by: DecidedBy


@dataclass(frozen=True, slots=True)
class Skipped:
    email: str
    sobject: SObject | None
    record_id: str | None
    reason: SkipReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReviewItem:
    email: str
    reason: ReviewReason
    detail: str
    sobject: SObject | None = None
    record_id: str | None = None
    rows: tuple[RowRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Unchanged:
    email: str
    sobject: SObject
    record_id: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HandoffRow:
    """A row of the Marketing hand-off files (Multipub people)."""
    file: str                      # "inactive_people" or "email_update_requests"
    email: str
    multipub_id: str
    new_email: str = ""
    contact_ids: tuple[str, ...] = ()
    observed_at: str = ""
    source_id: str = ""


@dataclass(frozen=True, slots=True)
class PlanBody:
    """What the pure planner returns; plan.py wraps it into the versioned document."""
    prior_state: Mapping[str, Mapping[str, Any]]   # record id -> {sobject, fields}
    changes: tuple[Change, ...]
    duplicates: tuple[DuplicateGroup, ...]
    skipped: tuple[Skipped, ...]
    review: tuple[ReviewItem, ...]
    unchanged: tuple[Unchanged, ...]
    handoff: tuple[HandoffRow, ...] = ()
    notes: tuple[str, ...] = field(default=())
