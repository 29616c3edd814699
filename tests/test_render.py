"""The renderers: summary line, `show` text, the HTML page and the CSV files."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from importlib import resources
from pathlib import Path

import pytest
from markupsafe import escape
from rich.console import Console

from reconcile.render import handoff_csvs, render_html, render_show, review_csv, summary_line
from reconcile.render.csvs import EMAIL_UPDATE_COLUMNS, INACTIVE_COLUMNS, REVIEW_COLUMNS, safe_cell
from reconcile.render.text import NO_CHANGES, format_value

FIXTURE = Path(__file__).parent / "fixtures" / "sample_plan.json"


@pytest.fixture
def plan() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def empty_plan() -> dict:
    return {
        "format_version": "1", "plan_id": "0" * 64, "kind": "apply", "parent_plan_id": None,
        "created_at": "2024-11-25T08:30:12Z", "tool_version": "0.1.0",
        "org": {"instance_url": "https://example.my.salesforce.com", "org_id": "00D000000000001", "api_version": "61.0"},
        "inputs": [{"name": "outcomes.csv", "sha256": "a" * 64, "rows": 0}], "options": {"allow_create": False},
        "prior_state": {}, "changes": [], "duplicates": [], "skipped": [], "review": [], "unchanged": [],
        "summary": {"create": 0, "update": 0, "delete": 0, "skipped": 0, "review": 0, "unchanged": 0},
        "estimated_api_calls": 0, "handoff": [], "notes": [],
    }


def show(doc: dict, *, colour: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=colour,
                      color_system="standard" if colour else None)
    render_show(doc, console)
    return buffer.getvalue()


# -- summary line ------------------------------------------------------------------------

def test_summary_line_uses_terraform_wording_with_all_five_numbers():
    doc = {"summary": {"create": 1, "update": 12, "delete": 0, "skipped": 3, "review": 2, "unchanged": 7}}
    assert summary_line(doc) == "Plan: 1 to create, 12 to update, 0 to delete; 3 skipped, 2 for review"


def test_summary_line_of_the_sample_plan(plan):
    assert summary_line(plan) == "Plan: 2 to create, 8 to update, 1 to delete; 4 skipped, 4 for review"


def test_summary_line_counts_the_lists_when_summary_is_absent(plan):
    del plan["summary"]
    assert summary_line(plan) == "Plan: 2 to create, 8 to update, 1 to delete; 4 skipped, 4 for review"


def test_summary_line_of_an_empty_plan():
    assert summary_line(empty_plan()) == "Plan: 0 to create, 0 to update, 0 to delete; 0 skipped, 0 for review"


# -- show ----------------------------------------------------------------------------------

def test_show_prints_every_change_before_and_after(plan):
    out = show(plan)
    for change in plan["changes"]:
        for name, values in change["fields"].items():
            if change["action"] == "update":
                assert f"{format_value(values['before'])} → {format_value(values['after'])}" in out, name
            elif change["action"] == "create":
                assert format_value(values["after"]) in out
            else:
                assert f"{format_value(values['before'])} → null" in out
    assert "+ new Account (Account:acme corp)" in out
    assert "~ Contact 0035g00000KzA1bAAF <maria.keller@northwind-pub.com> will be updated in-place" in out
    assert "- Contact 0035g00000KzL2pAAF <n.adeyemi@acme.com> will be deleted" in out
    assert "known after apply: the Account:acme corp this plan creates" in out


def test_show_groups_changes_by_action_in_apply_order(plan):
    out = show(plan)
    assert out.index("Create (2)") < out.index("Update (8)") < out.index("Delete (1)")
    assert out.index("0035g00000KzA1bAAF") < out.index("00Q5g00000Hc1AaEAJ")


def test_show_prints_the_header(plan):
    out = show(plan)
    assert out.startswith(f"Plan {plan['plan_id'][:12]}")
    assert plan["plan_id"] in out
    assert "https://northwind-pub.my.salesforce.com" in out and "00D5g000004XyZaEAK" in out
    assert "outcomes-2024-11-25.csv  21 rows" in out
    assert "parent   —" in out


def test_show_prints_duplicate_groups_skips_and_reviews(plan):
    out = show(plan)
    for group in plan["duplicates"]:
        assert f"{group['email']}  decided by {group['decided_by']}" in out
        assert group["chosen"]["id"] in out
        for other in group["others"]:
            assert other["id"] in out
    for item in plan["skipped"]:
        assert item["reason"] in out and item["detail"] in out
    for item in plan["review"]:
        assert f"{item['email']}  {item['reason']}" in out
        assert item["detail"] in out
    assert "late-replies-2024-11-25.jsonl:4 (reactivate)" in out
    assert "Unchanged: 3 records already hold the desired values." in out
    assert out.rstrip().endswith("Plan: 2 to create, 8 to update, 1 to delete; 4 skipped, 4 for review\n"
                                 "Estimated API calls for apply: 6")


def test_show_prints_rich_markup_in_the_data_literally(plan):
    plan["review"][0]["email"] = "[bold]boss[/bold]@example.com"
    plan["skipped"][0]["detail"] = "[link=https://evil.example]click[/link] :smile:"
    out = show(plan)
    assert '"Director [bold]R&D[/bold] & Partnerships"' in out
    assert "[bold]boss[/bold]@example.com" in out
    assert "[link=https://evil.example]click[/link] :smile:" in out


def test_show_without_a_terminal_has_no_colour_codes_and_keeps_markers(plan):
    out = show(plan)
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert '      + Name  "Acme Corp"' in lines  # fields are indented under their record
    assert any(line.startswith("      ~ Email  ") for line in lines)
    assert any(line.startswith("      - Email  ") for line in lines)


def test_show_with_a_terminal_colours_the_values(plan):
    out = show(plan, colour=True)
    assert "\x1b[" in out
    assert re.sub(r"\x1b\[[0-9;]*m", "", out) == show(plan)


def test_show_of_an_empty_plan_says_no_changes():
    out = show(empty_plan())
    assert NO_CHANGES in out
    assert "Plan: 0 to create, 0 to update, 0 to delete; 0 skipped, 0 for review" in out
    assert "Duplicate groups" not in out and "For human review" not in out


def test_show_of_a_rollback_plan_names_its_parent(plan):
    plan["kind"], plan["parent_plan_id"] = "rollback", "f" * 64
    out = show(plan)
    assert "(rollback)" in out.splitlines()[0]
    assert "f" * 64 in out


# -- HTML ---------------------------------------------------------------------------------

def test_html_escapes_values_from_salesforce_and_the_input(plan):
    page = render_html(plan)
    assert page.lower().count("<script") == 1   # the page's own filter script, nothing from the plan
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "dana.o&#39;neil@acme.com" in page
    assert "[bold]R&amp;D[/bold] &amp; Partnerships" in page


def test_html_has_no_external_urls_and_only_its_own_hashed_script(plan):
    from reconcile.render.html import FILTER_SCRIPT, _csp_hash

    page = render_html(plan)
    targets = re.findall(r"""\b(?:src|href|action|srcset)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.I)
    assert targets, "the page has in-page links"
    assert all(t.startswith("#") for t in targets), targets
    assert not re.search(r"<(?:link|img|iframe|object|embed|base)\b", page, flags=re.I)
    assert "@import" not in page and "url(" not in page
    # a Content-Security-Policy as a second line of defence: only the filter script, by its hash, may run
    assert f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src '{_csp_hash(FILTER_SCRIPT)}'" in page
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert scripts == [FILTER_SCRIPT]
    assert "@media print" in page


