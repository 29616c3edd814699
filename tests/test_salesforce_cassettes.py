"""vcrpy cassettes pinning the Salesforce adapter's exact HTTP exchanges.

Replay-only by default (``record_mode="none"``: CI never records; a request the
cassette does not hold fails the test). To re-record, see ``cassettes/README.md``::

    RECONCILE_RECORD_CASSETTES=1 pytest tests/test_salesforce_cassettes.py

records against the bundled sandbox org, or against a real (sandbox) org when
``SALESFORCE_*`` credentials are set. Every cassette is scrubbed before it is
written: no Authorization header, session id, cookie, real host or org id.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import vcr

from reconcile import salesforce
from reconcile.config import Config
from reconcile.errors import MalformedRequest, SalesforceError
from reconcile.model import RecordError

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"
RECORD = os.environ.get("RECONCILE_RECORD_CASSETTES") == "1"
FAKE_HOST = "example.my.salesforce.com"
FAKE_TOKEN = "FAKE-SESSION-TOKEN"
FAKE_ORG_ID = "00D000000000000AAA"
ORG_ID = re.compile(r"\b00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?\b")
CONFIG = Config(api_version="61.0")
PINNED_HEADERS = ("Sforce-Auto-Assign", "Sforce-Query-Options", "Content-Type")
CREDENTIALS = ("SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME")


def _pinned_headers(r1, r2):
    for name in PINNED_HEADERS:
        assert r1.headers.get(name) == r2.headers.get(name), name


class Scrubber:
    """Replaces the live org's host, session id and org id in requests and responses."""

    def __init__(self, host: str = FAKE_HOST, token: str = FAKE_TOKEN):
        self.host, self.token = host, token

    def text(self, text: str) -> str:
        text = text.replace(f"https://{self.host}", f"https://{FAKE_HOST}").replace(self.host, FAKE_HOST)
        return ORG_ID.sub(FAKE_ORG_ID, text.replace(self.token, FAKE_TOKEN))

    def body(self, body):
        if isinstance(body, bytes):
            return self.text(body.decode("utf-8")).encode("utf-8")
        return self.text(body) if isinstance(body, str) else body

    def request(self, request):
        if "/services/Soap/" in request.path or "/services/oauth2/" in request.path:
            return None                       # a (re-)login: never recorded
        request.uri = self.text(request.uri).replace(f"https://{FAKE_HOST}:443/", f"https://{FAKE_HOST}/")
        for name in ("Authorization", "Cookie", "User-Agent"):
            request.headers.pop(name, None)
        request.body = self.body(request.body)
        return request

    def response(self, response):
        headers = response["headers"]
        for name in list(headers):
            if name.lower() in ("set-cookie", "server", "x-request-id"):
                del headers[name]
            else:
                headers[name] = [self.text(v) for v in headers[name]]
        response["body"]["string"] = self.body(response["body"]["string"])
        return response


@pytest.fixture
def org(request):
    """(adapter, vcr) — live while recording, a fake connection in replay."""
    name = request.node.name.removeprefix("test_")
    if not RECORD:
        sf = salesforce.connect(CONFIG, {"SALESFORCE_ACCESS_TOKEN": FAKE_TOKEN,
                                         "SALESFORCE_DOMAIN": FAKE_HOST}, sleep=lambda s: None)
        yield sf, _vcr(Scrubber(), "none").use_cassette(f"{name}.yaml")
        return
    if any(os.environ.get(v) for v in CREDENTIALS):
        sf = salesforce.connect(CONFIG)
        yield sf, _vcr(Scrubber(sf._sf.sf_instance, sf._sf.session_id), "all").use_cassette(f"{name}.yaml")
        return
    from reconcile.sandbox import SandboxServer
    with SandboxServer(seed="demo") as sb:
        sf = salesforce.connect(CONFIG, sb.env)
        yield sf, _vcr(Scrubber(sf._sf.sf_instance, sf._sf.session_id), "all").use_cassette(f"{name}.yaml")


