"""Rollback through the real command line, against the bundled sandbox org, with
other people editing the org between the steps."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

HEADER = "email,outcome,new_email,new_title,first_name,last_name,organization,title,multipub_id,cupola_status\n"




def outcomes(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "outcomes.csv"
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def plan_id(result) -> str:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["plan_id"]


def applied(cli, pid: str) -> dict:
    assert cli("approve", pid, "--by", "Jane Admin").exit_code == 0
    result = cli("apply", pid, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def contact(org, email: str) -> dict:
    return next(r for r in org.store.records("Contact") if (r.get("Email") or "").lower() == email)


def test_a_field_edited_since_the_apply_is_left_alone_and_the_others_go_back(cli, org, tmp_path):
    ron = contact(org, "ron.replace@example.com")
    original = {"Email": ron["Email"], "Title": ron["Title"]}
    pid = plan_id(cli("plan", str(outcomes(tmp_path, "ron.replace@example.com,replacement,"
                                                    "ron.replace@example.org,Head of Operations,,,,,,active")),
                      "--json"))
    applied(cli, pid)
    assert org.store.get(ron["Id"])["Email"] == "ron.replace@example.org"
    org.store.edit(ron["Id"], {"Title": "Chief of Staff"})          # someone else, after the apply

    rolled = cli("rollback", pid, "--json")
    rid = plan_id(rolled)
    doc = json.loads(cli("show", rid, "--json").stdout)
    assert [sorted(c["fields"]) for c in doc["changes"]] == [["Email"]]
    assert [(s["record_id"], s["reason"]) for s in doc["skipped"]] == [(ron["Id"], "EDITED_SINCE_APPLY")]
    assert "Title" in doc["skipped"][0]["detail"]
    applied(cli, rid)

    now = org.store.get(ron["Id"])
    assert now["Email"] == original["Email"]         # the apply's write, undone
    assert now["Title"] == "Chief of Staff"           # the other person's edit, kept


def test_an_account_a_contact_started_using_after_the_rollback_plan_is_not_deleted(cli, org, tmp_path):
    pid = plan_id(cli("plan", str(outcomes(tmp_path, "felix.fresh@example.org,new_contact,,,Felix,Fresh,"
                                                    "Nimbus Analytics,Founder,,active")),
                      "--allow-create", "--json"))
    report = applied(cli, pid)
    account = next(r["record_id"] for r in report["results"] if r["sobject"] == "Account")
    rid = plan_id(cli("rollback", pid, "--json"))
    assert json.loads(cli("show", rid, "--json").stdout)["summary"]["delete"] == 2
    org.store.insert("Contact", {"LastName": "Late", "Email": "late@nimbus.example", "AccountId": account})
    assert cli("approve", rid, "--by", "Jane Admin").exit_code == 0
    org.stats.reset()

    # The Contact delete is its own group, checked and written first; the Account's
    # Contacts are counted just before the Account delete: the late one stops it.
    result = cli("apply", rid)
    assert result.exit_code == 1
    error = " ".join(result.stderr.split())
    assert "changed in Salesforce since the plan" in error and "before the Account delete group" in error
    assert "the 1 change(s) written before it stay written" in error
    assert "still point at the Account" in result.stdout
    assert org.stats.write_requests == 1
    assert not any((r.get("Email") or "").lower() == "felix.fresh@example.org" for r in org.store.records("Contact"))
    assert org.store.get(account) is not None
    assert contact(org, "late@nimbus.example")["AccountId"] == account


def test_an_account_a_contact_started_using_before_the_rollback_is_kept(cli, org, tmp_path):
    pid = plan_id(cli("plan", str(outcomes(tmp_path, "felix.fresh@example.org,new_contact,,,Felix,Fresh,"
                                                    "Nimbus Analytics,Founder,,active")),
                      "--allow-create", "--json"))
    report = applied(cli, pid)
    account = next(r["record_id"] for r in report["results"] if r["sobject"] == "Account")
    org.store.insert("Contact", {"LastName": "Early", "Email": "early@nimbus.example", "AccountId": account})
    rid = plan_id(cli("rollback", pid, "--json"))
    doc = json.loads(cli("show", rid, "--json").stdout)
    assert [c["sobject"] for c in doc["changes"]] == ["Contact"]
    assert [s["reason"] for s in doc["skipped"]] == ["ACCOUNT_IN_USE"]
    applied(cli, rid)
    assert org.store.get(account) is not None


@pytest.mark.parametrize("name", ["approval.json", "apply.json"])
def test_verify_catches_a_changed_byte_that_keeps_the_json_equal(cli, org, tmp_path, name):
    pid = plan_id(cli("plan", str(outcomes(tmp_path, "alice.archer@example.com,inactive,,,,,,,,active")),
                      "--json"))
    applied(cli, pid)
    assert cli("verify").exit_code == 0
    path = next(cli.archive.glob(f"{pid}/{name}"))
    raw = path.read_bytes()
    assert raw.endswith(b"}\n")
    path.write_bytes(raw[:-1] + b" ")              # same JSON, one byte different
    result = cli("verify")
    assert result.exit_code == 1 and name in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_archive_file_is_private_and_holds_no_token(cli, org, tmp_path):
    pid = plan_id(cli("plan", str(outcomes(tmp_path, "alice.archer@example.com,inactive,,,,,,,,active")),
                      "--json"))
    applied(cli, pid)
    token = org.env["SALESFORCE_ACCESS_TOKEN"]
    secret = token.split("!", 1)[-1]
    files = [p for p in cli.archive.rglob("*") if p.is_file()] + \
            [p for p in cli.archive.glob(".*") if p.is_file()]
    assert any(p.name == ".apply.lock" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        assert secret.encode() not in path.read_bytes(), path.name
    assert not re.search(r"\.tmp$", " ".join(p.name for p in files))


def test_a_created_contact_someone_saved_since_the_apply_is_not_deleted(cli, org, tmp_path):
    """Rollback deletes a Contact the apply created only if nobody saved it since: a save
    that leaves the apply's values in place (the sandbox's Contact has no field the
    create did not write, so: a Title changed and changed back) moves its
    LastModifiedDate past its CreatedDate (both set by the org:
    https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/system_fields.htm), and
    the Contact is listed as edited since the apply and kept."""
    pid = plan_id(cli("plan", str(outcomes(tmp_path, "felix.fresh@example.org,new_contact,,,Felix,Fresh,"
                                                    "Nimbus Analytics,Founder,,active")),
                      "--allow-create", "--json"))
    report = applied(cli, pid)
    made = next(r["record_id"] for r in report["results"] if r["sobject"] == "Contact")
    title = org.store.get(made)["Title"]
    org.store.edit(made, {"Title": "CEO"})                          # someone else, after the apply
    org.store.edit(made, {"Title": title})
    doc = json.loads(cli("show", plan_id(cli("rollback", pid, "--json")), "--json").stdout)
    assert made not in [c["record_id"] for c in doc["changes"]]
    (kept,) = [s for s in doc["skipped"] if s["record_id"] == made]
    assert kept["reason"] == "EDITED_SINCE_APPLY" and "saved since it was created" in kept["detail"]
