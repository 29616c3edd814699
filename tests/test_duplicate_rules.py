"""The sandbox org's duplicate rules behave as Salesforce documents them: the
standard Contact and Lead rules, active, cross-object, alert on create and
report only on edit; Alert vs Block; the allowSave header; the
DUPLICATES_DETECTED error body; DuplicateRule rows that can be queried."""

from __future__ import annotations

import pytest
import requests

from reconcile.sandbox import SandboxServer

V = "v64.0"


@pytest.fixture()
def sb():
    with SandboxServer(seed="empty") as server:
        yield server


@pytest.fixture()
def call(sb):
    s = requests.Session()
    s.verify = sb.env["REQUESTS_CA_BUNDLE"]
    s.trust_env = False
    s.headers["Authorization"] = f"Bearer {sb.token}"
    base = f"{sb.instance_url}/services/data/{V}/"

    def send(method, path, *, allow_save=False, **kw):
        headers = {"Sforce-Duplicate-Rule-Header": "allowSave=true"} if allow_save else {}
        return s.request(method, base + path, headers=headers, **kw)
    return send


def _contact(email, last="Holder"):
    return {"attributes": {"type": "Contact"}, "LastName": last, "Email": email}


def _lead(email, last="Prospect"):
    return {"attributes": {"type": "Lead"}, "LastName": last, "Company": "Initech", "Email": email}


def _create(call, *records, allow_save=False):
    answer = call("POST", "composite/sobjects", json={"allOrNone": False, "records": list(records)},
                  allow_save=allow_save)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _update(call, *records, allow_save=False):
    answer = call("PATCH", "composite/sobjects", json={"allOrNone": False, "records": list(records)},
                  allow_save=allow_save)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_duplicate_rules_are_queryable_with_the_documented_fields(call):
    """DuplicateRule: read-only, DeveloperName, MasterLabel, SobjectType, IsActive, ...
    https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-duplicaterule.html
    https://developer.salesforce.com/docs/platform/field-reference/references/field-reference/salesforce-field-reference-duplicaterule.html
    The standard rules are active in an org created since Summer '17:
    http://releasenotes.docs.salesforce.com/en-us/summer17/release-notes/rn_sales_duplicate_management_cross_object_duplicate_rules.htm"""
    answer = call("GET", "query/", params={"q": "SELECT Id, DeveloperName, MasterLabel, SobjectType, IsActive "
                                                "FROM DuplicateRule WHERE IsActive = true ORDER BY SobjectType"})
    assert answer.status_code == 200, answer.text
    rows = answer.json()["records"]
    assert [(r["DeveloperName"], r["MasterLabel"], r["SobjectType"], r["IsActive"]) for r in rows] == [
        ("Standard_Contact_Duplicate_Rule", "Standard Contact Duplicate Rule", "Contact", True),
        ("Standard_Lead_Duplicate_Rule", "Standard Lead Duplicate Rule", "Lead", True)]
    assert all(r["Id"].startswith("0Bm") and r["attributes"]["type"] == "DuplicateRule" for r in rows)
    fields = {f["name"]: f for f in call("GET", "sobjects/DuplicateRule/describe/").json()["fields"]}
    assert {"DeveloperName", "MasterLabel", "SobjectType", "IsActive", "NamespacePrefix"} <= set(fields)
    assert not fields["IsActive"]["updateable"] and not fields["DeveloperName"]["createable"]


def test_a_lead_created_with_a_contacts_address_gets_the_documented_duplicate_error(sb, call):
    """The Standard Lead Duplicate Rule matches Contacts that duplicate Leads; on create it
    alerts ("Use one of these records?"), which the API answers with DUPLICATES_DETECTED
    and a duplicateResult naming the rule and the matching records.
    https://help.salesforce.com/s/articleView?id=sales.duplicate_rules_standard_lead_rule.htm
    https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-duplicateerror.html
    https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-duplicateresult.html
    https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-matchresult.html"""
    holder = sb.store.insert("Contact", {"LastName": "Holder", "Email": "Jane@Example.com"})
    [result] = _create(call, _lead("jane@example.com"))
    assert result["success"] is False and "id" not in result
    [error] = result["errors"]
    assert (error["statusCode"], error["message"], error["fields"]) == (
        "DUPLICATES_DETECTED", "Use one of these records?", [])
    dup = error["duplicateResult"]
    assert (dup["duplicateRule"], dup["duplicateRuleEntityType"], dup["allowSave"]) == (
        "Standard_Lead_Duplicate_Rule", "Lead", True)
    [match] = dup["matchResults"]
    assert (match["entityType"], match["size"], match["success"]) == ("Contact", 1, True)
    assert [m["record"]["Id"] for m in match["matchRecords"]] == [holder]
    assert match["matchRecords"][0]["record"]["attributes"]["type"] == "Contact"
    # the same Lead with allowSave=true: the rule only alerts, so it is saved
    [saved] = _create(call, _lead("jane@example.com"), allow_save=True)
    assert saved["success"] is True