def _vcr(scrubber: Scrubber, mode: str) -> vcr.VCR:
    v = vcr.VCR(cassette_library_dir=str(CASSETTES), record_mode=mode,
                match_on=["method", "scheme", "host", "port", "path", "query", "body", "pinned"],
                before_record_request=scrubber.request, before_record_response=scrubber.response,
                decode_compressed_response=True)
    v.register_matcher("pinned", _pinned_headers)
    return v


def _contacts(tag: str, n: int) -> list[dict]:
    return [{"LastName": f"Cassette {i}", "FirstName": "Vcr", "Email": f"vcr.{tag}.{i}@example.com"}
            for i in range(n)]


def test_org_info(org):
    sf, cassette = org
    with cassette:
        info = sf.org_info()
    assert info.instance_url == f"https://{FAKE_HOST}" or RECORD
    assert info.org_id == FAKE_ORG_ID or RECORD
    assert info.api_version == "61.0"
    assert sf.calls == 1


def test_org_and_describe(org):
    sf, cassette = org
    with cassette:
        info, described = sf.org_and_describe(["Contact", "Lead"])
    assert info.org_id == FAKE_ORG_ID or RECORD
    assert set(described) == {"Contact", "Lead"}
    assert "Contact_Status__c" in {f["name"] for f in described["Contact"]["fields"]}
    assert sf.calls == 1   # one /composite request for the org id and both describes


def test_describe(org):
    sf, cassette = org
    with cassette:
        described = sf.describe("Contact")
        with pytest.raises(SalesforceError) as missing:
            sf.describe("Xyzzy__c")
    assert described["name"] == "Contact"
    assert {"Email", "LastName", "LastModifiedDate", "SystemModstamp"} <= {f["name"] for f in described["fields"]}
    assert missing.value.status == 404
    assert sf.usage is not None and sf.usage.total > 0


def test_query_in_with_paging(org):
    sf, cassette = org
    records = _contacts("paging", 205)
    with cassette:
        created = sf.create("Contact", records[:200]) + sf.create("Contact", records[200:])
        assert all(r.success for r in created)
        sf.query_batch_size = 200
        found = sf.query_in("Contact", "Email", [r["Email"] for r in records], ["Id", "Email"])
        sf.query_batch_size = None
        ids = [r.id for r in created]
        sf.delete(ids[:200])
        sf.delete(ids[200:])
    assert sorted(r["Id"] for r in found) == sorted(ids)
    assert all(set(r) == {"Id", "Email"} for r in found)
    assert sf.calls == 2 + 2 + 2          # creates, query + one more page, deletes


def test_query_in_escapes_quotes(org):
    sf, cassette = org
    odd = {"LastName": "O'Brien", "Email": "o'brien.vcr@example.com"}
    with cassette:
        [made] = sf.create("Contact", [odd])
        found = sf.query_in("Contact", "Email", [odd["Email"], "back\\slash.vcr@example.com"], ["Id", "Email"])
        sf.delete([made.id])
    assert [r["Id"] for r in found] == [made.id]


def test_count_contacts_by_account(org):
    sf, cassette = org
    with cassette:
        [account] = sf.create("Account", [{"Name": "Vcr Counting Co"}])
        made = sf.create("Contact", [{**c, "AccountId": account.id} for c in _contacts("count", 3)])
        counts = sf.count_contacts_by_account([account.id])
        sf.delete([m.id for m in made] + [account.id])
    assert counts == {account.id: 3}


def test_retrieve(org):
    sf, cassette = org
    with cassette:
        made = sf.create("Contact", _contacts("retrieve", 2))
        ids = [made[0].id, "003000000000000AAA", made[1].id]
        rows = sf.retrieve("Contact", ids, ["Id", "Email", "LastModifiedDate", "SystemModstamp"])
        sf.delete([m.id for m in made])
    assert [r and r["Id"] for r in rows] == [made[0].id, None, made[1].id]
    assert rows[0]["Email"] == "vcr.retrieve.0@example.com"
    assert "attributes" not in rows[0]