def test_html_shows_summary_first_then_the_sections(plan):
    page = render_html(plan)
    order = ['id="summary"', 'id="changes"', 'id="review"', 'id="skipped"', 'id="duplicates"',
             'id="handoff"', 'id="records"', 'id="details"']
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert str(escape("Plan: 2 to create, 8 to update, 1 to delete; 4 skipped, 4 for review")) in page
    for count, label in [(2, "to create"), (8, "to update"), (1, "to delete"), (4, "skipped"), (4, "for review")]:
        assert f'<span class="n">{count}</span><span class="label">{label}</span>' in page


def test_html_counts_each_transition_with_examples(plan):
    page = render_html(plan)
    table = page[page.index('<table class="transitions">'):page.index("</table>", page.index('<table class="transitions">'))]
    assert table.count('<tr class="transition') == 12
    assert ('<td class="change-values"><del>Active</del> → <ins>Inactive</ins></td>') in table
    assert '<a href="#list-t1">1</a>' in table and 'id="list-t1"' in page
    assert "maria.keller@northwind-pub.com" in table and "0035g00000KzA1bAAF" in table


def test_html_lists_every_change_with_its_values_reasons_and_rows(plan):
    page = render_html(plan)
    records = page[page.index('id="records"'):]
    for change in plan["changes"]:
        assert str(escape(change["email"])) in records
        for values in change["fields"].values():
            for key in ("before", "after"):
                value = values[key]
                if value is not None and not (change["action"] == "create" and key == "before"):
                    assert str(escape(value)) in page, value
        for row in change["rows"]:
            assert f"{row['file']}:{row['line']}" in records
    # a reason every change of a group shares is said once; the others beside their record
    assert "chosen from 2 Contacts with this e-mail (latest LastModifiedDate)" in records
    assert "the Account:acme corp this plan creates" in records