def test_the_single_record_endpoint_keeps_the_duplicate_result(sb, call):
    """sObject create answers a list of errors; a duplicate error keeps its duplicateResult
    (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm)."""
    holder = sb.store.insert("Lead", {"LastName": "Lee", "Company": "X", "Email": "lee@example.com"})
    answer = call("POST", "sobjects/Contact/", json={"LastName": "Lee", "Email": "LEE@example.com"})
    assert answer.status_code == 400
    [error] = answer.json()
    assert error["errorCode"] == "DUPLICATES_DETECTED"
    assert error["duplicateResult"]["duplicateRule"] == "Standard_Contact_Duplicate_Rule"
    assert error["duplicateResult"]["matchResults"][0]["matchRecords"][0]["record"]["Id"] == holder


def test_edits_are_reported_only_by_default_and_refused_once_the_rule_alerts_on_edit(sb, call):
    """Default action on edit: Allow, report only (no alert): the edit is saved. An admin may
    make the rule alert on edit: then allowSave=true passes it.
    https://help.salesforce.com/apex/HTViewHelpDoc?id=sales.duplicate_rules_standard_contact_rule.htm
    https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_header_duplicateruleheader.htm"""
    lead = sb.store.insert("Lead", {"LastName": "Lee", "Company": "X", "Email": "taken@example.com"})
    contact = sb.store.insert("Contact", {"LastName": "Cole", "Email": "cole@example.com"})
    [ok] = _update(call, {"attributes": {"type": "Contact"}, "Id": contact, "Email": "taken@example.com"})
    assert ok["success"] is True
    sb.store.edit(contact, {"Email": "cole@example.com"})
    sb.store.configure_duplicate_rule("Standard_Contact_Duplicate_Rule", on_edit="alert")
    [refused] = _update(call, {"attributes": {"type": "Contact"}, "Id": contact, "Email": "taken@example.com"})
    assert refused["success"] is False and refused["id"] == contact
    dup = refused["errors"][0]["duplicateResult"]
    assert dup["duplicateRule"] == "Standard_Contact_Duplicate_Rule"
    assert [r["record"]["Id"] for m in dup["matchResults"] for r in m["matchRecords"]] == [lead]
    # an edit that does not change the e-mail is not checked: "duplicate rules are only
    # triggered when a change is detected in the fields defined in the Matching Criteria"
    # (https://help.salesforce.com/s/articleView?id=005237351&type=1)
    sb.store.insert("Lead", {"LastName": "Twin", "Company": "X", "Email": "cole@example.com"})
    [title] = _update(call, {"attributes": {"type": "Contact"}, "Id": contact, "Title": "CTO"})
    [same] = _update(call, {"attributes": {"type": "Contact"}, "Id": contact, "Email": "cole@example.com"})
    assert title["success"] is True and same["success"] is True
    [passed] = _update(call, {"attributes": {"type": "Contact"}, "Id": contact, "Email": "taken@example.com"},
                       allow_save=True)
    assert passed["success"] is True
    assert sb.store.get(contact)["Email"] == "taken@example.com"


