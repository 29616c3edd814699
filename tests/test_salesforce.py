"""The Salesforce adapter against a fake HTTP layer (a requests transport adapter),
plus a few live tests against the bundled sandbox org (marked e2e)."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, quote_plus, urlparse

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.exceptions import MaxRetryError, NewConnectionError

from reconcile import salesforce
from reconcile.config import DEFAULT_API_VERSION, Config
from reconcile.errors import (
    ApiLimitExceeded,
    ConfigError,
    MalformedRequest,
    OutcomeUnknown,
    PermissionDenied,
    SalesforceError,
    SessionExpired,
    TransientError,
)
from reconcile.model import ApiUsage, RecordError, SaveResult

HOST = "example.my.salesforce.com"
TOKEN = "00DFAKE!secret-token-value"
TOKEN_ENV = {"SALESFORCE_ACCESS_TOKEN": TOKEN, "SALESFORCE_DOMAIN": HOST}


# -- a reference SOQL string-literal reader (SOQL's documented unescaping) ----------------

_UNESCAPE = {"n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t", "b": "\b",
             "B": "\b", "f": "\f", "F": "\f", '"': '"', "'": "'", "\\": "\\"}


def read_literal(text: str, i: int = 0) -> tuple[str, int]:
    """Parse the quoted literal starting at text[i]; return (value, index after it)."""
    assert text[i] == "'", text[i:i + 20]
    out, i = [], i + 1
    while True:
        ch = text[i]
        if ch == "'":
            return "".join(out), i + 1
        if ch == "\\":
            nxt = text[i + 1]
            if nxt == "u":
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            if nxt not in _UNESCAPE:
                raise ValueError(f"invalid escape \\{nxt}")
            out.append(_UNESCAPE[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1


def in_values(soql: str) -> tuple[str, list[str]]:
    """``... WHERE Field IN ('a','b')`` → ("Field", ["a", "b"])."""
    match = re.search(r"WHERE (\w+) IN \(", soql)
    field, i, values = match.group(1), match.end(), []
    while True:
        value, i = read_literal(soql, i)
        values.append(value)
        if soql[i] == ")":
            return field, values
        assert soql[i] == ",", soql[i:]
        i += 1


# -- the fake org ---------------------------------------------------------------------------

def _response(request, status, body=None, headers=None):
    resp = requests.Response()
    resp.status_code = status
    resp.request = request
    resp.url = request.url
    resp.headers.update({"Sforce-Limit-Info": "api-usage=17/15000", **(headers or {})})
    resp._content = b"" if body is None else json.dumps(body).encode()
    resp.encoding = "utf-8"
    return resp


class FakeOrg(requests.adapters.BaseAdapter):
    """Answers REST requests from ``records`` (sobject -> list of dicts); ``script`` is a
    queue of canned replies (status, body[, headers]) or exceptions served first."""

    def __init__(self, records=None, page_size=2000):
        super().__init__()
        self.records = records or {}
        self.page_size = page_size
        self.script = []
        self.sent = []          # every PreparedRequest
        self.pages = {}

    def close(self):
        pass

    def send(self, request, **kwargs):
        self.sent.append(request)
        if self.script:
            reply = self.script.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return _response(request, *reply)
        url = urlparse(request.url)
        path = re.sub(r"^/services/data/v[0-9.]+/", "", url.path)
        if path == "query/":
            return self._query(request, parse_qs(url.query)["q"][0])
        if path.startswith("query/"):
            rows, rest = self.pages[path.split("/")[1]]
            return _response(request, 200, self._page(rows, rest))
        if path.startswith("composite/sobjects"):
            body = json.loads(request.body) if request.body else None
            if request.method in ("POST", "PATCH") and "records" in body:
                return _response(request, 200, [
                    {"id": r.get("Id", f"003NEW{i:012d}"), "success": True, "errors": []}
                    if r.get("LastName", "x") else
                    {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                                   "message": "Required fields are missing: [LastName]",
                                                   "fields": ["LastName"]}]}
                    for i, r in enumerate(body["records"])])
            if request.method == "DELETE":
                ids = parse_qs(url.query)["ids"][0].split(",")
                return _response(request, 200, [{"id": i, "success": True, "errors": []} for i in ids])
            sobject = path.split("/")[2]
            by_id = {r["Id"]: r for r in self.records.get(sobject, [])}
            return _response(request, 200, [
                {"attributes": {"type": sobject}, **{f: by_id[i].get(f) for f in body["fields"]}}
                if i in by_id else None for i in body["ids"]])
        if path.endswith("/describe/"):
            return _response(request, 200, {"name": path.split("/")[1], "fields": []})
        return _response(request, 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])

    def _query(self, request, soql):
        if soql.startswith("SELECT Id, Name, IsSandbox, OrganizationType FROM Organization"):
            return _response(request, 200, {"totalSize": 1, "done": True, "records": [
                {"attributes": {"type": "Organization"}, "Id": "00D000000000001AAA"}]})
        sobject = re.search(r"FROM (\w+)", soql).group(1)
        field, values = in_values(soql)
        wanted = {v.lower() for v in values}
        rows = [r for r in self.records.get(sobject, []) if (r.get(field) or "").lower() in wanted]
        if "GROUP BY" in soql:
            counts = {}
            for r in rows:
                counts[r[field]] = counts.get(r[field], 0) + 1
            rows = [{"AccountId": k, "cnt": v} for k, v in counts.items()]
            return _response(request, 200, {"totalSize": len(rows), "done": True, "records": [
                {"attributes": {"type": "AggregateResult"}, **r} for r in rows]})
        names = re.match(r"SELECT (.*) FROM", soql).group(1).split(", ")
        rows = [{"attributes": {"type": sobject, "url": "x"}, **{n: r.get(n) for n in names}} for r in rows]
        return _response(request, 200, self._page(rows, len(rows)))

    def _page(self, rows, total):
        page, rest = rows[:self.page_size], rows[self.page_size:]
        body = {"totalSize": total, "done": not rest, "records": page}
        if rest:
            locator = f"01gLOCATOR{len(self.pages)}-{self.page_size}"
            self.pages[locator] = (rest, total)
            body["nextRecordsUrl"] = f"/services/data/v61.0/query/{locator}"
        return body


def make(fake=None, env=None, config=None, sleeps=None):
    fake = fake or FakeOrg()
    session = requests.Session()
    session.mount("https://", fake)
    sleeps = [] if sleeps is None else sleeps
    sf = salesforce.connect(config or Config(), env or TOKEN_ENV, session=session, sleep=sleeps.append)
    return sf, fake


def people(n, domain="example.org"):
    return [{"Id": f"003{i:015d}", "Email": f"person.number{i}@{domain}", "LastName": f"P{i}"}
            for i in range(n)]


# -- connecting -------------------------------------------------------------------------------

@pytest.mark.parametrize("env, missing", [
    ({}, ["SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME"]),
    ({"SALESFORCE_DOMAIN": "login"}, ["SALESFORCE_ACCESS_TOKEN"]),
    ({"SALESFORCE_ACCESS_TOKEN": "t"}, ["SALESFORCE_DOMAIN"]),
    ({"SALESFORCE_USERNAME": "u"}, ["SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_DOMAIN"]),
    ({"SALESFORCE_USERNAME": "u", "SALESFORCE_PASSWORD": "p", "SALESFORCE_DOMAIN": "test"},
     ["SALESFORCE_SECURITY_TOKEN"]),
    ({"SALESFORCE_PASSWORD": "p", "SALESFORCE_SECURITY_TOKEN": "s", "SALESFORCE_DOMAIN": "test"},
     ["SALESFORCE_USERNAME"]),
    ({"SALESFORCE_USERNAME": "u", "SALESFORCE_SECURITY_TOKEN": "s", "SALESFORCE_DOMAIN": " "},
     ["SALESFORCE_PASSWORD", "SALESFORCE_DOMAIN"]),
])
def test_connect_names_every_missing_variable(env, missing):
    with pytest.raises(ConfigError) as err:
        salesforce.connect(Config(), env)
    message = str(err.value)
    assert "\n" not in message
    for name in missing:
        assert name in message
    assert "secret" not in message


@pytest.mark.parametrize("domain, instance", [
    ("acme.my.salesforce.com", "https://acme.my.salesforce.com"),
    ("127.0.0.1:8443", "https://127.0.0.1:8443"),
    ("https://acme.my.salesforce.com/", "https://acme.my.salesforce.com"),
    ("https://acme.my.salesforce.com:443", "https://acme.my.salesforce.com"),
])
def test_connect_with_token_accepts_host_hostport_or_url(domain, instance):
    sf, _ = make(env={"SALESFORCE_ACCESS_TOKEN": TOKEN, "SALESFORCE_DOMAIN": domain})
    assert sf.org_info().instance_url == instance
    assert TOKEN not in repr(sf)


@pytest.mark.parametrize("domain", ["login", "http://acme.my.salesforce.com", "https://x/y/z", "https://"])
def test_connect_rejects_a_bad_instance(domain):
    with pytest.raises(ConfigError, match="SALESFORCE_DOMAIN"):
        salesforce.connect(Config(), {"SALESFORCE_ACCESS_TOKEN": TOKEN, "SALESFORCE_DOMAIN": domain})


def test_connect_honours_requests_ca_bundle(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    sf, fake = make(env={**TOKEN_ENV, "REQUESTS_CA_BUNDLE": str(bundle)})
    sf.describe("Contact")
    assert sf._sf.session.verify == str(bundle)
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE"):
        salesforce.connect(Config(), {**TOKEN_ENV, "REQUESTS_CA_BUNDLE": str(tmp_path / "nope.pem")})


def test_connect_pins_the_api_version():
    sf, fake = make(config=Config(api_version="58.0"))
    sf.describe("Contact")
    assert "/services/data/v58.0/sobjects/Contact/describe/" in fake.sent[0].url
    assert sf.org_info().api_version == "58.0"


SOAP_OK = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope
 xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><loginResponse>
<result><serverUrl>https://acme.my.salesforce.com/services/Soap/u/61.0/00D</serverUrl>
<sessionId>SESSION{n}</sessionId></result></loginResponse></soapenv:Body></soapenv:Envelope>"""
SOAP_FAIL = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope
 xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com">