def test_html_lists_duplicates_skips_reviews_unchanged_inputs_and_hash(plan):
    page = render_html(plan)
    for group in plan["duplicates"]:
        assert group["chosen"]["id"] in page and f"decided by {group['decided_by']}" in page
        assert all(other["id"] in page for other in group["others"])
    for item in plan["skipped"] + plan["review"]:
        assert item["reason"] in page and str(escape(item["detail"])) in page
    assert re.search(r'<span class="g-n">3</span><span class="g-title">Unchanged', page)
    for item in plan["inputs"]:
        assert item["name"] in page and item["sha256"] in page
    assert plan["plan_id"] in page
    assert "00D5g000004XyZaEAK" in page


def test_html_explains_cupola_and_every_reason_code_where_it_is_used(plan):
    from reconcile.render.digest import CUPOLA_HELP, REASON_HELP

    page = render_html(plan)
    review = page[page.index('id="review"'):page.index('id="skipped"')]
    assert str(escape(CUPOLA_HELP)) in review
    for item in plan["review"]:
        assert str(escape(REASON_HELP[item["reason"]])) in review
    skipped = page[page.index('id="skipped"'):page.index('id="duplicates"')]
    for item in plan["skipped"]:
        assert str(escape(REASON_HELP[item["reason"]])) in skipped


def test_html_review_rows_name_their_record_or_say_there_is_none(plan):
    page = render_html(plan)
    assert "none found" not in page
    group = page[page.index('id="list-review-EMAIL_TAKEN"'):]
    assert "Contact 0035g00000KzK1nAAF" in group[:group.index("</details>")]


def test_html_small_plan_opens_every_group_large_plan_closes_them(plan):
    assert '<details class="group kind-change" id="list-t1" open>' in render_html(plan)
    big = copy.deepcopy(plan)
    big["changes"] = [{**plan["changes"][2], "change_id": f"Contact:{i:018d}", "record_id": f"{i:018d}"}
                      for i in range(100)]
    big.pop("transitions", None)
    assert '<details class="group kind-change" id="list-t1">' in render_html(big)


