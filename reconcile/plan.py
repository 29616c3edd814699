"""The plan document: versioned data, canonical JSON, identified by its SHA-256.

``make_document`` wraps the planner's ``PlanBody`` into SPEC §4's outline;
``canonical_bytes`` is the one way a plan is written; ``plan_id`` is the
SHA-256 of the canonical form without ``plan_id``; ``load_plan`` refuses a
document that is of an unknown version, does not match
``schema/plan.schema.json``, or whose content does not match its id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from reconcile.canonical import canonical_bytes  # the one way a plan is written (re-exported)
from reconcile.config import Config
from reconcile.errors import IntegrityError
from reconcile.model import Action, Change, OrgInfo, PlanBody, PlanKind
from reconcile.steps import build_steps

FORMAT_VERSION = 1
KNOWN_VERSIONS = (1,)

# The configuration a plan was made with: the field names and status values it writes.
CONFIG_KEYS = ("contact_status_field", "contact_active", "contact_inactive", "lead_status_field",
               "lead_inactive", "lead_reactivate", "lead_inactive_statuses", "email_field",
               "title_field", "account_name_field")


_SCALARS = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """Dataclasses, enums, tuples and mappings → JSON's dicts, lists and strings."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def summarize(changes: Iterable[Mapping[str, Any]], skipped: int, review: int, unchanged: int) -> dict[str, int]:
    counts = {a.value: 0 for a in Action}
    for change in changes:
        counts[str(change["action"])] += 1
    return {**counts, "skipped": skipped, "review": review, "unchanged": unchanged}


#: Examples (change ids) a transition carries, for the views' "for instance" column.
TRANSITION_EXAMPLES = 3
#: A field with more values than this that occur once each counts them as one "various" entry.
TRANSITION_SINGLES_KEPT = 5
_ACTION_ORDER = {a.value: i for i, a in enumerate(Action)}


def _value_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def transitions(changes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the plan does, counted: one entry per (action, sobject, field, before, after).

    Updates count field changes: a change that writes two fields is in two entries.
    Creates and deletes count records, one entry per sobject (``field`` null). Values
    that occur once for a field (a new e-mail address, a one-off title), when there are
    more than ``TRANSITION_SINGLES_KEPT`` of them, are counted together in one entry per
    (action, sobject, field) with ``various`` true and null values, so the list stays
    short however many people move. Sorted by count, largest
    first; ``examples`` are the first change ids, in plan order."""
    groups: dict[tuple[str, str, str | None, str, str], dict[str, Any]] = {}

    def add(action: str, sobject: str, field: str | None, before: Any, after: Any, change_id: str) -> None:
        key = (action, sobject, field, _value_key(before), _value_key(after))
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = {"action": action, "sobject": sobject, "field": field, "before": before,
                                   "after": after, "various": False, "count": 0, "examples": []}
        entry["count"] += 1
        if len(entry["examples"]) < TRANSITION_EXAMPLES:
            entry["examples"].append(change_id)

    for change in changes:
        action, sobject, change_id = str(change["action"]), str(change["sobject"]), str(change["change_id"])
        if action != Action.UPDATE:
            add(action, sobject, None, None, None, change_id)
            continue
        for name, values in (change.get("fields") or {}).items():
            add(action, sobject, name, values.get("before"), values.get("after"), change_id)

    singles: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    entries: list[dict[str, Any]] = []
    for entry in groups.values():
        if entry["count"] == 1 and entry["field"] is not None:
            singles.setdefault((entry["action"], entry["sobject"], entry["field"]), []).append(entry)
        else:
            entries.append(entry)
    for lone in singles.values():
        if len(lone) <= TRANSITION_SINGLES_KEPT:   # a few one-off values are shown as themselves
            entries.extend(lone)
            continue
        examples = [e["examples"][0] for e in lone[:TRANSITION_EXAMPLES]]
        entries.append({**lone[0], "before": None, "after": None, "various": True, "count": len(lone),
                        "examples": examples})
    entries.sort(key=lambda e: (-e["count"], _ACTION_ORDER.get(e["action"], 9), e["sobject"], e["field"] or "",
                                e["various"], _value_key(e["before"]), _value_key(e["after"])))
    return entries


def tallies(changes: Iterable[Mapping[str, Any]], items: Iterable[Mapping[str, Any]]) -> tuple[dict, dict]:
    """``by_action``: records and field changes per action; ``by_reason``: skipped and
    review items per reason code (only codes that occur)."""
    by_action = {a.value: {"records": 0, "fields": 0} for a in Action}
    for change in changes:
        entry = by_action[str(change["action"])]
        entry["records"] += 1
        entry["fields"] += len(change.get("fields") or {})
    by_reason: dict[str, int] = {}
    for item in items:
        by_reason[str(item["reason"])] = by_reason.get(str(item["reason"]), 0) + 1
    return by_action, by_reason


def make_document(body: PlanBody, *, org: OrgInfo, inputs: Iterable[Mapping[str, Any]],
                  options: Mapping[str, Any], created_at: str, tool_version: str,
                  kind: str | PlanKind = PlanKind.APPLY, parent_plan_id: str | None = None,
                  config: Config, preflight: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plan document (SPEC §4), ``plan_id`` included. ``preflight``: what the
    preflight read of the org (its active duplicate rules, the Account fields a create
    writes and requires), recorded when given."""
    changes = plain(body.changes)
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": PlanKind(kind).value,
        "parent_plan_id": parent_plan_id,
        "created_at": created_at,
        "tool_version": tool_version,
        "org": plain(org),
        "inputs": [{"name": i["name"], "sha256": i["sha256"], "rows": i["rows"]} for i in inputs],
        "options": plain(dict(options)),
        "config": {key: plain(getattr(config, key)) for key in CONFIG_KEYS},
        # records as the API returned them: already JSON's types (a shallow copy is enough)
        "prior_state": {rid: {**entry, "sobject": str(entry["sobject"]), "fields": dict(entry["fields"])}
                        for rid, entry in body.prior_state.items()},
        "changes": changes,
        "duplicates": plain(body.duplicates),
        "skipped": plain(body.skipped),
        "review": plain(body.review),
        "unchanged": plain(body.unchanged),
        "handoff": plain(body.handoff),
        "notes": list(body.notes),
        "summary": summarize(changes, len(body.skipped), len(body.review), len(body.unchanged)),
        "transitions": transitions(changes),
        "estimated_api_calls": estimate_api_calls(body.changes, config, instance_url=org.instance_url,
                                                  collections_only=PlanKind(kind) is PlanKind.ROLLBACK),
    }
    if preflight is not None:
        doc["preflight"] = plain(dict(preflight))
    doc["by_action"], doc["by_reason"] = tallies(changes, [*doc["skipped"], *doc["review"]])
    doc["plan_id"] = compute_plan_id(doc)
    return doc


