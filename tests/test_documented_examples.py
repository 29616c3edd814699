"""The adapter (reconcile/salesforce.py) fed Salesforce's own documented example
responses, and the sandbox org checked against the same shapes.

The cassettes were recorded against the sandbox org, so they only prove agreement
with our own double. Here each canned answer is the shape of an example on a
Salesforce documentation page (cited in the test's docstring; ids and words as
the page has them, trimmed to what the adapter reads), so a misreading of
Salesforce — not of the sandbox — fails a test. The ``sandbox_*`` tests then ask
the sandbox org the same question and require the documented keys.
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest
import requests

from reconcile import salesforce
from reconcile.config import DEFAULT_API_VERSION, Config
from reconcile.errors import (
    ApiLimitExceeded,
    ConfigError,
    MalformedRequest,
    SalesforceError,
    SessionExpired,
)
from reconcile.model import RecordError, SaveResult

HOST = "mydomainname.my.salesforce.com"
TOKEN_ENV = {"SALESFORCE_ACCESS_TOKEN": "00DRO0000008aXd!token", "SALESFORCE_DOMAIN": HOST}
V = f"v{DEFAULT_API_VERSION}"

# -- Salesforce's documented examples, as data ----------------------------------------------

# https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query.md
# ("Example Response Body": the first page of a 3,222-record query, with a query locator)
QUERY_FIRST_PAGE = {
    "totalSize": 3222,
    "done": False,
    "nextRecordsUrl": "/services/data/v65.0/query/01gRO0000016PIAYA2-500",
    "records": [
        {"attributes": {"type": "Contact", "url": "/services/data/v65.0/sobjects/Contact/003RO0000035WQgYAM"},
         "Id": "003RO0000035WQgYAM", "Name": "John Smith"},
        {"attributes": {"type": "Contact", "url": "/services/data/v65.0/sobjects/Contact/003RO0000035WQhYAM"},
         "Id": "003RO0000035WQhYAM", "Name": "Jane Doe"},
    ],
}
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query_more_results.htm
# (the last page: done true and no nextRecordsUrl)
QUERY_LAST_PAGE = {
    "totalSize": 3222,
    "done": True,
    "records": [
        {"attributes": {"type": "Contact", "url": "/services/data/v65.0/sobjects/Contact/003RO0000035WRiYAM"},
         "Id": "003RO0000035WRiYAM", "Name": "Ann Lee"},
    ],
}

# https://developer.salesforce.com/docs/atlas.en-us.212.0.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm
# ("Response Body Example": a failed item has no "id"; its errors carry statusCode,
# message and fields)
COLLECTIONS_CREATE = [
    {"success": False,
     "errors": [{"fields": [], "message": "Use one of these records?", "statusCode": "DUPLICATES_DETECTED"}]},
    {"id": "003RM0000068xVCYAY", "success": True, "errors": []},
]
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_update.htm
COLLECTIONS_UPDATE = [
    {"id": "001RM000003oLrHYAU", "success": True, "errors": []},
    {"success": False,
     "errors": [{"statusCode": "MALFORMED_ID", "message": "Contact ID: id value of incorrect type: 001xx000003DGb2999",
                 "fields": ["Id"]}]},
]
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm
# (allOrNone true: every item fails; the valid ones with ALL_OR_NONE_OPERATION_ROLLED_BACK)
ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "message": "Record rolled back because not all records were valid and the request was "
                          "using AllOrNone header", "fields": []}

# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_subrequest_result.htm
# (a subrequest that succeeded, and one that failed: its body is the error list)
SUBREQUEST_CREATED = {"body": {"id": "001R00000064wdtIAA", "success": True, "errors": []},
                      "httpHeaders": {"Location": "/services/data/v67.0/sobjects/Account/001R00000064wdtIAA"},
                      "httpStatusCode": 201, "referenceId": "refAccount"}
SUBREQUEST_FAILED = {"body": [{"message": "Email: invalid email address: Not a real email address",
                               "errorCode": "INVALID_EMAIL_ADDRESS", "fields": ["Email"]}],
                     "httpHeaders": {}, "httpStatusCode": 400, "referenceId": "badContact"}

# https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/create_job.htm and
# https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm
# (job info: apiVersion is a number, the ingest job's contentUrl is relative)
INGEST_JOB_OPEN = {
    "id": "7505fEXAMPLE4C2AAM", "operation": "insert", "object": "Contact",
    "createdById": "0055fEXAMPLEtG4AAI", "createdDate": "2022-01-02T21:33:43.000+0000",
    "systemModstamp": "2022-01-02T21:33:43.000+0000", "state": "Open", "concurrencyMode": "Parallel",
    "contentType": "CSV", "apiVersion": 62.0,
    "contentUrl": "services/data/v62.0/jobs/ingest/7505fEXAMPLE4C2AAM/batches",
    "lineEnding": "LF", "columnDelimiter": "COMMA",
}
INGEST_JOB_COMPLETE = {
    **{k: v for k, v in INGEST_JOB_OPEN.items() if k != "contentUrl"},
    "state": "JobComplete", "jobType": "V2Ingest", "numberRecordsProcessed": 2, "numberRecordsFailed": 1,
    "retries": 0, "totalProcessingTime": 334, "apiActiveProcessingTime": 165, "apexProcessingTime": 0,
}
# https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_successful_results.htm
# https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_failed_results.htm
SUCCESSFUL_CSV = b'"sf__Id","sf__Created",LastName,Email\n"003RM0000068xVCYAY","true",Smith,smith@example.org\n'
FAILED_CSV = (b'"sf__Id","sf__Error",LastName,Email\n'
              b'"","REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --",,x@example.org\n')

# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
# (an error body is a list of {message, errorCode[, fields]})
ERROR_BODIES = [
    (401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], SessionExpired),
    (403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
     ApiLimitExceeded),
    (400, [{"message": "unexpected token: FORM", "errorCode": "MALFORMED_QUERY"}], MalformedRequest),
    (404, [{"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": []}], SalesforceError),
]

# https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
# (the token endpoint's answer; also the JWT bearer and username-password flows')
TOKEN_GRANTED = {
    "access_token": "00DB0000000TfcR!AQQAQFhoK8vTMg_rKA.esrJ2bCs.OOIjJgl.9Cx6O7KqjZmHMLOyVb",
    "signature": "d/SxeYBxH0GSVko0HMgcUxuZy0PA2cDDz1u7g7JtDHw=",
    "scope": "api",
    "instance_url": "https://mydomainname.my.salesforce.com",
    "id": "https://login.salesforce.com/id/00DB0000000TfcRMAS/005B0000005Bk90IAC",
    "token_type": "Bearer",
    "issued_at": "1558553873237",
}
# https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
# (HTTP 400 with a standard OAuth error body)
TOKEN_REFUSED = {"error": "invalid_grant", "error_description": "authentication failure"}


# -- a transport that answers from a script ------------------------------------------------

class Scripted(requests.adapters.BaseAdapter):
    """Answers each request with the next (status, body[, headers]); a bytes body is sent
    as it is (CSV), anything else as JSON. Keeps every request in ``sent``."""

    def __init__(self, *replies):
        super().__init__()
        self.replies = list(replies)
        self.sent: list[requests.PreparedRequest] = []

    def close(self):
        pass

    def send(self, request, **kwargs):
        self.sent.append(request)
        status, body, *rest = self.replies.pop(0)
        resp = requests.Response()
        resp.status_code, resp.request, resp.url = status, request, request.url
        resp.headers.update({"Sforce-Limit-Info": "api-usage=18/15000", **(rest[0] if rest else {})})
        if isinstance(body, bytes):
            resp._content = body
            resp.headers.setdefault("Content-Type", "text/csv")
        else:
            resp._content = b"" if body is None else json.dumps(body).encode()
            resp.headers.setdefault("Content-Type", "application/json;charset=UTF-8")
        resp.encoding = "utf-8"
        return resp


def adapter(*replies, env=TOKEN_ENV, config=None):
    fake = Scripted(*replies)
    session = requests.Session()
    session.mount("https://", fake)
    sf = salesforce.connect(config or Config(bulk_poll_seconds=0), env, session=session, sleep=lambda s: None)
    return sf, fake


# -- the adapter reads Salesforce's examples ------------------------------------------------------

def test_query_follows_the_documented_next_records_url_and_strips_attributes():
    """https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query.md and
    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query_more_results.htm:
    ``nextRecordsUrl`` is a path from the host (its version may differ from ours); the
    last page says ``done: true`` and has no ``nextRecordsUrl``."""
    sf, fake = adapter((200, QUERY_FIRST_PAGE), (200, QUERY_LAST_PAGE))
    rows = sf.query("SELECT Id, Name FROM Contact")
    assert rows == [{"Id": "003RO0000035WQgYAM", "Name": "John Smith"},
                    {"Id": "003RO0000035WQhYAM", "Name": "Jane Doe"},
                    {"Id": "003RO0000035WRiYAM", "Name": "Ann Lee"}]
    assert urlparse(fake.sent[1].url).path == "/services/data/v65.0/query/01gRO0000016PIAYA2-500"
    assert urlparse(fake.sent[1].url).netloc == HOST
    assert sf.calls == 2


def test_collections_create_reads_a_failed_item_without_an_id():
    """https://developer.salesforce.com/docs/atlas.en-us.212.0.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm:
    200 OK with one SaveResult per record in request order; a failed one has no ``id``."""
    sf, _ = adapter((200, COLLECTIONS_CREATE))
    results = sf.create("Contact", [{"LastName": "Johnson"}, {"LastName": "Erica"}])
    assert results == [
        SaveResult(id=None, success=False, created=False,
                   errors=(RecordError("DUPLICATES_DETECTED", "Use one of these records?", ()),)),
        SaveResult(id="003RM0000068xVCYAY", success=True, created=True),
    ]


def test_collections_update_reads_an_error_with_fields():
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_update.htm"""
    sf, _ = adapter((200, COLLECTIONS_UPDATE))
    results = sf.update("Contact", [{"Id": "001RM000003oLrHYAU", "Title": "x"},
                                    {"Id": "001xx000003DGb2999", "Title": "y"}])
    assert results[0] == SaveResult(id="001RM000003oLrHYAU", success=True)
    assert results[1].success is False and results[1].id is None
    assert results[1].errors == (RecordError("MALFORMED_ID", "Contact ID: id value of incorrect type: "
                                             "001xx000003DGb2999", ("Id",)),)