def test_html_page_rows_are_bounded_and_shared_between_groups(plan, monkeypatch):
    from reconcile.render import html

    monkeypatch.setattr(html, "PAGE_ROWS", 20)
    page = render_html(plan)
    assert page[page.index('id="records"'):].count("<tr><td>") == 20   # record rows
    assert "This page shows 20 of the 28 rows" in page
    assert re.search(r"Showing \d of \d: every one is in <code>(review.csv|plan.json|changes.csv)</code>", page)


def test_budget_shows_small_groups_whole_and_shares_the_rest():
    from reconcile.render.html import budget

    assert budget([5, 3], 10) == [5, 3]
    assert budget([1, 100, 100], 21) == [1, 10, 10]
    assert budget([2, 5000, 40], 100) == [2, 58, 40]
    assert sum(budget([7] * 50, 100)) <= 100


def test_html_of_a_rollback_plan_says_what_it_undoes(plan):
    plan["kind"], plan["parent_plan_id"] = "rollback", "e" * 64
    page = render_html(plan)
    assert "Rollback plan" in page and "e" * 64 in page
    assert "<title>reconcile rollback plan" in page


def test_html_of_an_empty_plan_says_no_changes():
    page = render_html(empty_plan())
    assert NO_CHANGES in page
    assert "Nothing needs human review." in page
    assert 'id="duplicates"' not in page


def test_html_renders_a_plan_without_optional_keys():
    doc = empty_plan()
    for key in ("handoff", "notes", "options", "tool_version", "estimated_api_calls"):
        del doc[key]
    doc["org"] = {}
    assert NO_CHANGES in render_html(doc)


def test_html_template_ships_inside_the_package():
    template = resources.files("reconcile.templates").joinpath("plan.html.j2")
    assert template.is_file()


def test_html_is_deterministic(plan):
    assert render_html(plan) == render_html(copy.deepcopy(plan))


# -- CSV -----------------------------------------------------------------------------------

def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_review_csv_has_one_row_per_review_item(plan):
    rows = read_csv(review_csv(plan))
    assert rows[0] == list(REVIEW_COLUMNS)
    assert len(rows) == 1 + len(plan["review"])
    assert rows[1] == ["s.okafor@woodgrove.com", "HUMAN_REVIEW_REASON_UPDATE_ON_INACTIVE",
                       'title_change to "Senior Analyst" but the CUPOLA row is inactive', "Contact",
                       "0035g00000KzE5hAAF", "outcomes-2024-11-25.csv:7 (title_change)"]
    assert rows[4][3:] == ["", "", "outcomes-2024-11-25.csv:15 (inactive); late-replies-2024-11-25.jsonl:4 (reactivate)"]


def test_handoff_csvs_split_by_file(plan):
    files = handoff_csvs(plan)
    assert set(files) == {"output_document_inactive_people.csv", "output_document_email_update_requests.csv"}
    inactive = read_csv(files["output_document_inactive_people.csv"])
    updates = read_csv(files["output_document_email_update_requests.csv"])
    assert inactive == [list(INACTIVE_COLUMNS),
                        ["olivia.brown@northwind-pub.com", "MP-104233", "0035g00000KzG7jAAF",
                         "2024-11-22T09:30:00Z", "<CAH004xINA@mail.gmail.com>"]]
    assert updates == [list(EMAIL_UPDATE_COLUMNS),
                       ["m.garcia@fourthcoffee.com", "miguel@fourthcoffee.coffee", "MP-200871",
                        "0035g00000KzH8kAAF", "2024-11-22T11:15:00Z", "<CAH013xEMA@mail.gmail.com>"]]


def test_csvs_of_an_empty_plan_have_headers_only():
    assert read_csv(review_csv(empty_plan())) == [list(REVIEW_COLUMNS)]
    files = handoff_csvs(empty_plan())
    assert read_csv(files["output_document_inactive_people.csv"]) == [list(INACTIVE_COLUMNS)]
    assert read_csv(files["output_document_email_update_requests.csv"]) == [list(EMAIL_UPDATE_COLUMNS)]


