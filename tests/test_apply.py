"""apply_plan against an in-memory Salesforce: order, drift, failures, stops, resume."""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from reconcile.apply import DEPENDENCY_FAILED, ApplyReport, apply_plan
from reconcile.archive import check_seal
from reconcile.config import Config
from reconcile.errors import ApiLimitExceeded, DriftError, LockedError, OutcomeUnknown, SessionExpired, TransientError
from reconcile.journal import read_events, replay
from reconcile.model import ApiUsage, ChangeStatus, RecordError, SaveResult

CONFIG = replace(Config(), backoff_seconds=0.0)
PREFIX = {"Account": "001", "Contact": "003", "Lead": "00Q"}


# -- an in-memory org -----------------------------------------------------------------------

class FakeSalesforce:
    """Records in a dict; every method is one request; faults are injected per test."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.sobject_of: dict[str, str] = {}
        self.calls = 0
        self.log: list[tuple[str, str, int]] = []        # (method, sobject, records)
        self.writes: Counter[str] = Counter()             # record id -> writes that reached it
        self.usage: ApiUsage | None = None
        self.usage_step = 0                               # others' calls between two of ours
        self.refuse: dict[int, Exception] = {}            # write request number -> refused with
        self.lose_answer: set[int] = set()                # write request number -> done, answer lost
        self.crash_after: set[int] = set()                # write request number -> done, then "killed"
        self.locked: dict[str, int] = {}                  # id/key -> UNABLE_TO_LOCK_ROW this many times
        self.invalid: dict[str, tuple[str, str]] = {}     # id/key -> (statusCode, message)
        self.write_requests = 0
        self._seq = 0

    def insert(self, sobject: str, **fields: Any) -> str:
        self._seq += 1
        record_id = f"{PREFIX[sobject]}{self._seq:012d}AAA"   # 18 characters, the first 15 unique
        self.records[record_id] = {"Id": record_id, **fields}
        self.sobject_of[record_id] = sobject
        return record_id

    def _tick(self, method: str, sobject: str, n: int) -> None:
        self.calls += 1
        self.log.append((method, sobject, n))
        if self.usage is not None:
            self.usage = ApiUsage(self.usage.used + 1 + self.usage_step, self.usage.total)

    def retrieve(self, sobject, ids, fields):
        assert len(ids) <= 2000
        self._tick("retrieve", sobject, len(ids))
        out = []
        for record_id in ids:
            rec = self.records.get(record_id)
            out.append(None if rec is None or self.sobject_of[record_id] != sobject
                       else {f: rec.get(f) for f in fields})
        return out

    def query_in(self, sobject, field, values, fields):
        self._tick("query", sobject, 0)
        wanted = {v.lower() for v in values}
        return [{f: r.get(f) for f in fields} for i, r in self.records.items()
                if self.sobject_of[i] == sobject and str(r.get(field) or "").lower() in wanted]

    def count_contacts_by_account(self, account_ids):
        self._tick("count", "Contact", 0)
        counts = {a: 0 for a in account_ids}
        for i, r in self.records.items():
            if self.sobject_of[i] == "Contact" and r.get("AccountId") in counts:
                counts[r["AccountId"]] += 1
        return counts

    def _write(self, method: str, sobject: str, n: int, work):
        assert n <= 200
        self.write_requests += 1
        number = self.write_requests
        self._tick(method, sobject, n)
        if number in self.refuse:
            raise self.refuse[number]
        results = work()
        if number in self.lose_answer:
            raise OutcomeUnknown("the connection dropped after the request was sent")
        if number in self.crash_after:
            raise KeyboardInterrupt("killed")
        return results

    def _item_fault(self, key: str) -> SaveResult | None:
        if self.locked.get(key, 0) > 0:
            self.locked[key] -= 1
            return SaveResult(None, False,
                              (RecordError("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record"),))
        if key in self.invalid:
            code, message = self.invalid[key]
            return SaveResult(None, False, (RecordError(code, message),))
        return None

    def create(self, sobject, records):
        def work():
            out = []
            for rec in records:
                fault = self._item_fault(rec.get("Email") or rec.get("Name"))
                if fault:
                    out.append(fault)
                    continue
                # CreatedDate: set by the org on create, by its clock (system fields:
                # https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/system_fields.htm)
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
                record_id = self.insert(sobject, **rec, CreatedDate=stamp)
                self.writes[record_id] += 1
                out.append(SaveResult(record_id, True, created=True))
            return out
        return self._write("create", sobject, len(records), work)

    def update(self, sobject, records):
        def work():
            out = []
            for rec in records:
                record_id = rec["Id"]
                if record_id not in self.records:
                    out.append(SaveResult(record_id, False, (RecordError("ENTITY_IS_DELETED", "entity is deleted"),)))
                    continue
                fault = self._item_fault(record_id)
                if fault:
                    out.append(replace(fault, id=record_id))
                    continue
                self.records[record_id].update({k: v for k, v in rec.items() if k != "Id"})
                self.writes[record_id] += 1
                out.append(SaveResult(record_id, True))
            return out
        return self._write("update", sobject, len(records), work)

    def delete(self, ids):
        def work():
            out = []
            for record_id in ids:
                if record_id not in self.records:
                    out.append(SaveResult(record_id, False, (RecordError("ENTITY_IS_DELETED", "entity is deleted"),)))
                    continue
                del self.records[record_id]
                self.writes[record_id] += 1
                out.append(SaveResult(record_id, True))
            return out
        return self._write("delete", "", len(ids), work)

    def requests(self, method: str) -> int:
        return sum(1 for m, _, _ in self.log if m == method)


# -- plan documents built by hand ------------------------------------------------------------

def update(sf: FakeSalesforce, record_id: str, **after: Any) -> dict[str, Any]:
    rec = sf.records[record_id]
    sobject = sf.sobject_of[record_id]
    return {"change_id": f"{sobject}:{record_id}", "action": "update", "sobject": sobject,
            "record_id": record_id, "ref": None, "email": (rec.get("Email") or "").lower(),
            "fields": {f: {"before": rec.get(f), "after": v} for f, v in after.items()}}


def create(sobject: str, key: str, **after: Any) -> dict[str, Any]:
    ref = f"{sobject}:{key}"
    return {"change_id": ref, "action": "create", "sobject": sobject, "record_id": None,
            "ref": ref, "email": (after.get("Email") or "").lower(),
            "fields": {f: {"before": None, "after": v} for f, v in after.items()}}


def delete(sf: FakeSalesforce, record_id: str, *fields: str) -> dict[str, Any]:
    rec = sf.records[record_id]
    sobject = sf.sobject_of[record_id]
    return {"change_id": f"{sobject}:{record_id}", "action": "delete", "sobject": sobject,
            "record_id": record_id, "ref": None, "email": (rec.get("Email") or "").lower(),
            "fields": {f: {"before": rec.get(f), "after": None} for f in fields}}


def make_plan(sf: FakeSalesforce, changes: list[dict[str, Any]], plan_id: str = "a" * 64) -> dict[str, Any]:
    prior = {i: {"sobject": sf.sobject_of[i], "fields": dict(r)} for i, r in sf.records.items()}
    return {"format_version": 1, "plan_id": plan_id, "kind": "apply", "created_at": "2024-05-01T00:00:00Z",
            "prior_state": prior, "changes": changes}


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plans" / ("a" * 64)
    d.mkdir(parents=True)
    return d


def run(doc, plan_dir, sf, **kw) -> ApplyReport:
    kw.setdefault("sleep", lambda s: None)
    kw.setdefault("now", lambda: "2024-05-02T10:00:00Z")
    return apply_plan(doc, plan_dir, sf, kw.pop("config", CONFIG), **kw)


def by_id(report: ApplyReport) -> dict[str, Any]:
    return {r.change_id: r for r in report.results}


def contacts(sf: FakeSalesforce, n: int, status: str = "Active") -> list[str]:
    return [sf.insert("Contact", Email=f"p{i}@example.com", LastName=f"P{i}", Contact_Status__c=status,
                      Title="Engineer") for i in range(n)]


def result_file(plan_dir: Path) -> dict[str, Any]:
    return json.loads((plan_dir / "apply.json").read_text())


# -- happy path --------------------------------------------------------------------------------

def test_apply_writes_every_change_and_records_what_it_replaced(plan_dir):
    sf = FakeSalesforce()
    c1, c2 = contacts(sf, 2)
    lead = sf.insert("Lead", Email="l@example.com", Status="Working", LastName="L")
    doc = make_plan(sf, [update(sf, c1, Contact_Status__c="Inactive"),
                         update(sf, c2, Email="new@example.com", Title="CTO"),
                         update(sf, lead, Status="Inactive")])
    progress = []
    report = run(doc, plan_dir, sf, progress=lambda d, t: progress.append((d, t)))

    assert report.finished and report.status == "applied"
    assert sf.records[c1]["Contact_Status__c"] == "Inactive"
    assert sf.records[c2]["Email"] == "new@example.com" and sf.records[c2]["Title"] == "CTO"
    assert sf.records[lead]["Status"] == "Inactive"
    assert progress[-1] == (3, 3)
    data = result_file(plan_dir)
    assert data["status"] == "applied" and data["counts"]["applied"] == 3
    check_seal(plan_dir / "apply.json", data)
    assert data["results"][1]["fields"]["Title"] == {"before": "Engineer", "replaced": "Engineer", "after": "CTO"}
    # each group read once, just before it is written: Contacts read, written; Leads read, written
    assert data["api_calls"] == sf.calls == 4
    assert [m for m, _, _ in sf.log] == ["retrieve", "update", "retrieve", "update"]
    for name in ("apply.json", "journal.jsonl"):
        assert stat.S_IMODE((plan_dir / name).stat().st_mode) == 0o600
    kinds = [e["event"] for e in read_events(plan_dir / "journal.jsonl")[0]]
    assert kinds == ["start", "drift", "send", "result", "drift", "send", "result", "finish"]
    assert not (plan_dir.parent / ".apply.lock.json").exists()


def test_thousand_updates_cost_five_writes_and_one_reread_per_object(plan_dir):
    sf = FakeSalesforce()
    ids = contacts(sf, 1000)
    doc = make_plan(sf, [update(sf, i, Contact_Status__c="Inactive") for i in ids])
    report = run(doc, plan_dir, sf)
    assert report.status == "applied"
    assert sf.requests("update") == 5
    assert sf.requests("retrieve") == 1
    assert max(n for m, _, n in sf.log if m == "update") == 200
    assert set(sf.writes.values()) == {1}


def test_creates_accounts_first_then_resolve_refs_then_updates_then_deletes(plan_dir):
    sf = FakeSalesforce()
    c1 = contacts(sf, 1)[0]
    lead = sf.insert("Lead", Email="l@example.com", Status="Working", LastName="L")
    old_contact = sf.insert("Contact", Email="old@example.com", LastName="Old")
    old_account = sf.insert("Account", Name="Old Co")
    doc = make_plan(sf, [
        delete(sf, old_account, "Name"),
        update(sf, lead, Status="Inactive"),
        create("Contact", "new@acme.com", Email="new@acme.com", LastName="New", AccountId="@{Account:acme}"),
        delete(sf, old_contact, "Email"),
        update(sf, c1, Title="CTO"),
        create("Account", "acme", Name="Acme"),
    ])
    report = run(doc, plan_dir, sf)
    assert report.status == "applied"
    writes = [(m, s) for m, s, _ in sf.log if m in ("create", "update", "delete")]
    assert writes == [("create", "Account"), ("create", "Contact"), ("update", "Lead"),
                      ("update", "Contact"), ("delete", ""), ("delete", "")]
    deletes = [e["payload"] for e in read_events(plan_dir / "journal.jsonl")[0]
               if e["event"] == "send" and e["action"] == "delete"]
    assert deletes == [[old_contact], [old_account]]
    account_id = report.created["Account:acme"]
    contact = next(r for r in sf.records.values() if r.get("Email") == "new@acme.com")
    assert contact["AccountId"] == account_id
    assert by_id(report)["Contact:new@acme.com"].record_id == contact["Id"]
    assert by_id(report)["Contact:new@acme.com"].fields["AccountId"]["after"] == account_id
    assert result_file(plan_dir)["created"] == {"Account:acme": account_id, "Contact:new@acme.com": contact["Id"]}


# -- drift ------------------------------------------------------------------------------------

def test_drift_refuses_the_whole_plan_and_writes_nothing(plan_dir):
    sf = FakeSalesforce()
    c1, c2, c3 = contacts(sf, 3)
    doc = make_plan(sf, [update(sf, c, Contact_Status__c="Inactive") for c in (c1, c2, c3)])
    sf.records[c2]["Contact_Status__c"] = "On leave"       # someone edited it after the plan
    del sf.records[c3]                                     # and someone deleted this one

    with pytest.raises(DriftError, match="2 record") as caught:
        run(doc, plan_dir, sf)
    assert sf.write_requests == 0
    report = caught.value.report
    assert not report.finished and report.status == "approved"
    drifted = {r.change_id: r for r in report.drifted}
    assert drifted[f"Contact:{c2}"].drift == {"Contact_Status__c": {"planned": "Active", "current": "On leave"}}
    # a retrieve answers null for a deleted record and for one this user may not see
    assert drifted[f"Contact:{c3}"].message == f"the Contact {c3} is deleted or not visible to this user"
    assert "--skip-drifted" in str(caught.value)
    assert not (plan_dir / "apply.json").exists()
    assert "refused" in [e["event"] for e in read_events(plan_dir / "journal.jsonl")[0]]


def test_skip_drifted_writes_the_rest_and_never_overwrites_the_edit(plan_dir):
    sf = FakeSalesforce()
    c1, c2 = contacts(sf, 2)
    doc = make_plan(sf, [update(sf, c, Contact_Status__c="Inactive") for c in (c1, c2)])
    sf.records[c2]["Contact_Status__c"] = "On leave"
    with pytest.raises(DriftError):
        run(doc, plan_dir, sf)
    report = run(doc, plan_dir, sf, skip_drifted=True)
    assert report.finished and report.status == "partially applied"
    assert sf.records[c1]["Contact_Status__c"] == "Inactive"
    assert sf.records[c2]["Contact_Status__c"] == "On leave"
    result = by_id(report)[f"Contact:{c2}"]
    assert result.status is ChangeStatus.DRIFTED
    assert result.drift == {"Contact_Status__c": {"planned": "Active", "current": "On leave"}}
    assert result_file(plan_dir)["results"][1]["drift"]["Contact_Status__c"]["current"] == "On leave"


def test_every_change_drifted_gives_failed(plan_dir):
    sf = FakeSalesforce()
    (c1,) = contacts(sf, 1)
    doc = make_plan(sf, [update(sf, c1, Title="CTO")])
    sf.records[c1]["Title"] = "CEO"
    report = run(doc, plan_dir, sf, skip_drifted=True)
    assert report.status == "failed" and sf.write_requests == 0


def test_email_compares_case_insensitively_but_other_fields_exactly(plan_dir):
    sf = FakeSalesforce()
    (c1,) = contacts(sf, 1)
    doc = make_plan(sf, [update(sf, c1, Email="x@example.com")])
    sf.records[c1]["Email"] = "P0@Example.com"
    assert run(doc, plan_dir, sf).status == "applied"

    sf2 = FakeSalesforce()
    (c2,) = contacts(sf2, 1)
    doc2 = make_plan(sf2, [update(sf2, c2, Title="CTO")], plan_id="b" * 64)
    sf2.records[c2]["Title"] = "engineer"
    d2 = plan_dir.parent / ("b" * 64)
    d2.mkdir()
    with pytest.raises(DriftError):
        run(doc2, d2, sf2)


def test_record_already_holding_the_after_values_is_skipped(plan_dir):
    sf = FakeSalesforce()
    c1, c2 = contacts(sf, 2)
    doc = make_plan(sf, [update(sf, c, Contact_Status__c="Inactive") for c in (c1, c2)])
    sf.records[c1]["Contact_Status__c"] = "Inactive"       # someone else already did it
    report = run(doc, plan_dir, sf)
    assert report.status == "applied"
    r1 = by_id(report)[f"Contact:{c1}"]
    assert r1.status is ChangeStatus.SKIPPED and r1.message == "already holds the planned values"
    assert sf.writes[c1] == 0 and sf.writes[c2] == 1


def test_a_contact_that_appeared_since_the_plan_is_create_drift(plan_dir):
    sf = FakeSalesforce()
    doc = make_plan(sf, [create("Contact", "n@x.com", Email="n@x.com", LastName="N")])
    other = sf.insert("Contact", Email="N@x.com", LastName="N")
    with pytest.raises(DriftError) as caught:
        run(doc, plan_dir, sf)
    assert caught.value.report.drifted[0].message == f"a Contact with this e-mail now exists: {other}"


def test_contact_create_fails_when_its_account_drifted(plan_dir):
    sf = FakeSalesforce()
    doc = make_plan(sf, [create("Account", "acme", Name="Acme"),
                         create("Contact", "n@acme.com", Email="n@acme.com", LastName="N",
                                AccountId="@{Account:acme}")])
    sf.insert("Account", Name="ACME")
    report = run(doc, plan_dir, sf, skip_drifted=True)
    results = by_id(report)
    assert results["Account:acme"].status is ChangeStatus.DRIFTED
    assert results["Contact:n@acme.com"].status is ChangeStatus.FAILED
    assert results["Contact:n@acme.com"].error_code == DEPENDENCY_FAILED
    assert sf.write_requests == 0 and report.status == "failed"


def test_rollback_delete_of_a_record_edited_since_is_drift(plan_dir):
    sf = FakeSalesforce()
    created = sf.insert("Contact", Email="n@x.com", LastName="N")
    doc = make_plan(sf, [delete(sf, created, "Email", "LastName")])
    sf.records[created]["LastName"] = "Changed"
    with pytest.raises(DriftError):
        run(doc, plan_dir, sf)
    assert created in sf.records


# -- item-level failures ---------------------------------------------------------------------------

def test_item_failure_keeps_salesforces_words_and_the_others_are_written(plan_dir):
    sf = FakeSalesforce()
    c1, c2, c3 = contacts(sf, 3)
    sf.invalid[c2] = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Title may not be blank for active contacts")
    sf.invalid["bad@x.com"] = ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Status: bad value for restricted picklist field: Gone")
    doc = make_plan(sf, [update(sf, c, Title="CTO") for c in (c1, c2, c3)]
                    + [create("Lead", "bad@x.com", Email="bad@x.com", LastName="B", Status="Gone")])
    report = run(doc, plan_dir, sf)
    results = by_id(report)
    assert results[f"Contact:{c2}"].status is ChangeStatus.FAILED
    assert results[f"Contact:{c2}"].error_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert results[f"Contact:{c2}"].message == "Title may not be blank for active contacts"
    assert results["Lead:bad@x.com"].error_code == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert sf.records[c1]["Title"] == sf.records[c3]["Title"] == "CTO"
    assert report.status == "partially applied"
    assert result_file(plan_dir)["results"][1]["error_code"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"


def test_unable_to_lock_row_is_retried_in_a_later_request_then_applied(plan_dir):
    sf = FakeSalesforce()
    c1, c2 = contacts(sf, 2)
    sf.locked[c2] = 2
    sleeps: list[float] = []
    doc = make_plan(sf, [update(sf, c, Title="CTO") for c in (c1, c2)])
    report = run(doc, plan_dir, sf, sleep=sleeps.append, config=replace(CONFIG, backoff_seconds=1.0),
                 jitter=lambda: 1.0)  # the top of backoff.Backoff's [wait/2, wait]
    assert report.status == "applied"
    assert [n for m, _, n in sf.log if m == "update"] == [2, 1, 1]
    assert sleeps == [1.0, 2.0]
    assert sf.writes[c1] == sf.writes[c2] == 1


def test_unable_to_lock_row_gives_up_after_max_attempts(plan_dir):
    sf = FakeSalesforce()
    c1, c2 = contacts(sf, 2)
    sf.locked[c2] = 99
    doc = make_plan(sf, [update(sf, c, Title="CTO") for c in (c1, c2)])
    report = run(doc, plan_dir, sf, config=replace(CONFIG, max_attempts=3))
    r2 = by_id(report)[f"Contact:{c2}"]
    assert r2.status is ChangeStatus.FAILED and r2.error_code == "UNABLE_TO_LOCK_ROW"
    assert "gave up after 3 attempts" in r2.message
    assert sf.requests("update") == 3
    assert report.status == "partially applied"


def test_delete_of_a_record_already_gone_is_applied(plan_dir):
    sf = FakeSalesforce()
    c1, c2 = contacts(sf, 2)
    doc = make_plan(sf, [delete(sf, c, "Email") for c in (c1, c2)])
    real_delete = sf.delete

    def delete_after_someone_else(ids):
        sf.records.pop(c1, None)                    # gone between the drift check and the write
        return real_delete(ids)
    sf.delete = delete_after_someone_else
    report = run(doc, plan_dir, sf)
    assert report.status == "applied"
    assert by_id(report)[f"Contact:{c1}"].error_code == "ENTITY_IS_DELETED"
    assert not sf.records


# -- stops and resume -----------------------------------------------------------------------------

def test_request_limit_midway_stops_cleanly_and_a_rerun_finishes(plan_dir):
    sf = FakeSalesforce()
    ids = contacts(sf, 1000)
    doc = make_plan(sf, [update(sf, i, Contact_Status__c="Inactive") for i in ids])
    sf.refuse[3] = ApiLimitExceeded("REQUEST_LIMIT_EXCEEDED: TotalRequests Limit exceeded.", code="REQUEST_LIMIT_EXCEEDED")
    with pytest.raises(ApiLimitExceeded, match="again to resume") as caught:
        run(doc, plan_dir, sf)
    report = caught.value.report
    assert not report.finished and report.status == "applying"
    assert report.counts["applied"] == 400 and report.counts["pending"] == 600
    assert not (plan_dir / "apply.json").exists()
    state = replay(plan_dir / "journal.jsonl")
    assert state.stop_reason and "REQUEST_LIMIT_EXCEEDED" in state.stop_reason

    report = run(doc, plan_dir, sf)
    assert report.finished and report.status == "applied"
    assert set(sf.writes.values()) == {1} and len(sf.writes) == 1000
    assert sf.requests("update") == 3 + 3
    assert result_file(plan_dir)["api_calls"] == sf.calls
    assert result_file(plan_dir)["runs"] == 2


@pytest.mark.parametrize("error", [SessionExpired("INVALID_SESSION_ID: Session expired or invalid", code="INVALID_SESSION_ID"),
                                   TransientError("HTTP 503 Service Unavailable after 5 attempts", code="SERVER_UNAVAILABLE")])
def test_expired_session_or_persistent_503_stops_and_resumes(plan_dir, error):
    sf = FakeSalesforce()
    ids = contacts(sf, 300)
    doc = make_plan(sf, [update(sf, i, Title="CTO") for i in ids])
    sf.refuse[1] = error
    with pytest.raises(type(error)) as caught:
        run(doc, plan_dir, sf)
    assert caught.value.report.counts["pending"] == 300
    assert sf.writes == Counter()
    assert run(doc, plan_dir, sf).status == "applied"
    assert set(sf.writes.values()) == {1}


def test_api_share_stops_before_a_request_that_would_pass_it(plan_dir):
    sf = FakeSalesforce()
    ids = contacts(sf, 1000)
    doc = make_plan(sf, [update(sf, i, Title="CTO") for i in ids])
    sf.usage = ApiUsage(used=70, total=100)   # share 0.8 -> 80; a re-read + 5 writes fit
    sf.usage_step = 2                         # but other integrations spend calls meanwhile
    with pytest.raises(ApiLimitExceeded, match="configured share") as caught:
        run(doc, plan_dir, sf)
    report = caught.value.report
    assert 0 < report.counts["applied"] < 1000
    assert sf.usage.used <= 80
    events = read_events(plan_dir / "journal.jsonl")[0]
    assert events[-1]["event"] == "stop" and events[-2]["event"] == "result"

    sf.usage = ApiUsage(used=0, total=100)
    sf.usage_step = 0
    assert run(doc, plan_dir, sf).status == "applied"
    assert set(sf.writes.values()) == {1}


def test_the_api_share_counts_the_reads_still_to_come(plan_dir):
    """A Contact and a Lead update: a read and a write each, 4 requests. With 77 of 100
    used and a share of 80 %, the writes alone (2) would fit; the reads make it 81."""
    sf = FakeSalesforce()
    (contact,) = contacts(sf, 1)
    lead = sf.insert("Lead", Email="l@example.com", Status="Working", LastName="L")
    doc = make_plan(sf, [update(sf, contact, Title="CTO"), update(sf, lead, Status="Inactive")])
    sf.usage = ApiUsage(used=77, total=100)
    with pytest.raises(ApiLimitExceeded, match="the 4 request") as caught:
        run(doc, plan_dir, sf)
    assert sf.calls == 0 and caught.value.report.counts["pending"] == 2
    sf.usage = ApiUsage(used=76, total=100)   # exactly the share: every request fits
    assert run(doc, plan_dir, sf).status == "applied"
    assert sf.calls == 4 and sf.usage.used == 80


def test_the_api_share_counts_the_read_before_a_retry(plan_dir):
    """A locked record is read again before it is sent again: with 77 of 100 used and a
    share of 80 %, the read and the write (2) made 79; the retry's read and write would
    make 81, so the run stops before that read, not after it."""
    sf = FakeSalesforce()
    (contact,) = contacts(sf, 1)
    doc = make_plan(sf, [update(sf, contact, Title="CTO")])
    sf.locked[contact] = 1
    sf.usage = ApiUsage(used=77, total=100)
    with pytest.raises(ApiLimitExceeded, match="the 2 request") as caught:
        run(doc, plan_dir, sf)
    assert sf.calls == 2 and caught.value.report.counts["pending"] == 1
    sf.usage = ApiUsage(used=0, total=100)
    assert run(doc, plan_dir, sf).status == "applied" and sf.records[contact]["Title"] == "CTO"


def test_an_account_still_holding_a_contact_the_plan_keeps_is_not_deleted(plan_dir):
    """The Contacts of Accounts to delete are counted just before the Account deletes,
    after the plan's Contact deletes: a Contact the plan deletes does not hold its Account
    back, one it keeps does (deleting the Account would take it along)."""
    sf = FakeSalesforce()
    emptied, kept = sf.insert("Account", Name="Emptied"), sf.insert("Account", Name="Kept")
    goes = sf.insert("Contact", Email="goes@example.com", LastName="G", AccountId=emptied)
    stays = sf.insert("Contact", Email="stays@example.com", LastName="S", AccountId=kept)
    doc = make_plan(sf, [delete(sf, emptied, "Name"), delete(sf, kept, "Name"), delete(sf, goes, "Email")])
    report = run(doc, plan_dir, sf, skip_drifted=True)
    results = by_id(report)
    assert results[f"Contact:{goes}"].status is ChangeStatus.APPLIED
    assert results[f"Account:{emptied}"].status is ChangeStatus.APPLIED
    assert results[f"Account:{kept}"].status is ChangeStatus.DRIFTED
    assert results[f"Account:{kept}"].message == (f"1 Contact(s) still point at the Account {kept}; "
                                                   "deleting it would delete them too")
    assert kept in sf.records and stays in sf.records and emptied not in sf.records
    assert [m for m, _, _ in sf.log] == ["retrieve", "delete", "retrieve", "count", "delete"]


def test_create_whose_answer_was_lost_is_settled_by_email_without_a_duplicate(plan_dir):
    sf = FakeSalesforce()
    doc = make_plan(sf, [create("Account", "acme", Name="Acme"),
                         create("Contact", "n@acme.com", Email="n@acme.com", LastName="N",
                                AccountId="@{Account:acme}")])
    sf.lose_answer.add(1)                         # the Account is created, the answer never comes
    report = run(doc, plan_dir, sf)               # settled by name in the same run, not re-sent
    assert report.status == "applied"
    accounts = [r for i, r in sf.records.items() if sf.sobject_of[i] == "Account"]
    assert len(accounts) == 1
    contact = next(r for r in sf.records.values() if r.get("Email") == "n@acme.com")
    assert contact["AccountId"] == accounts[0]["Id"] == report.created["Account:acme"]
    assert sf.requests("create") == 2
    assert [e["event"] for e in read_events(plan_dir / "journal.jsonl")[0]].count("settle") == 1


def test_create_that_never_happened_is_settled_as_pending_and_sent_again(plan_dir):
    sf = FakeSalesforce()
    doc = make_plan(sf, [create("Contact", "n@x.com", Email="n@x.com", LastName="N")])
    sf.refuse[1] = OutcomeUnknown("no answer")   # raised before anything was created
    assert run(doc, plan_dir, sf).status == "applied"
    assert len(sf.records) == 1 and sf.requests("create") == 2   # read: not there, so sent again
    settled = [e for e in read_events(plan_dir / "journal.jsonl")[0] if e["event"] == "settle"]
    assert [r["status"] for r in settled[0]["results"]] == ["pending"]


def test_answers_lost_again_and_again_stop_the_run_for_the_next_one_to_settle(plan_dir):
    sf = FakeSalesforce()
    doc = make_plan(sf, [create("Contact", "n@x.com", Email="n@x.com", LastName="N")])
    for number in range(1, 10):
        sf.refuse[number] = OutcomeUnknown("no answer")
    with pytest.raises(OutcomeUnknown, match="again to resume"):
        run(doc, plan_dir, sf)
    assert sf.requests("create") == CONFIG.max_attempts + 1 and not sf.records
    assert replay(plan_dir / "journal.jsonl").unsettled     # the last one: for the next run
    sf.refuse.clear()
    assert run(doc, plan_dir, sf).status == "applied" and len(sf.records) == 1


def test_killed_after_an_update_reached_the_org_is_settled_not_resent(plan_dir):
    sf = FakeSalesforce()
    ids = contacts(sf, 250)
    doc = make_plan(sf, [update(sf, i, Title="CTO") for i in ids])
    sf.crash_after.add(1)
    with pytest.raises(KeyboardInterrupt):
        run(doc, plan_dir, sf)
    report = run(doc, plan_dir, sf)
    assert report.status == "applied"
    assert set(sf.writes.values()) == {1}
    settle = [e for e in read_events(plan_dir / "journal.jsonl")[0] if e["event"] == "settle"]
    assert len(settle) == 1 and {r["status"] for r in settle[0]["results"]} == {"applied"}
    assert by_id(report)[f"Contact:{ids[0]}"].fields["Title"]["replaced"] == "Engineer"


def test_torn_last_journal_line_is_ignored_and_reported(plan_dir):
    sf = FakeSalesforce()
    ids = contacts(sf, 300)
    doc = make_plan(sf, [update(sf, i, Title="CTO") for i in ids])
    sf.refuse[2] = TransientError("503", code="SERVER_UNAVAILABLE")
    with pytest.raises(TransientError):
        run(doc, plan_dir, sf)
    with open(plan_dir / "journal.jsonl", "ab") as fh:      # killed while writing the next send
        fh.write(b'{"event":"send","request":3,"action":"update","sobject":"Contact","change_ids":["Cont')
    report = run(doc, plan_dir, sf)
    assert report.status == "applied"
    assert any("incomplete line" in w for w in report.warnings)
    assert set(sf.writes.values()) == {1}
    assert read_events(plan_dir / "journal.jsonl")[1] == 1


def test_a_finished_plan_is_consumed_and_apply_json_is_never_rewritten(plan_dir):
    sf = FakeSalesforce()
    (c1,) = contacts(sf, 1)
    doc = make_plan(sf, [update(sf, c1, Title="CTO")])
    first = run(doc, plan_dir, sf)
    before = (plan_dir / "apply.json").read_bytes()
    calls = sf.calls
    again = run(doc, plan_dir, sf, now=lambda: "2030-01-01T00:00:00Z")
    assert sf.calls == calls
    assert (plan_dir / "apply.json").read_bytes() == before
    assert again.finished and again.status == first.status == "applied"
    assert [r.to_dict() for r in again.results] == [r.to_dict() for r in first.results]


def test_plan_sha256_is_taken_from_plan_json(plan_dir):
    sf = FakeSalesforce()
    (c1,) = contacts(sf, 1)
    doc = make_plan(sf, [update(sf, c1, Title="CTO")])
    (plan_dir / "plan.json").write_bytes(b"{}\n")
    run(doc, plan_dir, sf)
    assert result_file(plan_dir)["plan_sha256"] == "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356"


# -- the lock -----------------------------------------------------------------------------------

def test_a_second_apply_while_one_runs_is_refused(plan_dir):
    sf = FakeSalesforce()
    (c1,) = contacts(sf, 1)
    doc = make_plan(sf, [update(sf, c1, Title="CTO")])
    root = plan_dir.parent
    held = FileLock(str(root / ".apply.lock"))
    held.acquire()
    (root / ".apply.lock.json").write_text(json.dumps({"pid": 4242, "hostname": "h", "plan_id": "f" * 64,
                                                        "started_at": "2024-05-02T09:00:00Z"}))
    try:
        with pytest.raises(LockedError, match="pid 4242.*plan f{64}"):
            run(doc, plan_dir, sf)
    finally:
        held.release()
    assert sf.calls == 0


def test_a_lock_left_by_a_killed_apply_is_reported_not_ignored(plan_dir):
    sf = FakeSalesforce()
    (c1,) = contacts(sf, 1)
    doc = make_plan(sf, [update(sf, c1, Title="CTO")])
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (plan_dir.parent / ".apply.lock.json").write_text(json.dumps(
        {"pid": dead, "hostname": "h", "plan_id": "a" * 64, "started_at": "2024-05-02T09:00:00Z"}))
    report = run(doc, plan_dir, sf)
    expected = f"an earlier apply (pid {dead}) of plan {'a' * 64} did not finish; resuming"
    assert expected in report.warnings
    start = read_events(plan_dir / "journal.jsonl")[0][0]
    assert start["warnings"] == [expected]
    assert expected in result_file(plan_dir)["warnings"]


def test_a_change_result_to_dict_is_what_dataclasses_asdict_gives():
    """to_dict is written by hand (asdict deep-copies every nested value: 20 s of a 100,000
    change apply); the apply.json it feeds must not change."""
    import dataclasses

    from reconcile.apply import ChangeResult
    from reconcile.model import ChangeStatus
    result = ChangeResult(change_id="Contact:003A", action="update", sobject="Contact",
                          record_id="003A", status=ChangeStatus.FAILED, error_code="X", message="m",
                          ref=None, fields={"Title": {"before": "a", "replaced": "a", "after": "b"}},
                          drift={"Title": {"planned": "a", "current": "c"}})
    expected = dataclasses.asdict(result)
    expected["status"] = "failed"
    assert result.to_dict() == expected
    assert list(result.to_dict()) == list(expected)


def test_a_result_record_written_in_pieces_is_the_sealed_record_bytes():
    """apply.json is written a few thousand results at a time; its bytes are exactly
    record_bytes(seal(document)), so verify and rollback read it as before."""
    from reconcile.archive import record_bytes, seal, sealed_chunks
    from reconcile.canonical import CHUNK_ITEMS as _ITEMS_AT_A_TIME
    head = {"plan_id": "p", "status": "applied", "counts": {"applied": 3}, "warnings": ["é ✓"],
            "created": {}, "api_calls": 7, "zeta": None}
    for n in (0, 1, _ITEMS_AT_A_TIME, _ITEMS_AT_A_TIME * 2 + 3):
        items = [{"change_id": f"Contact:{i}", "fields": {"Title": {"after": "ü", "before": None}}}
                 for i in range(n)]
        streamed = b"".join(sealed_chunks(head, "results", lambda items=items: iter(items)))
        assert streamed == record_bytes(seal({**head, "results": items}))
