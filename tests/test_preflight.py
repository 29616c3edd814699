"""Preflight (SPEC §2.7): the org is checked before anything is planned."""

import copy

import pytest
from typer.testing import CliRunner

from reconcile.cli import app
from reconcile.config import Config
from reconcile.errors import PreflightError
from reconcile.sandbox import SandboxServer, describe
from reconcile.snapshot import preflight


def describes():
    return {s: describe.describe_sobject(s, "61.0") for s in ("Contact", "Lead")}


def field(d, name):
    return next(f for f in d["fields"] if f["name"] == name)


def test_the_sandbox_org_passes():
    preflight(describes(), Config(), allow_create=True)


def test_every_problem_is_named_in_one_line():
    d = copy.deepcopy(describes())
    d["Contact"]["fields"] = [f for f in d["Contact"]["fields"] if f["name"] != "Contact_Status__c"]
    status = field(d["Lead"], "Status")
    status["picklistValues"] = [p for p in status["picklistValues"] if p["value"] != "Open - Not Contacted"]
    field(d["Lead"], "Title")["updateable"] = False
    with pytest.raises(PreflightError) as err:
        preflight(d, Config(), allow_create=False)
    message = str(err.value)
    assert "Contact.Contact_Status__c does not exist" in message
    assert "Lead.Status has no active picklist value 'Open - Not Contacted'" in message
    assert "Lead.Title is not updateable" in message
    assert "\n" not in message


def test_an_inactive_picklist_value_does_not_count():
    d = copy.deepcopy(describes())
    for p in field(d["Contact"], "Contact_Status__c")["picklistValues"]:
        if p["value"] == "Inactive":
            p["active"] = False
    with pytest.raises(PreflightError, match="Contact_Status__c has no active picklist value 'Inactive'"):
        preflight(d, Config(), allow_create=False)


def test_create_fields_are_checked_only_with_allow_create():
    d = copy.deepcopy(describes())
    field(d["Contact"], "AccountId")["createable"] = False
    preflight(d, Config(), allow_create=False)
    with pytest.raises(PreflightError, match="Contact.AccountId is not createable"):
        preflight(d, Config(), allow_create=True)


def test_configured_field_names_are_what_is_checked(tmp_path):
    config = tmp_path / "reconcile.toml"
    config.write_text('[fields]\ncontact_status = "Status__c"\n', encoding="utf-8")
    outcomes = tmp_path / "o.csv"
    outcomes.write_text("email,outcome\nalice.archer@example.com,inactive\n", encoding="utf-8")
    with SandboxServer(seed="demo") as sb:
        sb.stats.reset()
        result = CliRunner().invoke(app, ["--config", str(config), "--archive", str(tmp_path / "plans"),
                                          "plan", str(outcomes)], env=sb.env)
        assert result.exit_code == 1
        assert "preflight failed: Contact.Status__c does not exist" in result.stderr
        assert sb.stats.requests == 1   # one composite request; no record was read
    assert not (tmp_path / "plans").exists()


# -- what preflight records: the org's duplicate rules, the Account fields a create needs ----

STANDARD_RULES = [
    {"name": "Standard_Contact_Duplicate_Rule", "label": "Standard Contact Duplicate Rule", "sobject": "Contact"},
    {"name": "Standard_Lead_Duplicate_Rule", "label": "Standard Lead Duplicate Rule", "sobject": "Lead"}]


def test_preflight_records_the_active_rules_and_the_account_fields_a_create_needs():
    d = {**describes(), "Account": describe.describe_sobject("Account", "61.0")}
    rows = [{"DeveloperName": "Standard_Lead_Duplicate_Rule", "MasterLabel": "Standard Lead Duplicate Rule",
             "SobjectType": "Lead"},
            {"DeveloperName": "Standard_Contact_Duplicate_Rule", "MasterLabel": "Standard Contact Duplicate Rule",
             "SobjectType": "Contact"}]
    checked = preflight(d, Config(), allow_create=True, duplicate_rules=rows)
    assert checked == {"duplicate_rules": STANDARD_RULES,
                       "account_fields": {"written": ["Name"], "required": ["Name"]}}
    # rules not readable by this user: unknown (None), not "no rules"
    assert preflight(describes(), Config(), allow_create=False) == {"duplicate_rules": None,
                                                                     "account_fields": None}


