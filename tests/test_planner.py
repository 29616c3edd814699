"""The planner's rules, one behaviour a test (SPEC §2).

``simulate_apply`` (also used by the scenario and property tests) plays a
plan's changes onto a snapshot the way Salesforce would, so that "planning
after apply gives no changes" can be checked without an org.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from reconcile.config import Config
from reconcile.model import (
    AccountInfo,
    Cupola,
    DecidedBy,
    OrgInfo,
    OrgRecord,
    Outcome,
    OutcomeKind,
    OutcomeSet,
    ReviewReason,
    RowRef,
    SkipReason,
    Snapshot,
    SObject,
)
from reconcile.plan import plain
from reconcile.planner import MULTIPUB_DETAIL, build_plan

ORG = OrgInfo(instance_url="https://example.my.salesforce.com", org_id="00D000000000001EAA", api_version="61.0")
APPLIED_AT = "2099-01-01T00:00:00.000+0000"
CONFIG = Config()


def simulate_apply(snapshot: Snapshot, changes: Iterable[Any]) -> Snapshot:
    """The snapshot after every change was applied (creates get fresh ids, stamps move)."""
    records = {r.id: r for r in snapshot.records}
    accounts = list(snapshot.accounts)
    refs: dict[str, str] = {}
    for n, change in enumerate(plain(list(changes))):
        after = {name: fc["after"] for name, fc in change["fields"].items()}
        after = {k: refs.get(v[2:-1], v) if isinstance(v, str) and v.startswith("@{") else v
                 for k, v in after.items()}
        stamps = {"LastModifiedDate": APPLIED_AT, "SystemModstamp": APPLIED_AT}
        if change["action"] == "create":
            new_id = f"NEW{n:015d}"
            refs[change["ref"]] = new_id
            if change["sobject"] == "Account":
                accounts.append(AccountInfo(id=new_id, name=after["Name"], contact_count=0,
                                            last_modified=APPLIED_AT, system_modstamp=APPLIED_AT))
            else:
                records[new_id] = OrgRecord(sobject=SObject(change["sobject"]), id=new_id,
                                            fields={"Id": new_id, **after, **stamps})
        elif change["action"] == "update":
            old = records[change["record_id"]]
            records[old.id] = replace(old, fields={**old.fields, **after, **stamps})
        else:
            records.pop(change["record_id"], None)
    return replace(snapshot, records=tuple(records.values()), accounts=tuple(accounts))


def contact(id: str, email: str, **fields: Any) -> OrgRecord:
    base = {"Id": id, "Email": email, "LastName": "Smith", "Title": "Engineer", "Contact_Status__c": "Active",
            "LastModifiedDate": "2026-01-05T10:00:00.000+0000", "SystemModstamp": "2026-01-05T10:00:00.000+0000"}
    return OrgRecord(sobject=SObject.CONTACT, id=id, fields={**base, **fields})


def lead(id: str, email: str, **fields: Any) -> OrgRecord:
    base = {"Id": id, "Email": email, "LastName": "Smith", "Title": "Engineer", "Status": "Working - Contacted",
            "Company": "Acme", "LastModifiedDate": "2026-01-05T10:00:00.000+0000",
            "SystemModstamp": "2026-01-05T10:00:00.000+0000"}
    return OrgRecord(sobject=SObject.LEAD, id=id, fields={**base, **fields})


def outcome(email: str, kind: str, **kw: Any) -> Outcome:
    row = RowRef(file="outcomes.csv", line=2, outcome=kind)
    return Outcome(email=email, kind=OutcomeKind(kind), rows=(row,), **kw)


def plan(outcomes: Iterable[Outcome], records: Iterable[OrgRecord] = (), accounts: Iterable[AccountInfo] = (), *,
         allow_create: bool = False, config: Config = CONFIG, conflicts=()):
    snapshot = Snapshot(org=ORG, records=tuple(records), accounts=tuple(accounts))
    return build_plan(OutcomeSet(outcomes=tuple(outcomes), conflicts=tuple(conflicts), inputs=()), snapshot,
                      config, allow_create=allow_create)


def fields_of(body) -> dict[str, dict[str, Any]]:
    return {c.change_id: {k: (v.before, v.after) for k, v in c.fields.items()} for c in body.changes}


def test_inactive_writes_contact_status_field_and_lead_status():
    body = plan([outcome("a@x.com", "inactive")], [contact("003A", "a@x.com"), lead("00QA", "A@X.com")])
    assert fields_of(body) == {"Contact:003A": {"Contact_Status__c": ("Active", "Inactive")},
                               "Lead:00QA": {"Status": ("Working - Contacted", "Inactive")}}
    assert body.changes[0].reasons[0] == "outcome inactive → Contact_Status__c = Inactive"


def test_field_names_and_values_come_from_config():
    config = Config(contact_status_field="Status__c", contact_inactive="Gone", lead_inactive="Dead")
    body = plan([outcome("a@x.com", "inactive")], [contact("003A", "a@x.com", Status__c="Here"),
                                                    lead("00QA", "a@x.com")], config=config)
    assert fields_of(body) == {"Contact:003A": {"Status__c": ("Here", "Gone")},
                               "Lead:00QA": {"Status": ("Working - Contacted", "Dead")}}


def test_reactivate_leaves_a_working_lead_alone():
    body = plan([outcome("a@x.com", "reactivate")], [lead("00QA", "a@x.com", Status="Working - Contacted")])
    assert body.changes == ()
    assert body.unchanged[0].record_id == "00QA"
    assert "already active" in body.unchanged[0].detail


def test_reactivate_moves_an_inactive_or_empty_lead_to_open():
    body = plan([outcome("a@x.com", "reactivate"), outcome("b@x.com", "reactivate")],
                [lead("00QA", "a@x.com", Status="Disqualified"), lead("00QB", "b@x.com", Status=None)])
    assert fields_of(body) == {"Lead:00QA": {"Status": ("Disqualified", "Open - Not Contacted")},
                               "Lead:00QB": {"Status": (None, "Open - Not Contacted")}}


def test_multipub_contact_is_skipped_but_its_lead_is_written():
    body = plan([outcome("a@x.com", "inactive", multipub_id="MP1")],
                [contact("003A", "a@x.com"), lead("00QA", "a@x.com")])
    assert [c.change_id for c in body.changes] == ["Lead:00QA"]
    assert [(s.reason, s.record_id, s.detail) for s in body.skipped] == [
        (SkipReason.MULTIPUB_CONTACT, "003A", MULTIPUB_DETAIL)]
    assert [(h.file, h.contact_ids) for h in body.handoff] == [("inactive_people", ("003A",))]


def test_multipub_email_change_goes_to_marketing_hand_off():
    body = plan([outcome("a@x.com", "email_change", new_email="a@y.com", multipub_id="MP1",
                         cupola_status=Cupola.ACTIVE)], [contact("003A", "a@x.com")])
    assert body.changes == () and body.review == ()
    assert [(h.file, h.new_email) for h in body.handoff] == [("email_update_requests", "a@y.com")]


def test_active_only_gate_sends_updates_to_review():
    records = [contact("003A", "a@x.com"), contact("003B", "b@x.com")]
    body = plan([outcome("a@x.com", "title_change", new_title="CTO", cupola_status=Cupola.INACTIVE),
                 outcome("b@x.com", "title_change", new_title="CTO")], records)
    assert body.changes == ()
    assert [(r.email, r.reason) for r in body.review] == [("a@x.com", ReviewReason.UPDATE_ON_INACTIVE),
                                                          ("b@x.com", ReviewReason.ACTIVE_NEW_CONTACT)]


def test_status_flips_are_not_gated_by_cupola():
    body = plan([outcome("a@x.com", "inactive", cupola_status=Cupola.INACTIVE)], [contact("003A", "a@x.com")])
    assert [c.change_id for c in body.changes] == ["Contact:003A"]


def test_gate_does_not_fire_when_nothing_would_be_written():
    body = plan([outcome("a@x.com", "title_change", new_title="Engineer")], [contact("003A", "a@x.com")])
    assert body.review == () and body.changes == ()
    assert body.unchanged[0].detail == "Title is already Engineer"


def test_duplicates_compare_instants_not_strings():
    # 09:30-02:00 is 11:30Z, the latest instant, although its text sorts first.
    records = [contact("003A", "a@x.com", LastModifiedDate="2026-01-05T11:30:00.000+0100"),
               contact("003B", "a@x.com", LastModifiedDate="2026-01-05T09:30:00.000-0200"),
               contact("003C", "a@x.com", LastModifiedDate="2026-01-05T10:00:00.000+0000")]
    body = plan([outcome("a@x.com", "inactive")], records)
    assert [c.record_id for c in body.changes] == ["003B"]
    group = body.duplicates[0]
    assert group.decided_by is DecidedBy.LAST_MODIFIED
    assert [o.id for o in group.others] == ["003A", "003C"]
    assert "chosen from 3 duplicates by LastModifiedDate" in body.changes[0].reasons


def test_duplicate_ties_fall_to_system_modstamp_then_id():
    same = "2026-01-05T10:00:00.000+0000"
    by_stamp = plan([outcome("a@x.com", "inactive")],
                    [contact("003A", "a@x.com", SystemModstamp="2026-02-01T00:00:00.000+0000"),
                     contact("003B", "a@x.com", SystemModstamp=same)])
    assert (by_stamp.changes[0].record_id, by_stamp.duplicates[0].decided_by) == ("003A", DecidedBy.SYSTEM_MODSTAMP)
    by_id = plan([outcome("a@x.com", "inactive")], [contact("003A", "a@x.com"), contact("003B", "a@x.com")])
    assert (by_id.changes[0].record_id, by_id.duplicates[0].decided_by) == ("003B", DecidedBy.ID)


def test_email_taken_by_a_record_of_either_type_sends_every_record_of_the_person_to_review():
    """The org's standard duplicate rules match Contacts and Leads across both objects
    (https://help.salesforce.com/s/articleView?id=sales.duplicate_rules_standard_lead_rule.htm):
    a Contact holding the address would refuse the Lead's move too."""
    body = plan([outcome("a@x.com", "email_change", new_email="b@x.com", cupola_status=Cupola.ACTIVE)],
                [contact("003A", "a@x.com"), lead("00QA", "a@x.com"), contact("003B", "B@x.com")])
    assert body.changes == ()
    assert [(r.reason, r.sobject, r.record_id) for r in body.review] == [
        (ReviewReason.EMAIL_TAKEN, SObject.CONTACT, "003A"), (ReviewReason.EMAIL_TAKEN, SObject.LEAD, "00QA")]
    assert all("already held by Contact 003B" in r.detail for r in body.review)


def test_a_lead_holding_the_new_address_keeps_a_contacts_move_out_of_the_changes():
    """The cross-object clash of issue 10: a Contact moving to an address a Lead holds."""
    body = plan([outcome("a@x.com", "email_change", new_email="b@x.com", new_title="CTO",
                         cupola_status=Cupola.ACTIVE)],
                [contact("003A", "a@x.com"), lead("00QB", "b@x.com"), lead("00QC", "B@X.com")])
    assert body.changes == ()
    [item] = body.review
    assert (item.reason, item.record_id) == (ReviewReason.EMAIL_TAKEN, "003A")
    assert item.detail == ("b@x.com is already held by Lead 00QB, Lead 00QC; "
                           "email_change not written to Contact 003A")


def test_the_persons_own_contact_and_lead_moving_together_are_not_a_clash():
    """Both records of one person move to the new address in the same plan: neither holds it
    today, and the other one moving with it is the same person."""
    body = plan([outcome("a@x.com", "email_change", new_email="b@x.com", cupola_status=Cupola.ACTIVE)],
                [contact("003A", "a@x.com"), lead("00QA", "a@x.com")])
    assert [c.change_id for c in body.changes] == ["Contact:003A", "Lead:00QA"]
    assert body.review == ()


def test_two_people_moving_to_one_address_both_go_to_review():
    body = plan([outcome("a@x.com", "email_change", new_email="n@x.com", cupola_status=Cupola.ACTIVE),
                 outcome("b@x.com", "replacement", new_email="n@x.com", new_title="CTO", cupola_status=Cupola.ACTIVE)],
                [contact("003A", "a@x.com"), lead("00QB", "b@x.com")])
    assert body.changes == ()
    assert [(r.email, r.reason) for r in body.review] == [("a@x.com", ReviewReason.EMAIL_TAKEN),
                                                          ("b@x.com", ReviewReason.EMAIL_TAKEN)]


def test_not_found_is_skipped_without_sobject():
    body = plan([outcome("a@x.com", "inactive")])
    assert [(s.reason, s.sobject, s.record_id) for s in body.skipped] == [(SkipReason.NOT_FOUND, None, None)]


def test_new_contact_needs_allow_create():
    o = outcome("n@x.com", "new_contact", last_name="New", organization="Acme")
    assert [s.reason for s in plan([o]).skipped] == [SkipReason.CREATE_DISABLED]


def test_new_contact_never_duplicates_an_existing_contact():
    o = outcome("n@x.com", "new_contact", last_name="New", organization="Acme")
    body = plan([o], [contact("003N", "N@x.com")], allow_create=True)
    assert body.changes == ()
    assert "already exists" in body.unchanged[0].detail


def test_new_contact_whose_address_a_lead_holds_goes_to_review_not_to_the_org():
    """The Standard Contact Duplicate Rule matches Leads that duplicate Contacts and alerts on
    create, which the API answers with DUPLICATES_DETECTED
    (https://help.salesforce.com/apex/HTViewHelpDoc?id=sales.duplicate_rules_standard_contact_rule.htm)."""
    o = outcome("n@x.com", "new_contact", last_name="New", organization="Acme")
    body = plan([o], [lead("00QN", "N@x.com")], allow_create=True)
    assert body.changes == ()
    [item] = body.review
    assert (item.reason, item.sobject, item.record_id) == (ReviewReason.EMAIL_TAKEN, SObject.LEAD, "00QN")
    assert "already held by Lead 00QN" in item.detail and "Contact not created" in item.detail
    # without --allow-create nothing would be created anyway: skipped as before
    assert [s.reason for s in plan([o], [lead("00QN", "n@x.com")]).skipped] == [SkipReason.CREATE_DISABLED]


def test_new_contact_joins_the_account_with_most_contacts():
    accounts = [AccountInfo("001A", "Acme", 3, "2026-05-01T00:00:00.000+0000", "2026-05-01T00:00:00.000+0000"),
                AccountInfo("001B", "ACME ", 7, "2026-01-01T00:00:00.000+0000", "2026-01-01T00:00:00.000+0000")]
    body = plan([outcome("n@x.com", "new_contact", last_name="New", organization="acme")], accounts=accounts,
                allow_create=True)
    (change,) = body.changes
    assert change.change_id == "Contact:n@x.com" and change.record_id is None
    assert {k: v.after for k, v in change.fields.items()} == {
        "AccountId": "001B", "Contact_Status__c": "Active", "Email": "n@x.com", "LastName": "New"}


def test_new_accounts_are_created_once_and_referenced():
    body = plan([outcome("a@g.com", "new_contact", last_name="A", organization="Globex"),
                 outcome("b@g.com", "new_contact", last_name="B", organization=" globex", title="CFO")],
                allow_create=True)
    assert [c.change_id for c in body.changes] == ["Account:globex", "Contact:a@g.com", "Contact:b@g.com"]
    assert body.changes[0].fields["Name"].after == "Globex"
    assert {c.fields["AccountId"].after for c in body.changes[1:]} == {"@{Account:globex}"}


def test_conflicts_go_to_review():
    from reconcile.model import Conflict
    rows = (RowRef("o.csv", 2, "inactive"), RowRef("o.csv", 3, "reactivate"))
    body = plan([], [contact("003A", "a@x.com")],
                conflicts=[Conflict("a@x.com", ("inactive", "reactivate"), rows, ("inactive (o.csv:2)",
                                                                                  "reactivate (o.csv:3)"))])
    assert body.changes == ()
    assert [(r.reason, r.rows) for r in body.review] == [(ReviewReason.CONFLICTING_OUTCOMES, rows)]


def test_changes_are_ordered_for_apply_and_never_blank():
    body = plan([outcome("z@x.com", "inactive"), outcome("a@x.com", "inactive"),
                 outcome("m@x.com", "new_contact", last_name="M", organization="New Co")],
                [lead("00QZ", "z@x.com"), contact("003Z", "z@x.com"), contact("003A", "a@x.com")],
                allow_create=True)
    assert [c.change_id for c in body.changes] == [
        "Account:new co", "Contact:m@x.com", "Contact:003A", "Contact:003Z", "Lead:00QZ"]
    assert all(fc.after not in (None, "") for c in body.changes for fc in c.fields.values())


def test_prior_state_holds_every_record_read():
    body = plan([outcome("a@x.com", "inactive")], [contact("003A", "a@x.com"), contact("003Q", "q@x.com")],
                [AccountInfo("001A", "Acme", 1, "", "")])
    assert set(body.prior_state) == {"003A", "003Q", "001A"}
    assert body.prior_state["003Q"]["sobject"] == "Contact"


def test_planning_after_apply_is_empty():
    outcomes = [outcome("a@x.com", "replacement", new_email="a2@x.com", new_title="CTO", cupola_status=Cupola.ACTIVE),
                outcome("b@x.com", "reactivate"),
                outcome("n@x.com", "new_contact", last_name="N", organization="Initech")]
    records = [contact("003A", "a@x.com"), lead("00QB", "b@x.com", Status="Inactive")]
    first = plan(outcomes, records, allow_create=True)
    assert len(first.changes) == 4
    after = simulate_apply(Snapshot(org=ORG, records=tuple(records)), first.changes)
    assert plan(outcomes, after.records, after.accounts, allow_create=True).changes == ()


def test_plan_is_a_mapping_of_plain_values():
    body = plan([outcome("a@x.com", "inactive")], [contact("003A", "a@x.com")])
    doc_changes = plain(body.changes)
    assert doc_changes[0]["sobject"] == "Contact" and isinstance(doc_changes[0]["fields"], Mapping)


class _CountingReader:
    """A read-only port that answers from lists and records every request."""

    def __init__(self, contacts=(), leads=(), accounts=(), counts=None):
        self.rows = {"Contact": list(contacts), "Lead": list(leads), "Account": list(accounts)}
        self.counts = counts or {}
        self.requests: list[tuple[str, tuple[str, ...]]] = []

    def org_info(self):
        self.requests.append(("org", ()))
        return ORG

    def query_in(self, sobject, field, values, fields):
        values = tuple(values)
        self.requests.append((sobject, values))
        wanted = {v.casefold() for v in values}
        return [r for r in self.rows[sobject] if str(r.get(field) or "").casefold() in wanted]

    def count_contacts_by_account(self, ids):
        ids = tuple(ids)
        self.requests.append(("count", ids))
        return {i: self.counts.get(i, 0) for i in ids}


def test_snapshot_reads_only_new_addresses_that_may_be_written():
    from reconcile.snapshot import take_snapshot

    reader = _CountingReader()
    outcomes = OutcomeSet(outcomes=(
        outcome("a@x.com", "email_change", new_email="a2@x.com", cupola_status=Cupola.ACTIVE),
        outcome("b@x.com", "email_change", new_email="b2@x.com", cupola_status=Cupola.INACTIVE),
        outcome("c@x.com", "replacement", new_email="c2@x.com"),
    ), conflicts=(), inputs=())
    take_snapshot(reader, outcomes, CONFIG, allow_create=False)
    assert [r for r in reader.requests if r[0] == "Contact"] == [
        ("Contact", ("a2@x.com", "a@x.com", "b@x.com", "c@x.com"))]


def test_snapshot_counts_contacts_only_where_account_names_are_shared():
    from reconcile.snapshot import take_snapshot

    stamp = "2026-01-05T10:00:00.000+0000"
    accounts = [{"Id": i, "Name": n, "LastModifiedDate": stamp, "SystemModstamp": stamp}
                for i, n in (("001A", "Acme"), ("001B", "Globex"), ("001C", "GLOBEX"))]
    news = OutcomeSet(outcomes=tuple(outcome(f"{o.lower()}@x.com", "new_contact", last_name="S", organization=o)
                                     for o in ("Acme", "Globex")), conflicts=(), inputs=())
    reader = _CountingReader(accounts=accounts[:1])
    snapshot = take_snapshot(reader, news, CONFIG, allow_create=True)
    assert [r[0] for r in reader.requests] == ["org", "Contact", "Lead", "Account"]  # no count for one Acme
    body = build_plan(news, snapshot, CONFIG, allow_create=True)
    assert body.prior_state["001A"]["fields"] == {"Id": "001A", "Name": "Acme", "LastModifiedDate": stamp,
                                                  "SystemModstamp": stamp}

    reader = _CountingReader(accounts=accounts, counts={"001C": 3})
    snapshot = take_snapshot(reader, news, CONFIG, allow_create=True)
    assert reader.requests[-1] == ("count", ("001B", "001C"))
    body = build_plan(news, snapshot, CONFIG, allow_create=True)
    (globex,) = [c for c in body.changes if c.email == "globex@x.com"]
    assert globex.fields["AccountId"].after == "001C"


def test_snapshot_finds_an_account_whose_name_differs_only_in_inner_spaces():
    # The planner matches "Acme  Corp" to the org's "Acme Corp"; the snapshot must read it,
    # or the plan creates a second Account that apply then refuses as drift.
    from reconcile.snapshot import take_snapshot

    stamp = "2026-01-05T10:00:00.000+0000"
    reader = _CountingReader(accounts=[{"Id": "001A", "Name": "Acme Corp", "LastModifiedDate": stamp,
                                        "SystemModstamp": stamp}])
    news = OutcomeSet(outcomes=(outcome("n@x.com", "new_contact", last_name="N", organization="Acme  Corp"),),
                      conflicts=(), inputs=())
    snapshot = take_snapshot(reader, news, CONFIG, allow_create=True)
    body = build_plan(news, snapshot, CONFIG, allow_create=True)
    assert [(c.sobject, c.action) for c in body.changes] == [("Contact", "create")]
    assert body.changes[0].fields["AccountId"].after == "001A"
