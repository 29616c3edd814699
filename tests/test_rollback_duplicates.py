"""Rollback against the org's duplicate rules (issue 11): restores send
``Sforce-Duplicate-Rule-Header: allowSave=true`` (a rollback restores a state the
org already had), which passes rules that alert; a Block rule still refuses,
and that is reported with the rule and the matching records; a rollback applied
in part leaves its parent ``partially rolled back``, and ``reconcile rollback``
on the parent plans what is left. Through the command line, against the
sandbox org.

Documented behaviour relied on:
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm
(allowSave: "Applicable if an alert is enabled for the action"),
https://help.salesforce.com/s/articleView?id=sales.duplicate_rules_standard_lead_rule.htm
(the Standard Lead Duplicate Rule matches Contacts that duplicate Leads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

HEADER = "email,outcome,new_email,new_title,first_name,last_name,organization,title,multipub_id,cupola_status\n"


def outcomes(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "outcomes.csv"
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def planned(result) -> str:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["plan_id"]


def approve_and_apply(cli, pid: str):
    assert cli("approve", pid, "--by", "Jane Admin").exit_code == 0
    return cli("apply", pid)


def state_of(cli, pid: str) -> str:
    entries = json.loads(cli("log", "--json").stdout)
    return next(e["state"] for e in entries if e["plan_id"] == pid)


@pytest.fixture()
def people(org):
    """A Lead and a Contact, and a plan input that moves the Lead's e-mail and the
    Contact's title. After the apply someone creates a Contact holding the Lead's old
    address: restoring it is what the duplicate rules now match."""
    lead = org.store.insert("Lead", {"FirstName": "Lena", "LastName": "Lead", "Company": "Initech",
                                     "Email": "lana.undo@example.com", "Status": "Working - Contacted"})
    contact = org.store.insert("Contact", {"FirstName": "Carl", "LastName": "Contact", "Title": "Engineer",
                                           "Email": "carl.undo@example.com", "Contact_Status__c": "Active"})
    rows = ("lana.undo@example.com,email_change,lana.undo@example.org,,,,,,,active",
            "carl.undo@example.com,title_change,,Director,,,,,,active")
    return lead, contact, rows


def _apply_then_clash(cli, org, tmp_path, people) -> tuple[str, str, str]:
    lead, _contact, rows = people
    pid = planned(cli("plan", str(outcomes(tmp_path, *rows)), "--json"))
    assert approve_and_apply(cli, pid).exit_code == 0
    assert org.store.get(lead)["Email"] == "lana.undo@example.org"
    # not an edit of any record the plan wrote: a new Contact with the Lead's old address
    holder = org.store.insert("Contact", {"LastName": "Newcomer", "Email": "Lana.Undo@example.com",
                                          "Contact_Status__c": "Active"})
    return pid, holder, planned(cli("rollback", pid, "--json"))


@pytest.mark.parametrize("on_edit", ["allow", "alert"])
def test_rollback_with_the_standard_duplicate_rules_restores_every_field_nobody_else_edited(
        cli, org, tmp_path, people, on_edit):
    """The standard rules as shipped (report only on edit) and as many orgs set them (alert
    on edit): the restores pass, every field goes back, and the command says so."""
    for rule in ("Standard_Contact_Duplicate_Rule", "Standard_Lead_Duplicate_Rule"):
        org.store.configure_duplicate_rule(rule, on_edit=on_edit)
    lead, contact, _rows = people
    pid, _holder, rid = _apply_then_clash(cli, org, tmp_path, people)
    org.stats.reset()
    result = approve_and_apply(cli, rid)
    assert result.exit_code == 0, result.output
    assert org.store.get(lead)["Email"] == "lana.undo@example.com"
    assert org.store.get(contact)["Title"] == "Engineer"
    assert f"rollback of plan {pid[:12]} restored every field nobody else edited (2 field(s) on 2 record(s))" \
        in result.stdout
    assert state_of(cli, pid) == "rolled back"
    writes = [summary for method, path, summary in org.stats.log if path.endswith("/composite/sobjects")]
    assert writes and all(method == "PATCH" for method, path, _ in org.stats.log
                          if path.endswith("/composite/sobjects"))


def test_a_block_rule_refuses_a_restore_names_rule_and_match_and_the_rest_can_be_finished(
        cli, org, tmp_path, people):
    lead, contact, _rows = people
    org.store.configure_duplicate_rule("Standard_Lead_Duplicate_Rule", on_edit="block")
    pid, holder, rid = _apply_then_clash(cli, org, tmp_path, people)

    result = approve_and_apply(cli, rid)
    assert result.exit_code == 1
    refused = next(line for line in result.stdout.splitlines() if "failed:" in line)
    assert f"Lead:{lead}" in refused and "DUPLICATES_DETECTED" in refused
    assert "duplicate rule Standard_Lead_Duplicate_Rule blocks" in refused
    assert f"matching: Contact {holder}" in refused
    assert f"plan {pid[:12]} is partially rolled back" in result.stdout
    assert org.store.get(contact)["Title"] == "Engineer"             # restored
    assert org.store.get(lead)["Email"] == "lana.undo@example.org"    # refused, still the apply's value
    assert state_of(cli, pid) == "partially rolled back"
    assert state_of(cli, rid) == "partially applied"
    result_doc = json.loads((cli.archive / rid / "apply.json").read_text(encoding="utf-8"))
    failed = next(r for r in result_doc["results"] if r["status"] == "failed")
    assert holder in failed["message"] and "Standard_Lead_Duplicate_Rule" in failed["message"]

    # the admin relaxes the rule to an alert: the rest of the undo can now be planned and applied
    org.store.configure_duplicate_rule("Standard_Lead_Duplicate_Rule", on_edit="alert")
    again = planned(cli("rollback", pid, "--json"))
    doc = json.loads(cli("show", again, "--json").stdout)
    assert [(c["record_id"], sorted(c["fields"])) for c in doc["changes"]] == [(lead, ["Email"])]
    assert doc["options"]["after_rollbacks"] == [rid]
    assert [i["name"] for i in doc["inputs"]] == [f"{pid}/apply.json", f"{rid}/apply.json"]
    finished = approve_and_apply(cli, again)
    assert finished.exit_code == 0, finished.output
    assert org.store.get(lead)["Email"] == "lana.undo@example.com"
    assert state_of(cli, pid) == "rolled back"
    assert "already rolled back" in cli("rollback", pid).stderr
    verified = cli("verify")
    assert verified.exit_code == 0, verified.output


def test_a_forward_apply_sends_no_duplicate_header_so_an_alert_rule_refuses_it(cli, org, tmp_path):
    """Only rollbacks pass alerting rules: an apply that would create a duplicate is refused by
    the org (the planner sends such changes to review first; here the clash appears after)."""
    lead = org.store.insert("Lead", {"LastName": "Lee", "Company": "Initech", "Email": "lee.undo@example.com",
                                     "Status": "Working - Contacted"})
    pid = planned(cli("plan", str(outcomes(tmp_path, "lee.undo@example.com,email_change,lee.undo@example.org,,,,,,,active")),
                      "--json"))
    org.store.configure_duplicate_rule("Standard_Lead_Duplicate_Rule", on_edit="alert")
    holder = org.store.insert("Contact", {"LastName": "Holder", "Email": "lee.undo@example.org",
                                          "Contact_Status__c": "Active"})
    result = approve_and_apply(cli, pid)
    assert result.exit_code == 1
    assert "duplicate rule Standard_Lead_Duplicate_Rule alerts" in result.stdout
    assert f"matching: Contact {holder}" in result.stdout
    assert org.store.get(lead)["Email"] == "lee.undo@example.com"


def test_rollback_reports_a_record_it_cannot_read_as_deleted_or_not_visible(cli, org, tmp_path, people):
    lead, _contact, rows = people
    pid = planned(cli("plan", str(outcomes(tmp_path, *rows)), "--json"))
    assert approve_and_apply(cli, pid).exit_code == 0
    org.store.delete(lead)
    rid = planned(cli("rollback", pid, "--json"))
    doc = json.loads(cli("show", rid, "--json").stdout)
    [gone] = doc["skipped"]
    assert gone["reason"] == "RECORD_GONE" and "deleted or not visible to this user" in gone["detail"]


def test_plan_puts_a_cross_object_clash_in_review_never_in_the_changes(cli, org, tmp_path):
    """Issue 10: a Contact moving to an address a Lead holds would trip the org's Contact
    duplicate rule at apply (it matches Leads); the plan sends it to review, naming the Lead."""
    contact = org.store.insert("Contact", {"LastName": "Mover", "Email": "mover.undo@example.com",
                                           "Contact_Status__c": "Active"})
    holder = org.store.insert("Lead", {"LastName": "Holder", "Company": "Initech",
                                       "Email": "taken.undo@example.com", "Status": "Working - Contacted"})
    result = cli("plan", str(outcomes(tmp_path, "mover.undo@example.com,email_change,taken.undo@example.com,"
                                                ",,,,,,active")), "--json")
    pid = planned(result)
    doc = json.loads(cli("show", pid, "--json").stdout)
    assert doc["changes"] == []
    [item] = doc["review"]
    assert (item["reason"], item["record_id"]) == ("EMAIL_TAKEN", contact)
    assert f"already held by Lead {holder}" in item["detail"]


def test_a_rollback_that_restored_nothing_leaves_the_parent_as_it_was_and_can_be_planned_again(
        cli, org, tmp_path, people):
    lead, _contact, rows = people
    org.store.configure_duplicate_rule("Standard_Lead_Duplicate_Rule", on_edit="block")
    pid = planned(cli("plan", str(outcomes(tmp_path, rows[0])), "--json"))   # the Lead's move only
    assert approve_and_apply(cli, pid).exit_code == 0
    org.store.insert("Contact", {"LastName": "Newcomer", "Email": "lana.undo@example.com",
                                 "Contact_Status__c": "Active"})
    rid = planned(cli("rollback", pid, "--json"))
    result = approve_and_apply(cli, rid)
    assert result.exit_code == 1
    assert f"plan {pid[:12]} is not rolled back" in result.stdout
    assert state_of(cli, pid) == "applied" and state_of(cli, rid) == "failed"
    org.store.configure_duplicate_rule("Standard_Lead_Duplicate_Rule", on_edit="alert")
    again = planned(cli("rollback", pid, "--json"))
    assert approve_and_apply(cli, again).exit_code == 0
    assert org.store.get(lead)["Email"] == "lana.undo@example.com"
    assert state_of(cli, pid) == "rolled back"
