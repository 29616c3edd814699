"""Review at scale (issue 12): a plan of 10,000 people that a person can read and approve.

The sandbox org seeded ``scale:10000`` and its outcomes (``reconcile sandbox
outcomes --seed scale:10000``) give a plan with every kind of item: status
flips both ways, title ladders, e-mail changes, Leads, duplicates, review
items of every reason, Multipub hand-offs, unknown addresses, new contacts.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconcile.cli import app
from reconcile.sandbox.scale import build_scale_org, parse_seed, scale_outcomes_csv

CHROMIUM = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PEOPLE = 10_000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Plan the 10,000-person org once through the command line; the archive folder and the run."""
    from reconcile.sandbox import SandboxServer

    tmp = tmp_path_factory.mktemp("scale")
    outcomes = tmp / "outcomes.csv"
    runner = CliRunner()
    wrote = runner.invoke(app, ["sandbox", "outcomes", "--seed", f"scale:{PEOPLE}", "--output", str(outcomes)])
    assert wrote.exit_code == 0, wrote.output
    with SandboxServer(seed=f"scale:{PEOPLE}") as org:
        env = {**org.env, "RECONCILE_NOW": "2026-11-25T09:00:00.000Z", "RECONCILE_ARCHIVE": str(tmp / "plans")}

        def run(*args: str):
            return runner.invoke(app, list(args), env=env, catch_exceptions=False)

        planned = run("plan", str(outcomes), "--json")
        assert planned.exit_code == 0, planned.output
        folder = Path(json.loads(planned.stdout)["path"]).parent
        yield {"folder": folder, "run": run, "doc": json.loads((folder / "plan.json").read_text(encoding="utf-8")),
               "tmp": tmp}


def test_scale_seed_and_outcomes_are_deterministic():
    assert parse_seed("scale:10k") == parse_seed("scale:10_000") == 10_000 and parse_seed("demo") is None
    assert build_scale_org(200) == build_scale_org(200)
    assert scale_outcomes_csv(200) == scale_outcomes_csv(200)
    with pytest.raises(ValueError, match="scale:N with N from 1"):
        parse_seed("scale:0")


def test_transitions_count_every_field_change_exactly(big):
    doc = big["doc"]
    exact = Counter()
    for change in doc["changes"]:
        for name, values in change["fields"].items():
            exact[(change["sobject"], name, values["before"], values["after"])] += 1
    listed = {(t["sobject"], t["field"], t["before"], t["after"]): t["count"] for t in doc["transitions"]
              if not t["various"]}
    for key, count in listed.items():
        assert exact[key] == count, key
    various = [t for t in doc["transitions"] if t["various"]]
    assert [(t["sobject"], t["field"], t["count"]) for t in various] == [("Contact", "Email", 1_000)]
    assert sum(t["count"] for t in doc["transitions"]) == sum(exact.values()) == doc["by_action"]["update"]["fields"]
    # the mix the scale seed promises (reconcile/sandbox/scale.py), less conflicts and no-ops
    assert listed[("Contact", "Contact_Status__c", "Active", "Inactive")] == 5_200
    assert listed[("Contact", "Contact_Status__c", "Inactive", "Active")] == 1_000
    assert listed[("Lead", "Status", "Working - Contacted", "Inactive")] == 250
    assert doc["by_reason"] == {"HUMAN_REVIEW_REASON_UPDATE_ON_INACTIVE": 250,
                                "HUMAN_REVIEW_REASON_ACTIVE_NEW_CONTACT": 250, "EMAIL_TAKEN": 125,
                                "CONFLICTING_OUTCOMES": 25, "MULTIPUB_CONTACT": 250, "NOT_FOUND": 250,
                                "CREATE_DISABLED": 125}
    assert [t["count"] for t in doc["transitions"]] == sorted((t["count"] for t in doc["transitions"]), reverse=True)


def test_changes_csv_has_one_row_per_field_change(big):
    rows = list(csv.DictReader(io.StringIO((big["folder"] / "changes.csv").read_text(encoding="utf-8"))))
    doc = big["doc"]
    assert len(rows) == sum(len(c["fields"]) for c in doc["changes"]) == 8_950
    assert Counter(r["field"] for r in rows)["Contact_Status__c"] == 6_200


def test_every_review_item_names_its_record(big):
    review = big["doc"]["review"]
    assert review and all(item["record_id"] and item["sobject"] for item in review)
    rows = list(csv.DictReader(io.StringIO((big["folder"] / "review.csv").read_text(encoding="utf-8"))))
    assert all(r["record_id"] for r in rows) and len(rows) == len(review)


