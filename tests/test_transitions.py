"""``transitions``, ``by_action`` and ``by_reason`` in the plan, and ``changes.csv``."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from reconcile.plan import TRANSITION_SINGLES_KEPT, tallies, transitions
from reconcile.render.csvs import CHANGE_COLUMNS, changes_csv

FIXTURE = Path(__file__).parent / "fixtures" / "sample_plan.json"


def update(n: int, field: str, before, after, sobject: str = "Contact") -> dict:
    return {"change_id": f"{sobject}:{n:018d}", "action": "update", "sobject": sobject, "record_id": f"{n:018d}",
            "email": f"p{n}@example.com", "fields": {field: {"before": before, "after": after}},
            "reasons": ["outcome inactive"], "rows": []}


def test_transitions_count_each_field_change_largest_first():
    changes = ([update(i, "Contact_Status__c", "Active", "Inactive") for i in range(7)]
               + [update(100 + i, "Contact_Status__c", "Inactive", "Active") for i in range(3)]
               + [update(200 + i, "Status", "Working - Contacted", "Inactive", "Lead") for i in range(2)])
    entries = transitions(changes)
    assert [(e["sobject"], e["field"], e["before"], e["after"], e["count"]) for e in entries] == [
        ("Contact", "Contact_Status__c", "Active", "Inactive", 7),
        ("Contact", "Contact_Status__c", "Inactive", "Active", 3),
        ("Lead", "Status", "Working - Contacted", "Inactive", 2),
    ]
    assert entries[0]["examples"] == ["Contact:000000000000000000", "Contact:000000000000000001",
                                      "Contact:000000000000000002"]


def test_one_off_values_are_counted_together_only_when_there_are_many():
    few = [update(i, "Email", f"a{i}@x.com", f"b{i}@y.com") for i in range(TRANSITION_SINGLES_KEPT)]
    assert [(e["count"], e["various"], e["before"]) for e in transitions(few)] == [
        (1, False, f"a{i}@x.com") for i in range(TRANSITION_SINGLES_KEPT)]
    many = few + [update(99, "Email", "c@x.com", "d@y.com")]
    assert transitions(many) == [{
        "action": "update", "sobject": "Contact", "field": "Email", "before": None, "after": None,
        "various": True, "count": TRANSITION_SINGLES_KEPT + 1,
        "examples": ["Contact:000000000000000000", "Contact:000000000000000001", "Contact:000000000000000002"]}]


def test_creates_and_deletes_are_their_own_entries_counting_records():
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    entries = transitions(doc["changes"])
    creates = {(e["sobject"], e["count"]) for e in entries if e["action"] == "create"}
    assert creates == {("Account", 1), ("Contact", 1)}
    assert all(e["field"] is None for e in entries if e["action"] != "update")
    # every update field change is counted exactly once
    field_changes = sum(len(c["fields"]) for c in doc["changes"] if c["action"] == "update")
    assert sum(e["count"] for e in entries if e["action"] == "update") == field_changes


def test_tallies_count_actions_and_reason_codes():
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    by_action, by_reason = tallies(doc["changes"], [*doc["skipped"], *doc["review"]])
    assert by_action == {"create": {"records": 2, "fields": 7}, "update": {"records": 8, "fields": 9},
                         "delete": {"records": 1, "fields": 2}}
    assert by_reason == Counter(i["reason"] for i in [*doc["skipped"], *doc["review"]])
    assert by_reason["MULTIPUB_CONTACT"] == 2


def test_changes_csv_has_one_row_per_field_change_and_is_formula_safe():
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    doc["changes"][2]["fields"]["Contact_Status__c"]["after"] = "=HYPERLINK(\"x\")"
    rows = list(csv.DictReader(io.StringIO(changes_csv(doc))))
    assert tuple(rows[0]) == CHANGE_COLUMNS
    assert len(rows) == sum(len(c["fields"]) for c in doc["changes"])
    status = next(r for r in rows if r["change_id"] == doc["changes"][2]["change_id"])
    assert status["after"] == "'=HYPERLINK(\"x\")" and status["before"] == "Active"
    assert status["reasons"] == "; ".join(doc["changes"][2]["reasons"])
    create = next(r for r in rows if r["action"] == "create" and r["field"] == "AccountId")
    # @ starts a formula
    assert create["before"] == "" and create["record_id"] == "" and create["after"] == "'@{Account:acme corp}"


def test_plan_writes_changes_csv_into_the_archive(cli, tmp_path):
    from reconcile.sandbox.demo import OUTCOMES_FILE

    result = cli("plan", str(OUTCOMES_FILE), "--json")
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    folder = Path(printed["path"]).parent
    assert Path(printed["changes_csv"]) == folder / "changes.csv"
    doc = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO((folder / "changes.csv").read_text(encoding="utf-8"))))
    assert len(rows) == sum(len(c["fields"]) for c in doc["changes"]) > 0
    assert doc["transitions"] == transitions(doc["changes"]) == printed["transitions"]
    assert printed["by_reason"] == doc["by_reason"]


def test_a_plan_written_before_transitions_is_counted_on_the_fly():
    from reconcile.render.digest import plan_transitions

    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert "transitions" not in doc   # the sample plan predates them
    assert plan_transitions(doc) == transitions(doc["changes"])
    doc["transitions"] = []
    assert plan_transitions(doc) == []   # what a plan records is what its views show
