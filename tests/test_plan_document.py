"""The plan document (SPEC §4): its outline, canonical bytes and id, the committed
schema agreeing with what the code writes, integrity checks and the API estimate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_scenarios import SCENARIOS, load_scenario, plan_document

from reconcile.config import Config
from reconcile.errors import IntegrityError
from reconcile.model import Action, Change, FieldChange, SObject
from reconcile.plan import (
    FORMAT_VERSION,
    canonical_bytes,
    check_schema,
    compute_plan_id,
    estimate_api_calls,
    load_plan,
    plan_schema,
    schema_problem,
)
from reconcile.render.text import summary_line

OUTLINE = ["format_version", "plan_id", "kind", "parent_plan_id", "created_at", "org", "inputs", "options",
           "prior_state", "changes", "duplicates", "skipped", "review", "unchanged", "summary",
           "estimated_api_calls"]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return plan_document(*load_scenario(SCENARIOS / "kitchen_sink"))


def test_document_has_specs_outline(doc):
    assert set(OUTLINE) <= set(doc)
    assert doc["format_version"] == FORMAT_VERSION and doc["kind"] == "apply" and doc["parent_plan_id"] is None
    assert set(doc["org"]) == {"instance_url", "org_id", "api_version", "name", "is_sandbox", "organization_type"}
    assert set(doc["summary"]) == {"create", "update", "delete", "skipped", "review", "unchanged"}
    assert {"tool_version", "handoff", "notes", "config"} <= set(doc)
    change = doc["changes"][0]
    assert {"change_id", "action", "sobject", "record_id", "ref", "fields", "reasons", "rows"} <= set(change)


def test_plan_id_is_the_hash_of_the_document_without_it(doc):
    assert doc["plan_id"] == compute_plan_id(doc)
    assert compute_plan_id({**doc, "created_at": "2026-11-21T00:00:00Z"}) != doc["plan_id"]
    data = canonical_bytes(doc)
    assert data.endswith(b"}\n") and json.loads(data) == doc
    assert canonical_bytes(json.loads(data)) == data


def test_summary_line(doc):
    assert summary_line(doc) == "Plan: 4 to create, 6 to update, 0 to delete; 3 skipped, 3 for review"


def _schema_paths(schema: dict, root: dict, prefix: str = "") -> set[str]:
    if "$ref" in schema:
        return _schema_paths(root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root, prefix)
    paths: set[str] = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(f"{prefix}.{key}")
        paths |= _schema_paths(sub, root, f"{prefix}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        paths |= _schema_paths(schema["additionalProperties"], root, f"{prefix}.*")
    if "items" in schema:
        paths |= _schema_paths(schema["items"], root, f"{prefix}[]")
    return paths


def _doc_paths(value: Any, schema: dict, root: dict, prefix: str = "") -> set[str]:
    """The key paths of ``value``, descending only where the schema names the keys."""
    if "$ref" in schema:
        return _doc_paths(value, root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root, prefix)
    paths: set[str] = set()
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            if key in props or not props and not isinstance(extra, dict):
                if props or extra is False:
                    paths.add(f"{prefix}.{key}")
                paths |= _doc_paths(item, props.get(key, {}), root, f"{prefix}.{key}")
            elif isinstance(extra, dict):
                paths |= _doc_paths(item, extra, root, f"{prefix}.*")
            else:
                paths.add(f"{prefix}.{key}")
    elif isinstance(value, list):
        for item in value:
            paths |= _doc_paths(item, schema.get("items", {}), root, f"{prefix}[]")
    return paths


def test_schema_and_code_agree():
    """Every key the code writes is in the committed schema, and every key the schema
    names appears in some scenario's plan."""
    schema = plan_schema()
    emitted: set[str] = set()
    for folder in sorted(p for p in SCENARIOS.iterdir() if p.is_dir()):
        doc = plan_document(*load_scenario(folder))
        assert schema_problem(doc) is None, folder.name
        emitted |= _doc_paths(doc, schema, schema)
    declared = _schema_paths(schema, schema)
    assert emitted - declared == set(), "keys written but not in plan.schema.json"
    assert declared - emitted == set(), "keys in plan.schema.json never written"
    assert set(schema["required"]) >= set(OUTLINE)


def test_schema_file_is_canonical_json():
    path = Path(__file__).parent.parent / "reconcile" / "schema" / "plan.schema.json"
    assert json.loads(path.read_text(encoding="utf-8")) == plan_schema()


def test_load_plan_round_trip(doc, tmp_path):
    path = tmp_path / "plan.json"
    path.write_bytes(canonical_bytes(doc))
    assert load_plan(path) == doc


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["changes"][0]["fields"]["Name"].update(after="Evil Corp"), "does not match its plan_id"),
    (lambda d: d.update(format_version=99), "format_version 99 is not one this reconcile reads"),
    (lambda d: d["summary"].pop("delete"), "does not match its plan_id"),
    (lambda d: d.update(plan_id=None), "does not match its plan_id"),
])
def test_load_plan_refuses_a_changed_plan(doc, tmp_path, edit, message):
    changed = json.loads(canonical_bytes(doc))
    edit(changed)
    path = tmp_path / "plan.json"
    path.write_bytes(canonical_bytes(changed))
    with pytest.raises(IntegrityError, match=message) as info:
        load_plan(path)
    assert str(path) in str(info.value)


