"""Bulk API 2.0: the sandbox org's jobs, the adapter's bulk_query / bulk_ingest /
query_in switch, and BulkWriter -- all through the real adapter over HTTPS."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from reconcile import salesforce
from reconcile.config import Config
from reconcile.errors import ApiLimitExceeded, OutcomeUnknown, SalesforceError
from reconcile.model import Action
from reconcile.salesforce import BulkOutcome
from reconcile.sandbox import SandboxServer
from reconcile.soql import encode_q
from reconcile.writers import NO_RESULT, NOT_PROCESSED, BulkWriter, WriteItem, parse_sf_error

CONFIG = Config(bulk_poll_seconds=0.0)


@pytest.fixture(scope="module")
def org():
    with SandboxServer(seed="demo") as sb:
        yield sb


@pytest.fixture
def sb(org):
    org.faults.clear()
    org.stats.reset()
    org.bulk.polls_in_progress = 1
    yield org
    org.faults.clear()


def connect(sb, config=CONFIG, sleeps=None):
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return salesforce.connect(config, sb.env, sleep=sleep)


def contacts(sb, tag, n, **extra):
    return sb.store.insert_many("Contact", [
        {"LastName": f"Bulk {i}", "Email": f"{tag}.{i}@bulk.example.com", **extra} for i in range(n)])


def paths(sb):
    return [path for _, path, _ in sb.stats.log]


# -- bulk query and the query_in switch -------------------------------------------------

def test_bulk_query_in_equals_the_batched_in_query(sb):
    odd = ["O'Brien.Mixed@Example.com", "back\\slash@bulk.example.com", "UPPER.Case@BULK.example.com",
           "Ünïcode.Name@bulk.example.com"]
    for i, email in enumerate(odd):
        sb.store.insert("Contact", {"LastName": f"Odd {i}", "Email": email, "Title": None})
    plain = contacts(sb, "eq", 40)
    assert plain
    wanted = ([e.swapcase() for e in odd] + [f"eq.{i}@bulk.example.com" for i in range(0, 40, 3)]
              + ["nobody@bulk.example.com", "o'brien.mixed@example.com"])
    fields = list(Config().contact_fields())
    batched = connect(sb)
    by_in = batched.query_in("Contact", "Email", wanted, fields)
    assert batched.calls == 1
    # URLs so short that the addresses take many batched queries: one Bulk query is cheaper
    head = encode_q(f"SELECT {', '.join(fields)} FROM Contact WHERE Email IN ()")
    bulk = connect(sb, replace(CONFIG, max_query_url=len(batched.base_url + "query/?q=" + head) + 80))
    bulk.org_and_describe(["Contact"], count_field="Email")     # counts the rows: no extra call
    by_bulk = bulk.query_in("Contact", "Email", wanted, fields)
    print(f"\nbulk query_in: {bulk.calls - 1} API calls (create, 2 polls, 1 results page)")
    assert bulk.calls == 1 + 4 and any("/jobs/query" in p for p in paths(sb))
    key = lambda r: r["Id"]  # noqa: E731
    assert sorted(by_bulk, key=key) == sorted(by_in, key=key)
    assert len(by_in) == 4 + 14
    assert all(set(r) == set(fields) for r in by_bulk)
    # the Email filter field is dropped again when it was not asked for
    ids_only = bulk.query_in("Contact", "Email", wanted, ["Id"])
    assert sorted(r["Id"] for r in ids_only) == sorted(r["Id"] for r in by_in)
    assert all(set(r) == {"Id"} for r in ids_only)


def _one_address_a_query(sb, **changes):
    """A configuration whose query URLs hold one ``switch.N@bulk.example.com`` address each."""
    base = connect(sb).base_url + "query/?q="
    head = encode_q("SELECT Id FROM Contact WHERE Email IN (") + encode_q(")")
    one = len(encode_q("'switch.0@bulk.example.com'"))
    return replace(CONFIG, max_query_url=len(base) + len(head) + one + one // 2, **changes)


def test_query_in_chooses_the_cheaper_read_path_by_calls(sb):
    """Batched queries while they cost no more than a COUNT() and one Bulk query (1 + 4);
    beyond that the org is asked its row count, and a Bulk query runs when it is cheaper
    for that count: no cliff at a fixed number of addresses (issue 13)."""
    contacts(sb, "switch", 10)
    five = [f"switch.{i}@bulk.example.com" for i in range(5)]
    six = [f"switch.{i}@bulk.example.com" for i in range(6)]

    sf = connect(sb, _one_address_a_query(sb))
    assert len(sf.query_in("Contact", "Email", five + five, ["Id"])) == 5   # 5 distinct: 5 queries
    assert sf.calls == 5 and not any("/jobs/" in p for p in paths(sb))

    sf = connect(sb, _one_address_a_query(sb))
    assert len(sf.query_in("Contact", "Email", six, ["Id"])) == 6          # 6 queries > 1 + 4
    jobs = [p for p in paths(sb) if "/jobs/query" in p]
    assert sf.calls == 1 + 4 and len(jobs) == 4
    assert sf.row_counts[("Contact", "Email")] == len(sb.store.records("Contact"))

    # A large org: a Bulk query would read so many result pages that six queries are cheaper.
    before = len(paths(sb))
    sf = connect(sb, _one_address_a_query(sb, bulk_max_records=1))
    assert len(sf.query_in("Contact", "Email", six, ["Id"])) == 6
    assert sf.calls == 1 + 6 and not any("/jobs/" in p for p in paths(sb)[before:])


def test_counts_from_the_plans_composite_request_cost_no_extra_call(sb):
    """``org_and_describe(count_field=…)`` asks ``SELECT COUNT() … WHERE Email != null`` per
    object inside the one /composite request; query_in then needs no COUNT() of its own.
    COUNT() answers with totalSize alone:
    https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_count.htm"""
    contacts(sb, "counts", 10)
    sf = connect(sb, _one_address_a_query(sb))
    sf.org_and_describe(["Contact", "Lead"], count_field="Email")
    assert sf.calls == 1
    with_email = [r for r in sb.store.records("Contact") if r.get("Email")]
    assert sf.row_counts[("Contact", "Email")] == len(with_email)
    assert ("Lead", "Email") in sf.row_counts
    six = [f"counts.{i}@bulk.example.com" for i in range(6)]
    assert len(sf.query_in("Contact", "Email", six, ["Id"])) == 6
    assert sf.calls == 1 + 4


def test_the_preflight_composite_carries_describes_org_duplicate_rules_and_counts_in_one_call(sb):
    """Plan's preflight is ONE /composite request: the describes (Account with --allow-create),
    the Organization row, the DuplicateRule query and a COUNT() per e-mail object; Account
    (no e-mail field to count) is described but not counted. Composite subrequests:
    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_composite.htm"""
    contacts(sb, "preflight", 3)
    sf = connect(sb, _one_address_a_query(sb))
    org, describes, rules = sf.preflight_read(["Contact", "Lead", "Account"], count_field="Email",
                                              count_sobjects=["Contact", "Lead"])
    assert sf.calls == 1
    assert set(describes) == {"Contact", "Lead", "Account"} and org.org_id
    assert rules is not None and {r["SobjectType"] for r in rules} >= {"Contact", "Lead"}
    assert sf.row_counts[("Contact", "Email")] == sum(1 for r in sb.store.records("Contact") if r.get("Email"))
    assert ("Lead", "Email") in sf.row_counts and ("Account", "Email") not in sf.row_counts


def test_a_bulk_query_in_keeps_only_matches_from_every_results_page(sb):
    """The whole table is read a page at a time (Sforce-Locator) and only matching rows
    are kept: the same records as batched queries."""
    contacts(sb, "paged", 12)
    wanted = [f"PAGED.{i}@bulk.example.com" for i in range(0, 12, 2)]
    by_in = connect(sb).query_in("Contact", "Email", wanted, ["Id", "Email"])
    sf = connect(sb, _one_address_a_query(sb, bulk_max_records=5))
    sf.row_counts[("Contact", "Email")] = 1   # told the org is small: the Bulk path is taken
    before = len(paths(sb))
    by_bulk = sf.query_in("Contact", "Email", wanted, ["Id", "Email"])
    pages = [p for p in paths(sb)[before:] if p.endswith("/results")]
    assert len(pages) > 1
    assert sorted(r["Id"] for r in by_bulk) == sorted(r["Id"] for r in by_in) and len(by_in) == 6


def test_bulk_query_pages_by_locator_and_reads_nulls(sb):
    sf = connect(sb, replace(CONFIG, bulk_max_records=7))
    everyone = {r["Id"]: r for r in sb.store.records("Contact")}
    rows = sf.bulk_query("SELECT Id, Email, Title, AccountId, SystemModstamp FROM Contact")
    pages = [p for p in paths(sb) if p.endswith("/results")]
    assert len(pages) == -(-len(everyone) // 7)
    assert sf.calls == 3 + len(pages)
    assert sorted(r["Id"] for r in rows) == sorted(everyone)
    for row in rows:
        assert row["Title"] == everyone[row["Id"]]["Title"]          # None where null
        assert row["AccountId"] == everyone[row["Id"]]["AccountId"]
        assert row["SystemModstamp"] == everyone[row["Id"]]["SystemModstamp"]   # ...+0000


def test_a_failed_bulk_query_job_raises_its_error_message(sb):
    sb.faults.fail_bulk_jobs(1, "InternalServerError : the query failed")
    sf = connect(sb)
    with pytest.raises(SalesforceError, match="the query failed") as failed:
        sf.bulk_query("SELECT Id FROM Contact")
    assert not isinstance(failed.value, OutcomeUnknown)
    assert failed.value.code == "BULK_JOB_FAILED"


def test_polling_backs_off_to_the_cap(sb):
    sb.bulk.polls_in_progress = 4
    sleeps: list[float] = []
    sf = connect(sb, replace(CONFIG, bulk_poll_seconds=1.0, bulk_poll_max_seconds=3.0), sleeps)
    sf.bulk_query("SELECT Id FROM Lead")
    assert sleeps == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert sf.calls == 1 + 5 + 1


def test_polling_starts_short_and_doubles():
    """A small job is often done within a fraction of a second: the first poll comes after
    0.1 s, then the waits double up to bulk_poll_max_seconds (one function: poll_delays)."""
    from itertools import islice

    from reconcile.salesforce import poll_delays
    assert list(islice(poll_delays(Config()), 5)) == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert list(islice(poll_delays(replace(Config(), bulk_poll_max_seconds=0.3)), 4)) == [0.1, 0.2, 0.3, 0.3]


def test_polling_gives_up_after_the_timeout(sb):
    sb.bulk.polls_in_progress = 100
    sf = connect(sb, replace(CONFIG, bulk_poll_seconds=1.0, bulk_poll_max_seconds=1.0,
                             bulk_timeout_seconds=3.0))
    with pytest.raises(SalesforceError, match="still InProgress"):
        sf.bulk_query("SELECT Id FROM Lead")
    [made] = contacts(sb, "timeout", 1)
    with pytest.raises(OutcomeUnknown, match="was closed"):      # the job may still run
        sf.bulk_ingest("update", "Contact", [{"Id": made, "Title": "Late"}])


# -- bulk ingest --------------------------------------------------------------------------

def test_bulk_update_with_row_failures_matched_by_id(sb):
    ids = contacts(sb, "upd", 40, Title="Before", Contact_Status__c="Active")
    sb.faults.validation_error(ids[3], "Title is locked")
    sb.faults.lock_rows(ids[7])
    records = [{"Id": i, "Title": f"After {n}"} for n, i in enumerate(ids)]
    records[5] = {"Id": ids[5], "Contact_Status__c": "Bogus"}
    records[9] = {"Id": ids[9], "Title": None}                    # → #N/A: set to null
    records[11] = {"Id": ids[11], "Contact_Status__c": "Inactive"}  # Title: empty cell, unchanged
    sf = connect(sb)
    outcome = sf.bulk_ingest("update", "Contact", records)
    assert isinstance(outcome, BulkOutcome) and outcome.state == "JobComplete"
    # create, upload, close, 2 polls, failedResults: 3 failed of 40 processed, so the 37
    # others were saved (their ids are the ones sent); successfulResults is not read
    assert sf.calls == 6
    assert [p.rsplit("/", 2)[-2] for p in paths(sb) if "/jobs/ingest/" in p and p.endswith("/")] == ["failedResults"]
    assert outcome.records_processed == 40 and outcome.records_failed == 3
    success_ids = [r["sf__Id"] for r in outcome.successful]
    assert sorted(success_ids) == sorted(set(ids) - {ids[3], ids[5], ids[7]})
    assert all(r["sf__Created"] == "false" for r in outcome.successful)
    failed = {r["sf__Id"]: r for r in outcome.failed}
    assert list(failed) != [i for i in ids if i in failed], "results should come unordered"
    assert failed[ids[5]]["sf__Error"] == ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:bad value for "
                                          "restricted picklist field: Bogus:Contact_Status__c --")
    assert failed[ids[3]]["sf__Error"].startswith("FIELD_CUSTOM_VALIDATION_EXCEPTION:Title is locked")
    assert failed[ids[7]]["sf__Error"].startswith("UNABLE_TO_LOCK_ROW:")
    assert failed[ids[5]]["Contact_Status__c"] == "Bogus"       # the uploaded columns come back
    assert sb.store.get(ids[0])["Title"] == "After 0"
    assert sb.store.get(ids[9])["Title"] is None
    assert sb.store.get(ids[11])["Title"] == "Before"
    assert sb.store.get(ids[11])["Contact_Status__c"] == "Inactive"
    assert sb.store.get(ids[3])["Title"] == "Before"
    assert sb.stats.write_requests == 1 and len(sb.stats.writes) == 37


def test_a_bulk_job_reads_only_the_result_files_its_job_info_says_hold_something(sb):
    """Get Job Info's numberRecordsProcessed (failed ones included) and numberRecordsFailed
    (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm)
    tell which result files hold rows: an update that saved every record reads none
    (5 calls: create, upload, close, 2 polls); an insert reads successfulResults for the
    new ids, nothing else (6 calls)."""
    ids = contacts(sb, "quiet", 30, Title="Before")
    sf = connect(sb)
    before = len(paths(sb))
    outcome = sf.bulk_ingest("update", "Contact", [{"Id": i, "Title": "After"} for i in ids])
    assert sf.calls == 5 and not any(p.endswith("Results/") or p.endswith("records/") for p in paths(sb)[before:])
    assert sorted(r["sf__Id"] for r in outcome.successful) == sorted(ids) and not outcome.failed
    assert all(sb.store.get(i)["Title"] == "After" for i in ids)
    sf = connect(sb)
    before = len(paths(sb))
    made = sf.bulk_ingest("insert", "Contact", [{"LastName": f"Q{i}", "Email": f"quiet.new{i}@bulk.example.com"}
                                                for i in range(7)])
    assert sf.calls == 6
    assert [p.rsplit("/", 2)[-2] for p in paths(sb)[before:] if p.endswith("/")] == ["successfulResults"]
    assert len(made.successful) == 7 and all(sb.store.get(r["sf__Id"]) for r in made.successful)


def test_bulk_writer_update_results_by_change_id(sb):
    ids = contacts(sb, "bw", 12, Title="Before")
    sb.faults.validation_error(ids[2])
    items = [WriteItem(f"Contact:{i}", {"Id": i, "Title": "Bulk"}) for i in ids]
    items.append(WriteItem("Contact:ghost", {"Id": "003Dn000000zzzzIAA", "Title": "Ghost"}))
    writer = BulkWriter(connect(sb), replace(CONFIG, bulk_job_size=500))
    assert writer.batch_size == 500
    assert writer.payload(Action.UPDATE, "Contact", items[:1]) == [{"Id": ids[0], "Title": "Bulk"}]
    results = writer.write(Action.UPDATE, "Contact", items)
    assert [r.change_id for r in results] == [i.change_id for i in items]
    by = {r.change_id: r for r in results}
    assert all(by[f"Contact:{i}"].success and by[f"Contact:{i}"].id == i for i in ids if i != ids[2])
    assert by[f"Contact:{ids[2]}"].error_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert by["Contact:ghost"].success is False
    assert by["Contact:ghost"].error_code in ("INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID")


def test_bulk_writer_insert_matches_by_email_and_delete_by_id(sb):
    taken = sb.store.records("Contact")[0]["Email"]
    account = sb.store.insert("Account", {"Name": "Bulk Parent Co"})
    items = [WriteItem(f"Contact:new{i}", {"LastName": f"New {i}", "Email": f"New.{i}@Bulk.example.com",
                                            "AccountId": account}) for i in range(6)]
    items.append(WriteItem("Contact:dup", {"LastName": "Dup", "Email": taken.upper()}))
    items.append(WriteItem("Contact:noname", {"Email": "no.name@bulk.example.com", "Title": None}))
    writer = BulkWriter(connect(sb), CONFIG)
    results = {r.change_id: r for r in writer.write(Action.CREATE, "Contact", items)}
    assert len(results) == len(items)
    for i in range(6):
        made = sb.store.get(results[f"Contact:new{i}"].id)
        assert made["Email"] == f"New.{i}@Bulk.example.com" and made["AccountId"] == account
    assert results["Contact:dup"].error_code == "DUPLICATES_DETECTED"
    assert results["Contact:noname"].error_code == "REQUIRED_FIELD_MISSING"
    assert results["Contact:noname"].message == "Required fields are missing: [LastName]"

    gone = [WriteItem(f"del:{n}", {"Id": results[f"Contact:new{n}"].id}) for n in range(3)]
    gone.append(WriteItem("del:account", {"Id": account}))        # still has Contacts
    deleted = {r.change_id: r for r in writer.write(Action.DELETE, "Contact", gone[:3])}
    assert all(deleted[f"del:{n}"].success for n in range(3))
    assert sb.store.get(results["Contact:new0"].id) is None
    [refused] = writer.write(Action.DELETE, "Account", gone[3:])
    assert refused.error_code == "DELETE_FAILED" and not refused.success


def test_bulk_writer_refuses_ambiguous_keys(sb):
    writer = BulkWriter(connect(sb), CONFIG)
    twice = [WriteItem("a", {"LastName": "A", "Email": "same@bulk.example.com"}),
             WriteItem("b", {"LastName": "B", "Email": " SAME@bulk.example.com"})]
    with pytest.raises(ValueError, match="share"):
        writer.write(Action.CREATE, "Contact", twice)
    with pytest.raises(ValueError, match="no Name"):
        writer.write(Action.CREATE, "Account", [WriteItem("acc", {"Website": "https://x.example"})])
    assert sb.stats.requests == 0


class FakeBulk:
    def __init__(self, outcome):
        self.outcome = outcome

    def bulk_ingest(self, action, sobject, records):
        return self.outcome


def test_bulk_writer_no_result_unprocessed_and_stray_rows():
    a, b, c = "003Dn0000000AAAIAA", "003Dn0000000BBBIAA", "003Dn0000000CCCIAA"
    items = [WriteItem(x, {"Id": x, "Title": "T"}) for x in (a, b, c)]
    outcome = BulkOutcome("750X", "Aborted", successful=[{"sf__Id": b, "sf__Created": "false"}],
                          unprocessed=[{"Id": c[:15], "Title": "T"}])
    results = BulkWriter(FakeBulk(outcome), CONFIG).write(Action.UPDATE, "Contact", items)
    assert [(r.change_id, r.success, r.error_code) for r in results] == [
        (a, False, NO_RESULT), (b, True, None), (c, False, NOT_PROCESSED)]
    stray = BulkOutcome("750X", "JobComplete", successful=[{"sf__Id": "003Dn0000000ZZZIAA"}])
    with pytest.raises(OutcomeUnknown, match="matches no record"):
        BulkWriter(FakeBulk(stray), CONFIG).write(Action.UPDATE, "Contact", items)


@pytest.mark.parametrize("text, code, message", [
    ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:bad value for restricted picklist field: X:Status --",
     "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "bad value for restricted picklist field: X"),
    ("REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName,Company --",
     "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]"),
    ("DUPLICATES_DETECTED:Use one of these records?: --", "DUPLICATES_DETECTED", "Use one of these records?"),
    ("ENTITY_IS_DELETED:entity is deleted:--", "ENTITY_IS_DELETED", "entity is deleted"),
    ("FIELD_CUSTOM_VALIDATION_EXCEPTION:Locked: ask an admin", "FIELD_CUSTOM_VALIDATION_EXCEPTION",
     "Locked: ask an admin"),
    (None, "UNKNOWN_ERROR", ""),
])
def test_parse_sf_error(text, code, message):
    assert parse_sf_error(text) == (code, message)


def test_a_failed_ingest_job_raises_and_writes_nothing(sb):
    ids = contacts(sb, "failjob", 3, Title="Before")
    sb.faults.fail_bulk_jobs(1, "InternalServerError : try later")
    sf = connect(sb)
    with pytest.raises(SalesforceError, match="try later") as failed:
        sf.bulk_ingest("update", "Contact", [{"Id": i, "Title": "After"} for i in ids])
    assert not isinstance(failed.value, OutcomeUnknown)
    assert all(sb.store.get(i)["Title"] == "Before" for i in ids)
    with pytest.raises(SalesforceError, match="Field name not found : Xyzzy__c"):
        sf.bulk_ingest("update", "Contact", [{"Id": ids[0], "Xyzzy__c": "1"}])


def test_request_level_errors_are_translated_and_the_job_aborted(sb):
    [made] = contacts(sb, "limit", 1)
    sf = connect(sb)
    sb.faults.limit_after(1)                  # the job is created, the upload is refused
    with pytest.raises(ApiLimitExceeded):
        sf.bulk_ingest("update", "Contact", [{"Id": made, "Title": "Never"}])
    sb.faults.clear()
    sb.faults.http_503(2, path_contains="/batches")      # retried like any transient failure
    outcome = sf.bulk_ingest("update", "Contact", [{"Id": made, "Title": "Retried"}])
    assert len(outcome.successful) == 1 and sb.store.get(made)["Title"] == "Retried"


def writes_per_record(sb):
    counts: dict[str, int] = {}
    for _method, _sobject, record_id, _fields in sb.stats.writes:
        counts[record_id] = counts.get(record_id, 0) + 1
    return counts


@pytest.mark.parametrize("fault", ["drop", 503, 500, 504])
def test_a_close_whose_answer_is_lost_is_settled_by_reading_the_job(sb, fault):
    """The close ran the job but its answer was lost: the job's state (Get Job Info,
    https://developer.salesforce.com/docs/atlas.en-us.264.0.api_asynch.meta/api_asynch/get_job_info.htm;
    Job States: Open means "open for data uploads",
    https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_bulk_v2/bulk_api_2_job_states.htm)
    says it is no longer Open, so the close is not sent again; the results are read."""
    ids = contacts(sb, f"drop{fault}", 3)
    if fault == "drop":
        sb.faults.drop_after_write(1)
    else:
        sb.faults.fail_after_commit(fault, writes=["bulk_close"])
    outcome = connect(sb).bulk_ingest("update", "Contact", [{"Id": i, "Title": "Once"} for i in ids])
    assert len(outcome.successful) == 3
    assert all(sb.store.get(i)["Title"] == "Once" for i in ids)
    assert writes_per_record(sb) == {i: 1 for i in ids}
    closes = [p for m, p, _ in sb.stats.log if m == "PATCH"]
    assert len(closes) == 1                                          # never re-sent


def test_a_close_that_did_not_happen_is_sent_again(sb):
    """A 503 before the job ran (the fault answers without processing): the job is still
    Open, so the close, which did nothing, is sent again."""
    ids = contacts(sb, "closeagain", 2)
    sf = connect(sb)
    upload = sf._bulk_upload

    def upload_then_arm(*args):
        job_id = upload(*args)
        sb.faults.http_503(1, path_contains=f"/jobs/ingest/{job_id}")   # the close's turn
        return job_id
    sf._bulk_upload = upload_then_arm
    outcome = sf.bulk_ingest("update", "Contact", [{"Id": i, "Title": "Twice closed"} for i in ids])
    job_requests = [(m, r.split(" ")[0]) for m, _, r in sb.stats.log if m in ("PUT", "PATCH", "GET")]
    assert len(outcome.successful) == 2 and writes_per_record(sb) == {i: 1 for i in ids}
    assert job_requests[:4] == [("PUT", "201"), ("PATCH", "503"), ("GET", "200"), ("PATCH", "200")]


def test_an_upload_whose_answer_is_lost_goes_to_a_new_job(sb):
    """An upload writes nothing (the job is not closed); after a lost answer that job is
    aborted and a new one gets the data, so no job can run the rows twice."""
    ids = contacts(sb, "upload", 2)
    sb.faults.fail_after_commit(503, writes=["bulk_upload"])
    outcome = connect(sb).bulk_ingest("update", "Contact", [{"Id": i, "Title": "New job"} for i in ids])
    assert len(outcome.successful) == 2 and writes_per_record(sb) == {i: 1 for i in ids}
    created = [p for m, p, _ in sb.stats.log if m == "POST" and p.endswith("/jobs/ingest")]
    aborted = [s for m, _, s in sb.stats.log if m == "PATCH" and "Aborted" in s]
    assert len(created) == 2 and len(aborted) == 1


def test_lead_jobs_carry_no_auto_assign_header(sb):
    [lead] = sb.store.insert_many("Lead", [{"LastName": "Bulk", "Company": "Bulk Co",
                                             "Email": "bulk.lead@bulk.example.com"}])
    connect(sb).bulk_ingest("update", "Lead", [{"Id": lead, "Status": "Working - Contacted"}])
    assert sb.stats.auto_assign == [None]     # Bulk API 2.0 has no Sforce-Auto-Assign


def test_20000_updates_in_one_job_cost_a_handful_of_calls(sb):
    n = 20_000
    ids = contacts(sb, "big", n)
    items = [WriteItem(f"Contact:{i}", {"Id": i, "Title": "Bulk 20k"}) for i in ids]
    sf = connect(sb)
    writer = BulkWriter(sf, replace(CONFIG, bulk_job_size=n))
    started = time.perf_counter()
    results = writer.write(Action.UPDATE, "Contact", items)
    elapsed = time.perf_counter() - started
    print(f"\nbulk update of {n:,} records: {sf.calls} API calls, {elapsed:.2f} s")
    assert sf.calls == 5 and all(r.success for r in results)   # no result file: nothing failed
    before = sf.calls
    rows = sf.query_in("Contact", "Email", [f"big.{i}@bulk.example.com" for i in range(n)],
                       ["Id", "Title"])
    print(f"query_in of {n:,} addresses through one bulk query: {sf.calls - before} API calls")
    # a COUNT() (this connection did not count the rows yet) and one Bulk query
    assert sf.calls - before == 1 + 4 and len(rows) == n and {r["Title"] for r in rows} == {"Bulk 20k"}
