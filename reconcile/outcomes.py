"""One table: what each outcome in an outcome file means.

An entry says which input columns the outcome owns, which of them a row must
fill, which Salesforce fields it writes on the person's Contact and Lead,
whether the active-only gate (an active CUPOLA row) holds it back, and which
Marketing hand-off file a Multipub person's row goes to. ``inputs.py``
(validation and merging), ``planner.py`` (the rules), ``snapshot.py`` (which
fields are read and which addresses) and ``config.py`` (the fields read per
object) all read this table instead of keeping their own.

A new outcome that sets fields, e.g. ``phone_change``, is a member of
``model.OutcomeKind``, the column on ``model.Outcome`` (``new_phone``) and one
entry here::

    OutcomeType(OutcomeKind.PHONE_CHANGE, payload=("new_phone",),
                needs=(Need("new_phone", "phone number"),),
                writes=(Write("new_phone", lambda c: "Phone"),), gated=True)

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconcile.config import Config
from reconcile.model import OutcomeKind
from reconcile.rules import norm_email


def _text(value: Any) -> str:
    return str(value or "").strip()


@dataclass(frozen=True)
class Need:
    """An input column a row of this outcome must fill, and what it sets, in words."""
    column: str
    what: str


@dataclass(frozen=True)
class Write:
    """A field update: the input column's value goes to the field ``field(config)``
    names, on the person's Contact and Lead. ``same`` normalises the org's current
    value for the "already so" comparison."""
    column: str
    field: Callable[[Config], str]
    same: Callable[[Any], str] = _text


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
    # Field updates on the person's Contact and Lead (empty for the status outcomes,
    # whose rules are in planner.py, and for new_contact, which creates a record).
    writes: tuple[Write, ...] = ()
    # The active-only gate: written only when the person's CUPOLA row is active.
    gated: bool = False
    # The Marketing hand-off file a Multipub person's row goes to (render/csvs.py).
    handoff: str | None = None
    creates_contact: bool = False

    @property
    def moves_email(self) -> bool:
        """Does it put a new address on a record? (EMAIL_TAKEN checks, holders read.)"""
        return any(w.column == "new_email" for w in self.writes)


_EMAIL = Write("new_email", lambda c: c.email_field, same=norm_email)
_TITLE = Write("new_title", lambda c: c.title_field)

OUTCOMES: dict[OutcomeKind, OutcomeType] = {t.kind: t for t in (
    OutcomeType(OutcomeKind.INACTIVE, handoff="inactive_people"),
    OutcomeType(OutcomeKind.REACTIVATE),
    OutcomeType(OutcomeKind.EMAIL_CHANGE, payload=("new_email",),
                needs=(Need("new_email", "e-mail address"),),
                writes=(_EMAIL,), gated=True, handoff="email_update_requests"),
    OutcomeType(OutcomeKind.TITLE_CHANGE, payload=("new_title",),
                needs=(Need("new_title", "title"),),
                writes=(_TITLE,), gated=True),
    OutcomeType(OutcomeKind.REPLACEMENT, payload=("new_email", "new_title"),
                needs=(Need("new_email", "e-mail address"), Need("new_title", "title")), needs_any=True,
                writes=(_EMAIL, _TITLE), gated=True, handoff="email_update_requests"),
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


def written_fields(config: Config) -> tuple[str, ...]:
    """Every field some outcome updates on a Contact or Lead, in table order."""
    return tuple(dict.fromkeys(w.field(config) for t in OUTCOMES.values() for w in t.writes))


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
    base = {"Contact": config.contact_fields(), "Lead": config.lead_fields(),
            "Account": ("Id", config.account_name_field, "LastModifiedDate", "SystemModstamp")}[sobject]
    if sobject == "Account":
        return base
    return tuple(dict.fromkeys((*base, *written_fields(config))))