<soapenv:Body><soapenv:Fault><faultcode>INVALID_LOGIN</faultcode><detail><sf:LoginFault>
<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>Invalid username, password,
 security token; or user locked out.</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>
</soapenv:Body></soapenv:Envelope>"""
LOGIN_ENV = {"SALESFORCE_USERNAME": "ada@example.org", "SALESFORCE_PASSWORD": "hunter2",
             "SALESFORCE_SECURITY_TOKEN": "SECTOKEN", "SALESFORCE_DOMAIN": "acme.my"}


class LoginFake(FakeOrg):
    def __init__(self, fail=False):
        super().__init__()
        self.logins, self.fail = 0, fail

    def send(self, request, **kwargs):
        if "/services/Soap/u/" in request.url:
            assert request.url.startswith("https://acme.my.salesforce.com/")
            self.logins += 1
            resp = _response(request, 500 if self.fail else 200)
            resp._content = (SOAP_FAIL if self.fail else SOAP_OK.format(n=self.logins)).encode()
            return resp
        return super().send(request, **kwargs)


def test_password_login_and_one_relogin_keeps_custom_headers():
    sf, fake = make(fake=LoginFake(), env=LOGIN_ENV)
    assert fake.logins == 1
    fake.script.append((401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]))
    results = sf.update("Lead", [{"Id": "00Q000000000001AAA", "Status": "Inactive"}])
    assert results == [SaveResult(id="00Q000000000001AAA", success=True)]
    assert fake.logins == 2
    first, second = fake.sent[-2:]
    assert first.headers["Authorization"] == "Bearer SESSION1"
    assert second.headers["Authorization"] == "Bearer SESSION2"
    assert second.headers["Sforce-Auto-Assign"] == "FALSE"
    assert sf.calls == 2
    # a second 401 right after the re-login is final
    fake.script += [(401, [{"errorCode": "INVALID_SESSION_ID", "message": "no"}])] * 2
    with pytest.raises(SessionExpired):
        sf.describe("Lead")


def test_login_failure_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as err:
        make(fake=LoginFake(fail=True), env=LOGIN_ENV)
    message = str(err.value)
    assert "INVALID_LOGIN" in message and "ada@example.org" in message
    assert "hunter2" not in message and "SECTOKEN" not in message
    assert err.value.__context__ is None and err.value.__cause__ is None


def test_token_auth_401_is_session_expired_without_the_token():
    sf, fake = make()
    fake.script.append((401, [{"message": "This session is not valid for use with the REST API",
                               "errorCode": "INVALID_SESSION_ID"}]))
    with pytest.raises(SessionExpired) as err:
        sf.describe("Contact")
    assert TOKEN not in str(err.value) and TOKEN not in repr(err.value.args)
    assert err.value.__context__ is None
    assert sf.calls == 1


# -- escaping ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, literal", [
    ("o'brien@example.org", r"'o\'brien@example.org'"),
    ("back\\slash@example.org", r"'back\\slash@example.org'"),
    ('say "hi"\n\r\t\b\f', r"'say \"hi\"\n\r\t\b\f'"),
    ("bell\x07", r"'bell\u0007'"),
])
def test_soql_quote(value, literal):
    assert salesforce.soql_quote(value) == literal


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_soql_quote_round_trips_through_soql_unescaping(value):
    literal = salesforce.soql_quote(value)
    assert read_literal(literal) == (value, len(literal))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_soql_quote_escapes_as_simple_salesforce_does_and_also_other_control_characters(value):
    """simple-salesforce's quote_soql_value escapes the named sequences of
    https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm
    and leaves other control characters raw; soql_quote agrees on the former and
    writes the latter as the page's \\uXXXX (why soql.py keeps its own)."""
    from simple_salesforce.format import quote_soql_value
    named = "\n\r\t\b\f"
    if any((ord(c) < 0x20 or ord(c) == 0x7F) and c not in named for c in value):
        assert "\\u00" in salesforce.soql_quote(value)
    else:
        assert salesforce.soql_quote(value) == quote_soql_value(value)