def test_show_fits_two_screens_and_shows_the_counts(big):
    doc = big["doc"]
    shown = big["run"]("show", doc["plan_id"][:12])
    lines = shown.stdout.splitlines()
    assert shown.exit_code == 0 and len(lines) <= 80, len(lines)
    text = shown.stdout
    assert "Plan: 0 to create, 8700 to update, 0 to delete; 625 skipped, 650 for review" in text
    assert re.search(r"5,200 +~ update +Contact +Contact_Status__c +\"Active\" → \"Inactive\" *\n +e\.g\. p000000@scale", text)
    assert re.search(r"1,000 +~ update +Contact +Email +\(a different value each\) *\n +e\.g\. \"p000028@scale", text)
    assert re.search(r"250 +HUMAN_REVIEW_REASON_UPDATE_ON_INACTIVE", text)
    assert "250 by LastModifiedDate" in text
    assert f"reconcile show {doc['plan_id'][:12]} --full" in text


def test_show_full_lists_every_change(big):
    doc = big["doc"]
    full = big["run"]("show", doc["plan_id"][:12], "--full").stdout
    for change in doc["changes"][::97]:
        assert f"{change['sobject']} {change['record_id']} <{change['email']}>" in full
    assert full.count(" will be updated in-place") == len(doc["changes"]) == 8_700


def test_the_page_is_small_with_the_counts_near_its_top(big):
    page = (big["folder"] / "plan.html").read_bytes()
    assert len(page) <= 5_000_000, len(page)
    text = page.decode("utf-8")
    first = text[:text.index('id="review"')]   # the summary and the transitions table come first
    assert "Plan: 0 to create, 8700 to update, 0 to delete; 625 skipped, 650 for review" in first
    assert '<a href="#list-t1">5,200</a>' in first
    assert "<del>Active</del> → <ins>Inactive</ins>" in first
    records = text[text.index('id="records"'):]
    assert records.count("<tr><td>") == 8_950 + 650 + 625 + 250 + 250 + 25   # every record fits under the cap


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_the_page_prints_in_at_most_ten_pages(big):
    pdf = big["tmp"] / "plan.pdf"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={big['tmp'] / 'profile'}", f"--print-to-pdf={pdf}",
                    "--no-pdf-header-footer", (big["folder"] / "plan.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))
    assert 1 <= pages <= 10, pages


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_the_filter_finds_a_record_among_ten_thousand(big):
    """The inline script (``#filter=…`` pre-fills it) hides every row but the matches and opens their group."""
    record = next(i for i in big["doc"]["review"] if i["reason"] == "EMAIL_TAKEN")
    url = (big["folder"] / "plan.html").as_uri() + "#filter=" + record["record_id"]
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={big['tmp'] / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "1 matching row on this page" in dom
    assert '<details class="group kind-review" id="list-review-EMAIL_TAKEN" open="">' in dom
    assert dom[dom.index('id="records"'):].count("<tr><td>") == 1   # every other record row is hidden


def test_a_page_of_100000_changes_stays_a_few_megabytes():
    """No plan makes the page grow past ``PAGE_ROWS`` record rows: 100,000 changes (e-mail
    changes with their own values, status flips) and 5,000 review items."""
    from reconcile.render.html import PAGE_ROWS, render_html

    changes = []
    for i in range(100_000):
        rid = f"003{i:015d}"
        field, before, after = (("Email", f"p{i}@old.example.com", f"p{i}@new.example.com") if i % 4 == 0 else
                                ("Contact_Status__c", "Active", "Inactive"))
        changes.append({"change_id": f"Contact:{rid}", "action": "update", "sobject": "Contact", "record_id": rid,
                        "ref": None, "email": f"p{i}@old.example.com", "reasons": [f"outcome → {field} = {after}"],
                        "rows": [{"file": "outcomes.csv", "line": i + 2, "outcome": "inactive"}],
                        "fields": {field: {"before": before, "after": after}}})
    review = [{"email": f"r{i}@example.com", "reason": "EMAIL_TAKEN", "detail": "held by another record",
               "sobject": "Contact", "record_id": f"003R{i:014d}", "rows": []} for i in range(5_000)]
    doc = {"plan_id": "f" * 64, "kind": "apply", "changes": changes, "review": review,
           "org": {"instance_url": "https://example.my.salesforce.com", "is_sandbox": False}}
    page = render_html(doc)
    assert len(page.encode("utf-8")) < 5_000_000
    records = page[page.index('id="records"'):]
    assert records.count("<tr><td>") == PAGE_ROWS
    assert f"This page shows {PAGE_ROWS:,} of the 105,000 rows" in page
    assert '<a href="#list-t1">75,000</a>' in page and '<a href="#list-t2">25,000</a>' in page
    assert "PRODUCTION org" in page[:page.index('id="summary"')]
