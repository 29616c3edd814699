"""The apply steps (``reconcile.steps``): one source for the order, the write path and
the request count that ``show``, the HTML page, the estimate and apply all use."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from test_apply_e2e import CONFIG, NOW, make_plan, plan_dir_for, seed_people, writes_per_record

from reconcile.apply import apply_plan
from reconcile.config import BULK_CALLS_PER_JOB, BULK_QUERY_CALLS, Config, bulk_job_calls
from reconcile.model import Action, Change, ChangeStatus, FieldChange, SObject
from reconcile.plan import estimate_api_calls
from reconcile.render.html import render_html
from reconcile.render.text import render_show
from reconcile.steps import StepKind, Via, build_steps, bulk_jobs, bulk_row_bytes, planned_record


def _change(action: Action, sobject: SObject, key: str, **fields: object) -> Change:
    return Change(change_id=f"{sobject}:{key}", action=action, sobject=sobject,
                  record_id=None if action is Action.CREATE else key,
                  ref=f"{sobject}:{key}" if action is Action.CREATE else None,
                  fields={f: FieldChange(None, v) for f, v in fields.items()}, reasons=(), rows=(),
                  email=f"{key}@example.com" if sobject is not SObject.ACCOUNT else "")


def test_steps_come_in_apply_order_whatever_the_plan_order():
    changes = [_change(Action.DELETE, SObject.ACCOUNT, "001A"),
               _change(Action.UPDATE, SObject.LEAD, "00QA", Status="Inactive"),
               _change(Action.DELETE, SObject.CONTACT, "003D"),
               _change(Action.CREATE, SObject.CONTACT, "new", AccountId="@{Account:acme}"),
               _change(Action.CREATE, SObject.ACCOUNT, "acme", Name="Acme"),
               _change(Action.UPDATE, SObject.CONTACT, "003U", Title="CTO")]
    steps = build_steps(changes, Config())
    assert [(s.kind, s.sobject, s.action) for s in steps] == [
        (StepKind.CHECK_ORG, None, None),
        # each group of writes right after the reads that check it: the Account before the
        # Contact that points at it; Contacts deleted before Accounts
        (StepKind.FIND_NEW, "Account", Action.CREATE), (StepKind.WRITE, "Account", Action.CREATE),
        (StepKind.FIND_NEW, "Contact", Action.CREATE), (StepKind.WRITE, "Contact", Action.CREATE),
        (StepKind.REREAD, "Lead", Action.UPDATE), (StepKind.WRITE, "Lead", Action.UPDATE),
        (StepKind.REREAD, "Contact", Action.UPDATE), (StepKind.WRITE, "Contact", Action.UPDATE),
        (StepKind.REREAD, "Contact", Action.DELETE), (StepKind.WRITE, "Contact", Action.DELETE),
        # the Contacts still pointing at the Accounts are counted after the Contact deletes
        (StepKind.REREAD, "Account", Action.DELETE), (StepKind.COUNT_CONTACTS, "Account", Action.DELETE),
        (StepKind.WRITE, "Account", Action.DELETE)]
    # every record read once: 1 org check, 4 re-reads (one a group), 1 count, 2 finds, 6 writes
    assert estimate_api_calls(changes, Config()) == sum(s.requests for s in steps) == 14
    assert [s.requests for s in steps if s.kind is StepKind.REREAD] == [1, 1, 1, 1]


def test_each_group_is_read_in_batches_of_its_own():
    """One read request a ``retrieve_size`` ids of each update or delete group: 4,001
    Contact updates take 3 reads, 10 Lead updates 1, nothing is read twice."""
    changes = ([_change(Action.UPDATE, SObject.CONTACT, f"003{i}", Title="x") for i in range(4001)]
               + [_change(Action.UPDATE, SObject.LEAD, f"00Q{i}", Status="x") for i in range(10)])
    reads = [(s.sobject, s.records, s.requests) for s in build_steps(changes, Config())
             if s.kind is StepKind.REREAD]
    assert reads == [("Contact", 4001, 3), ("Lead", 10, 1)]


def test_a_group_above_the_threshold_is_one_bulk_step_but_leads_stay_on_collections():
    config = Config(bulk_threshold=100, bulk_job_size=1000)
    contacts = [_change(Action.UPDATE, SObject.CONTACT, f"003{i}", Title="x") for i in range(2500)]
    leads = [_change(Action.UPDATE, SObject.LEAD, f"00Q{i}", Status="x") for i in range(2500)]
    writes = [s for s in build_steps(contacts + leads, config) if s.kind is StepKind.WRITE]
    # 2,500 at most 1,000 a job: three even jobs (834, 833, 833), not 1,000 + 1,000 + 500
    assert [(s.sobject, s.via, s.batch_size, s.requests) for s in writes] == [
        ("Contact", Via.BULK, 834, 3 * BULK_CALLS_PER_JOB), ("Lead", Via.COLLECTIONS, 200, 13)]
    assert writes[0].change_ids == tuple(c.change_id for c in contacts)
    assert writes[0].fields == ("Title",)


def test_bulk_jobs_are_sized_by_salesforces_limits_not_a_fixed_row_count():
    """Bulk API 2.0 limits an upload to 100 MB of CSV
    (https://developer.salesforce.com/docs/platform/api-asynch/guide/upload-job-data.html) and
    a rolling 24 hours to 150,000,000 records; the org cuts a job into 10,000-record batches
    itself (https://developer.salesforce.com/docs/atlas.en-us.228.0.api_bulk_v2.meta/api_bulk_v2/bulk_api_2_limits.htm).
    So 10,001 Contact updates are one job, not 10,000 + 1; a group is cut only by those limits,
    into even jobs; a create job reads its successful results (the new ids), one more call."""
    updates = [_change(Action.UPDATE, SObject.CONTACT, f"003{i:015d}", Title="Director") for i in range(10_001)]
    [write] = [s for s in build_steps(updates, Config()) if s.kind is StepKind.WRITE]
    assert (write.via, write.requests, write.batch_size) == (Via.BULK, BULK_CALLS_PER_JOB, 10_001)
    assert bulk_jobs([10] * 10_001, replace(Config(), bulk_job_size=10_000)) == [5_001, 5_000]
    # the byte limit: rows of at most 59 bytes, 2,000 bytes a job (the header's room kept apart)
    config = replace(Config(), bulk_job_bytes=64 * 1024 + 2_000)
    rows = [bulk_row_bytes(planned_record(c)) for c in updates[:100]]
    assert rows[0] == 1 + (2 * 18 + 3) + (2 * len("Director") + 3)
    sizes = bulk_jobs(rows, config)
    assert sizes == [25, 25, 25, 25]    # 3 jobs of 34 rows would be 2,006 bytes: one more job
    assert bulk_jobs([10] * 5 + [1_999], config) == [2, 2, 1, 1]   # cut again until each job fits
    creates = [_change(Action.CREATE, SObject.CONTACT, f"n{i}", Email=f"n{i}@example.org") for i in range(3_000)]
    [create] = [s for s in build_steps(creates, Config()) if s.kind is StepKind.WRITE]
    assert create.requests == BULK_CALLS_PER_JOB + 1 == bulk_job_calls("create")


def test_show_and_the_page_list_the_same_steps(sb):
    contact_ids, lead_ids = seed_people(sb, 3, 2, tag="s")
    doc = make_plan(sb, [(cid, "Title", "Engineer", "CTO") for cid in contact_ids]
                    + [(lid, "Status", "Working - Contacted", "Inactive") for lid in lead_ids])
    console = Console(record=True, width=200, color_system=None)
    render_show(doc, console, CONFIG)
    shown = console.export_text()
    page = render_html(doc, CONFIG)
    steps = build_steps(doc, CONFIG)
    assert "Apply steps" in shown and ">Apply steps<" in page
    for number, step in enumerate(steps, start=1):
        assert f"{number}. {step.describe()}" in shown
        assert f"<td>{number}</td><td>{step.what()}</td><td>{step.via}</td>" in page.replace("&#39;", "'")
    assert shown.index("update 3 Contact record(s)") < shown.index("update 2 Lead record(s)")


# -- the estimate is what apply spends ---------------------------------------------------------

def _apply_counting(sb, doc, config, tmp_path: Path):
    """What workflow.apply does: check the org on a fresh connection, then apply. Returns
    the report and the requests the sandbox org answered."""
    from reconcile.salesforce import connect
    sf = connect(config, env=sb.env, sleep=lambda s: None)   # no waiting between Bulk polls
    sb.stats.reset()
    sf.org_info()
    report = apply_plan(doc, plan_dir_for(tmp_path, doc), sf, config, sleep=lambda s: None,
                        now=lambda: NOW, calls_before=0)
    return report, sb.stats.requests


def test_the_estimate_is_what_apply_spends_on_a_small_plan(sb, tmp_path):
    """Every kind of step once: re-reads, the Contact count of an Account to delete, the
    queries for new records with a create's key, and Collections writes of each action."""
    contact_ids, lead_ids = seed_people(sb, 3, 2, tag="e")
    [old_account] = sb.store.insert_many("Account", [{"Name": "Old Corp"}])
    doc = make_plan(sb, [(cid, "Title", "Engineer", "CTO") for cid in contact_ids[:2]]
                    + [(lid, "Status", "Working - Contacted", "Inactive") for lid in lead_ids],
                    creates=[("Account", "acme corp", {"Name": "Acme Corp"}),
                             ("Contact", "ann@acme.com", {"LastName": "Ann", "Email": "ann@acme.com",
                                                          "AccountId": "@{Account:acme corp}"})],
                    deletes=[contact_ids[2], old_account])
    estimate = sum(step.requests for step in build_steps(doc, CONFIG))
    report, answered = _apply_counting(sb, doc, CONFIG, tmp_path)
    assert report.status == "applied", report.results
    assert {s.kind for s in build_steps(doc, CONFIG)} == set(StepKind)
    # 1 org check, 2 finds, 4 re-reads (Contact updates and the Contact delete are two
    # groups, read each just before its write: one more read than reading all Contacts
    # at once), 1 count, 6 writes
    assert estimate == report.api_calls == answered == 14
    assert all(n == 1 for n in writes_per_record(sb).values())


@pytest.mark.parametrize("config, contacts, leads, creates", [
    # several Bulk jobs for updates, creates and deletes, and (URLs so short that the creates'
    # keys take more queries than a COUNT() and a Bulk query) a Bulk query for them
    (replace(CONFIG, bulk_threshold=20, bulk_job_size=30, max_query_url=200), 50, 30, 45),
    # the default sizes: 4,500 Contact updates in one Bulk job, the Leads on Collections
    (CONFIG, 4500, 30, 0),
    # jobs cut by bytes of CSV (2,000 a job beside the header's room): 60 updates in 2 jobs
    (replace(CONFIG, bulk_threshold=20, bulk_job_bytes=64 * 1024 + 2_000), 60, 10, 0),
], ids=["small-thresholds", "4500-default", "by-bytes"])
def test_the_estimate_is_what_apply_spends_on_a_plan_with_bulk_jobs(sb, tmp_path, config, contacts,
                                                                    leads, creates):
    contact_ids, lead_ids = seed_people(sb, contacts, leads, tag="b")
    deletes = contact_ids[:25] if creates else []
    doc = make_plan(sb, [(cid, "Title", "Engineer", "Director") for cid in contact_ids[len(deletes):]]
                    + [(lid, "Status", "Working - Contacted", "Inactive") for lid in lead_ids],
                    creates=[("Contact", f"n{i}@example.org", {"LastName": f"N{i}", "Email": f"n{i}@example.org"})
                             for i in range(creates)],
                    deletes=deletes)
    steps = build_steps(doc, config)
    assert any(s.via is Via.BULK for s in steps)
    if creates:
        assert any(s.via is Via.BULK_QUERY and s.requests == 1 + BULK_QUERY_CALLS for s in steps)
    estimate = estimate_api_calls(doc["changes"], config, instance_url=doc["org"]["instance_url"])
    report, answered = _apply_counting(sb, doc, config, tmp_path)
    assert report.status == "applied"
    jobs = [p for m, p, _ in sb.stats.log if m == "POST" and p.endswith("/jobs/ingest")]
    assert len(jobs) == sum(s.requests // bulk_job_calls(str(s.action)) for s in steps if s.via is Via.BULK)
    assert estimate == report.api_calls == answered
    print(f"\n{len(doc['changes'])} changes: estimated {estimate} API calls, apply spent {answered}")


def test_a_plan_of_creates_and_updates_reads_each_record_once(sb, tmp_path):
    """Creates and updates of Contacts and Leads: each update group is read once, just
    before its write, so apply spends what it did before the groups were read twice —
    1 org check, 1 query for the creates' e-mails, 1 re-read a group of updates (450
    Contacts, 250 Leads) and the writes (1 create, 3 + 2 updates): 10, not 12."""
    contact_ids, lead_ids = seed_people(sb, 450, 250, tag="cu")
    doc = make_plan(sb, [(cid, "Title", "Engineer", "Director") for cid in contact_ids]
                    + [(lid, "Status", "Working - Contacted", "Inactive") for lid in lead_ids],
                    creates=[("Contact", f"new{i}@example.org", {"LastName": f"N{i}", "Email": f"new{i}@example.org"})
                             for i in range(30)])
    steps = build_steps(doc, CONFIG)
    assert [(s.kind, s.sobject, s.requests) for s in steps if s.kind is not StepKind.WRITE] == [
        (StepKind.CHECK_ORG, None, 1), (StepKind.FIND_NEW, "Contact", 1),
        (StepKind.REREAD, "Contact", 1), (StepKind.REREAD, "Lead", 1)]
    report, answered = _apply_counting(sb, doc, CONFIG, tmp_path)
    assert report.status == "applied"
    assert estimate_api_calls(doc["changes"], CONFIG, instance_url=doc["org"]["instance_url"]) \
        == report.api_calls == answered == 10
    reads = [p for m, p, _ in sb.stats.log if m == "POST" and "/composite/sobjects/" in p]
    assert len(reads) == 2                                   # one retrieve a group, none twice
    assert set(writes_per_record(sb).values()) == {1} and len(writes_per_record(sb)) == 730


def test_the_queries_for_new_records_are_counted_as_the_adapter_batches_them(sb, tmp_path):
    """Names with characters a URL percent-encodes (ü is six characters, & three) fill a
    request URL faster than their length says: the count follows the adapter's own batching."""
    names = [f"Müller & Söhne Ärztehaus Überlingen {i:04d}" for i in range(1000)]
    doc = make_plan(sb, creates=[("Account", name.lower(), {"Name": name}) for name in names])
    [find] = [s for s in build_steps(doc, CONFIG) if s.kind is StepKind.FIND_NEW]
    by_length = estimate_api_calls(doc["changes"], CONFIG) - estimate_api_calls(doc["changes"], CONFIG,
                                                                                instance_url=doc["org"]["instance_url"])
    assert find.requests == 5 and by_length == -2     # their length alone would say 3
    report, answered = _apply_counting(sb, doc, CONFIG, tmp_path)
    assert report.status == "applied"
    assert sum(s.requests for s in build_steps(doc, CONFIG)) == report.api_calls == answered


@pytest.fixture
def sb():
    from reconcile.sandbox import SandboxServer
    with SandboxServer(seed="empty") as server:
        yield server


def test_a_bulk_job_runs_while_the_same_rank_collections_groups_are_written(sb, tmp_path):
    """Contact updates (one Bulk job) and Lead updates (Collections) do not wait for each
    other (the same write rank): the job is closed first, the Lead requests go out while
    the org runs it, and only then is it polled. The estimate stays what apply spends, and
    every record is written once."""
    config = replace(CONFIG, bulk_threshold=20)
    contact_ids, lead_ids = seed_people(sb, 40, 450, tag="par")
    doc = make_plan(sb, [(cid, "Title", "Engineer", "Director") for cid in contact_ids]
                    + [(lid, "Status", "Working - Contacted", "Inactive") for lid in lead_ids])
    steps = build_steps(doc, config)
    # the Leads come first in the plan; the Bulk group goes first in its rank all the same
    doc["changes"].sort(key=lambda c: c["sobject"] != "Lead")
    steps = build_steps(doc, config)
    assert [(s.sobject, s.via) for s in steps if s.kind is StepKind.WRITE] == [
        ("Contact", Via.BULK), ("Lead", Via.COLLECTIONS)]
    estimate = estimate_api_calls(doc["changes"], config, instance_url=doc["org"]["instance_url"])
    report, answered = _apply_counting(sb, doc, config, tmp_path)
    assert report.status == "applied" and estimate == report.api_calls == answered
    log = [(m, p) for m, p, _ in sb.stats.log]
    close = next(i for i, (m, p) in enumerate(log) if m == "PATCH" and "/jobs/ingest/" in p)
    polls = [i for i, (m, p) in enumerate(log) if m == "GET" and "/jobs/ingest/" in p]
    lead_writes = [i for i, (m, p) in enumerate(log) if m == "PATCH" and p.endswith("/composite/sobjects")]
    assert len(lead_writes) == 3
    assert close < min(lead_writes) and max(lead_writes) < min(polls)
    assert all(n == 1 for n in writes_per_record(sb).values())


def test_drift_found_while_a_bulk_job_runs_still_waits_for_the_job_and_journals_it(sb, tmp_path):
    """The Lead group, read while the Contact job runs, has drifted: the run stops before
    writing it, but the Contact job it left running is waited for and its results go into
    the journal first (the Contacts are applied, not left for the next run to settle); a
    run with --skip-drifted then writes the other Leads and nothing twice."""
    from reconcile.errors import DriftError
    from reconcile.salesforce import connect
    config = replace(CONFIG, bulk_threshold=20)
    contact_ids, lead_ids = seed_people(sb, 30, 5, tag="drj")
    doc = make_plan(sb, [(cid, "Title", "Engineer", "Director") for cid in contact_ids]
                    + [(lid, "Status", "Working - Contacted", "Inactive") for lid in lead_ids])
    sb.store.edit(lead_ids[0], {"Status": "Closed - Converted"})
    sb.stats.reset()
    sf = connect(config, env=sb.env, sleep=lambda s: None)
    with pytest.raises(DriftError) as stopped:
        apply_plan(doc, plan_dir_for(tmp_path, doc), sf, config, sleep=lambda s: None, now=lambda: NOW)
    results = {r.change_id: r for r in stopped.value.report.results}
    assert all(str(results[f"Contact:{cid}"].status) == "applied" for cid in contact_ids)
    assert all(sb.store.get(cid)["Title"] == "Director" for cid in contact_ids)
    assert all(sb.store.get(lid)["Status"] != "Inactive" for lid in lead_ids)
    report = apply_plan(doc, plan_dir_for(tmp_path, doc), connect(config, env=sb.env, sleep=lambda s: None),
                        config, skip_drifted=True, sleep=lambda s: None, now=lambda: NOW)
    assert report.finished and sb.store.get(lead_ids[0])["Status"] == "Closed - Converted"
    assert all(sb.store.get(lid)["Status"] == "Inactive" for lid in lead_ids[1:])
    assert all(n == 1 for n in writes_per_record(sb).values())


def test_a_drift_message_after_a_bulk_job_ran_alongside_counts_what_the_job_wrote(sb, tmp_path):
    """The DriftError's one line is made after the Bulk job that ran alongside the drifted
    group has its results: it says how many changes stay written, not "nothing was
    written", and agrees with its report."""
    from reconcile.errors import DriftError
    from reconcile.salesforce import connect
    config = replace(CONFIG, bulk_threshold=5)
    contact_ids, lead_ids = seed_people(sb, 10, 2, tag="dmsg")
    doc = make_plan(sb, [(cid, "Title", "Engineer", "Director") for cid in contact_ids]
                    + [(lid, "Status", "Working - Contacted", "Inactive") for lid in lead_ids])
    sb.store.edit(lead_ids[0], {"Status": "Closed - Converted"})
    sf = connect(config, env=sb.env, sleep=lambda s: None)
    with pytest.raises(DriftError) as stopped:
        apply_plan(doc, plan_dir_for(tmp_path, doc), sf, config, sleep=lambda s: None, now=lambda: NOW)
    assert stopped.value.report.counts["applied"] == 10
    assert all(sb.store.get(cid)["Title"] == "Director" for cid in contact_ids)
    assert "nothing was written" not in str(stopped.value)
    assert "the 10 change(s) written before it stay written" in str(stopped.value)


def test_a_bulk_jobs_failed_rows_are_read_again_before_they_are_sent_again(sb, tmp_path):
    """A row a Bulk job could not lock is sent again through the group's retries; its
    record is read again first, and one edited while the job ran is drifted, not overwritten."""
    from reconcile.salesforce import connect
    config = replace(CONFIG, bulk_threshold=5)
    contact_ids, _ = seed_people(sb, 10, tag="bretry")
    edited = contact_ids[3]
    sb.faults.lock_rows([edited, contact_ids[4]], times=1)
    doc = make_plan(sb, [(cid, "Title", "Engineer", "Director") for cid in contact_ids])

    def poll_sleep(seconds: float) -> None:   # someone saves the record while the job runs
        sb.store.edit(edited, {"Title": "VP Sales (user edit)"})

    sf = connect(config, env=sb.env, sleep=poll_sleep)
    report = apply_plan(doc, plan_dir_for(tmp_path, doc), sf, config, sleep=lambda s: None, now=lambda: NOW)
    results = {r.change_id: r for r in report.results}
    assert sb.store.get(edited)["Title"] == "VP Sales (user edit)"
    assert results[f"Contact:{edited}"].status is ChangeStatus.DRIFTED
    assert results[f"Contact:{contact_ids[4]}"].status is ChangeStatus.APPLIED
    assert all(sb.store.get(cid)["Title"] == "Director" for cid in contact_ids if cid != edited)