def test_an_account_field_the_org_requires_on_create_fails_preflight_with_allow_create():
    d = {**describes(), "Account": copy.deepcopy(describe.describe_sobject("Account", "61.0"))}
    d["Account"]["fields"].append({"name": "Region__c", "type": "picklist", "createable": True,
                                   "nillable": False, "defaultedOnCreate": False})
    with pytest.raises(PreflightError, match="Account.Region__c is required on create and a new Account "
                                             "would not have it"):
        preflight(d, Config(), allow_create=True)


def test_plan_records_the_orgs_active_duplicate_rules_in_the_same_single_preflight_request(tmp_path):
    """The DuplicateRule query rides in the /composite preflight already sends (one API call
    for describes, Organization and rules); the plan and its page name the active rules.
    https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-duplicaterule.html
    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_composite.htm"""
    import json
    outcomes = tmp_path / "o.csv"
    outcomes.write_text("email,outcome\nalice.archer@example.com,inactive\n", encoding="utf-8")
    with SandboxServer(seed="demo") as sb:
        sb.store.configure_duplicate_rule("Standard_Contact_Duplicate_Rule", active=False)
        sb.stats.reset()
        result = CliRunner().invoke(app, ["--archive", str(tmp_path / "plans"), "plan", str(outcomes)],
                                    env=sb.env)
        assert result.exit_code == 0, result.stderr
        composites = [path for _method, path, _summary in sb.stats.log if path.rstrip("/").endswith("/composite")]
        assert len(composites) == 1
    [plan_dir] = [p for p in (tmp_path / "plans").iterdir() if p.is_dir()]
    doc = json.loads((plan_dir / "plan.json").read_text(encoding="utf-8"))
    assert doc["preflight"] == {"duplicate_rules": [STANDARD_RULES[1]], "account_fields": None}
    page = (plan_dir / "plan.html").read_text(encoding="utf-8")
    assert "Standard Lead Duplicate Rule" in page and "Standard Contact Duplicate Rule" not in page
    shown = CliRunner().invoke(app, ["--archive", str(tmp_path / "plans"), "show", plan_dir.name[:12]])
    assert "Duplicate rules active in the org: Standard Lead Duplicate Rule (Lead)" in " ".join(shown.stdout.split())


def _composite_org_and_rules(rules_part):
    org = {"body": {"totalSize": 1, "done": True, "records": [
        {"attributes": {"type": "Organization"}, "Id": "00DRO0000008aXd2AI", "Name": "Acme",
         "IsSandbox": False, "OrganizationType": "Enterprise Edition"}]},
        "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "organization"}
    describe_part = {"body": {"name": "Contact", "fields": []}, "httpHeaders": {}, "httpStatusCode": 200,
                     "referenceId": "describe0"}
    return (200, {"compositeResponse": [describe_part, org, {**rules_part, "referenceId": "duplicateRules"}]})


def test_the_adapter_reads_the_rules_in_the_preflight_composite_and_tolerates_a_refusal():
    """A subrequest that fails has its error list as ``body`` and its status as
    ``httpStatusCode`` (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_subrequest_result.htm);
    DuplicateRule needs View Setup and Configuration
    (https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-duplicaterule.html):
    a user without it gets the rules as unknown (None), and the plan goes on."""
    import json

    from test_documented_examples import adapter
    rows = {"totalSize": 1, "done": True, "records": [
        {"attributes": {"type": "DuplicateRule"}, "Id": "0BmRO0000000001AAA",
         "DeveloperName": "Standard_Lead_Duplicate_Rule", "MasterLabel": "Standard Lead Duplicate Rule",
         "SobjectType": "Lead"}]}
    sf, fake = adapter(_composite_org_and_rules({"body": rows, "httpHeaders": {}, "httpStatusCode": 200}))
    org, describes, rules = sf.preflight_read(["Contact"])
    assert org.org_id == "00DRO0000008aXd2AI" and set(describes) == {"Contact"}
    assert rules == [{"Id": "0BmRO0000000001AAA", "DeveloperName": "Standard_Lead_Duplicate_Rule",
                      "MasterLabel": "Standard Lead Duplicate Rule", "SobjectType": "Lead"}]
    assert sf.calls == 1
    sent = json.loads(fake.sent[0].body)["compositeRequest"]
    assert [s["referenceId"] for s in sent] == ["describe0", "organization", "duplicateRules"]
    assert "FROM+DuplicateRule+WHERE+IsActive" in sent[2]["url"]

    refused = {"body": [{"errorCode": "INVALID_TYPE", "message": "sObject type 'DuplicateRule' is not supported."}],
               "httpHeaders": {}, "httpStatusCode": 400}
    sf, _ = adapter(_composite_org_and_rules(refused))
    _org, _describes, rules = sf.preflight_read(["Contact"])
    assert rules is None