# -- queries ----------------------------------------------------------------------------------

def test_query_in_finds_addresses_with_quotes_and_backslashes():
    odd = [{"Id": "003A", "Email": "o'brien@example.org"}, {"Id": "003B", "Email": "a\\b@example.org"},
           {"Id": "003C", "Email": 'q"uote@example.org'}]
    sf, fake = make(FakeOrg({"Contact": odd}))
    found = sf.query_in("Contact", "Email", [r["Email"] for r in odd], ["Id", "Email"])
    assert sorted(r["Id"] for r in found) == ["003A", "003B", "003C"]
    assert all("attributes" not in r for r in found)


def test_query_in_1000_emails_costs_at_most_5_queries_per_object():
    contacts, leads = people(1000), people(1000, "leads.example.com")
    sf, fake = make(FakeOrg({"Contact": contacts, "Lead": leads}))
    fields = Config().contact_fields()
    emails = [r["Email"] for r in contacts] + [r["Email"] for r in contacts[:10]]   # with repeats
    found = sf.query_in("Contact", "Email", emails, fields)
    assert len(found) == 1000
    assert sf.calls <= 5
    before = sf.calls
    assert len(sf.query_in("Lead", "Email", [r["Email"] for r in leads], Config().lead_fields())) == 1000
    assert sf.calls - before <= 5
    for request in fake.sent:
        assert len(request.url.encode()) <= Config().max_query_url


def test_query_in_packs_each_batch_as_full_as_the_url_limit_allows():
    config = Config(max_query_url=2000)
    sf, fake = make(FakeOrg({"Contact": people(300)}), config=config)
    emails = [r["Email"] for r in people(300)]
    sf.query_in("Contact", "Email", emails, ["Id"])
    batches = [in_values(parse_qs(urlparse(r.url).query)["q"][0])[1] for r in fake.sent]
    assert [v for b in batches for v in b] == emails          # all, once, in order
    assert len(batches) > 1
    for request, following in zip(fake.sent[:-1], batches[1:], strict=True):
        length = len(request.url)
        assert length <= 2000
        # the next batch's first address would not have fitted
        assert length + len(quote_plus("," + salesforce.soql_quote(following[0]))) > 2000
    assert len(fake.sent[-1].url) <= 2000


