"""The pure planning core: outcomes + a snapshot of the org → a ``PlanBody``.

No network, no clock, no files, no randomness: the same inputs always give
the same plan, in the same order. Every rule of SPEC §2 lives here (the small
pure helpers in ``rules.py``); what each outcome writes, on which object, and
whether the CUPOLA gate holds it is ``outcomes.py``'s table. ``plan.py`` turns
the body into the versioned document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconcile.config import Config
from reconcile.model import (
    AccountInfo,
    Action,
    Change,
    Conflict,
    Cupola,
    DuplicateGroup,
    FieldChange,
    HandoffRow,
    OrgRecord,
    Outcome,
    OutcomeSet,
    PlanBody,
    ReviewItem,
    ReviewReason,
    RowRef,
    Skipped,
    SkipReason,
    Snapshot,
    SObject,
    Unchanged,
    pointer,
)
from reconcile.outcomes import OUTCOMES
from reconcile.rules import choose_account, choose_record, norm_name

MULTIPUB_DETAIL = "Skipped (Multipub/Marketing owns this contact)"


def build_plan(outcome_set: OutcomeSet, snapshot: Snapshot, config: Config, *,
               allow_create: bool) -> PlanBody:
    """Apply SPEC §2's rules, person by person, and return what should change and why."""
    return _Planner(outcome_set, snapshot, config, allow_create).run()


@dataclass
class _Target:
    """One record the person's determination would write, and what it would write."""
    record: OrgRecord
    group: DuplicateGroup | None
    fields: dict[str, FieldChange] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    unchanged: str = ""           # why nothing is written, when ``fields`` is empty


@dataclass
class _AccountCreate:
    name: str
    emails: list[str] = field(default_factory=list)
    rows: list[RowRef] = field(default_factory=list)


