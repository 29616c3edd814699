"""Golden scenarios: one folder per rule under ``tests/scenarios/``.

Each folder holds ``outcomes.csv`` (or ``.jsonl``), ``org.json`` (the org's
records and accounts), optionally ``options.json`` (``{"allow_create": true}``),
and the expected ``plan.json`` and ``summary.txt``. Expected files are
compared byte for byte and rewritten only with ``pytest --update-goldens``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_planner import simulate_apply

from reconcile.config import Config
from reconcile.inputs import read_outcomes
from reconcile.model import AccountInfo, OrgInfo, OrgRecord, Snapshot, SObject
from reconcile.plan import canonical_bytes, load_plan, make_document
from reconcile.planner import build_plan
from reconcile.render.html import render_html
from reconcile.render.text import summary_line

SCENARIOS = Path(__file__).parent / "scenarios"
NAMES = sorted(p.name for p in SCENARIOS.iterdir() if p.is_dir())
ORG = OrgInfo(instance_url="https://example.my.salesforce.com", org_id="00D000000000001EAA", api_version="61.0",
              name="Example Org", is_sandbox=True, organization_type="Enterprise Edition")
CREATED_AT = "2026-11-20T12:00:00Z"
TOOL_VERSION = "test"


def load_scenario(folder: Path):
    outcome_files = sorted(p for p in folder.iterdir() if p.name.startswith("outcomes"))
    outcome_set = read_outcomes(outcome_files)
    org = json.loads((folder / "org.json").read_text(encoding="utf-8"))
    snapshot = Snapshot(
        org=ORG,
        records=tuple(OrgRecord(sobject=SObject(r["sobject"]), id=r["fields"]["Id"], fields=r["fields"])
                      for r in org.get("records", [])),
        accounts=tuple(AccountInfo(**a) for a in org.get("accounts", [])))
    options_path = folder / "options.json"
    options = json.loads(options_path.read_text(encoding="utf-8")) if options_path.exists() else {}
    options = {"allow_create": False, **options}
    preflight_path = folder / "preflight.json"   # what preflight read of the org (optional)
    if preflight_path.exists():
        options["_preflight"] = json.loads(preflight_path.read_text(encoding="utf-8"))
    return outcome_set, snapshot, options


def plan_document(outcome_set, snapshot, options, config=Config()):
    options = dict(options)
    preflight = options.pop("_preflight", None)
    body = build_plan(outcome_set, snapshot, config, allow_create=options["allow_create"])
    return make_document(body, org=snapshot.org, inputs=outcome_set.inputs, options=options,
                         created_at=CREATED_AT, tool_version=TOOL_VERSION, config=config,
                         preflight=preflight)


def check_golden(path: Path, actual: bytes, update: bool) -> None:
    if update:
        if not path.exists() or path.read_bytes() != actual:
            path.write_bytes(actual)
        return
    assert path.exists(), f"{path.name} missing: run pytest --update-goldens and review the diff"
    expected = path.read_bytes()
    if expected != actual:  # compare as text first for a readable diff
        assert actual.decode("utf-8") == expected.decode("utf-8"), f"{path} differs"


def _without_stylesheet(html: str) -> str:
    """The page as a golden: its content; the shared stylesheet lives in the template, the
    filter script in reconcile.render.html (its hash stays in the page's policy)."""
    start, end = html.index("<style>"), html.index("</style>") + len("</style>")
    html = html[:start] + "<style>/* templates/plan.html.j2 */</style>" + html[end:]
    start, end = html.index("<script>"), html.index("</script>") + len("</script>")
    return html[:start] + "<script>/* reconcile.render.html.FILTER_SCRIPT */</script>" + html[end:]


@pytest.mark.parametrize("name", NAMES)
def test_scenario(name: str, request: pytest.FixtureRequest) -> None:
    folder = SCENARIOS / name
    update = bool(request.config.getoption("--update-goldens", default=False))
    doc = plan_document(*load_scenario(folder))
    # Kept indented so that a regenerated golden reviews as a readable diff; the
    # canonical bytes are what the id is computed from (load_plan checks it).
    pretty = json.dumps(doc, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
    check_golden(folder / "plan.json", pretty.encode("utf-8"), update)
    check_golden(folder / "summary.txt", (summary_line(doc) + "\n").encode("utf-8"), update)
    check_golden(folder / "plan.html", _without_stylesheet(render_html(doc)).encode("utf-8"), update)
    assert load_plan(folder / "plan.json")["plan_id"] == doc["plan_id"]


@pytest.mark.parametrize("name", NAMES)
def test_scenario_is_stable_and_idempotent(name: str) -> None:
    outcome_set, snapshot, options = load_scenario(SCENARIOS / name)
    first = canonical_bytes(plan_document(outcome_set, snapshot, options))
    assert canonical_bytes(plan_document(outcome_set, snapshot, options)) == first
    # The same snapshot, records in reverse order: the plan does not depend on read order.
    reordered = replace(snapshot, records=snapshot.records[::-1], accounts=snapshot.accounts[::-1])
    assert canonical_bytes(plan_document(outcome_set, reordered, options)) == first

    doc = json.loads(first)
    after = simulate_apply(snapshot, doc["changes"])
    again = plan_document(outcome_set, after, options)
    assert again["changes"] == [], f"planning after apply still changes: {again['changes']}"


def test_every_reason_code_has_a_scenario() -> None:
    seen: set[str] = set()
    for name in NAMES:
        doc = json.loads((SCENARIOS / name / "plan.json").read_text(encoding="utf-8"))
        seen |= {s["reason"] for s in doc["skipped"]} | {r["reason"] for r in doc["review"]}
        seen |= {d["decided_by"] for d in doc["duplicates"]}
    assert seen >= {"MULTIPUB_CONTACT", "CREATE_DISABLED", "NOT_FOUND", "HUMAN_REVIEW_REASON_UPDATE_ON_INACTIVE",
                    "HUMAN_REVIEW_REASON_ACTIVE_NEW_CONTACT", "EMAIL_TAKEN", "CONFLICTING_OUTCOMES",
                    "LastModifiedDate", "SystemModstamp", "Id"}