def compute_plan_id(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes({k: v for k, v in doc.items() if k != "plan_id"})).hexdigest()




def estimate_api_calls(changes: Iterable[Change | Mapping[str, Any]], config: Config, *,
                       instance_url: str | None = None, collections_only: bool = False) -> int:
    """The requests ``apply`` will send: the sum of the plan's apply steps (see
    ``reconcile.steps``; ``instance_url``: the org's, for the exact count of the queries
    that look for a create's key; ``collections_only``: a rollback, whose writes all go
    through Collections). Bulk polling can take more requests on a busy org."""
    return sum(step.requests for step in build_steps(changes, config, instance_url=instance_url,
                                                     collections_only=collections_only))


# -- reading a plan back ------------------------------------------------------------

@lru_cache(maxsize=1)
def plan_schema() -> dict[str, Any]:
    text = resources.files("reconcile").joinpath("schema/plan.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_plan(path: Path) -> dict[str, Any]:
    """Read a plan file and check it: known version, schema-valid, content matches ``plan_id``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise IntegrityError(f"{path}: plan file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path}: not a plan (not UTF-8 JSON: {exc})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{path}: not a plan (expected a JSON object)")
    version = doc.get("format_version")
    if version not in KNOWN_VERSIONS:
        raise IntegrityError(f"{path}: plan format_version {version!r} is not one this reconcile reads "
                             f"({', '.join(map(str, KNOWN_VERSIONS))}); use a matching reconcile version")
    problems = validate(doc, plan_schema())
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(f"{path}: not a valid plan: {problems[0]}{more}")
    if compute_plan_id(doc) != doc["plan_id"]:
        raise IntegrityError(f"{path}: plan content does not match its plan_id {doc['plan_id']}; "
                             "the file was changed after it was written")
    return doc


# -- the subset of JSON Schema plan.schema.json uses ----------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
    "number": (int, float), "boolean": (bool,), "null": (type(None),),
}


def validate(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
             where: str = "") -> list[str]:
    """Check ``value`` against ``schema`` (type, enum, const, pattern, minimum, properties,
    required, additionalProperties, items, $ref to #/$defs). Returns problems as
    ``/json/pointer: what``."""
    root = schema if root is None else root
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return validate(value, root["$defs"][name], root, where)
    problems: list[str] = []
    here = where or "/"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in types)
        if not ok:
            return [f"{here}: expected {' or '.join(types)}, got {json.dumps(value)[:60]}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{here}: {json.dumps(value)[:60]} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{here}: must be {json.dumps(schema['const'])}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        problems.append(f"{here}: {value[:60]!r} does not match {schema['pattern']}")
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        problems.append(f"{here}: {value} is below {schema['minimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                problems.append(f"{here}: missing key {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                problems.extend(validate(item, props[key], root, f"{where}/{key}"))
            elif extra is False:
                problems.append(f"{here}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                problems.extend(validate(item, extra, root, f"{where}/{key}"))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems.extend(validate(item, schema["items"], root, f"{where}/{i}"))
    return problems


__all__ = ["FORMAT_VERSION", "make_document", "transitions", "tallies", "canonical_bytes", "compute_plan_id", "load_plan",
           "estimate_api_calls", "validate", "plan_schema", "plain"]
