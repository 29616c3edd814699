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
