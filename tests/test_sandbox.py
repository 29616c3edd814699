"""The sandbox org behaves like Salesforce for what reconcile uses: through
simple-salesforce itself and through plain requests."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from importlib import resources

import pytest
import requests
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from reconcile.sandbox import SandboxServer
from reconcile.sandbox import ids as sfids

V = "v61.0"


def _session(sb: SandboxServer) -> requests.Session:
    s = requests.Session()
    s.verify = sb.env["REQUESTS_CA_BUNDLE"]
    s.trust_env = False  # a REQUESTS_CA_BUNDLE in this process's environment would win
    return s


@pytest.fixture(scope="module")
def org():
    with SandboxServer(seed="demo") as sb:
        yield sb


@pytest.fixture
def sb(org):
    org.faults.clear()
    org.stats.reset()
    yield org
    org.faults.clear()


@pytest.fixture
def http(sb):
    s = _session(sb)
    s.headers["Authorization"] = f"Bearer {sb.token}"
    base = f"{sb.instance_url}/services/data/{V}/"

    def call(method, path, **kw):
        return s.request(method, base + path, **kw)

    call.session = s
    return call


@pytest.fixture
def sf(sb):
    return Salesforce(session_id=sb.token, instance=sb.env["SALESFORCE_DOMAIN"],
                      session=_session(sb), version=V[1:])


def _contact(email, **extra):
    return {"attributes": {"type": "Contact"}, "LastName": "Tester", "Email": email, **extra}


# -- ids, versions, auth, limits ------------------------------------------------------------

def test_ids_carry_the_case_checksum():
    made = sfids.make_id("003", 12345)
    assert len(made) == 18 and made.startswith("003")
    assert sfids.normalize(made[:15]) == made
    assert sfids.normalize(made.lower()) == made  # the suffix restores the case
    assert sfids.normalize("001RM000003oLrfYAE") == "001RM000003oLrfYAE"  # a real id from the docs
    assert sfids.normalize("001RM000003oLrB000") is None


def test_versions_resources_limits_and_usage_header(sb, http):
    versions = http.session.get(f"{sb.instance_url}/services/data/")
    assert versions.status_code == 200 and "Sforce-Limit-Info" not in versions.headers
    assert {"42.0", "66.0"} <= {v["version"] for v in versions.json()}
    assert http("GET", "").json()["query"] == f"/services/data/{V}/query"
    first = http("GET", "limits/")
    second = http("GET", "limits/")
    used1 = int(re.match(r"api-usage=(\d+)/15000", first.headers["Sforce-Limit-Info"]).group(1))
    used2 = int(re.match(r"api-usage=(\d+)/15000", second.headers["Sforce-Limit-Info"]).group(1))
    assert used2 == used1 + 1
    assert second.json()["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - used2}
    old = http.session.get(f"{sb.instance_url}/services/data/v41.0/limits/")
    assert old.status_code == 404 and old.json()[0]["errorCode"] == "NOT_FOUND"


def test_wrong_or_missing_token_is_invalid_session(sb):
    s = _session(sb)
    url = f"{sb.instance_url}/services/data/{V}/limits/"
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = s.get(url, headers=headers)
        assert r.status_code == 401
        assert r.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert s.get(url, headers={"Authorization": f"OAuth {sb.token}"}).status_code == 200


def test_describe_and_org_id(sf, http):
    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    status = fields["Contact_Status__c"]
    assert status["restrictedPicklist"] and [p["value"] for p in status["picklistValues"]] == ["Active", "Inactive"]
    assert fields["Name"]["updateable"] is False and fields["LastName"]["nillable"] is False
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    lead = {f["name"]: f for f in sf.Lead.describe()["fields"]}
    defaults = [p["value"] for p in lead["Status"]["picklistValues"] if p["defaultValue"]]
    assert defaults == ["Open - Not Contacted"] and "Inactive" in [p["value"] for p in lead["Status"]["picklistValues"]]
    missing = http("GET", "sobjects/Opportunity/describe/")
    assert missing.status_code == 404 and missing.json()[0]["errorCode"] == "NOT_FOUND"
    org = sf.query("SELECT Id, Name FROM Organization LIMIT 1")["records"][0]
    assert org["Id"].startswith("00D") and len(org["Id"]) == 18 and sfids.normalize(org["Id"]) == org["Id"]


# -- SOQL ----------------------------------------------------------------------------------

def test_query_pages_through_next_records_url(sb, sf, http):
    sb.store.insert_many("Contact", [{"LastName": "Pager", "Email": f"page{i}@paging.example.com"}
                                     for i in range(2500)])
    first = sf.query("SELECT Id, Email FROM Contact WHERE LastName = 'pager'")
    assert first["totalSize"] == 2500 and first["done"] is False and len(first["records"]) == 2000
    assert re.fullmatch(rf"/services/data/{V}/query/01g\w{{15}}-2000", first["nextRecordsUrl"])
    assert first["records"][0]["attributes"]["type"] == "Contact"
    rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] is True and len(rest["records"]) == 500 and "nextRecordsUrl" not in rest
    everything = sf.query_all("SELECT Id FROM Contact WHERE LastName = 'Pager'")["records"]
    assert len({r["Id"] for r in everything}) == 2500
    small = http("GET", "query", params={"q": "SELECT Id FROM Contact WHERE LastName = 'Pager'"},
                 headers={"Sforce-Query-Options": "batchSize=500"}).json()
    assert len(small["records"]) == 500 and small["nextRecordsUrl"].endswith("-500")


def test_email_matches_case_insensitively(sf):
    hits = sf.query("SELECT Id, Email FROM Contact WHERE Email IN ('mary.major@example.com')")
    assert [r["Email"] for r in hits["records"]] == ["Mary.Major@Example.com"]
    both = sf.query("select id, email from CONTACT where email = 'DANA.DUPONT@EXAMPLE.COM' "
                    "order by LastModifiedDate desc")
    assert len(both["records"]) == 2
    assert both["records"][0]["Email"] == "Dana.Dupont@example.com"  # the later one first


def test_apostrophe_and_backslash_literals(sb, sf):
    odd = ["o'brien@example.com", "back\\slash@literal.example.com", 'say"hi@literal.example.com']
    sb.store.insert("Contact", {"LastName": "Odd", "Email": odd[1]})
    sb.store.insert("Contact", {"LastName": "Odd", "Email": odd[2]})
    found = sf.query(format_soql("SELECT Email FROM Contact WHERE Email IN {}", odd))["records"]
    assert sorted(r["Email"] for r in found) == sorted(odd)
    unicode = sf.query("SELECT Email FROM Contact WHERE Email = 'o\\u0027brien@example.com'")
    assert unicode["totalSize"] == 1


@pytest.mark.parametrize("soql, code", [
    ("SELECT Id FRM Contact", "MALFORMED_QUERY"),
    ("SELECT Id FROM Contact WHERE Email = 'a\\qb'", "MALFORMED_QUERY"),
    ("SELECT Id FROM Contact WHERE Email = 'unterminated", "MALFORMED_QUERY"),
    ("SELECT Id FROM Contact WHERE Title = 'a' AND Title = 'b' OR Title = 'c'", "MALFORMED_QUERY"),
    ("SELECT Id, Xyzzy__c FROM Contact", "INVALID_FIELD"),
    ("SELECT Id FROM Contact WHERE Nope = 'x'", "INVALID_FIELD"),
    ("SELECT Id FROM Xyzzy", "INVALID_TYPE"),
])
def test_query_errors_have_salesforce_shapes(http, soql, code):
    r = http("GET", "query", params={"q": soql})
    assert r.status_code == 400
    body = r.json()
    assert isinstance(body, list) and body[0]["errorCode"] == code and body[0]["message"]


def test_query_longer_than_100000_characters_is_malformed():
    from reconcile.sandbox import soql
    with pytest.raises(soql.SoqlError) as err:  # (only reachable when the URL limit is lifted)
        soql.parse("SELECT Id FROM Contact WHERE Email = 'x' " + "OR Email = 'x' " * 7000)
    assert err.value.code == "MALFORMED_QUERY" and "100,000" in err.value.message


def test_uri_longer_than_16384_bytes_is_414(http):
    r = http("GET", "query", params={"q": "SELECT Id FROM Contact WHERE Email IN ('" + "a" * 17000 + "')"})
    assert r.status_code == 414


def test_query_errors_raise_through_simple_salesforce(sf):
    with pytest.raises(SalesforceMalformedRequest) as bad:
        sf.query("SELECT Id, Xyzzy__c FROM Contact")
    assert bad.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Xyzzy__c'" in bad.value.content[0]["message"]


def test_conditions_and_aggregates(sb, sf):
    acme = [a["Id"] for a in sb.store.records("Account") if a["Name"] == "Acme Corporation"]
    rows = sf.query(format_soql("SELECT AccountId, COUNT(Id) cnt FROM Contact WHERE AccountId IN {} "
                                "GROUP BY AccountId", acme))["records"]
    counts = {r["AccountId"]: r["cnt"] for r in rows}
    assert rows[0]["attributes"]["type"] == "AggregateResult"
    assert sorted(counts.values()) == [1, 5] and set(counts) == set(acme)
    unnamed = sf.query("SELECT COUNT(Id) FROM Lead WHERE Status NOT IN ('Inactive', 'Disqualified')")
    assert unnamed["records"][0]["expr0"] == 9
    only = sf.query("SELECT COUNT() FROM Lead WHERE (Status = 'Inactive' OR Status = 'Disqualified') "
                    "AND IsConverted = false")
    assert only["totalSize"] == 3 and only["records"] == []
    by_id = sf.query(f"SELECT Id FROM Account WHERE Id = '{acme[0][:15]}'")["records"]
    assert [r["Id"] for r in by_id] == [acme[0]]
    nulls = sf.query("SELECT Id FROM Contact WHERE Title = null AND Email LIKE 'hugo%'")
    assert nulls["totalSize"] == 1


# -- sObject rows and collections ---------------------------------------------------------

def test_single_rows_through_sftype(sb, sf):
    contact = sf.Contact
    made = contact.create({"LastName": "Row", "Email": "row.single@example.com"})
    assert made["success"] and made["id"].startswith("003")
    assert contact.update(made["id"], {"Title": "Boss"}) == 204
    got = contact.get(made["id"])
    assert got["Title"] == "Boss" and got["Name"] == "Row" and got["Contact_Status__c"] is None
    assert contact.api_usage["api-usage"].total == 15000
    with pytest.raises(SalesforceMalformedRequest) as bad:
        contact.update(made["id"], {"Contact_Status__c": "Gone"})
    assert bad.value.content[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert contact.delete(made["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        contact.get(made["id"])
    lead = sf.Lead.create({"LastName": "Lead", "Company": "X"}, headers={"Sforce-Auto-Assign": "FALSE"})
    assert sb.store.get(lead["id"])["Status"] == "Open - Not Contacted"
    assert sb.stats.auto_assign[-1] == "FALSE"
    assert "Sforce-Auto-Assign=FALSE" in sb.stats.log[-1][2]


def test_collections_create_update_delete_retrieve(sb, sf):
    created = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        _contact("coll.one@example.com", Contact_Status__c="Active"),
        {"attributes": {"type": "Lead"}, "LastName": "Coll", "Company": "C", "Email": "coll.lead@example.com"},
        _contact("coll.bad@example.com", Contact_Status__c="Retired"),
        _contact("ALICE.ARCHER@example.com"),
        _contact("coll.x@example.com", Shoe_Size__c=44),
        {"attributes": {"type": "Contact"}, "Email": "nolast@example.com"},
        _contact("not-an-address"),
    ]})
    assert [r["success"] for r in created] == [True, True, False, False, False, False, False]
    assert "id" not in created[2]
    codes = [r["errors"][0]["statusCode"] for r in created[2:]]
    assert codes == ["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "DUPLICATES_DETECTED", "INVALID_FIELD",
                     "REQUIRED_FIELD_MISSING", "INVALID_EMAIL_ADDRESS"]
    assert created[2]["errors"][0] == {"statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                       "message": "bad value for restricted picklist field: Retired",
                                       "fields": ["Contact_Status__c"]}
    assert created[3]["errors"][0]["message"] == "Use one of these records?"
    assert created[4]["errors"][0]["message"] == "No such column 'Shoe_Size__c' on sobject of type Contact"
    assert created[5]["errors"][0]["message"] == "Required fields are missing: [LastName]"
    one, lead = created[0]["id"], created[1]["id"]

    updated = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Contact"}, "id": one, "Title": "Chief", "Email": "alice.archer@example.com"},
        {"attributes": {"type": "Lead"}, "Id": lead[:15], "Status": "Inactive"},
        {"attributes": {"type": "Contact"}, "id": one, "Name": "Read Only"},
        {"attributes": {"type": "Contact"}, "id": "003Dn0000000zzz"},
        {"attributes": {"type": "Contact"}, "id": "nonsense"},
    ]})
    assert [r["success"] for r in updated] == [True, True, False, False, False]
    assert [r["errors"][0]["statusCode"] for r in updated[2:]] == [
        "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID"]
    assert sb.store.get(one)["Email"] == "alice.archer@example.com"  # duplicates: create-only rule
    assert sb.store.get(lead)["Status"] == "Inactive"

    fetched = sf.restful("composite/sobjects/Contact", method="POST",
                         json={"ids": [one, "003Dn0000000zzzAAA", lead], "fields": ["Title", "Email"]})
    assert fetched[0]["Title"] == "Chief" and fetched[0]["Id"] == one and fetched[1:] == [None, None]
    via_get = sf.restful("composite/sobjects/Contact", params={"ids": one, "fields": "Title"})
    assert via_get[0]["attributes"] == {"type": "Contact", "url": f"/services/data/{V}/sobjects/Contact/{one}"}
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite/sobjects/Contact", params={"ids": one, "fields": "Nope"})

    deleted = sf.restful("composite/sobjects", method="DELETE",
                         params={"ids": f"{one},{lead},{one}", "allOrNone": "false"})
    assert [r["success"] for r in deleted] == [True, True, False]
    assert deleted[2]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    gone = sf.query_all(f"SELECT Id, IsDeleted FROM Contact WHERE Id = '{one}'", include_deleted=True)
    assert gone["records"][0]["IsDeleted"] is True and sb.store.get(one) is None
    assert sb.stats.write_requests == 3 and sb.stats.records_written == 2 + 2 + 2


def test_all_or_none_rolls_back_and_limits_size(sb, sf, http):
    before = sb.store.count("Contact")
    result = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": [
        _contact("aon.ok@example.com"), _contact("aon.bad@example.com", Contact_Status__c="x")]})
    assert result[0] == {"success": False, "errors": [{
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
        "fields": []}]}
    assert sb.store.count("Contact") == before
    too_many = http("POST", "composite/sobjects",
                    json={"records": [_contact(f"n{i}@example.com") for i in range(201)]})
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_account_with_contacts_cannot_be_deleted(sb, sf):
    acme = next(a["Id"] for a in sb.store.records("Account") if a["Name"] == "Acme Corporation")
    result = sf.restful("composite/sobjects", method="DELETE", params={"ids": acme, "allOrNone": "false"})
    assert result[0]["success"] is False and result[0]["errors"][0]["statusCode"] == "DELETE_FAILED"


def test_stamps_move_on_every_write(sb, sf):
    cid = sb.store.insert("Contact", {"LastName": "Stamp"})
    seen = [sb.store.get(cid)["SystemModstamp"]]
    for _ in range(3):  # as fast as possible: same millisecond or not, the stamp moves
        sf.restful("composite/sobjects", method="PATCH",
                   json={"records": [{"attributes": {"type": "Contact"}, "id": cid, "Title": "Same"}]})
        seen.append(sb.store.get(cid)["SystemModstamp"])
    assert seen == sorted(set(seen)) and len(seen) == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", seen[-1])
    before = sb.store.get(cid)
    sb.store.touch_system(cid)
    touched = sb.store.get(cid)
    assert touched["LastModifiedDate"] == before["LastModifiedDate"]
    assert touched["SystemModstamp"] > before["SystemModstamp"]
    sb.store.edit(cid, {"Title": "Edited"})
    edited = sb.store.get(cid)
    assert edited["LastModifiedDate"] == edited["SystemModstamp"] > touched["SystemModstamp"]
    assert sb.stats.writes[-1][:3] == ("PATCH", "Contact", cid)


def test_thousand_updates_in_five_requests_is_fast(sb, sf):
    ids = sb.store.insert_many("Contact", [{"LastName": f"Fast {i}"} for i in range(1000)])
    start = time.perf_counter()
    for k in range(0, 1000, 200):
        result = sf.restful("composite/sobjects", method="PATCH", json={"records": [
            {"attributes": {"type": "Contact"}, "id": i, "Title": "Quick"} for i in ids[k:k + 200]]})
        assert all(r["success"] for r in result)
    assert time.perf_counter() - start < 1.0
    assert sb.stats.write_requests == 5 and sb.stats.records_written == 1000


# -- faults -------------------------------------------------------------------------------

def test_fault_http_503(sb, sf):
    sb.faults.http_503(2, path_contains="/query")
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as err:
            sf.query("SELECT Id FROM Organization")
        assert err.value.status == 503 and err.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert sf.query("SELECT Id FROM Organization")["totalSize"] == 1


def test_fault_lock_rows_and_validation_error(sb, sf):
    a, b = sb.store.insert_many("Contact", [{"LastName": "Lock A"}, {"LastName": "Lock B"}])
    sb.faults.lock_rows([a], times=1)
    sb.faults.validation_error([b], "Title may not change")
    body = {"records": [{"attributes": {"type": "Contact"}, "id": x, "Title": "New"} for x in (a, b)]}
    first = sf.restful("composite/sobjects", method="PATCH", json=body)
    assert first[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert first[1]["errors"][0] == {"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                     "message": "Title may not change", "fields": []}
    second = sf.restful("composite/sobjects", method="PATCH", json=body)
    assert second[0]["success"] is True and second[1]["success"] is False


def test_fault_limit_after(sb, sf):
    sb.faults.limit_after(1)
    sf.query("SELECT Id FROM Organization")
    with pytest.raises(SalesforceRefusedRequest) as err:
        sf.query("SELECT Id FROM Organization")
    assert err.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_daily_limit_is_enforced():
    with SandboxServer(seed="empty", daily_api_limit=2) as tiny:
        s = _session(tiny)
        url = f"{tiny.instance_url}/services/data/{V}/limits/"
        auth = {"Authorization": f"Bearer {tiny.token}"}
        assert [s.get(url, headers=auth).status_code for _ in range(3)] == [200, 200, 403]


def test_fault_expire_session(sb, sf):
    sb.faults.expire_session()
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Organization")
    sb.faults.renew_session()
    assert sf.query("SELECT Id FROM Organization")["totalSize"] == 1


def test_fault_drop_after_write_processes_then_hangs_up(sb, sf):
    sb.faults.drop_after_write()
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.restful("composite/sobjects", method="POST", json={"records": [_contact("dropped@example.com")]})
    assert len(sb.store.find("Contact", "Email", "dropped@example.com")) == 1  # it was written
    again = sf.restful("composite/sobjects", method="POST", json={"records": [_contact("dropped@example.com")]})
    assert again[0]["errors"][0]["statusCode"] == "DUPLICATES_DETECTED"


def test_fault_fail_after_commit_saves_then_answers_an_error(sb, http):
    """A write is saved, then answered 503 SERVER_UNAVAILABLE (or 500 UNKNOWN_EXCEPTION,
    or a gateway's 502/504 page): the shapes of REST API Developer Guide, "Status Codes
    and Error Responses" (500: an error within the platform; 503: the server is
    unavailable), https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm.
    Whether Salesforce itself ever answers an error after committing is not documented
    either way; the fault is the worst case a client must survive."""
    for status, code in ((503, "SERVER_UNAVAILABLE"), (500, "UNKNOWN_EXCEPTION"), (502, None), (504, None)):
        sb.faults.fail_after_commit(status)
        email = f"after.commit.{status}@example.com"
        answer = http("POST", "composite/sobjects", json={"records": [_contact(email)]})
        assert answer.status_code == status
        if code:
            assert answer.json()[0]["errorCode"] == code
        else:
            assert answer.headers["Content-Type"].startswith("text/html")
        assert len(sb.store.find("Contact", "Email", email)) == 1      # it was saved
        again = http("POST", "composite/sobjects", json={"records": [_contact(email)]})
        assert again.status_code == 200                                 # only the next one: n=1
    writes = [w for w in sb.stats.writes if w[0] == "POST"]
    assert len(writes) == 4 and sb.stats.log[0][2].startswith("503 after saving")


def test_fault_fail_after_commit_at_a_rate_is_the_same_every_run(org):
    def hits(seed):
        org.faults.clear()
        org.faults.fail_after_commit(503, rate=0.2, seed=seed, writes=["collections"])
        return [org.faults.take_after_commit("collections") for _ in range(200)]
    first = hits(7)
    assert first == hits(7) and first != hits(8)
    assert 20 <= first.count(503) <= 60 and set(first) == {None, 503}
    assert org.faults.take_after_commit("bulk_close") is None         # not among the writes chosen
    org.faults.clear()
    with pytest.raises(ValueError, match="status must be one of"):
        org.faults.fail_after_commit(404)
    with pytest.raises(ValueError, match="unknown write"):
        org.faults.fail_after_commit(503, writes=["query"])


def test_fault_fail_after_commit_on_bulk_upload_and_close(sb, http):
    """Bulk API 2.0: an upload is kept (the job processes nothing until it is closed,
    "Salesforce will start processing the job at this point",
    https://developer.salesforce.com/docs/atlas.en-us.224.0.api_bulk_v2.meta/api_bulk_v2/creating_bulk_requests.htm),
    a close runs the job; each then answered 503."""
    sb.faults.fail_after_commit(503, n=2, writes=["bulk_upload", "bulk_close"])
    job = http("POST", "jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()
    upload = http("PUT", f"jobs/ingest/{job['id']}/batches", data=b"LastName,Email\nBulk,bulk.after@example.com\n",
                  headers={"Content-Type": "text/csv"})
    assert upload.status_code == 503
    assert http("GET", f"jobs/ingest/{job['id']}").json()["state"] == "Open"
    assert not sb.store.find("Contact", "Email", "bulk.after@example.com")   # not closed: nothing written
    closed = http("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert closed.status_code == 503 and closed.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert len(sb.store.find("Contact", "Email", "bulk.after@example.com")) == 1
    assert http("GET", f"jobs/ingest/{job['id']}").json()["state"] in ("InProgress", "JobComplete")
    again = http("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert again.status_code == 409                                     # a closed job stays closed


def test_bulk_jobs_can_run_in_the_background_after_their_close(sb, http):
    """Salesforce processes an ingest job asynchronously after its close
    (https://developer.salesforce.com/docs/atlas.en-us.224.0.api_bulk_v2.meta/api_bulk_v2/creating_bulk_requests.htm):
    with ``process_delay`` the sandbox does too, so its records are untouched for a while."""
    sb.bulk.process_delay = 0.3
    try:
        job = http("POST", "jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()
        http("PUT", f"jobs/ingest/{job['id']}/batches", data=b"LastName,Email\nLate,late.bulk@example.com\n",
             headers={"Content-Type": "text/csv"})
        assert http("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"}).status_code == 200
        assert http("GET", f"jobs/ingest/{job['id']}").json()["state"] == "InProgress"
        assert not sb.store.find("Contact", "Email", "late.bulk@example.com")
        deadline = time.monotonic() + 5
        while http("GET", f"jobs/ingest/{job['id']}").json()["state"] != "JobComplete":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(sb.store.find("Contact", "Email", "late.bulk@example.com")) == 1
        assert [w[0] for w in sb.stats.writes] == ["POST"]          # counted, though no request wrote it
    finally:
        sb.bulk.process_delay = 0.0


def test_faults_and_stats_over_http(sb, http):
    control = f"{sb.instance_url}/__sandbox"
    r = http.session.post(f"{control}/faults", json={"http_503": {"n": 1}, "lock_rows": {"ids": ["003Dn0000000001"]}})
    assert r.status_code == 200 and r.json()["http_503"] == [[1, None]]
    assert "003Dn0000000001IAA" in r.json()["lock_rows"]
    assert http("GET", "limits/").status_code == 503
    assert http.session.post(f"{control}/faults", json={"nope": 1}).status_code == 400
    assert http.session.post(f"{control}/faults", json={"clear": True}).json()["lock_rows"] == {}
    armed = http.session.post(f"{control}/faults", json={"fail_after_commit": {"status": 504, "rate": 0.2,
                                                                               "seed": 3}}).json()
    assert armed["fail_after_commit"]["status"] == 504 and armed["fail_after_commit"]["rate"] == 0.2
    http.session.post(f"{control}/faults", json={"clear": True})
    stats = http.session.get(f"{control}/stats").json()
    assert stats["requests"] == 1 and stats["log"][0][0] == "GET"


# -- the demo org, persistence, the serve command ------------------------------------------

def test_demo_org_and_outcomes_match():
    state = json.loads((resources.files("reconcile.sandbox") / "demo_org.json").read_text("utf-8"))
    records = state["records"]
    assert (len(records["Contact"]), len(records["Lead"]), len(records["Account"])) == (30, 12, 6)
    text = (resources.files("reconcile.sandbox") / "demo_outcomes.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == ["email", "outcome", "new_email", "new_title", "first_name", "last_name",
                             "organization", "title", "multipub_id", "cupola_status", "observed_at",
                             "source_id"]
    assert 25 <= len(rows) <= 35
    emails = {r["Email"].lower() for r in records["Contact"] + records["Lead"] if r["Email"]}
    assert {r["email"] for r in rows if r["outcome"] != "new_contact"} - emails == {"ghost.unknown@example.com"}
    assert all(re.search(r"@example\.(com|org)$", e) for e in emails)


def test_state_is_persisted_and_reloaded(tmp_path):
    state = tmp_path / "org.json"
    with SandboxServer(state_path=state, seed="empty") as first:
        assert json.loads(state.read_text())["records"]["Contact"] == []
        s = _session(first)
        r = s.post(f"{first.instance_url}/services/data/{V}/composite/sobjects",
                   headers={"Authorization": f"Bearer {first.token}"},
                   json={"records": [_contact("kept@example.com")]})
        kept = r.json()[0]["id"]
        assert first.env["REQUESTS_CA_BUNDLE"].startswith(str(tmp_path))
    assert not list(tmp_path.glob("*.tmp"))
    with SandboxServer(state_path=state, seed="demo") as second:
        assert second.store.get(kept)["Email"] == "kept@example.com"
        assert second.store.count("Lead") == 0  # the file wins over the seed
        assert second.store.insert("Contact", {"LastName": "Next"}) > kept


def test_serve_prints_the_environment(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", "from reconcile.sandbox.cli import app; app()", "serve", "--seed", "empty",
         "--state", str(tmp_path / "s.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        env = {}
        while len(env) < 3:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            name, _, value = line.strip().removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        s = requests.Session()
        s.trust_env = False
        r = s.get(f"https://{env['SALESFORCE_DOMAIN']}/services/data/{V}/limits/",
                  headers={"Authorization": f"Bearer {env['SALESFORCE_ACCESS_TOKEN']}"},
                  verify=env["REQUESTS_CA_BUNDLE"])
        assert r.status_code == 200 and "api-usage=1/" in r.headers["Sforce-Limit-Info"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "stopped" in proc.stderr.read()


def test_bulk_api_2_shapes(sb, http):
    """Bulk API 2.0 ingest and query jobs answer with Salesforce's shapes."""
    [first] = sb.store.insert_many("Contact", [_contact("bulk.shape@example.com")])
    created = http("POST", "jobs/ingest", json={"object": "Contact", "operation": "update",
                                                "contentType": "CSV", "lineEnding": "LF"})
    assert created.status_code == 200
    job = created.json()
    assert job["id"].startswith("750") and job["state"] == "Open" and job["object"] == "Contact"
    assert job["contentUrl"] == f"services/data/{V}/jobs/ingest/{job['id']}/batches"
    data = f"Id,Title,Contact_Status__c\n{first},#N/A,Bogus\n003Dn000000zzzzIAA,X,\n".encode()
    upload = http("PUT", f"jobs/ingest/{job['id']}/batches", data=data,
                  headers={"Content-Type": "text/csv"})
    assert upload.status_code == 201
    closed = http("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert closed.json()["state"] == "UploadComplete"
    states = [http("GET", f"jobs/ingest/{job['id']}").json() for _ in range(2)]
    assert [s["state"] for s in states] == ["InProgress", "JobComplete"]
    assert states[1]["numberRecordsProcessed"] == 2 and states[1]["numberRecordsFailed"] == 2
    failed = http("GET", f"jobs/ingest/{job['id']}/failedResults/")
    assert failed.headers["Content-Type"].startswith("text/csv")
    lines = failed.text.splitlines()
    assert lines[0] == '"sf__Id","sf__Error","Id","Title","Contact_Status__c"'
    assert (f'"{first}","INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:bad value for restricted '
            f'picklist field: Bogus:Contact_Status__c --","{first}","#N/A","Bogus"') in lines
    ok = http("GET", f"jobs/ingest/{job['id']}/successfulResults/").text.splitlines()
    assert ok == ['"sf__Id","sf__Created","Id","Title","Contact_Status__c"']
    assert http("GET", f"jobs/ingest/{job['id']}/unprocessedrecords/").text.strip() == \
        '"Id","Title","Contact_Status__c"'
    again = http("PATCH", f"jobs/ingest/{job['id']}", json={"state": "Aborted"})
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "INVALIDJOBSTATE"

    query = http("POST", "jobs/query", json={"operation": "query",
                                             "query": "SELECT Id, Email FROM Contact"}).json()
    assert query["state"] == "UploadComplete"
    early = http("GET", f"jobs/query/{query['id']}/results")
    assert early.status_code == 412
    assert [http("GET", f"jobs/query/{query['id']}").json()["state"] for _ in range(2)] == \
        ["InProgress", "JobComplete"]
    total, locator, pages = 0, None, 0
    size = -(-sb.store.count("Contact") // 3)        # three pages, however many Contacts
    while locator != "null":
        params = {"maxRecords": str(size), **({"locator": locator} if locator else {})}
        page = http("GET", f"jobs/query/{query['id']}/results", params=params)
        assert page.text.splitlines()[0] == '"Id","Email"'
        total += int(page.headers["Sforce-NumberOfRecords"])
        locator, pages = page.headers["Sforce-Locator"], pages + 1
    assert total == sb.store.count("Contact") and pages == 3
    bad = http("POST", "jobs/query", json={"operation": "query", "query": "SELECT Xyzzy FROM Contact"})
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"
    assert http("GET", "jobs/ingest/750Dn000000zzzzIAA").status_code == 404
    # every bulk request is one API request; the ingest job is one write request
    assert sb.stats.requests == 9 + 4 + pages + 2 and sb.stats.write_requests == 1