class _Planner:
    def __init__(self, outcome_set: OutcomeSet, snapshot: Snapshot, config: Config, allow_create: bool):
        self.outcome_set = outcome_set
        self.snapshot = snapshot
        self.config = config
        self.allow_create = allow_create
        self.records: dict[tuple[SObject, str], list[OrgRecord]] = {}
        for record in snapshot.records:
            self.records.setdefault((SObject(record.sobject), record.email), []).append(record)
        self.accounts: dict[str, list[AccountInfo]] = {}
        for account in snapshot.accounts:
            self.accounts.setdefault(norm_name(account.name), []).append(account)
        # Who would put which address on a record: movers' new addresses and new Contacts.
        self.input_addresses = ({o.email for o in outcome_set.outcomes}
                                | {c.email for c in outcome_set.conflicts})
        self.claims: dict[str, set[str]] = {}
        for o in outcome_set.outcomes:
            if OUTCOMES[o.kind].moves_email and o.new_email and o.new_email != o.email:
                self.claims.setdefault(o.new_email, set()).add(o.email)
            elif OUTCOMES[o.kind].creates_contact:
                self.claims.setdefault(o.email, set()).add(o.email)

        self.updates: list[Change] = []
        self.contact_creates: list[Change] = []
        self.account_creates: dict[str, _AccountCreate] = {}
        self.duplicates: list[DuplicateGroup] = []
        self.skipped: list[Skipped] = []
        self.review: list[ReviewItem] = []
        self.unchanged: list[Unchanged] = []
        self.handoff: list[HandoffRow] = []
        self.notes: list[str] = []

    # -- the whole plan ------------------------------------------------------------

    def run(self) -> PlanBody:
        people: list[Outcome | Conflict] = [*self.outcome_set.outcomes, *self.outcome_set.conflicts]
        for person in sorted(people, key=lambda p: p.email):
            if isinstance(person, Conflict):
                self._conflict(person)
            else:
                self.notes.extend(person.notes)
                self._person(person)
        changes = (self._account_changes()
                   + sorted(self.contact_creates, key=lambda c: c.email)
                   + sorted(self.updates, key=lambda c: (c.sobject != SObject.CONTACT, c.email, c.record_id or "")))
        return PlanBody(
            prior_state=self._prior_state(),
            changes=tuple(changes),
            duplicates=tuple(sorted(self.duplicates, key=lambda d: (d.email, d.sobject))),
            skipped=tuple(sorted(self.skipped, key=lambda s: (s.email, s.sobject or "", s.record_id or "", s.reason))),
            review=tuple(sorted(self.review, key=lambda r: (r.email, r.reason, r.sobject or "", r.record_id or ""))),
            unchanged=tuple(sorted(self.unchanged, key=lambda u: (u.email, u.sobject, u.record_id))),
            handoff=tuple(sorted(self.handoff, key=lambda h: (h.file, h.email))),
            notes=tuple(self.notes))

    def _prior_state(self) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = {}
        for record in self.snapshot.records:
            state[record.id] = {"sobject": str(record.sobject), "fields": dict(record.fields)}
        for account in self.snapshot.accounts:
            fields: dict[str, Any] = {"Id": account.id, self.config.account_name_field: account.name,
                      "LastModifiedDate": account.last_modified, "SystemModstamp": account.system_modstamp}
            if account.contact_count is not None:  # counted only where several share a name
                fields["contact_count"] = account.contact_count
            state[account.id] = {"sobject": str(SObject.ACCOUNT), "fields": fields}
        return state

    def _find(self, sobject: SObject, email: str) -> list[OrgRecord]:
        return self.records.get((sobject, email), [])

    def _holders(self, email: str) -> list[OrgRecord]:
        """Every Contact and Lead holding ``email``, by object then id."""
        return sorted((r for s in (SObject.CONTACT, SObject.LEAD) for r in self._find(s, email)),
                      key=lambda r: (r.sobject, r.id))

    def _choose(self, sobject: SObject, email: str) -> tuple[OrgRecord, DuplicateGroup | None] | None:
        records = self._find(sobject, email)
        if sobject is SObject.LEAD:
            converted = [r for r in records if r.fields.get("IsConverted") in (True, "true")]
            for record in converted:
                self.skipped.append(Skipped(
                    email=email, sobject=sobject, record_id=record.id, reason=SkipReason.CONVERTED_LEAD,
                    detail="a converted Lead cannot be updated; the Contact it became is processed"))
            records = [r for r in records if r not in converted]
        if not records:
            return None
        chosen, group = choose_record(records, email)
        if group is not None:
            self.duplicates.append(group)
        return chosen, group

    # -- one person ------------------------------------------------------------------

    def _conflict(self, conflict: Conflict) -> None:
        detail = "contradictory outcomes, observed_at does not settle them: " + "; ".join(
            conflict.details or conflict.kinds)
        # One item per record the person has (the reviewer fixes records), or one with none.
        targets: list[OrgRecord | None] = [*self._holders(conflict.email)] or [None]
        for record in targets:
            self.review.append(ReviewItem(
                email=conflict.email, reason=ReviewReason.CONFLICTING_OUTCOMES, detail=detail, rows=conflict.rows,
                sobject=SObject(record.sobject) if record else None, record_id=record.id if record else None))

    def _person(self, o: Outcome) -> None:
        if o.multipub_id:
            self._handoff(o)
        if OUTCOMES[o.kind].creates_contact:
            self._new_contact(o)
            return
        contact = self._choose(SObject.CONTACT, o.email)
        lead = self._choose(SObject.LEAD, o.email)
        if contact is None and lead is None:
            self.skipped.append(Skipped(email=o.email, sobject=None, record_id=None,
                                        reason=SkipReason.NOT_FOUND, detail=self._not_found_detail(o)))
            return
        targets: list[_Target] = []
        if contact is not None:
            if o.multipub_id:
                self.skipped.append(Skipped(email=o.email, sobject=SObject.CONTACT, record_id=contact[0].id,
                                            reason=SkipReason.MULTIPUB_CONTACT, detail=MULTIPUB_DETAIL))
            else:
                targets.append(_Target(*contact))
        if lead is not None:
            targets.append(_Target(*lead))
        for target in targets:
            self._desired(o, target)
        pending = [t for t in targets if t.fields]
        for target in targets:
            if not target.fields:
                self._unchanged(o, target.record, target.unchanged)
        if not pending:
            return
        if OUTCOMES[o.kind].gated and not self._gate(o, pending):
            return
        if OUTCOMES[o.kind].moves_email and o.new_email and any(self.config.email_field in t.fields for t in pending):
            pending = self._email_free(o, pending)
        for target in pending:
            self.updates.append(self._update(o, target))

    def _handoff(self, o: Outcome) -> None:
        spec = OUTCOMES[o.kind]
        if spec.handoff is None or (spec.moves_email and not o.new_email):
            return
        contact_ids = tuple(sorted(r.id for r in self._find(SObject.CONTACT, o.email)))
        self.handoff.append(HandoffRow(file=spec.handoff, email=o.email, multipub_id=o.multipub_id,
                                       new_email=o.new_email, contact_ids=contact_ids,
                                       observed_at=o.observed_at, source_id=o.source_id))

    def _not_found_detail(self, o: Outcome) -> str:
        detail = "no Contact or Lead has this e-mail"
        if OUTCOMES[o.kind].moves_email and o.new_email:
            holders = self._holders(o.new_email)
            if holders:
                detail += (f"; {o.new_email} is already held by "
                           + ", ".join(f"{r.sobject} {r.id}" for r in holders)
                           + " (already applied?)")
        return detail

    def _unchanged(self, o: Outcome, record: OrgRecord, detail: str) -> None:
        self.unchanged.append(Unchanged(email=o.email, sobject=SObject(record.sobject), record_id=record.id,
                                        detail=detail))

    # -- what the outcome owns on one record -------------------------------------------

    def _desired(self, o: Outcome, t: _Target) -> None:
        c, record = self.config, t.record
        current = record.fields
        holds: list[str] = []

        def want(name: str, after: str, same: bool) -> None:
            if same:
                holds.append(f"{name} is already {after}")
            else:
                t.fields[name] = FieldChange(before=current.get(name), after=after)
                t.reasons.append(f"outcome {o.kind} → {name} = {after}")

        for write in OUTCOMES[o.kind].writes.get(SObject(record.sobject), ()):
            value = write.value(o, c)
            if not value:
                continue
            held = write.hold(record, c) if write.hold is not None else None
            if held:
                holds.append(held)
            else:
                name = write.field(c)
                want(name, value, write.same(current.get(name)) == value)
        if not t.fields:
            t.unchanged = "; ".join(holds)
            return
        if t.group is not None:
            t.reasons.append(f"chosen from {len(t.group.others) + 1} duplicates by {t.group.decided_by}")
        if o.overridden:
            t.reasons.append("latest observed_at overrides " + ", ".join(
                f"{r.file}:{r.line} ({r.outcome})" for r in o.overridden))

    def _gate(self, o: Outcome, pending: list[_Target]) -> bool:
        """The active-only gate: e-mail/title updates only with an active CUPOLA row."""
        if o.cupola_status is Cupola.ACTIVE:
            for target in pending:
                target.reasons.append("CUPOLA row active: e-mail/title update allowed")
            return True
        reason, why = ((ReviewReason.UPDATE_ON_INACTIVE, "the CUPOLA row is inactive")
                       if o.cupola_status is Cupola.INACTIVE else
                       (ReviewReason.ACTIVE_NEW_CONTACT, "there is no CUPOLA row"))
        for target in pending:   # one item per record, naming it
            self.review.append(ReviewItem(
                email=o.email, reason=reason, rows=o.rows, sobject=SObject(target.record.sobject),
                record_id=target.record.id, detail=f"{o.kind} not written because {why}: {_describe(target)}"))
        return False

    def _email_free(self, o: Outcome, pending: list[_Target]) -> list[_Target]:
        """Drop (to review) writes that would put an address on a second record."""
        claimers = sorted(self.claims.get(o.new_email, set()) - {o.email})
        is_input = o.new_email in self.input_addresses and o.new_email != o.email
        if claimers or is_input:
            why = []
            if claimers:
                why.append(f"it is also the new address of {', '.join(claimers)} in this input")
            if is_input:
                why.append("it is itself an address with its own outcome in this input")
            holders = self._holders(o.new_email)
            if holders:
                why.append("held by " + ", ".join(f"{r.sobject} {r.id}" for r in holders))
            for target in pending:   # one item per record, naming it
                self.review.append(ReviewItem(
                    email=o.email, reason=ReviewReason.EMAIL_TAKEN, rows=o.rows,
                    sobject=SObject(target.record.sobject), record_id=target.record.id,
                    detail=f"{o.kind} to {o.new_email} not written to {target.record.sobject} {target.record.id}: "
                           f"{'; '.join(why)}"))
            return []
        # A holder of either type trips the org's duplicate rules (the standard Contact and
        # Lead rules match across both objects); the person's own records that move to the
        # address in this plan are not holders.
        own = {t.record.id for t in pending}
        held = [r for r in self._holders(o.new_email) if r.id not in own]
        free = []
        for target in pending:
            if self.config.email_field not in target.fields:
                free.append(target)
                continue
            if held:
                self.review.append(ReviewItem(
                    email=o.email, reason=ReviewReason.EMAIL_TAKEN, rows=o.rows,
                    sobject=SObject(target.record.sobject), record_id=target.record.id,
                    detail=f"{o.new_email} is already held by "
                           + ", ".join(f"{r.sobject} {r.id}" for r in held)
                           + f"; {o.kind} not written to {target.record.sobject} {target.record.id}"))
            else:
                free.append(target)
        return free

    def _update(self, o: Outcome, t: _Target) -> Change:
        sobject = SObject(t.record.sobject)
        return Change(change_id=f"{sobject}:{t.record.id}", action=Action.UPDATE, sobject=sobject,
                      record_id=t.record.id, ref=None, fields=dict(sorted(t.fields.items())),
                      reasons=tuple(t.reasons), rows=o.rows, email=o.email)

    # -- new contacts ---------------------------------------------------------------------

    def _new_contact(self, o: Outcome) -> None:
        c = self.config
        existing = self._choose(SObject.CONTACT, o.email)
        if existing is not None:
            self._unchanged(o, existing[0], "a Contact with this e-mail already exists; not created")
            return
        if o.multipub_id:
            self.skipped.append(Skipped(email=o.email, sobject=SObject.CONTACT, record_id=None,
                                        reason=SkipReason.MULTIPUB_CONTACT, detail=MULTIPUB_DETAIL))
            return
        if not self.allow_create:
            self.skipped.append(Skipped(email=o.email, sobject=SObject.CONTACT, record_id=None,
                                        reason=SkipReason.CREATE_DISABLED,
                                        detail="new_contact is only created with --allow-create"))
            return
        leads = sorted(r.id for r in self._find(SObject.LEAD, o.email))
        if leads:
            # The org's standard Contact duplicate rule matches Leads: the create would be
            # refused (DUPLICATES_DETECTED), so it is not planned.
            self.review.append(ReviewItem(
                email=o.email, reason=ReviewReason.EMAIL_TAKEN, rows=o.rows, sobject=SObject.LEAD,
                record_id=leads[0],
                detail=f"{o.email} is already held by " + ", ".join(f"Lead {i}" for i in leads)
                       + "; the org's duplicate rules (Contacts match Leads) would refuse a new Contact: "
                       "convert the Lead, or create the Contact by hand; Contact not created"))
            return
        others = sorted(self.claims.get(o.email, set()) - {o.email})
        if others:
            self.review.append(ReviewItem(
                email=o.email, reason=ReviewReason.EMAIL_TAKEN, rows=o.rows,
                detail=f"{o.email} is also claimed as a new address in this input by {', '.join(others)}; "
                       "Contact not created"))
            return
        reasons = [f"outcome new_contact → create Contact {o.email}"]
        key = norm_name(o.organization)
        matches = self.accounts.get(key)
        if matches:
            account, why = choose_account(matches)
            account_id = account.id
            reasons.append(why or f"Account {account.id} ({account.name}) found by name")
        else:
            ref = f"{SObject.ACCOUNT}:{key}"
            pending = self.account_creates.setdefault(key, _AccountCreate(name=" ".join(o.organization.split())))
            pending.emails.append(o.email)
            pending.rows.extend(o.rows)
            account_id = pointer(ref)
            reasons.append(f"no Account named {pending.name!r}: created by this plan ({ref})")
        values = {c.email_field: o.email, "FirstName": o.first_name, "LastName": o.last_name,
                  c.title_field: o.title, "AccountId": account_id, c.contact_status_field: c.contact_active}
        fields = {name: FieldChange(before=None, after=value)
                  for name, value in sorted(values.items()) if value}
        ref = f"{SObject.CONTACT}:{o.email}"
        self.contact_creates.append(Change(
            change_id=ref, action=Action.CREATE, sobject=SObject.CONTACT, record_id=None, ref=ref,
            fields=fields, reasons=tuple(reasons), rows=o.rows, email=o.email))

    def _account_changes(self) -> list[Change]:
        changes = []
        for key in sorted(self.account_creates):
            pending = self.account_creates[key]
            ref = f"{SObject.ACCOUNT}:{key}"
            changes.append(Change(
                change_id=ref, action=Action.CREATE, sobject=SObject.ACCOUNT, record_id=None, ref=ref,
                fields={self.config.account_name_field: FieldChange(before=None, after=pending.name)},
                reasons=(f"no Account named {pending.name!r} in the org; needed by new Contact(s) "
                         + ", ".join(sorted(pending.emails)),),
                rows=tuple(sorted(pending.rows, key=_row_key)), email=""))
        return changes


def _row_key(row: RowRef) -> tuple[str, int]:
    return (row.file, row.line)


def _describe(t: _Target) -> str:
    changes = ", ".join(f"{name} {fc.before!r} → {fc.after!r}" for name, fc in sorted(t.fields.items()))
    return f"{t.record.sobject} {t.record.id} ({changes})"
