"""The command line, read like a terminal session, against the bundled sandbox org."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconcile.cli import app

pytestmark = pytest.mark.e2e

DEMO_HEADER = ("email,outcome,new_email,new_title,first_name,last_name,organization,title,"
               "multipub_id,cupola_status,observed_at,source_id\n")




def demo_outcomes(tmp_path: Path) -> Path:
    from importlib import resources
    path = tmp_path / "outcomes.csv"
    path.write_bytes((resources.files("reconcile.sandbox") / "demo_outcomes.csv").read_bytes())
    return path


def plan_id_of(output: str) -> str:
    return re.search(r"Saved (?:rollback )?plan ([0-9a-f]{12})", output).group(1)


def test_plan_refuses_bad_outcomes_with_file_line_column_and_no_api_call(cli, org, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("email,outcome\nnot-an-address,inactive\nok@example.com,vanished\n", encoding="utf-8")
    org.stats.reset()
    result = cli("plan", str(bad))
    assert result.exit_code == 1
    assert "bad.csv:2:email:" in result.stderr
    assert "bad.csv:3:outcome:" in result.stderr
    assert org.stats.requests == 0
    assert not cli.archive.exists() or not any(cli.archive.iterdir())


def test_plan_without_credentials_names_the_variables(tmp_path):
    good = tmp_path / "o.csv"
    good.write_text("email,outcome\na@example.com,inactive\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["--archive", str(tmp_path / "p"), "plan", str(good)],
                                env={"SALESFORCE_ACCESS_TOKEN": "", "SALESFORCE_DOMAIN": "",
                                     "SALESFORCE_USERNAME": "", "SALESFORCE_PASSWORD": ""})
    assert result.exit_code == 1
    assert "SALESFORCE_ACCESS_TOKEN" in result.stderr and "SALESFORCE_DOMAIN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_whole_loop_plan_approve_apply_rollback_verify(cli, org, tmp_path):
    outcomes = demo_outcomes(tmp_path)
    before = org.store.snapshot()

    planned = cli("plan", str(outcomes), "--allow-create", "--detailed-exitcode")
    assert planned.exit_code == 2, planned.output
    assert re.match(r"Plan: \d+ to create, \d+ to update, 0 to delete; \d+ skipped, \d+ for review", planned.stdout)
    pid = plan_id_of(planned.stdout)

    shown = cli("show", pid)
    assert shown.exit_code == 0 and "State: planned" in shown.stdout

    refused = cli("apply", pid)
    assert refused.exit_code == 1 and "not approved" in refused.stderr

    approved = cli("approve", pid, "--by", "Jane Admin", "--comment", "CHG-1")
    assert approved.exit_code == 0 and "state: approved" in approved.stdout
    again = cli("approve", pid, "--by", "Jane Admin")
    assert again.exit_code == 1 and "approved" in again.stderr

    applied = cli("apply", pid, "--json")
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["status"] == "applied"
    estimate = json.loads(cli("show", pid, "--json").stdout)["estimated_api_calls"]
    assert json.loads(applied.stdout)["api_calls"] == estimate   # the plan said what apply would spend
    org.stats.reset()
    again = cli("apply", pid)                  # a plan is applied once: nothing left to resume
    assert again.exit_code == 0 and "already applied" in again.stdout
    assert org.stats.requests == 0

    replanned = cli("plan", str(outcomes), "--allow-create", "--detailed-exitcode")
    assert replanned.exit_code == 0, replanned.output
    assert replanned.stdout.startswith("Plan: 0 to create, 0 to update, 0 to delete;")

    rolled = cli("rollback", pid)
    assert rolled.exit_code == 0, rolled.output
    rid = plan_id_of(rolled.stdout)
    assert cli("approve", rid, "--by", "Jane Admin").exit_code == 0
    undone = cli("apply", rid)
    assert undone.exit_code == 0, undone.output

    after = org.store.snapshot()
    assert _business_fields(after) == _business_fields(before)

    logged = cli("log", "--json")
    states = {e["plan_id"][:12]: e["state"] for e in json.loads(logged.stdout)}
    assert states[pid] == "rolled back" and states[rid] == "applied"
    assert cli("verify").exit_code == 0


def test_apply_refuses_plan_changed_after_approval(cli, org, tmp_path):
    pid = plan_id_of(cli("plan", str(demo_outcomes(tmp_path))).stdout)
    assert cli("approve", pid, "--by", "Jane").exit_code == 0
    plan_json = next(cli.archive.glob(f"{pid}*/plan.json"))
    raw = plan_json.read_bytes()
    plan_json.chmod(0o600)
    plan_json.write_bytes(raw.replace(b'"Inactive"', b'"lnactive"', 1))
    org.stats.reset()
    result = cli("apply", pid)
    assert result.exit_code == 1
    assert org.stats.write_requests == 0
    verify = cli("verify", pid)
    assert verify.exit_code == 1 and "plan.json" in verify.stderr


def test_apply_refuses_an_approval_copied_from_another_plan(cli, org, tmp_path):
    first = plan_id_of(cli("plan", str(demo_outcomes(tmp_path))).stdout)
    other = tmp_path / "other.csv"
    other.write_text("email,outcome\nsomeone.else@example.org,inactive\n", encoding="utf-8")
    second = plan_id_of(cli("plan", str(other)).stdout)
    assert cli("approve", first, "--by", "Jane").exit_code == 0
    src = next(cli.archive.glob(f"{first}*/approval.json"))
    dst = next(cli.archive.glob(f"{second}*")) / "approval.json"
    dst.write_bytes(src.read_bytes())
    org.stats.reset()
    result = cli("apply", second)
    assert result.exit_code == 1 and "approval" in result.stderr
    assert org.stats.write_requests == 0


def test_verify_names_the_changed_file(cli, org, tmp_path):
    pid = plan_id_of(cli("plan", str(demo_outcomes(tmp_path))).stdout)
    assert cli("approve", pid, "--by", "Jane").exit_code == 0
    approval = next(cli.archive.glob(f"{pid}*/approval.json"))
    approval.chmod(0o600)
    approval.write_text(approval.read_text().replace("Jane", "Joan"))
    result = cli("verify")
    assert result.exit_code == 1 and "approval.json" in result.stderr


def test_show_json_is_the_plan_document(cli, tmp_path):
    pid = plan_id_of(cli("plan", str(demo_outcomes(tmp_path))).stdout)
    shown = cli("show", pid, "--json")
    doc = json.loads(shown.stdout)
    assert doc["plan_id"].startswith(pid) and doc["format_version"] == 1


def test_unknown_plan_is_a_one_line_error(cli):
    result = cli("show", "deadbeef00")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no plan 'deadbeef00'")


def _business_fields(snapshot: dict) -> dict:
    """Every record's fields except the stamps that every write moves."""
    skip = {"LastModifiedDate", "SystemModstamp"}
    out = {}
    for records in snapshot["records"].values():
        for rec in records.values():
            out[rec["Id"]] = {k: v for k, v in rec.items() if k not in skip}
    assert out, "the snapshot has no records: the comparison would prove nothing"
    return out