@pytest.mark.parametrize("value", ['=HYPERLINK("https://evil.example","x")', "+1-555-0100", "-2+3",
                                   "@SUM(A1:A9)", "\t=1+1", "\r=1", "  =1+1"])
def test_csv_cells_that_excel_would_run_are_quoted(value):
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["maria@example.com", "Open - Not Contacted", "0035g00000KzA1bAAF", "", "a=b"])
def test_csv_ordinary_cells_are_unchanged(value):
    assert safe_cell(value) == value


def test_csv_injection_is_neutralised_in_every_file(plan):
    plan["review"][0]["detail"] = "=cmd|'/C calc'!A0"
    plan["review"][0]["email"] = "@evil.example"
    plan["handoff"][0]["multipub_id"] = "+MP-1"
    plan["handoff"][1]["new_email"] = "-x@example.com"
    plan["handoff"][1]["contact_ids"] = ["=1+1", "0035g00000KzH8kAAF"]
    review = read_csv(review_csv(plan))
    assert review[1][0] == "'@evil.example" and review[1][2] == "'=cmd|'/C calc'!A0"
    files = handoff_csvs(plan)
    assert read_csv(files["output_document_inactive_people.csv"])[1][1] == "'+MP-1"
    update = read_csv(files["output_document_email_update_requests.csv"])[1]
    assert update[1] == "'-x@example.com" and update[3] == "'=1+1;0035g00000KzH8kAAF"


# -- real documents --------------------------------------------------------------------

def test_the_sample_plan_is_a_valid_plan_document():
    from reconcile.plan import load_plan

    assert load_plan(FIXTURE)["plan_id"] == json.loads(FIXTURE.read_text(encoding="utf-8"))["plan_id"]


SCENARIO_PLANS = sorted((Path(__file__).parent / "scenarios").glob("*/plan.json"))


@pytest.mark.parametrize("path", SCENARIO_PLANS, ids=[p.parent.name for p in SCENARIO_PLANS])
def test_every_scenario_plan_renders(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    page = render_html(doc)
    assert page.lower().count("<script") == 1 and summary_line(doc) in show(doc)
    assert read_csv(review_csv(doc))[0] == list(REVIEW_COLUMNS)
    assert len(handoff_csvs(doc)) == 2


# -- control, zero-width and bidi characters from the org are shown, never obeyed -------------

ORG_VALUE = "Dir\x1b[2J\x00ector\u202eRLO\u200b\x07"
SHOWN = "Dir\\x1b[2J\\x00ector\\u202eRLO\\u200b\\x07"


def _with_org_controls(plan: dict) -> dict:
    update = next(c for c in plan["changes"] if c["action"] == "update")
    name = sorted(update["fields"])[0]
    update["fields"][name]["before"] = ORG_VALUE
    plan["review"][0]["detail"] = ORG_VALUE
    plan["handoff"][0]["source_id"] = ORG_VALUE
    return plan


def _raw_controls(text: str) -> set[str]:
    return {c for c in text if c in "\x1b\x00\x07\u202e\u200b"}


def test_show_escapes_control_and_bidi_characters_from_the_org(plan):
    out = show(_with_org_controls(plan))
    assert SHOWN in out
    assert not _raw_controls(out)


def test_html_escapes_control_and_bidi_characters_from_the_org(plan):
    page = render_html(_with_org_controls(plan))
    assert SHOWN in page
    assert not _raw_controls(page)


def test_csvs_escape_control_and_bidi_characters_but_keep_tabs_and_line_breaks(plan):
    _with_org_controls(plan)
    files = [review_csv(plan), *handoff_csvs(plan).values()]
    assert any(SHOWN in text for text in files)
    assert not any(_raw_controls(text) for text in files)
    assert safe_cell("a\tb\nc") == "a\tb\nc"