def test_query_in_respects_soql_length_limit(monkeypatch):
    monkeypatch.setattr(salesforce, "SOQL_MAX_CHARS", 500)
    sf, fake = make(FakeOrg({"Contact": people(50)}), config=Config(max_query_url=100_000))
    assert len(sf.query_in("Contact", "Email", [r["Email"] for r in people(50)], ["Id"])) == 50
    for request in fake.sent:
        assert len(parse_qs(urlparse(request.url).query)["q"][0]) <= 500


def test_query_in_rejects_a_value_that_cannot_fit_any_query():
    sf, _ = make(config=Config(max_query_url=300))
    with pytest.raises(MalformedRequest, match="too long"):
        sf.query_in("Contact", "Email", ["x" * 400], ["Id"])


def test_query_in_with_no_values_sends_nothing():
    sf, fake = make()
    assert sf.query_in("Contact", "Email", [], ["Id"]) == []
    assert sf.calls == 0


def test_query_in_follows_next_records_url():
    sf, fake = make(FakeOrg({"Contact": people(450)}, page_size=200))
    found = sf.query_in("Contact", "Email", [r["Email"] for r in people(450)], ["Id", "Email"])
    assert [r["Id"] for r in found] == [r["Id"] for r in people(450)]
    assert sf.calls == 3
    assert fake.sent[1].url == f"https://{HOST}/services/data/v61.0/query/01gLOCATOR0-200"
    assert fake.sent[1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_query_in_rejects_names_that_are_not_api_names():
    sf, _ = make()
    with pytest.raises(ValueError):
        sf.query_in("Contact WHERE", "Email", ["a@b.c"], ["Id"])
    with pytest.raises(ValueError):
        sf.query_in("Contact", "Email", ["a@b.c"], ["Id, (SELECT Id FROM Cases)"])


def test_count_contacts_by_account():
    contacts = [{"Id": f"003{i}", "AccountId": "001A" if i < 3 else "001B"} for i in range(5)]
    sf, fake = make(FakeOrg({"Contact": contacts}))
    assert sf.count_contacts_by_account(["001A", "001B", "001C", "001A"]) == {"001A": 3, "001B": 2, "001C": 0}
    soql = parse_qs(urlparse(fake.sent[0].url).query)["q"][0]
    assert soql == ("SELECT AccountId, COUNT(Id) cnt FROM Contact WHERE AccountId IN "
                    "('001A','001B','001C') GROUP BY AccountId")


def test_org_info_and_describe():
    sf, fake = make()
    info = sf.org_info()
    assert (info.instance_url, info.org_id, info.api_version) == (f"https://{HOST}", "00D000000000001AAA", DEFAULT_API_VERSION)
    assert parse_qs(urlparse(fake.sent[0].url).query)["q"] == [salesforce.ORG_QUERY]
    assert sf.describe("Lead") == {"name": "Lead", "fields": []}
    assert fake.sent[1].method == "GET" and fake.sent[1].url.endswith("/sobjects/Lead/describe/")


def test_retrieve_in_id_order_with_none_for_missing_in_2000_id_calls():
    contacts = people(2500)
    sf, fake = make(FakeOrg({"Contact": contacts}))
    ids = [r["Id"] for r in reversed(contacts)] + ["003MISSING"]
    rows = sf.retrieve("Contact", ids, ["Id", "Email"])
    assert [r and r["Id"] for r in rows] == ids[:-1] + [None]
    assert rows[0] == {"Id": ids[0], "Email": contacts[-1]["Email"]}
    assert sf.calls == 2
    assert [len(json.loads(r.body)["ids"]) for r in fake.sent] == [2000, 501]
    assert all(r.method == "POST" and r.url.endswith("/composite/sobjects/Contact") for r in fake.sent)


# -- writes ------------------------------------------------------------------------------------

def test_create_update_delete_one_request_each_with_results_in_order():
    sf, fake = make()
    created = sf.create("Contact", [{"LastName": "A"}, {"LastName": ""}, {"LastName": "C"}])
    assert [r.success for r in created] == [True, False, True]
    assert created[1] == SaveResult(id=None, success=False, errors=(RecordError(
        "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ("LastName",)),))
    assert created[0].created and not created[1].created
    body = json.loads(fake.sent[0].body)
    assert fake.sent[0].method == "POST" and body["allOrNone"] is False
    assert body["records"][0] == {"attributes": {"type": "Contact"}, "LastName": "A"}
    assert "Sforce-Auto-Assign" not in fake.sent[0].headers

    updated = sf.update("Contact", [{"Id": "003X", "Title": "CTO"}])
    assert updated == [SaveResult(id="003X", success=True)]
    assert fake.sent[1].method == "PATCH" and json.loads(fake.sent[1].body)["allOrNone"] is False

    deleted = sf.delete(["003X", "003Y"])
    assert [r.id for r in deleted] == ["003X", "003Y"]
    query = parse_qs(urlparse(fake.sent[2].url).query)
    assert fake.sent[2].method == "DELETE" and query == {"ids": ["003X,003Y"], "allOrNone": ["false"]}
    assert sf.calls == 3


def test_lead_writes_send_auto_assign_false():
    sf, fake = make()
    sf.create("Lead", [{"LastName": "L", "Company": "C"}])
    sf.update("Lead", [{"Id": "00QX", "Status": "Inactive"}])
    assert [r.headers.get("Sforce-Auto-Assign") for r in fake.sent] == ["FALSE", "FALSE"]


def test_account_writes_send_auto_assign_false_too():
    """The Assignment Rule header applies to Accounts, Cases and Leads; without it the
    active assignment rules run
    (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_autoassign.htm)."""
    sf, fake = make()
    sf.create("Account", [{"Name": "Acme"}])
    sf.update("Account", [{"Id": "001X", "Name": "Acme Corp"}])
    sf.create("Contact", [{"LastName": "C"}])
    assert [r.headers.get("Sforce-Auto-Assign") for r in fake.sent] == ["FALSE", "FALSE", None]


def test_restores_send_the_duplicate_rule_header_and_name_rule_and_matches():
    """allowSave=true passes duplicate rules that alert; the DUPLICATES_DETECTED item error's
    duplicateResult names the rule and the matching records
    (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm,
    https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-duplicateresult.html)."""
    sf, fake = make()
    sf.update("Lead", [{"Id": "00QX", "Email": "a@x.com"}], allow_duplicates=True)
    sf.create("Contact", [{"LastName": "C"}], allow_duplicates=True)
    sf.update("Contact", [{"Id": "003X", "Title": "T"}])
    assert [r.headers.get("Sforce-Duplicate-Rule-Header") for r in fake.sent] == [
        "allowSave=true", "allowSave=true", None]


def test_a_duplicate_error_message_names_the_rule_and_the_matching_records():
    from reconcile.salesforce import _error_message
    error = {"statusCode": "DUPLICATES_DETECTED", "message": "Use one of these records?", "fields": [],
             "duplicateResult": {"allowSave": False, "duplicateRule": "Standard_Lead_Duplicate_Rule",
                                 "duplicateRuleEntityType": "Lead", "errorMessage": "Use one of these records?",
                                 "matchResults": [{"entityType": "Contact", "errors": [], "matchEngine": "FuzzyMatchEngine",
                                                   "matchRecords": [{"additionalInformation": [], "fieldDiffs": [],
                                                                     "matchConfidence": 100.0,
                                                                     "record": {"attributes": {"type": "Contact"},
                                                                                "Id": "003A"}}],
                                                   "rule": "Standard_Contact_Match_Rule_v1_1", "size": 1,
                                                   "success": True}]}}
    assert _error_message(error) == ("Use one of these records? (duplicate rule Standard_Lead_Duplicate_Rule "
                                     "blocks; matching: Contact 003A)")
    assert _error_message({"message": "plain"}) == "plain"


def test_writes_refuse_more_than_collection_size():
    sf, fake = make(config=Config(collection_size=200))
    with pytest.raises(ValueError, match="at most 200"):
        sf.create("Contact", [{"LastName": "x"}] * 201)
    with pytest.raises(ValueError):
        sf.update("Contact", [{"Id": "003", "Title": "t"}] * 201)
    with pytest.raises(ValueError):
        sf.delete(["003"] * 201)
    with pytest.raises(ValueError, match="Id"):
        sf.update("Contact", [{"Title": "t"}])
    assert sf.calls == 0
    assert len(sf.update("Contact", [{"Id": f"003{i}", "Title": "t"} for i in range(200)])) == 200


def test_reader_cannot_write():
    sf, _ = make()
    reader = sf.reader()
    for name in ("create", "update", "delete", "_sf_create"):
        assert not hasattr(reader, name)
    assert reader.describe("Contact")["name"] == "Contact"
    assert reader.calls == 1 and reader.usage == ApiUsage(17, 15000)


# -- errors and retries ---------------------------------------------------------------------------

def err(code, message="words from Salesforce"):
    return [{"message": message, "errorCode": code}]


@pytest.mark.parametrize("status, body, error, code", [
    (401, err("INVALID_SESSION_ID"), SessionExpired, "INVALID_SESSION_ID"),
    (403, err("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), ApiLimitExceeded, "REQUEST_LIMIT_EXCEEDED"),
    (403, err("INSUFFICIENT_ACCESS"), PermissionDenied, "INSUFFICIENT_ACCESS"),
    (400, err("MALFORMED_QUERY", "unexpected token: ','"), MalformedRequest, "MALFORMED_QUERY"),
    (400, err("INVALID_FIELD", "No such column 'Xyzzy' on entity 'Contact'"), MalformedRequest, "INVALID_FIELD"),
    (400, err("INVALID_TYPE"), MalformedRequest, "INVALID_TYPE"),
    (404, err("NOT_FOUND", "The requested resource does not exist"), SalesforceError, "NOT_FOUND"),
    (500, err("UNKNOWN_EXCEPTION"), SalesforceError, "UNKNOWN_EXCEPTION"),
])
def test_error_translation(status, body, error, code):
    sf, fake = make()
    fake.script.append((status, body))
    with pytest.raises(error) as caught:
        sf.query_in("Contact", "Email", ["a@b.c"], ["Id"])
    assert type(caught.value) is error
    assert caught.value.code == code and caught.value.status == status
    assert body[0]["message"] in str(caught.value)
    assert "\n" not in str(caught.value)
    assert sf.calls == 1              # none of these is retried


@pytest.mark.parametrize("reply", [
    (503, None), (502, None), (504, None), (503, err("SERVER_UNAVAILABLE")),
    (400, err("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")),
    (500, err("SERVER_UNAVAILABLE")),
    requests.exceptions.ConnectionError("Connection aborted."),
    requests.exceptions.ReadTimeout("read timed out"),
])
def test_transient_failures_are_retried_with_backoff(reply):
    sleeps = []
    sf, fake = make(sleeps=sleeps, config=Config(max_attempts=4, backoff_seconds=0.5))
    fake.script += [reply, reply]
    assert sf.describe("Contact") is not None
    assert sf.calls == 3 and len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


@pytest.mark.parametrize("reply", [
    (400, err("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")),
    requests.exceptions.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused"))),
])
def test_a_write_refused_unprocessed_is_retried(reply):
    sf, fake = make(sleeps=[], config=Config(max_attempts=4, backoff_seconds=0.5))
    fake.script += [reply]
    assert len(sf.update("Contact", [{"Id": "003X", "Title": "t"}])) == 1
    assert sf.calls == 2


@pytest.mark.parametrize("write", ["create", "update", "delete"])
@pytest.mark.parametrize("reply", [
    (500, None), (500, err("UNKNOWN_EXCEPTION")), (502, None), (503, None),
    (503, err("SERVER_UNAVAILABLE")), (504, None),
    requests.exceptions.ConnectionError("Connection aborted."),
    requests.exceptions.ReadTimeout("read timed out"),
])
def test_a_write_whose_answer_is_lost_is_never_resent(write, reply):
    sf, fake = make(sleeps=[], config=Config(max_attempts=4, backoff_seconds=0.5))
    fake.script += [reply]
    with pytest.raises(OutcomeUnknown):
        if write == "create":
            sf.create("Contact", [{"LastName": "A"}])
        elif write == "update":
            sf.update("Contact", [{"Id": "003X", "Title": "t"}])
        else:
            sf.delete(["003X"])
    assert sf.calls == 1          # an answer that leaves the outcome open: never re-sent


def test_retries_give_up_with_transient_error():
    sleeps = []
    sf, fake = make(sleeps=sleeps, config=Config(max_attempts=5, backoff_seconds=1.0))
    fake.script += [(503, None)] * 5
    with pytest.raises(TransientError, match="gave up after 5 attempts") as caught:
        sf.describe("Contact")
    assert caught.value.status == 503
    assert sf.calls == 5 and len(sleeps) == 4
    assert all(d / 2 <= s <= d for s, d in zip(sleeps, [1, 2, 4, 8], strict=True))
    assert caught.value.__context__ is None


def test_backoff_is_bounded_and_honours_retry_after():
    sleeps = []
    sf, fake = make(sleeps=sleeps, config=Config(max_attempts=12, backoff_seconds=10))
    fake.script += [(503, None, {"Retry-After": "7"})] * 11
    sf.describe("Contact")
    assert max(sleeps) <= salesforce.MAX_BACKOFF
    assert sleeps[0] >= 5


def test_a_create_answered_503_or_dropped_is_outcome_unknown():
    sf, fake = make()
    fake.script.append((503, err("SERVER_UNAVAILABLE")))
    with pytest.raises(OutcomeUnknown, match="HTTP 503 SERVER_UNAVAILABLE after the request was sent"):
        sf.create("Contact", [{"LastName": "A"}])
    assert sf.calls == 1
    for exc in (requests.exceptions.ConnectionError("Connection aborted.", "RemoteDisconnected"),
                requests.exceptions.ReadTimeout("read timed out")):
        fake.script.append(exc)
        before = sf.calls
        with pytest.raises(OutcomeUnknown) as caught:
            sf.create("Contact", [{"LastName": "A"}])
        assert sf.calls == before + 1        # never re-sent
        assert caught.value.__context__ is None


@pytest.mark.parametrize("status", [502, 504])
def test_a_create_answered_by_a_gateway_error_is_outcome_unknown_not_resent(status):
    # A 502/504 comes from a proxy after it forwarded the request: the org may have created
    # the records, so re-sending could create duplicates. The journal settles it instead.
    sf, fake = make()
    fake.script.append((status, None))
    with pytest.raises(OutcomeUnknown, match=f"HTTP {status}") as caught:
        sf.create("Contact", [{"LastName": "A"}])
    assert sf.calls == 1
    assert "\n" not in str(caught.value)


def test_an_untrusted_certificate_is_a_config_error_not_retried():
    sf, fake = make()
    fake.script.append(requests.exceptions.SSLError("certificate verify failed"))
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE"):
        sf.create("Contact", [{"LastName": "A"}])
    assert sf.calls == 1


def test_a_create_that_never_connected_is_retried():
    from urllib3.exceptions import MaxRetryError, NewConnectionError
    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, "/", NewConnectionError(None, "Connection refused")))
    sf, fake = make()
    fake.script += [refused, requests.exceptions.ConnectTimeout("connect timed out")]
    assert sf.create("Contact", [{"LastName": "A"}])[0].success
    assert sf.calls == 3


def test_usage_is_read_from_every_response():
    sf, fake = make()
    fake.script += [(200, {"name": "Contact"}, {"Sforce-Limit-Info": "api-usage=10018/100000; api-bursts=1/750"}),
                    (503, None, {"Sforce-Limit-Info": "api-usage=10020/100000"}),
                    (200, {"name": "Lead"}, {"Sforce-Limit-Info": "per-app-api-usage=17/250(appName=x)"})]
    sf.describe("Contact")
    assert sf.usage == ApiUsage(10018, 100000)
    sf.describe("Lead")
    assert sf.usage == ApiUsage(10020, 100000)          # the last one that said so
    assert salesforce.parse_limit_info(None) is None
    assert salesforce.parse_limit_info("api-usage=3/15000") == ApiUsage(3, 15000)


def test_a_garbled_answer_is_never_a_library_exception():
    sf, fake = make()
    fake.script.append((200, None))
    fake.script[-1] = (200, None, {"Content-Type": "text/html"})
    with pytest.raises(SalesforceError, match="not JSON"):
        sf.describe("Contact")
    fake.script.append((200, [{"id": "003A", "success": True, "errors": []}]))
    with pytest.raises(OutcomeUnknown, match="expected 2 results"):
        sf.create("Contact", [{"LastName": "A"}, {"LastName": "B"}])


# -- live, against the bundled sandbox org ----------------------------------------------------

@pytest.fixture
def live():
    from reconcile.sandbox import SandboxServer
    with SandboxServer(seed="demo") as sb:
        yield sb, salesforce.connect(Config(), sb.env, sleep=lambda s: None)


@pytest.mark.e2e
def test_live_1000_records_cost_5_requests_per_step(live):
    sb, sf = live
    records = [{"LastName": f"Bulk {i}", "Email": f"bulk.{i}@e2e.example.com"} for i in range(1000)]
    ids = []
    for start in range(0, 1000, 200):
        saved = sf.create("Contact", records[start:start + 200])
        assert all(r.success and r.created for r in saved)
        ids += [r.id for r in saved]
    assert sf.calls == 5
    found = sf.query_in("Contact", "Email", [r["Email"] for r in records], ["Id", "Email"])
    assert sorted(r["Id"] for r in found) == sorted(ids)
    queries = sf.calls - 5
    assert queries <= 5
    before = sf.calls
    for start in range(0, 1000, 200):
        saved = sf.update("Contact", [{"Id": i, "Title": "Updated"} for i in ids[start:start + 200]])
        assert all(r.success for r in saved)
    assert sf.calls - before == 5
    rows = sf.retrieve("Contact", ids, ["Id", "Title"])
    assert sf.calls - before == 6 and all(r["Title"] == "Updated" for r in rows)
    assert sf.usage is not None and sf.usage.used >= sf.calls - 1


@pytest.mark.e2e
def test_live_reads_quotes_backslashes_and_errors(live):
    sb, sf = live
    odd = ["o'brien@e2e.example.com", "back\\slash@e2e.example.com", 'dq"@e2e.example.com']
    made = sf.create("Contact", [{"LastName": "Odd", "Email": e} for e in odd])
    assert all(r.success for r in made)
    found = sf.query_in("Contact", "Email", odd, ["Id", "Email"])
    assert sorted(r["Email"] for r in found) == sorted(odd)
    info = sf.org_info()
    assert info.instance_url == "https://" + sb.env["SALESFORCE_DOMAIN"]
    assert info.org_id.startswith("00D")
    assert any(f["name"] == "Email" for f in sf.describe("Lead")["fields"])
    with pytest.raises(MalformedRequest) as bad:
        sf.query_in("Contact", "Email", odd, ["Id", "Xyzzy__c"])
    assert bad.value.code == "INVALID_FIELD"
    wrong = salesforce.connect(Config(), {**sb.env, "SALESFORCE_ACCESS_TOKEN": "not-the-token"})
    with pytest.raises(SessionExpired):
        wrong.org_info()


@pytest.mark.e2e
def test_live_needs_the_sandbox_ca_bundle(live):
    sb, _ = live
    env = {k: v for k, v in sb.env.items() if k != "REQUESTS_CA_BUNDLE"}
    untrusted = salesforce.connect(Config(), env, sleep=lambda s: None)
    untrusted._sf.session.trust_env = False      # ignore a bundle in this process's environment
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE"):
        untrusted.org_info()
    assert untrusted.calls == 1                  # not retried


@pytest.mark.e2e
def test_live_faults_map_to_reconcile_errors(live):
    sb, sf = live
    sleeps = []
    sf._sleep = sleeps.append
    [lead] = sf.create("Lead", [{"LastName": "Faulty", "Company": "F Inc", "Email": "f@e2e.example.com"}])
    sf.update("Lead", [{"Id": lead.id, "Title": "T"}])
    assert sb.stats.auto_assign == ["FALSE", "FALSE"]

    sb.faults.http_503(2)
    before = sf.calls
    assert sf.retrieve("Lead", [lead.id], ["Title"])[0]["Title"] == "T"    # a read: retried
    assert sf.calls - before == 3 and len(sleeps) == 2

    sb.faults.fail_after_commit(503)
    before = sf.calls
    with pytest.raises(OutcomeUnknown, match="HTTP 503"):
        sf.update("Lead", [{"Id": lead.id, "Title": "Saved, then 503"}])
    assert sf.calls - before == 1                       # a write: not re-sent
    assert sb.store.get(lead.id)["Title"] == "Saved, then 503"

    sb.faults.drop_after_write(1)
    before = sf.calls
    with pytest.raises(OutcomeUnknown):
        sf.create("Lead", [{"LastName": "Dropped", "Company": "F Inc", "Email": "d@e2e.example.com"}])
    assert sf.calls - before == 1                       # not re-sent
    assert len(sf.query_in("Lead", "Email", ["d@e2e.example.com"], ["Id"])) == 1   # it did land

    sb.faults.drop_after_write(1)
    before = sf.calls
    with pytest.raises(OutcomeUnknown):
        sf.update("Lead", [{"Id": lead.id, "Title": "Sent once"}])
    assert sf.calls - before == 1                       # not re-sent either
    assert sb.store.get(lead.id)["Title"] == "Sent once"

    sb.faults.lock_rows([lead.id])
    [locked] = sf.update("Lead", [{"Id": lead.id, "Title": "Locked"}])
    assert not locked.success and locked.errors[0].status_code == "UNABLE_TO_LOCK_ROW"

    sb.faults.expire_session()
    with pytest.raises(SessionExpired):
        sf.org_info()
    sb.faults.renew_session()

    sb.faults.limit_after(0)
    with pytest.raises(ApiLimitExceeded):
        sf.describe("Lead")
    sb.faults.clear()
    assert sf.usage is not None and sf.usage.used > 0


# -- Bulk API 2.0 over a scripted transport -------------------------------------------------

class ScriptedBulk(requests.adapters.BaseAdapter):
    """Answers each request with the next (status, JSON or CSV text, headers) reply."""

    def __init__(self, replies):
        super().__init__()
        self.replies, self.sent = list(replies), []

    def close(self):
        pass

    def send(self, request, **kwargs):
        self.sent.append(request)
        status, body, headers = (self.replies.pop(0) + ({},))[:3]
        resp = _response(request, status, None if isinstance(body, str) else body, headers)
        if isinstance(body, str):
            resp._content = body.encode("utf-8")
            resp.headers["Content-Type"] = "text/csv"
        return resp


def test_bulk_ingest_writes_csv_with_na_for_null_and_empty_for_unchanged():
    job = {"id": "750000000000001AAA", "state": "Open"}
    fake = ScriptedBulk([(200, job), (201, None), (200, {**job, "state": "UploadComplete"}),
                         (200, {**job, "state": "JobComplete", "numberRecordsProcessed": 3,
                                "numberRecordsFailed": 0})])
    sf, _ = make(fake, config=Config(bulk_poll_seconds=0.5))
    outcome = sf.bulk_ingest("update", "Contact", [
        {"Id": "003000000000001AAA", "Title": None},
        {"Id": "003000000000002AAA", "Email": "x@example.org"},
        {"Id": "003000000000003AAA", "Title": 'Says "hi", twice\nreally', "Email": ""}])
    create, upload, close = fake.sent[:3]
    assert json.loads(create.body) == {"object": "Contact", "operation": "update", "contentType": "CSV",
                                       "columnDelimiter": "COMMA", "lineEnding": "LF"}
    assert upload.method == "PUT" and upload.headers["Content-Type"] == "text/csv"
    assert upload.body.decode() == ('Id,Title,Email\n003000000000001AAA,#N/A,\n'
                                    '003000000000002AAA,,x@example.org\n'
                                    '003000000000003AAA,"Says ""hi"", twice\nreally",#N/A\n')
    assert close.method == "PATCH" and json.loads(close.body) == {"state": "UploadComplete"}
    # 3 processed, 0 failed: every record was saved, no result file is read
    assert fake.sent[4:] == []
    assert outcome.successful == [{"sf__Id": f"00300000000000{n}AAA", "sf__Created": "false"} for n in (1, 2, 3)]
    assert outcome.failed == [] and outcome.unprocessed == [] and sf.calls == 4


def test_a_bulk_update_whose_result_files_do_not_account_for_every_record_reads_the_successful_ones():
    """The job info says 3 processed, 1 failed, but failedResults lists none: the saved
    records cannot be told from the ids sent, so successfulResults is read too
    (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_successful_results.htm)."""
    job = {"id": "750000000000004AAA", "state": "Open"}
    fake = ScriptedBulk([(200, job), (201, None), (200, {**job, "state": "UploadComplete"}),
                         (200, {**job, "state": "JobComplete", "numberRecordsProcessed": 3,
                                "numberRecordsFailed": 1}),
                         (200, '"sf__Id","sf__Error","Id","Title"\n'),
                         (200, '"sf__Id","sf__Created","Id","Title"\n'
                               '"003000000000001AAA","false","003000000000001AAA","T"\n')])
    sf, _ = make(fake, config=Config(bulk_poll_seconds=0.5))
    outcome = sf.bulk_ingest("update", "Contact", [{"Id": f"00300000000000{n}AAA", "Title": "T"} for n in (1, 2, 3)])
    assert [r.url.rsplit("/", 2)[-2] for r in fake.sent[4:]] == ["failedResults", "successfulResults"]
    assert [r["sf__Id"] for r in outcome.successful] == ["003000000000001AAA"]


def test_bulk_query_follows_the_locator_and_reads_csv():
    job = {"id": "750000000000009AAA", "state": "UploadComplete"}
    fake = ScriptedBulk([
        (200, job), (200, {**job, "state": "InProgress"}), (200, {**job, "state": "JobComplete"}),
        (200, '"Id","Title","SystemModstamp"\n"003A","","2026-11-25T08:00:00.000Z"\n',
         {"Sforce-Locator": "MQ", "Sforce-NumberOfRecords": "1"}),
        (200, '"Id","Title","SystemModstamp"\n"003B","Boss, Big","2026-11-25T09:00:00.000Z"\n',
         {"Sforce-Locator": "null", "Sforce-NumberOfRecords": "1"})])
    sleeps = []
    sf, _ = make(fake, config=Config(bulk_poll_seconds=1.0, bulk_max_records=1), sleeps=sleeps)
    rows = sf.bulk_query("SELECT Id, Title, SystemModstamp FROM Contact")
    assert rows == [{"Id": "003A", "Title": None, "SystemModstamp": "2026-11-25T08:00:00.000+0000"},
                    {"Id": "003B", "Title": "Boss, Big", "SystemModstamp": "2026-11-25T09:00:00.000+0000"}]
    assert sleeps == [1.0, 2.0] and sf.calls == 5
    pages = [parse_qs(urlparse(r.url).query) for r in fake.sent[3:]]
    assert pages == [{"maxRecords": ["1"]}, {"maxRecords": ["1"], "locator": ["MQ"]}]
    assert fake.sent[3].headers["Accept"] == "text/csv"


def test_bulk_ingest_rejects_bad_actions_and_missing_ids():
    sf, fake = make(ScriptedBulk([]))
    with pytest.raises(ValueError, match="insert, update, delete"):
        sf.bulk_ingest("upsert", "Contact", [{"Id": "003000000000001AAA"}])
    with pytest.raises(ValueError, match="needs an Id"):
        sf.bulk_ingest("delete", "Contact", [{"Email": "a@example.org"}])
    assert sf.bulk_ingest("update", "Contact", []).job_id is None
    assert fake.sent == [] and sf.calls == 0