def test_an_archive_that_cannot_be_written_is_a_one_line_error(org, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    env = {**org.env, "RECONCILE_ARCHIVE": str(blocker / "plans")}
    result = CliRunner().invoke(app, ["plan", str(demo_outcomes(tmp_path))], env=env)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not-a-directory" in lines[0]


def test_a_record_someone_already_changed_to_the_planned_value_is_not_written_again(cli, org, tmp_path):
    outcomes = tmp_path / "one.csv"
    alice = next(r for r in org.store.records("Contact") if r["Email"] == "alice.archer@example.com")
    outcomes.write_text("email,outcome\nalice.archer@example.com,inactive\n", encoding="utf-8")
    pid = plan_id_of(cli("plan", str(outcomes)).stdout)
    assert cli("approve", pid, "--by", "Jane").exit_code == 0
    org.store.edit(alice["Id"], {"Contact_Status__c": "Inactive"})
    org.stats.reset()
    result = cli("apply", pid, "--json")
    assert org.stats.write_requests == 0
    doc = json.loads(result.stdout)
    assert [r["status"] for r in doc["results"]] == ["skipped"]


def test_drifted_record_is_named_with_plan_and_current_values(cli, org, tmp_path):
    outcomes = tmp_path / "one.csv"
    alice = next(r for r in org.store.records("Contact") if r["Email"] == "alice.archer@example.com")
    outcomes.write_text("email,outcome,new_title,cupola_status\nalice.archer@example.com,title_change,Chief Archer,active\n",
                        encoding="utf-8")
    pid = plan_id_of(cli("plan", str(outcomes)).stdout)
    assert cli("approve", pid, "--by", "Jane").exit_code == 0
    org.store.edit(alice["Id"], {"Title": "Set by someone else"})
    org.stats.reset()
    result = cli("apply", pid)
    assert result.exit_code == 1
    assert org.stats.write_requests == 0
    assert "drifted: Contact:" in result.stdout and "Set by someone else" in result.stdout
    as_json = cli("apply", pid, "--json")
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and doc["error"] == "DriftError" and doc["report"]["drifted"]
    assert org.store.get(alice["Id"])["Title"] == "Set by someone else"


def test_plan_json_reports_input_problems_as_json(cli, org, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"email": "x@example.com", "outcome": "teleport"}\n', encoding="utf-8")
    result = cli("plan", str(bad), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["error"] == "InputError"
    assert doc["problems"][0].startswith("bad.jsonl:1:outcome:")


def test_apply_refuses_a_plan_made_for_another_org(cli, org, tmp_path):
    pid = plan_id_of(cli("plan", str(demo_outcomes(tmp_path))).stdout)
    assert cli("approve", pid, "--by", "Jane").exit_code == 0
    planned_for = org.store.org_id
    org.store.org_id = "00DDn0000000002MAA"   # the credentials now point at another org
    org.stats.reset()
    result = cli("apply", pid)
    assert result.exit_code == 1
    assert f"made for org {planned_for}" in result.stderr and "00DDn0000000002MAA" in result.stderr
    assert org.stats.write_requests == 0


def test_a_save_cut_short_before_plan_json_is_redone(cli, org, tmp_path):
    outcomes = demo_outcomes(tmp_path)
    first = cli("plan", str(outcomes))
    plan_dir = next(cli.archive.glob(f"{plan_id_of(first.stdout)}*"))
    (plan_dir / "plan.json").unlink()            # as if killed after the HTML, before plan.json
    again = cli("plan", str(outcomes))           # same frozen clock: the same plan id
    assert again.exit_code == 0, again.output
    assert (plan_dir / "plan.json").is_file() and cli("verify").exit_code == 0


def test_a_partially_applied_plan_reports_again_and_exits_1_without_sending(cli, org, tmp_path):
    outcomes = tmp_path / "two.csv"
    outcomes.write_text("email,outcome\nalice.archer@example.com,inactive\nbob.builder@example.com,inactive\n",
                        encoding="utf-8")
    pid = plan_id_of(cli("plan", str(outcomes)).stdout)
    assert cli("approve", pid, "--by", "Jane").exit_code == 0
    bob = next(r for r in org.store.records("Contact") if r["Email"] == "bob.builder@example.com")
    org.faults.validation_error([bob["Id"]], "Status changes need a reason")
    first = cli("apply", pid)
    assert first.exit_code == 1
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in first.stdout and "Status changes need a reason" in first.stdout
    assert "partially applied" in first.stdout
    org.stats.reset()
    again = cli("apply", pid)
    assert again.exit_code == 1 and "already applied" in again.stdout
    assert org.stats.requests == 0


def _crafted(cli, pid: str, edit) -> str:
    """A copy of plan ``pid`` edited and given the id of its new content, in its own folder:
    loading accepts it (the bytes hash to the id), only the schema can refuse it."""
    from reconcile.plan import canonical_bytes, compute_plan_id
    doc = json.loads(next(cli.archive.glob(f"{pid}*/plan.json")).read_bytes())
    edit(doc)
    doc.pop("plan_id")
    doc["plan_id"] = compute_plan_id(doc)
    folder = cli.archive / doc["plan_id"]
    folder.mkdir()
    (folder / "plan.json").write_bytes(canonical_bytes(doc))
    return doc["plan_id"]


def test_a_crafted_plan_with_a_recomputed_id_gets_one_line_errors_and_no_write(cli, org, tmp_path):
    pid = plan_id_of(cli("plan", str(demo_outcomes(tmp_path))).stdout)
    bad_change = _crafted(cli, pid, lambda d: d["changes"][0].update(fields="oops"))
    shown = cli("show", bad_change)
    assert shown.exit_code != 0 and "Traceback" not in shown.stderr
    assert "not a valid plan: /changes/0/fields" in shown.stderr
    assert cli("approve", bad_change, "--by", "Jane").exit_code == 0   # the head is sound
    org.stats.reset()
    applied = cli("apply", bad_change)
    assert applied.exit_code != 0 and "not a valid plan: /changes/0/fields" in applied.stderr
    assert len(applied.stderr.strip().splitlines()) == 1
    assert org.stats.write_requests == 0
    bad_head = _crafted(cli, pid, lambda d: d.update(org="somewhere"))
    for command in (("approve", bad_head, "--by", "Jane"), ("show", bad_head)):
        result = cli(*command)
        assert result.exit_code != 0 and "not a valid plan: /org" in result.stderr, command
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (cli.archive / bad_head / "approval.json").exists()


def test_drift_in_a_later_group_stops_before_it_and_says_the_earlier_group_stays_written(cli, org, tmp_path):
    """Each group is read just before it is written: a Lead edited after approval is found
    by the Lead group's read, after the Contact group was written. The run stops there
    (exit 1), says the Contact stays written and how to go on; --skip-drifted finishes."""
    outcomes = tmp_path / "two.csv"
    outcomes.write_text("email,outcome,new_title,cupola_status\n"
                        "alice.archer@example.com,title_change,Chief Archer,active\n"
                        "lena.lead@example.com,inactive,,active\n", encoding="utf-8")
    pid = plan_id_of(cli("plan", str(outcomes)).stdout)
    assert cli("approve", pid, "--by", "Jane").exit_code == 0
    alice = next(r for r in org.store.records("Contact") if r["Email"] == "alice.archer@example.com")
    lena = next(r for r in org.store.records("Lead") if r["Email"] == "lena.lead@example.com")
    org.store.edit(lena["Id"], {"Status": "Closed - Converted"})

    stopped = cli("apply", pid)
    assert stopped.exit_code == 1
    assert org.store.get(alice["Id"])["Title"] == "Chief Archer"          # the first group: written
    assert org.store.get(lena["Id"])["Status"] == "Closed - Converted"    # never overwritten
    error = " ".join(stopped.stderr.split())
    assert "before the Lead update group" in error and "the 1 change(s) written before it stay written" in error
    assert f"reconcile apply {pid} --skip-drifted" in error and "or make a new plan" in error
    assert f"drifted: Lead:{lena['Id']}" in stopped.stdout and "Closed - Converted" in stopped.stdout
    assert "State: applying" in cli("show", pid).stdout

    finished = cli("apply", pid, "--skip-drifted", "--json")
    assert finished.exit_code == 1                                       # partially applied
    report = json.loads(finished.stdout)
    assert report["status"] == "partially applied"
    assert {r["change_id"].split(":")[0]: r["status"] for r in report["results"]} == {
        "Contact": "applied", "Lead": "drifted"}
    assert org.store.get(lena["Id"])["Status"] == "Closed - Converted"