def test_writes_with_record_level_failures(org):
    sf, cassette = org
    with cassette:
        created = sf.create("Contact", [_contacts("writes", 1)[0], {"FirstName": "No", "Email": "no.lastname@example.com"}])
        good = created[0].id
        updated = sf.update("Contact", [{"Id": good, "Title": "Cassette Keeper"},
                                        {"Id": "003000000000000AAA", "Title": "Ghost"}])
        leads = sf.create("Lead", [{"LastName": "Vcr", "Company": "Vcr Inc", "Email": "vcr.lead@example.com"}])
        lead_update = sf.update("Lead", [{"Id": leads[0].id, "Status": "Inactive"}])
        deleted = sf.delete([good, leads[0].id, "003000000000000AAA"])
    assert created[0].success and created[0].created and created[0].id
    assert not created[1].success and created[1].id is None
    assert created[1].errors[0].status_code == "REQUIRED_FIELD_MISSING"
    assert "LastName" in created[1].errors[0].fields
    assert updated[0].success and not updated[1].success
    assert updated[1].errors[0].status_code in ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY",
                                                "MALFORMED_ID", "INVALID_ID_FIELD")
    assert leads[0].success and lead_update[0].success
    assert [d.success for d in deleted[:2]] == [True, True]
    assert not deleted[2].success and isinstance(deleted[2].errors[0], RecordError)
    assert sf.calls == 5


def test_bulk_update(org):
    sf, cassette = org
    with cassette:
        made = sf.create("Contact", _contacts("bulk", 3))
        ids = [m.id for m in made]
        outcome = sf.bulk_ingest("update", "Contact", [
            {"Id": ids[0], "Title": "Bulk Keeper"},
            {"Id": ids[1], "Title": None},
            {"Id": ids[2], "Contact_Status__c": "Bogus"}])
        rows = sf.retrieve("Contact", ids, ["Id", "Title"])
        sf.delete(ids)
    assert outcome.state == "JobComplete" and outcome.job_id.startswith("750")
    assert sorted(r["sf__Id"] for r in outcome.successful) == sorted(ids[:2])
    [failed] = outcome.failed
    assert failed["sf__Id"] == ids[2]
    assert failed["sf__Error"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:")
    assert [r["Title"] for r in rows] == ["Bulk Keeper", None, None]
    # create, upload, close, polls (2 against the sandbox), failedResults (1 failed of 3: the
    # two others were saved, no successfulResults needed); then retrieve, delete
    assert sf.calls == 1 + 3 + 2 + 1 + 2 or RECORD


def test_error_response(org):
    sf, cassette = org
    with cassette:
        with pytest.raises(MalformedRequest) as bad_field:
            sf.query_in("Contact", "Email", ["a@example.com"], ["Id", "Xyzzy__c"])
    assert bad_field.value.status == 400
    assert bad_field.value.code == "INVALID_FIELD"
    assert "Xyzzy__c" in str(bad_field.value)
    assert sf.calls == 1


def test_no_cassette_holds_a_secret_or_a_real_host():
    files = sorted(CASSETTES.glob("*.yaml"))
    assert files, "no cassettes recorded"
    for path in files:
        text = path.read_text(encoding="utf-8")
        for forbidden in ("Bearer", "Authorization", "Set-Cookie", "sid=", "127.0.0.1", "localhost",
                          "::1", "Soap/u", "access_token"):
            assert forbidden.lower() not in text.lower(), f"{path.name} contains {forbidden!r}"
        assert not re.search(r"00D[A-Za-z0-9]{12,15}!", text), f"{path.name} holds a session id"
        assert set(ORG_ID.findall(text)) <= {FAKE_ORG_ID}, f"{path.name} holds a real org id"
        hosts = set(re.findall(r"https?://([^/\s'\"]+)", text))
        assert hosts <= {FAKE_HOST}, f"{path.name} names hosts {hosts}"
