"""One table: what each outcome in an outcome file means.

An entry says which input columns the outcome owns, which of them a row must
fill, which fields it writes on the person's Contact and on their Lead (and
from which column or setting), when a record is left as it is, whether the
active-only gate (an active CUPOLA row) holds it back, and which Marketing
hand-off file a Multipub person's row goes to. ``inputs.py`` (validation and
merging), ``planner.py`` (the rules), ``snapshot.py`` (which fields are read
and checked, which addresses are looked up) read this table instead of
keeping their own.

A new outcome that sets fields, e.g. ``phone_change``, is a member of
``model.OutcomeKind``, its column on ``model.Outcome`` (``new_phone``) and one
entry here::

    OutcomeType(OutcomeKind.PHONE_CHANGE, payload=("new_phone",),
                needs=(Need("new_phone", "phone number"),),
                writes=both(Write(lambda c: "Phone", column="new_phone")), gated=True)

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconcile.config import Config
from reconcile.model import OrgRecord, Outcome, OutcomeKind, SObject
from reconcile.rules import lead_already_active, lead_already_inactive, norm_email


def _text(value: Any) -> str:
    return str(value or "").strip()


@dataclass(frozen=True)
class Need:
    """An input column a row of this outcome must fill, and what it sets, in words."""
    column: str
    what: str


@dataclass(frozen=True)
class Write:
    """One field an outcome sets on a record: ``field(config)`` gets the value of the
    input ``column``, or else the configured ``setting(config)``; nothing when that is
    empty. ``same`` normalises the record's current value for the "already so"
    comparison; ``hold`` (a rule from rules.py) may say why the record is left alone."""
    field: Callable[[Config], str]
    column: str = ""
    setting: Callable[[Config], str] | None = None
    same: Callable[[Any], str] = _text
    hold: Callable[[OrgRecord, Config], str | None] | None = None

    def value(self, outcome: Outcome, config: Config) -> str:
        if self.column:
            return str(getattr(outcome, self.column))
        return self.setting(config) if self.setting is not None else ""


def both(*writes: Write) -> dict[SObject, tuple[Write, ...]]:
    """The same writes on the person's Contact and on their Lead."""
    return {SObject.CONTACT: writes, SObject.LEAD: writes}


@dataclass(frozen=True)
class OutcomeType:
    kind: OutcomeKind
    # The columns the outcome owns: rows for one person with the same outcome and
    # the same values here are one determination; other columns are not its own.
    payload: tuple[str, ...] = ()
    # Columns every row must fill (a column missing from a CSV header is reported
    # once, on line 1) ...
    needs: tuple[Need, ...] = ()
    # ... or, when ``needs_any``, at least one of them.
    needs_any: bool = False
    # Field updates on the person's Contact and Lead, per object (empty for
    # new_contact, which creates a record: planner._new_contact).
    writes: Mapping[SObject, tuple[Write, ...]] = field(default_factory=dict)
    # The active-only gate: written only when the person's CUPOLA row is active.
    gated: bool = False
    # The Marketing hand-off file a Multipub person's row goes to (render/csvs.py).
    handoff: str | None = None
    creates_contact: bool = False

    @property
    def moves_email(self) -> bool:
        """Does it put a new address on a record? (EMAIL_TAKEN checks, holders read.)"""
        return any(w.column == "new_email" for ws in self.writes.values() for w in ws)


def _setting(name: str) -> Callable[[Config], str]:
    return lambda c: str(getattr(c, name))


_CONTACT_STATUS = _setting("contact_status_field")
_LEAD_STATUS = _setting("lead_status_field")
_EMAIL = Write(_setting("email_field"), column="new_email", same=norm_email)
_TITLE = Write(_setting("title_field"), column="new_title")

OUTCOMES: dict[OutcomeKind, OutcomeType] = {t.kind: t for t in (
    OutcomeType(OutcomeKind.INACTIVE, handoff="inactive_people", writes={
        SObject.CONTACT: (Write(_CONTACT_STATUS, setting=_setting("contact_inactive")),),
        SObject.LEAD: (Write(_LEAD_STATUS, setting=_setting("lead_inactive"), hold=lead_already_inactive),)}),
    OutcomeType(OutcomeKind.REACTIVATE, writes={
        SObject.CONTACT: (Write(_CONTACT_STATUS, setting=_setting("contact_active")),),
        SObject.LEAD: (Write(_LEAD_STATUS, setting=_setting("lead_reactivate"), hold=lead_already_active),)}),
    OutcomeType(OutcomeKind.EMAIL_CHANGE, payload=("new_email",),
                needs=(Need("new_email", "e-mail address"),),
                writes=both(_EMAIL), gated=True, handoff="email_update_requests"),
    OutcomeType(OutcomeKind.TITLE_CHANGE, payload=("new_title",),
                needs=(Need("new_title", "title"),),
                writes=both(_TITLE), gated=True),
    OutcomeType(OutcomeKind.REPLACEMENT, payload=("new_email", "new_title"),
                needs=(Need("new_email", "e-mail address"), Need("new_title", "title")), needs_any=True,
                writes=both(_EMAIL, _TITLE), gated=True, handoff="email_update_requests"),
    OutcomeType(OutcomeKind.NEW_CONTACT, payload=("first_name", "last_name", "organization", "title"),
                needs=(Need("last_name", "last name"), Need("organization", "account name")),
                creates_contact=True),
)}
assert set(OUTCOMES) == set(OutcomeKind), "every OutcomeKind has one entry"

# Input columns: the person, the outcome, every outcome's own columns (in table
# order), then the columns every row may carry.
PAYLOAD_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(c for t in OUTCOMES.values() for c in t.payload))
COLUMNS: tuple[str, ...] = ("email", "outcome", *PAYLOAD_COLUMNS,
                            "multipub_id", "cupola_status", "observed_at", "source_id")


def written_fields(config: Config, sobject: SObject) -> tuple[str, ...]:
    """Every field some outcome updates on a record of ``sobject``, in table order."""
    return tuple(dict.fromkeys(w.field(config) for t in OUTCOMES.values() for w in t.writes.get(sobject, ())))


def needed_by() -> dict[str, tuple[str, ...]]:
    """Input column -> the outcomes (their values) whose every row must fill it."""
    out: dict[str, tuple[str, ...]] = {}
    for t in OUTCOMES.values():
        if not t.needs_any:
            for need in t.needs:
                out[need.column] = (*out.get(need.column, ()), t.kind.value)
    return out


def fields_read(config: Config, sobject: str) -> tuple[str, ...]:
    """The fields the snapshot reads for each record of ``sobject``: the configured
    ones, then any field an outcome writes that they do not already name."""
    if sobject == SObject.ACCOUNT:
        return ("Id", config.account_name_field, "LastModifiedDate", "SystemModstamp")
    base = config.contact_fields() if sobject == SObject.CONTACT else config.lead_fields()
    return tuple(dict.fromkeys((*base, *written_fields(config, SObject(sobject)))))
