"""Invariants of the planner over generated orgs and outcomes (hypothesis)."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planner import ORG, simulate_apply

from reconcile.config import Config
from reconcile.model import AccountInfo, Cupola, OrgRecord, Outcome, OutcomeKind, OutcomeSet, RowRef, Snapshot, SObject
from reconcile.plan import plain
from reconcile.planner import build_plan

CONFIG = Config()
PEOPLE = ["ann@x.com", "bob@x.com", "cat@y.org", "dan@y.org", "o'neil@z.net"]
ADDRESSES = PEOPLE + ["new@x.com", "other@z.net"]
STAMPS = ["2026-01-05T10:00:00.000+0000", "2026-01-05T11:00:00.000+0100", "2026-02-01T00:00:00.000+0000", None]
TITLES = ["Engineer", "CTO", "", None]


def _case(email: str, upper: bool) -> str:
    return email.upper() if upper else email


@st.composite
def records(draw) -> list[OrgRecord]:
    out = []
    for n in range(draw(st.integers(0, 9))):
        sobject = draw(st.sampled_from([SObject.CONTACT, SObject.LEAD]))
        record_id = f"{'003' if sobject is SObject.CONTACT else '00Q'}{n:03d}"
        fields = {"Id": record_id, "Email": _case(draw(st.sampled_from(ADDRESSES)), draw(st.booleans())),
                  "Title": draw(st.sampled_from(TITLES)), "LastName": "L",
                  "LastModifiedDate": draw(st.sampled_from(STAMPS)), "SystemModstamp": draw(st.sampled_from(STAMPS))}
        if sobject is SObject.CONTACT:
            fields["Contact_Status__c"] = draw(st.sampled_from(["Active", "Inactive", None]))
        else:
            fields["Status"] = draw(st.sampled_from(["Open - Not Contacted", "Working", "Inactive", "Disqualified", ""]))
        out.append(OrgRecord(sobject=sobject, id=record_id, fields=fields))
    return out


@st.composite
def outcomes(draw) -> list[Outcome]:
    out = []
    for line, email in enumerate(draw(st.lists(st.sampled_from(PEOPLE), unique=True)), start=2):
        kind = draw(st.sampled_from(list(OutcomeKind)))
        new_email = draw(st.sampled_from(ADDRESSES)) if kind in (OutcomeKind.EMAIL_CHANGE, OutcomeKind.REPLACEMENT) else ""
        new_title = draw(st.sampled_from(["CTO", "VP"])) if kind is OutcomeKind.TITLE_CHANGE else ""
        if kind is OutcomeKind.REPLACEMENT:
            new_title = draw(st.sampled_from(["", "CTO"])) if new_email else "CTO"
        extra = {}
        if kind is OutcomeKind.NEW_CONTACT:
            extra = {"last_name": "N", "organization": draw(st.sampled_from(["Acme", "Globex", "ACME "])),
                     "title": draw(st.sampled_from(["", "Buyer"]))}
        out.append(Outcome(email=email, kind=kind, new_email=new_email, new_title=new_title,
                           multipub_id=draw(st.sampled_from(["", "", "MP1"])),
                           cupola_status=draw(st.sampled_from(list(Cupola))),
                           rows=(RowRef(file="o.csv", line=line, outcome=kind.value),), **extra))
    return out


ACCOUNTS = (AccountInfo("001A", "Acme", 2, STAMPS[0], STAMPS[0]), AccountInfo("001B", "acme", 2, STAMPS[2], STAMPS[2]))


def _plan(os_: list[Outcome], recs: list[OrgRecord], allow_create: bool, accounts=ACCOUNTS):
    snapshot = Snapshot(org=ORG, records=tuple(recs), accounts=tuple(accounts))
    return snapshot, build_plan(OutcomeSet(outcomes=tuple(os_), conflicts=(), inputs=()), snapshot, CONFIG,
                                allow_create=allow_create)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(outcomes(), records(), st.booleans())
def test_planner_invariants(os_, recs, allow_create):
    snapshot, body = _plan(os_, recs, allow_create)
    by_email = {o.email: o for o in os_}
    by_id = {r.id: r for r in recs}
    multipub = {e for e, o in by_email.items() if o.multipub_id}

    # at most one change per record, and per object and address written
    assert len({c.change_id for c in body.changes}) == len(body.changes)
    assert all(n == 1 for n in Counter(c.record_id for c in body.changes if c.record_id).values())
    written = Counter((c.sobject, c.fields["Email"].after.lower()) for c in body.changes if "Email" in c.fields)
    assert all(n == 1 for n in written.values())

    for change in body.changes:
        # never a blank value
        assert all(fc.after not in (None, "") and str(fc.after).strip() for fc in change.fields.values())
        if change.sobject is SObject.ACCOUNT:
            continue
        person = by_email[change.email]
        # never a Multipub person's Contact
        assert not (change.sobject is SObject.CONTACT and change.email in multipub)
        if change.record_id:
            record = by_id[change.record_id]
            assert record.email == change.email
            # only the fields the outcome owns
            assert set(change.fields) <= {"Email", "Title", "Contact_Status__c", "Status"}
            # e-mail/title updates only with an active CUPOLA row
            if {"Email", "Title"} & set(change.fields):
                assert person.cupola_status is Cupola.ACTIVE
            # no e-mail moved onto an address another record of that type holds
            if "Email" in change.fields:
                new = change.fields["Email"].after
                assert not [r for r in recs if r.sobject == change.sobject and r.email == new and r.id != record.id]
            # each field's before is the record's value
            assert all(fc.before == record.fields.get(name) for name, fc in change.fields.items())
        else:
            assert allow_create and person.kind is OutcomeKind.NEW_CONTACT
            assert not [r for r in recs if r.sobject is SObject.CONTACT and r.email == change.email]


@SETTINGS
@given(outcomes(), records(), st.booleans(), st.randoms(use_true_random=False))
def test_planner_is_deterministic_and_idempotent(os_, recs, allow_create, rnd):
    snapshot, body = _plan(os_, recs, allow_create)
    shuffled_recs, shuffled_os = list(recs), list(os_)
    rnd.shuffle(shuffled_recs)
    rnd.shuffle(shuffled_os)
    _, again = _plan(shuffled_os, shuffled_recs, allow_create, ACCOUNTS[::-1])
    assert plain(again) == plain(body)

    after = simulate_apply(snapshot, body.changes)
    _, replanned = _plan(os_, list(after.records), allow_create, after.accounts)
    assert replanned.changes == ()