def test_a_block_rule_refuses_even_with_allow_save(sb, call):
    """Block: the record cannot be saved; allowSave only passes rules that alert.
    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm
    https://developer.salesforce.com/docs/atlas.en-us.uiapi.meta/uiapi/ui_api_responses_duplicate_rule.htm"""
    contact = sb.store.insert("Contact", {"LastName": "Cole", "Email": "cole@example.com"})
    other = sb.store.insert("Contact", {"LastName": "Other", "Email": "other@example.com"})
    lead = sb.store.insert("Lead", {"LastName": "Lee", "Company": "X", "Email": "other@example.com"})
    sb.store.configure_duplicate_rule("Standard Contact Duplicate Rule", on_create="block", on_edit="block")
    [refused] = _update(call, {"attributes": {"type": "Contact"}, "Id": contact, "Email": "OTHER@example.com"},
                        allow_save=True)
    error = refused["errors"][0]
    assert error["statusCode"] == "DUPLICATES_DETECTED"
    assert error["duplicateResult"]["allowSave"] is False
    matched = {m["entityType"]: [r["record"]["Id"] for r in m["matchRecords"]]
               for m in error["duplicateResult"]["matchResults"]}
    assert matched == {"Contact": [other], "Lead": [lead]}
    [created] = _create(call, _contact("other@example.com"), allow_save=True)
    assert created["errors"][0]["duplicateResult"]["allowSave"] is False
    assert sb.store.get(contact)["Email"] == "cole@example.com"


def test_a_rule_switched_off_does_not_fire_and_the_switch_is_kept_in_the_state(sb, call, tmp_path):
    """An inactive rule matches nothing (IsActive false on its row); the org's rules live in
    its state file like its records."""
    sb.store.insert("Contact", {"LastName": "Holder", "Email": "held@example.com"})
    sb.store.configure_duplicate_rule("Standard_Lead_Duplicate_Rule", active=False)
    [saved] = _create(call, _lead("held@example.com"))
    assert saved["success"] is True
    rows = call("GET", "query/", params={"q": "SELECT DeveloperName, IsActive FROM DuplicateRule"}).json()["records"]
    assert {r["DeveloperName"]: r["IsActive"] for r in rows}["Standard_Lead_Duplicate_Rule"] is False
    from reconcile.sandbox.store import Store
    again = Store(sb.store.to_state())
    assert [r.active for r in again.duplicate_rules] == [True, False]
    with pytest.raises(ValueError):
        sb.store.configure_duplicate_rule("Standard_Lead_Duplicate_Rule", on_edit="warn")
    with pytest.raises(KeyError):
        sb.store.configure_duplicate_rule("No_Such_Rule", active=False)


def test_sandbox_serve_switches_the_standard_rules_on_edit_and_keeps_it_in_the_state(tmp_path):
    import json
    import subprocess
    import sys
    state = tmp_path / "s.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from reconcile.sandbox.cli import app; app()", "serve", "--seed", "empty",
         "--state", str(state), "--duplicate-rules-on-edit", "block"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("export ")   # serving, rules switched
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rules = json.loads(state.read_text(encoding="utf-8"))["duplicate_rules"]
    assert [(r["developer_name"], r["on_create"], r["on_edit"]) for r in rules] == [
        ("Standard_Contact_Duplicate_Rule", "alert", "block"), ("Standard_Lead_Duplicate_Rule", "alert", "block")]


def test_a_duplicate_rule_can_be_retrieved_by_id_but_not_written(call):
    """DuplicateRule supports describeSObjects(), query(), retrieve(), search(): reads only;
    rules are created and edited in Setup
    (https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-duplicaterule.html)."""
    rows = call("GET", "query/", params={"q": "SELECT Id FROM DuplicateRule ORDER BY DeveloperName"}).json()["records"]
    rule_id = rows[1]["Id"]
    got = call("GET", f"sobjects/DuplicateRule/{rule_id}", params={"fields": "DeveloperName,IsActive"})
    assert got.status_code == 200
    assert {k: v for k, v in got.json().items() if k != "attributes"} == {
        "DeveloperName": "Standard_Lead_Duplicate_Rule", "IsActive": True}
    retrieved = call("POST", "composite/sobjects/DuplicateRule", json={"ids": [rule_id], "fields": ["MasterLabel"]})
    assert retrieved.json()[0]["MasterLabel"] == "Standard Lead Duplicate Rule"
    patched = call("PATCH", f"sobjects/DuplicateRule/{rule_id}", json={"IsActive": False})
    assert patched.status_code == 400 and patched.json()[0]["errorCode"] == "INVALID_TYPE_FOR_OPERATION"
    created = call("POST", "sobjects/DuplicateRule/", json={"DeveloperName": "Mine"})
    assert created.status_code == 400 and created.json()[0]["errorCode"] == "INVALID_TYPE_FOR_OPERATION"