def test_load_plan_checks_the_id_of_a_plan_in_another_form(doc, tmp_path):
    """A hand-indented plan is read (its id recomputed from the content); one edited is refused."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    assert load_plan(path) == doc
    changed = json.loads(canonical_bytes(doc))
    changed["notes"] = ["edited"]
    path.write_text(json.dumps(changed, indent=2), encoding="utf-8")
    with pytest.raises(IntegrityError, match="does not match its plan_id"):
        load_plan(path)


def _resealed(doc, edit):
    """A document edited and given the id of its new content (so only the schema can refuse it)."""
    changed = json.loads(canonical_bytes(doc))
    edit(changed)
    changed["plan_id"] = compute_plan_id(changed)
    return changed


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["summary"].pop("delete"), "not a valid plan: /summary: must contain \\['delete'\\]"),
    (lambda d: d["changes"][0].update(action="upsert"), "not a valid plan: /changes/0/action: must be one of"),
    (lambda d: d.update(surprise=1), "not a valid plan: /: must not contain {'surprise'}"),
    (lambda d: d["inputs"].insert(0, {"name": "x", "sha256": "no", "rows": 1}), "/inputs/0/sha256: must match pattern"),
])
def test_check_schema_names_the_first_problem(doc, tmp_path, edit, message):
    """The schema is checked by a compiled validator (fastjsonschema): once where the plan is
    written (save_plan) and by verify, not on every load."""
    changed = _resealed(doc, edit)
    with pytest.raises(IntegrityError, match=message) as info:
        check_schema(changed, tmp_path / "plan.json")
    assert str(tmp_path / "plan.json") in str(info.value)
    assert schema_problem(doc) is None


def test_an_invalid_plan_is_never_written_and_verify_refuses_one(doc, tmp_path):
    from reconcile import workflow as wf
    ctx = wf.Context(config=Config(archive_dir=tmp_path / "plans"), env={})
    bad = _resealed(doc, lambda d: d["changes"][0].update(action="upsert"))
    with pytest.raises(IntegrityError, match="/changes/0/action"):
        wf.save_plan(ctx, bad)
    assert not (tmp_path / "plans" / bad["plan_id"] / "plan.json").exists()
    # written behind reconcile's back: loading trusts the id, verify checks everything
    folder = tmp_path / "plans" / bad["plan_id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_bytes(canonical_bytes(bad))
    assert load_plan(folder / "plan.json")["plan_id"] == bad["plan_id"]
    with pytest.raises(IntegrityError, match="not a valid plan: /changes/0/action"):
        wf.verify(ctx, bad["plan_id"])


def test_load_plan_refuses_files_that_are_not_plans(tmp_path):
    for name, data in [("a.json", b"\xff\xfe"), ("b.json", b"[1]"), ("c.json", b"{nope")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(IntegrityError, match=name):
            load_plan(tmp_path / name)
    with pytest.raises(IntegrityError, match="not found"):
        load_plan(tmp_path / "missing.json")


def _changes(action: Action, sobject: SObject, n: int) -> list[Change]:
    return [Change(change_id=f"{sobject}:{i}", action=action, sobject=sobject,
                   record_id=None if action is Action.CREATE else f"id{i}",
                   ref=f"{sobject}:{i}" if action is Action.CREATE else None,
                   fields={"X": FieldChange(None, "y")}, reasons=(), rows=()) for i in range(n)]


def test_estimate_api_calls_counts_rereads_and_collection_writes():
    config = Config()
    # every apply first checks the org's identity: 1 request
    assert estimate_api_calls([], config) == 1
    # 450 Contact updates: 1 re-read (≤2,000 ids) + 3 collection requests (200 a request)
    assert estimate_api_calls(_changes(Action.UPDATE, SObject.CONTACT, 450), config) == 1 + 1 + 3
    # 2,001 Lead updates: 2 re-reads + 11 writes; plus 1 Account create (1 query + 1 write)
    # and 201 Contact creates (1 query + 2 writes); the creates are written first, and the
    # Leads are read once, just before they are written
    changes = (_changes(Action.UPDATE, SObject.LEAD, 2001) + _changes(Action.CREATE, SObject.ACCOUNT, 1)
               + _changes(Action.CREATE, SObject.CONTACT, 201))
    assert estimate_api_calls(changes, config) == 1 + (2 + 11) + (1 + 1) + (1 + 2)
    assert estimate_api_calls(_changes(Action.UPDATE, SObject.CONTACT, 450), Config(collection_size=50)) == 1 + 1 + 9


def test_schema_enums_match_the_model():
    from reconcile.model import DecidedBy, PlanKind, ReviewReason, SkipReason
    schema = plan_schema()
    items = {name: schema["properties"][name]["items"]["properties"] for name in ("skipped", "review")}
    defs = schema["$defs"]
    assert items["skipped"]["reason"]["enum"] == [r.value for r in SkipReason]
    assert items["review"]["reason"]["enum"] == [r.value for r in ReviewReason]
    assert defs["sobject"]["enum"] == [s.value for s in SObject]
    assert defs["change"]["properties"]["action"]["enum"] == [a.value for a in Action]
    assert defs["duplicate_group"]["properties"]["decided_by"]["enum"] == [d.value for d in DecidedBy]
    assert schema["properties"]["kind"]["enum"] == [k.value for k in PlanKind]


def test_a_rollback_document_validates(doc, tmp_path):
    """Rollback plans delete what a plan created: ``after`` is null and the parent is named."""
    from test_scenarios import CREATED_AT, ORG

    from reconcile.model import PlanBody, Skipped, SkipReason
    from reconcile.plan import make_document
    body = PlanBody(prior_state={"003X": {"sobject": "Contact", "fields": {"Id": "003X"}}},
                    changes=(Change(change_id="Contact:003X", action=Action.DELETE, sobject=SObject.CONTACT,
                                    record_id="003X", ref=None, fields={"Email": FieldChange("a@x.com", None)},
                                    reasons=("undo",), rows=()),),
                    duplicates=(), skipped=(Skipped("b@x.com", SObject.LEAD, "00QX", SkipReason.RECORD_GONE),),
                    review=(), unchanged=())
    rollback = make_document(body, org=ORG, inputs=[], options={}, created_at=CREATED_AT, tool_version="test",
                             kind="rollback", parent_plan_id=doc["plan_id"], config=Config())
    path = tmp_path / "plan.json"
    path.write_bytes(canonical_bytes(rollback))
    assert load_plan(path)["summary"]["delete"] == 1


def test_estimate_api_calls_counts_bulk_jobs_for_large_groups_but_never_for_leads():
    config = Config(bulk_threshold=100, bulk_job_size=1000)
    # 2,500 Contact updates: 1 org check + 2 re-reads + 3 Bulk jobs of 5 calls (create, upload,
    # close, two polls: an update that saves every record reads no result file)
    assert estimate_api_calls(_changes(Action.UPDATE, SObject.CONTACT, 2500), config) == 1 + 2 + 3 * 5
    # 2,500 Lead updates stay on collections: 1 + 2 + 13
    assert estimate_api_calls(_changes(Action.UPDATE, SObject.LEAD, 2500), config) == 1 + 2 + 13
    # so do Account writes (Sforce-Auto-Assign: FALSE needs Collections): 1 + 2 + 13
    assert estimate_api_calls(_changes(Action.UPDATE, SObject.ACCOUNT, 2500), config) == 1 + 2 + 13
    # and every write of a rollback (the duplicate rule header needs Collections): 1 + 2 + 13
    assert estimate_api_calls(_changes(Action.UPDATE, SObject.CONTACT, 2500), config,
                              collections_only=True) == 1 + 2 + 13


def _creates(n: int, email_len: int) -> list[Change]:
    return [Change(change_id=f"Contact:{i}", action=Action.CREATE, sobject=SObject.CONTACT, record_id=None,
                   ref=f"Contact:{i}", fields={"Email": FieldChange(None, "x")}, reasons=(), rows=(),
                   email=f"{i:0{email_len - 12}d}@example.com") for i in range(n)]


def test_estimate_counts_the_queries_that_check_creates_have_not_appeared():
    config = Config()
    # 300 addresses of 30 characters: (30 + 3) × 300 = 9,900 characters, one query; 2 writes
    assert estimate_api_calls(_creates(300, 30), config) == 1 + 1 + 2
    # 800 of them: 26,400 characters, two queries; 4 writes
    assert estimate_api_calls(_creates(800, 30), config) == 1 + 2 + 4
    # 2,000: five queries, no more than a COUNT() and a Bulk query (1 + 4) would cost; 10 writes
    assert estimate_api_calls(_creates(2000, 30), config) == 1 + 5 + 10
    # 3,000: seven queries; a COUNT() and one Bulk query are cheaper: 1 + 4; one Bulk job writes
    # 3,000 creates: a COUNT() and a Bulk query, one Bulk insert job (5 calls + its successful results)
    assert estimate_api_calls(_creates(3000, 30), config) == 1 + (1 + 4) + 6


def test_the_estimated_read_cost_has_no_cliff():
    """One more address costs at most one more request, never a jump (issue 13: 10,000
    addresses cost 45 read calls, 10,001 cost 7)."""
    config = Config(collection_size=200, bulk_threshold=10**9)   # writes: n / 200 Collections requests
    reads = []
    for n in range(100, 6001, 100):
        writes = -(-n // 200)
        reads.append(estimate_api_calls(_creates(n, 30), config) - 1 - writes)
    assert all(0 <= b - a <= 1 for a, b in zip(reads, reads[1:], strict=False)), reads
    assert max(reads) == 5