def test_collections_all_or_none_rollback_is_a_failure_for_every_record():
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm
    (allOrNone): the valid records come back ``ALL_OR_NONE_OPERATION_ROLLED_BACK``."""
    sf, _ = adapter((200, [{"success": False, "errors": [ROLLED_BACK]}, COLLECTIONS_UPDATE[1]]))
    results = sf.update("Contact", [{"Id": "003RM0000068xVCYAY", "Title": "x"}, {"Id": "001xx000003DGb2999"}])
    assert [r.success for r in results] == [False, False]
    assert results[0].errors[0].status_code == "ALL_OR_NONE_OPERATION_ROLLED_BACK"


def test_composite_subrequest_error_body_is_translated_with_its_code():
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_subrequest_result.htm:
    a failed subrequest's ``body`` is the error list and ``httpStatusCode`` its status;
    the top-level answer is 200 with ``compositeResponse``."""
    failed = {**SUBREQUEST_FAILED, "referenceId": "describe0",
              "body": [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
              "httpStatusCode": 404}
    org = {"body": {"totalSize": 1, "done": True, "records": [
        {"attributes": {"type": "Organization"}, "Id": "00DRO0000008aXd2AI", "Name": "Acme",
         "IsSandbox": False, "OrganizationType": "Enterprise Edition"}]},
        "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "organization"}
    sf, _ = adapter((200, {"compositeResponse": [failed, org]}))
    with pytest.raises(SalesforceError) as err:
        sf.org_and_describe(["Contact"])
    assert err.value.code == "NOT_FOUND" and err.value.status == 404


def test_composite_answers_are_matched_by_reference_id_not_position():
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_subrequest_result.htm:
    ``referenceId`` associates a subrequest with its result."""
    describe = {"body": {"name": "Contact", "fields": []}, "httpHeaders": {}, "httpStatusCode": 200,
                "referenceId": "describe0"}
    org = {"body": {"totalSize": 1, "done": True, "records": [
        {"attributes": {"type": "Organization"}, "Id": "00DRO0000008aXd2AI", "Name": "Acme",
         "IsSandbox": False, "OrganizationType": "Enterprise Edition"}]},
        "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "organization"}
    sf, _ = adapter((200, {"compositeResponse": [org, describe]}))
    info, describes = sf.org_and_describe(["Contact"])
    assert info.org_id == "00DRO0000008aXd2AI" and info.is_sandbox is False and info.name == "Acme"
    assert describes == {"Contact": {"name": "Contact", "fields": []}}


def test_bulk_ingest_reads_documented_job_info_and_result_files():
    """https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm
    (job info), get_job_successful_results.htm and get_job_failed_results.htm (CSV with
    ``sf__Id``/``sf__Created`` and ``sf__Id``/``sf__Error`` before the uploaded columns)."""
    sf, fake = adapter(
        (200, INGEST_JOB_OPEN), (201, None), (200, {**INGEST_JOB_OPEN, "state": "UploadComplete"}),
        (200, INGEST_JOB_COMPLETE), (200, SUCCESSFUL_CSV), (200, FAILED_CSV), (200, b"LastName,Email\n"))
    outcome = sf.bulk_ingest("insert", "Contact", [{"LastName": "Smith", "Email": "smith@example.org"},
                                                   {"LastName": None, "Email": "x@example.org"}])
    assert outcome.job_id == "7505fEXAMPLE4C2AAM" and outcome.state == "JobComplete"
    assert outcome.records_processed == 2 and outcome.records_failed == 1
    assert outcome.successful == [{"sf__Id": "003RM0000068xVCYAY", "sf__Created": "true",
                                   "LastName": "Smith", "Email": "smith@example.org"}]
    assert outcome.failed[0]["sf__Id"] is None
    assert outcome.failed[0]["sf__Error"].startswith("REQUIRED_FIELD_MISSING:")
    assert outcome.unprocessed == []
    assert [urlparse(r.url).path.rsplit("/", 1)[-1] or r.method for r in fake.sent][:3] == [
        "ingest", "batches", "7505fEXAMPLE4C2AAM"]


@pytest.mark.parametrize("status, body, error", ERROR_BODIES,
                         ids=[b[0]["errorCode"] for _, b, _ in ERROR_BODIES])
def test_documented_error_bodies_become_reconcile_errors(status, body, error):
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm"""
    sf, _ = adapter((status, body))
    with pytest.raises(error) as err:
        sf.describe("Contact")
    assert err.value.code == body[0]["errorCode"] and err.value.status == status
    assert body[0]["message"] in str(err.value)


def test_documented_token_response_signs_in():
    """https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm:
    the token endpoint answers ``access_token``, ``instance_url``, ``id``, ``token_type``,
    ``issued_at``, ``signature``, ``scope``; API calls then go to ``instance_url``."""
    env = {"SALESFORCE_CLIENT_ID": "3MVG9example", "SALESFORCE_CLIENT_SECRET": "secret",
           "SALESFORCE_DOMAIN": "acme.my.salesforce.com"}
    sf, fake = adapter((200, TOKEN_GRANTED), (200, {"name": "Contact", "fields": []}), env=env)
    sf.describe("Contact")
    assert urlparse(fake.sent[0].url).path == "/services/oauth2/token"
    assert fake.sent[1].headers["Authorization"] == "Bearer " + TOKEN_GRANTED["access_token"]
    assert urlparse(fake.sent[1].url).netloc == "mydomainname.my.salesforce.com"


def test_documented_token_refusal_is_one_line_with_the_oauth_code():
    """https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm:
    HTTP 400 with ``{"error", "error_description"}``."""
    env = {"SALESFORCE_CLIENT_ID": "3MVG9example", "SALESFORCE_CLIENT_SECRET": "wrong",
           "SALESFORCE_DOMAIN": "acme.my.salesforce.com"}
    with pytest.raises(ConfigError) as err:
        adapter((400, TOKEN_REFUSED), env=env)
    assert err.value.code == "invalid_grant"
    assert "authentication failure" in str(err.value) and "\n" not in str(err.value)
    assert "wrong" not in str(err.value)


# -- the sandbox org answers in the same shapes ------------------------------------------------

def _keys(value) -> set[str]:
    return set(value) if isinstance(value, dict) else set()


@pytest.fixture()
def api(org):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {org.token}"
    base = f"{org.instance_url}/services/data/{V}/"

    def call(method, path, **kw):
        url = path if path.startswith("https://") else base + path
        return session.request(method, url, timeout=30, verify=str(org.ca_path), **kw)

    call.org = org
    yield call
    session.close()


def test_sandbox_query_pages_have_the_documented_keys(api):
    """https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query.md"""
    first = api("GET", "query", params={"q": "SELECT Id, Name FROM Contact"},
                headers={"Sforce-Query-Options": "batchSize=200"}).json()
    assert _keys(first) == {"totalSize", "done", "records"}        # one page: no locator
    for i in range(210):
        api.org.store.insert("Contact", {"LastName": f"Paged {i}"})
    first = api("GET", "query", params={"q": "SELECT Id, Name FROM Contact"},
                headers={"Sforce-Query-Options": "batchSize=200"}).json()
    assert _keys(first) == _keys(QUERY_FIRST_PAGE) and first["done"] is False
    assert _keys(first["records"][0]) == _keys(QUERY_FIRST_PAGE["records"][0])
    assert _keys(first["records"][0]["attributes"]) == {"type", "url"}
    last = api("GET", f"https://{urlparse(api.org.instance_url).netloc}{first['nextRecordsUrl']}").json()
    assert _keys(last) == _keys(QUERY_LAST_PAGE) and last["done"] is True


def test_sandbox_collections_results_have_the_documented_shape(api):
    """https://developer.salesforce.com/docs/atlas.en-us.212.0.api_rest.meta/api_rest/resources_composite_sobjects_collections_create.htm:
    a failed create has no ``id``; every error has ``statusCode``, ``message`` and ``fields``."""
    results = api("POST", "composite/sobjects", json={"allOrNone": False, "records": [
        {"attributes": {"type": "Contact"}, "FirstName": "No last name"},
        {"attributes": {"type": "Contact"}, "LastName": "Johnson"}]}).json()
    assert _keys(results[0]) == _keys(COLLECTIONS_CREATE[0])
    assert _keys(results[0]["errors"][0]) == _keys(COLLECTIONS_CREATE[0]["errors"][0])
    assert _keys(results[1]) == _keys(COLLECTIONS_CREATE[1])
    rolled = api("POST", "composite/sobjects", json={"allOrNone": True, "records": [
        {"attributes": {"type": "Contact"}, "LastName": "Kept?"},
        {"attributes": {"type": "Contact"}, "FirstName": "No last name"}]}).json()
    assert rolled[0]["errors"] == [ROLLED_BACK]


def test_sandbox_composite_answers_have_the_documented_shape(api):
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_subrequest_result.htm"""
    answer = api("POST", "composite", json={"compositeRequest": [
        {"method": "POST", "url": f"/services/data/{V}/sobjects/Account", "referenceId": "refAccount",
         "body": {"Name": "Documented Co"}},
        {"method": "POST", "url": f"/services/data/{V}/sobjects/Contact", "referenceId": "badContact",
         "body": {"FirstName": "No last name", "AccountId": "@{refAccount.id}"}}]})
    assert answer.status_code == 200
    created, failed = answer.json()["compositeResponse"]
    assert _keys(created) == _keys(SUBREQUEST_CREATED) and created["httpStatusCode"] == 201
    assert _keys(created["body"]) == _keys(SUBREQUEST_CREATED["body"])
    assert created["httpHeaders"]["Location"].endswith("/sobjects/Account/" + created["body"]["id"])
    assert _keys(failed) == _keys(SUBREQUEST_FAILED) and failed["httpStatusCode"] == 400
    assert _keys(failed["body"][0]) == _keys(SUBREQUEST_FAILED["body"][0])


def test_sandbox_bulk_job_info_has_the_documented_keys(api):
    """https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm"""
    job = api("POST", "jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()
    assert _keys(INGEST_JOB_OPEN) <= _keys(job) and isinstance(job["apiVersion"], float)
    api("PUT", f"jobs/ingest/{job['id']}/batches", data=b"LastName\nBulk\n", headers={"Content-Type": "text/csv"})
    api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    info = {}
    while info.get("state") not in ("JobComplete", "Failed"):
        info = api("GET", f"jobs/ingest/{job['id']}").json()
    assert _keys(INGEST_JOB_COMPLETE) <= _keys(info) | {"contentUrl"}
    good = api("GET", f"jobs/ingest/{job['id']}/successfulResults").content
    assert good.splitlines()[0].startswith(b'"sf__Id","sf__Created"')


def test_sandbox_error_bodies_have_the_documented_shape(api):
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm:
    ``ENTITY_IS_DELETED`` names the fields (none) like every record error."""
    created = api("POST", "sobjects/Contact", json={"LastName": "Soon gone"}).json()
    api("DELETE", f"sobjects/Contact/{created['id']}")
    answer = api("GET", f"sobjects/Contact/{created['id']}")
    assert answer.status_code == 404
    assert answer.json() == ERROR_BODIES[3][1]
    expired = api("GET", "limits", headers={"Authorization": "Bearer nope"})
    assert expired.status_code == 401 and _keys(expired.json()[0]) == _keys(ERROR_BODIES[0][1][0])


def test_sandbox_token_answers_have_the_documented_keys(org):
    """https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
    and https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm"""
    app = org.oauth.app
    url = f"{org.instance_url}/services/oauth2/token"
    granted = requests.post(url, data={"grant_type": "client_credentials", "client_id": app.client_id,
                                       "client_secret": app.client_secret}, verify=str(org.ca_path), timeout=30)
    assert granted.status_code == 200 and _keys(granted.json()) == _keys(TOKEN_GRANTED)
    refused = requests.post(url, data={"grant_type": "password", "client_id": app.client_id,
                                       "client_secret": app.client_secret, "username": app.username,
                                       "password": "wrong"}, verify=str(org.ca_path), timeout=30)
    assert refused.status_code == 400 and _keys(refused.json()) == _keys(TOKEN_REFUSED)
    assert refused.json()["error"] == "invalid_grant"


def test_sandbox_resources_list_identity_and_serve_it(api):
    """https://developer.salesforce.com/docs/platform/api-rest/guide/dome-discoveryresource.md
    (``identity`` is the user's absolute Identity URL) and
    https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_openid.htm (the Identity
    URL answers who the user is, with the token as a parameter or a Bearer header)."""
    resources = api("GET", "").json()
    identity = resources["identity"]
    assert identity == api.org.identity_url and identity.startswith("https://")
    who = requests.get(identity, params={"format": "json", "oauth_token": api.org.token, "version": "latest"},
                       verify=str(api.org.ca_path), timeout=30)
    assert who.status_code == 200
    body = who.json()
    assert body["id"] == identity and body["organization_id"] == api.org.store.org_id
    assert body["user_id"] == api.org.oauth.app.user_id and body["username"] == api.org.oauth.app.username
    assert body["urls"]["rest"].endswith("/services/data/v68.0/")
    refused = requests.get(identity, params={"oauth_token": "nope"}, verify=str(api.org.ca_path), timeout=30)
    assert (refused.status_code, refused.text) == (403, "Bad_OAuth_Token")
    missing = requests.get(identity, verify=str(api.org.ca_path), timeout=30)
    assert (missing.status_code, missing.text) == (403, "Missing_OAuth_Token")


def test_sandbox_limits_move_with_bulk_use(api):
    """https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/bulk_api_2_limits.htm
    (DailyBulkV2QueryJobs counts query jobs) and
    https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_understanding_bulk2_ingest.htm
    (an ingest job uses a batch per 10,000 records, from the shared DailyBulkApiBatches)."""
    before = api("GET", "limits").json()
    api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Contact"})
    job = api("POST", "jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()
    rows = b"LastName\n" + b"".join(b"Row %d\n" % i for i in range(10_001))
    api("PUT", f"jobs/ingest/{job['id']}/batches", data=rows, headers={"Content-Type": "text/csv"})
    api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    after = api("GET", "limits").json()

    def used(name):
        return before[name]["Remaining"] - after[name]["Remaining"]

    assert used("DailyBulkV2QueryJobs") == 1
    assert used("DailyBulkApiBatches") == 2          # 10,001 rows: two batches
    assert used("DailyApiRequests") == 5             # the four requests in between, and this one


def test_sandbox_reads_a_chunked_upload_and_keeps_the_connection(api):
    """A Bulk API 2.0 upload streamed without ``Content-Length`` (``Transfer-Encoding:
    chunked``, RFC 9112 §7.1, as Node's fetch sends it) is read to its last chunk: every
    row is processed and the next request on the same connection is answered."""
    job = api("POST", "jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()

    def chunks():
        yield b"LastName,Email\n"
        for i in range(300):
            yield b"Chunked %d,chunked.%d@example.org\n" % (i, i)

    upload = api("PUT", f"jobs/ingest/{job['id']}/batches", data=chunks(), headers={"Content-Type": "text/csv"})
    assert upload.status_code == 201
    assert upload.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in upload.request.headers
    closed = api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    assert closed.status_code == 200
    info = {}
    while info.get("state") not in ("JobComplete", "Failed"):
        info = api("GET", f"jobs/ingest/{job['id']}").json()
    assert info["state"] == "JobComplete" and info["numberRecordsProcessed"] == 300
    assert api.org.store.count("Contact") >= 300


def test_sandbox_refuses_a_garbled_chunked_body_and_closes(org):
    """A chunk size that is not hexadecimal: 400, and the connection is closed rather
    than read as the next request."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=str(org.ca_path))
    with socket.create_connection((org.host, org.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=org.host) as tls:
        tls.sendall(b"PUT /services/data/" + V.encode() + b"/jobs/ingest/750x/batches HTTP/1.1\r\n"
                    b"Host: x\r\nAuthorization: Bearer " + org.token.encode() + b"\r\n"
                    b"Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_documented_limit_info_header_is_read_without_the_per_app_figure():
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm:
    ``Sforce-Limit-Info: api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)``
    — the org's figure is ``api-usage``, not the connected app's."""
    usage = salesforce.parse_limit_info(
        "api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)")
    assert (usage.used, usage.total) == (25, 5000)


def test_bulk_query_pages_by_the_documented_locator_until_null():
    """https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/query_get_job_results.htm:
    each results page names the next in ``Sforce-Locator``; the last says ``null``."""
    job = {"id": "750R0000000zlh9IAA", "operation": "query", "object": "Contact",
           "createdById": "005R0000000GiwjIAC", "createdDate": "2018-12-10T17:50:19.000+0000",
           "systemModstamp": "2018-12-10T17:50:19.000+0000", "state": "UploadComplete",
           "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": 62.0,
           "lineEnding": "LF", "columnDelimiter": "COMMA"}
    sf, fake = adapter(
        (200, job), (200, {**job, "state": "JobComplete", "numberRecordsProcessed": 2, "retries": 0,
                           "totalProcessingTime": 254}),
        (200, b'"Id","Email"\n"003R000000A","a@example.org"\n',
         {"Sforce-Locator": "MTAwMDA", "Sforce-NumberOfRecords": "1"}),
        (200, b'"Id","Email"\n"003R000000B",""\n', {"Sforce-Locator": "null", "Sforce-NumberOfRecords": "1"}))
    rows = sf.bulk_query("SELECT Id, Email FROM Contact")
    assert rows == [{"Id": "003R000000A", "Email": "a@example.org"}, {"Id": "003R000000B", "Email": None}]
    assert "locator=MTAwMDA" in fake.sent[3].url


def test_sandbox_composite_all_or_none_rolls_back_every_subrequest(api):
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_composite.htm
    and resources_composite_subrequest_result.htm: with ``allOrNone`` true a failed
    subrequest rolls the whole request back and every other subrequest answers 400;
    the top-level answer is 200."""
    before = api.org.store.snapshot()
    answer = api("POST", "composite", json={"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": f"/services/data/{V}/sobjects/Account", "referenceId": "acct",
         "body": {"Name": "Rolled Back Co"}},
        {"method": "PATCH", "url": f"/services/data/{V}/sobjects/Account/@{{acct.id}}", "referenceId": "rename",
         "body": {"Name": "Renamed Co"}},
        {"method": "POST", "url": f"/services/data/{V}/composite/sobjects", "referenceId": "people",
         "body": {"records": [{"attributes": {"type": "Contact"}, "LastName": "Kept", "AccountId": "@{acct.id}"}]}},
        {"method": "POST", "url": f"/services/data/{V}/sobjects/Contact", "referenceId": "bad",
         "body": {"FirstName": "No last name"}},
        {"method": "GET", "url": f"/services/data/{V}/limits", "referenceId": "after"}]})
    assert answer.status_code == 200
    by_ref = {a["referenceId"]: a for a in answer.json()["compositeResponse"]}
    assert by_ref["bad"]["httpStatusCode"] == 400
    assert by_ref["bad"]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    for ref in ("acct", "rename", "people", "after"):
        assert by_ref[ref]["httpStatusCode"] == 400
        assert by_ref[ref]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert api.org.store.snapshot() == before


def test_sandbox_composite_without_all_or_none_skips_only_dependents(api):
    """resources_composite_composite.htm: with ``allOrNone`` false the subrequests that do
    not depend on a failed one run; a dependent one is not run."""
    answer = api("POST", "composite", json={"compositeRequest": [
        {"method": "POST", "url": f"/services/data/{V}/sobjects/Contact", "referenceId": "bad",
         "body": {"FirstName": "No last name"}},
        {"method": "PATCH", "url": f"/services/data/{V}/sobjects/Contact/@{{bad.id}}", "referenceId": "dependent",
         "body": {"Title": "x"}},
        {"method": "POST", "url": f"/services/data/{V}/sobjects/Contact", "referenceId": "good",
         "body": {"LastName": "Independent"}},
        {"method": "DELETE", "url": f"/services/data/{V}/sobjects/Contact/@{{good.id}}", "referenceId": "gone"}]})
    by_ref = {a["referenceId"]: a for a in answer.json()["compositeResponse"]}
    assert by_ref["bad"]["httpStatusCode"] == 400
    assert by_ref["dependent"]["httpStatusCode"] == 400
    assert by_ref["dependent"]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert by_ref["good"]["httpStatusCode"] == 201 and by_ref["gone"]["httpStatusCode"] == 204
    assert api.org.store.get(by_ref["good"]["body"]["id"]) is None          # deleted


@pytest.mark.parametrize("subrequest", [
    {"method": "POST", "url": f"/services/data/{V}/sobjects/Contact", "body": {"LastName": "x"}},
    {"method": "FETCH", "url": f"/services/data/{V}/limits", "referenceId": "r"},
    {"method": "GET", "url": f"/services/data/{V}/limits", "referenceId": "has space"},
], ids=["no referenceId", "bad method", "bad referenceId"])
def test_sandbox_composite_refuses_a_malformed_request_before_running_any(api, subrequest):
    """https://developer.salesforce.com/blogs/tech-pubs/2017/02/handle-errors-with-composite-resources.html:
    a request body that fails the sanity checks (e.g. a subrequest without
    ``referenceId``) is a 400 without processing any subrequest."""
    before = api.org.store.snapshot()
    answer = api("POST", "composite", json={"compositeRequest": [
        {"method": "POST", "url": f"/services/data/{V}/sobjects/Contact", "referenceId": "first",
         "body": {"LastName": "Never written"}}, subrequest]})
    assert answer.status_code == 400 and answer.json()[0]["errorCode"] == "INVALID_INPUT"
    assert api.org.store.snapshot() == before


def test_whoami_reads_the_documented_limits_and_userinfo():
    """https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_limits.htm
    (``{"DailyApiRequests": {"Max": 5000, "Remaining": 4937}, …}``) inside a composite
    answer, and the UserInfo endpoint's answer
    (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_userinfo_endpoint.htm:
    ``user_id``, ``organization_id``, ``preferred_username`` among OpenID Connect claims)."""
    org = {"body": {"totalSize": 1, "done": True, "records": [
        {"attributes": {"type": "Organization"}, "Id": "00DRO0000008aXd2AI", "Name": "Acme",
         "IsSandbox": True, "OrganizationType": "Developer Edition"}]},
        "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "organization"}
    limits = {"body": {"DailyApiRequests": {"Max": 5000, "Remaining": 4937},
                       "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000}},
              "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "limits"}
    userinfo = {"sub": "https://login.salesforce.com/id/00DRO0000008aXd2AI/005RO000000HfnkYAC",
                "user_id": "005RO000000HfnkYAC", "organization_id": "00DRO0000008aXd2AI",
                "preferred_username": "admin@acme.example", "nickname": "admin", "name": "Ada Admin",
                "email": "admin@acme.example", "email_verified": True, "zoneinfo": "America/Los_Angeles",
                "active": True, "user_type": "STANDARD", "language": "en_US", "locale": "en_US",
                "utcOffset": -28800000, "updated_at": "2022-08-03T19:37:59Z"}
    sf, fake = adapter((200, {"compositeResponse": [limits, org]}), (200, userinfo))
    who = sf.whoami()
    assert who["org_id"] == "00DRO0000008aXd2AI" and who["is_sandbox"] is True
    assert who["username"] == "admin@acme.example" and who["user_id"] == "005RO000000HfnkYAC"
    assert who["daily_api_requests"] == {"max": 5000, "remaining": 4937}
    assert urlparse(fake.sent[1].url).path == "/services/oauth2/userinfo"


def test_a_bulk_job_that_failed_without_records_is_an_error_with_its_message():
    """https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm:
    ``state`` Failed and ``errorMessage`` says why; nothing was processed."""
    failed = {**INGEST_JOB_COMPLETE, "state": "Failed", "numberRecordsProcessed": 0, "numberRecordsFailed": 0,
              "errorMessage": "InvalidBatch : Field name not found : Emial"}
    sf, _ = adapter((200, INGEST_JOB_OPEN), (201, None), (200, {**INGEST_JOB_OPEN, "state": "UploadComplete"}),
                    (200, failed))
    with pytest.raises(SalesforceError) as err:
        sf.bulk_ingest("insert", "Contact", [{"LastName": "Smith", "Emial": "x@example.org"}])
    assert err.value.code == "BULK_JOB_FAILED"
    assert "Field name not found : Emial" in str(err.value)
