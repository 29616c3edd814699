"""The plan document: versioned data, canonical JSON, identified by its SHA-256.

``make_document`` wraps the planner's ``PlanBody`` into SPEC §4's outline;
``canonical_bytes`` is the one way a plan is written; ``plan_id`` is the
SHA-256 of the canonical form without ``plan_id``; ``check_schema`` checks a
document against ``schema/plan.schema.json`` (when a plan is written, and in
``verify``); ``load_plan`` parses a plan file once and refuses one of an unknown
version or whose bytes do not match its id.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema

# the one way a plan is written (re-exported: plan.canonical_bytes / canonical_chunks)
from reconcile.canonical import canonical_bytes, canonical_chunks
from reconcile.config import Config
from reconcile.errors import IntegrityError
from reconcile.fsutil import read_bytes
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
    digest = hashlib.sha256()
    for chunk in canonical_chunks({k: v for k, v in doc.items() if k != "plan_id"}):
        digest.update(chunk)
    return digest.hexdigest()


def estimate_api_calls(changes: Iterable[Change | Mapping[str, Any]], config: Config, *,
                       instance_url: str | None = None, collections_only: bool = False) -> int:
    """The requests ``apply`` will send: the sum of the plan's apply steps (see
    ``reconcile.steps``; ``instance_url``: the org's, for the exact count of the queries
    that look for a create's key; ``collections_only``: a rollback, whose writes all go
    through Collections). Bulk polling can take more requests on a busy org."""
    return sum(step.requests for step in build_steps(changes, config, instance_url=instance_url,
                                                     collections_only=collections_only))


# -- checking and reading a plan back ---------------------------------------------

@lru_cache(maxsize=1)
def plan_schema() -> dict[str, Any]:
    text = resources.files("reconcile").joinpath("schema/plan.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _schema_validator() -> Callable[[Any], Any]:
    # fastjsonschema compiles the schema to Python once: ~10x faster than walking it
    # (0.17 s for a 10,000-outcome plan, where jsonschema's validator takes 1.7 s).
    return fastjsonschema.compile(plan_schema(), use_default=False, use_formats=False)


def schema_problem(doc: Any) -> str | None:
    """The first way ``doc`` breaks ``schema/plan.schema.json``, as ``/json/pointer: what``;
    None when it is valid."""
    try:
        _schema_validator()(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        pointer = "/" + "/".join(str(p) for p in exc.path[1:])
        return f"{pointer}: {exc.message.removeprefix(str(exc.name)).strip()}"
    return None


def check_schema(doc: Any, where: Path | str) -> None:
    """Refuse a document that does not match the schema (run when a plan is written, and by
    ``verify``; loading trusts the bytes its ``plan_id`` names)."""
    problem = schema_problem(doc)
    if problem is not None:
        raise IntegrityError(f"{where}: not a valid plan: {problem}")


def load_plan(path: Path) -> dict[str, Any]:
    """Read a plan file and check it: known version, content matches ``plan_id``.

    The bytes are read and parsed once. The schema is checked when a plan is
    written (``check_schema``), not here: a file whose bytes still hash to its id
    is the one that was written and checked, and one changed since fails the id.
    """
    path = Path(path)
    try:
        raw = read_bytes(path)
        # hashed before parsing, so the bytes can go before the document is built (at
        # 100,000 changes bytes, text and document at once were 780 MB)
        claimed, digest = _claimed_id(raw)
        text = raw.decode("utf-8")
        del raw
        doc = _parse(text)
        del text
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
    plan_id = doc.get("plan_id")
    if not isinstance(plan_id, str):
        raise IntegrityError(f"{path}: plan content does not match its plan_id {plan_id}; "
                             "the file was changed after it was written")
    # a file in another form than the canonical one (hand-indented, say) is serialized again
    actual = digest if claimed == plan_id else compute_plan_id(doc)
    if actual != plan_id:
        raise IntegrityError(f"{path}: plan content does not match its plan_id {plan_id}; "
                             "the file was changed after it was written")
    return doc


def _parse(text: str) -> Any:
    """The document of a plan file's text. Millions of small acyclic objects at
    100,000 changes: the cyclic collector would rescan them over and over (more than
    half the parse), so it waits until they are built (as inputs.read_outcomes does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    finally:
        if was_enabled:
            gc.enable()


_PLAN_ID_MEMBER = re.compile(rb',"plan_id":("[0-9a-f]*")')


def _claimed_id(raw: bytes) -> tuple[str | None, str | None]:
    """The plan id a canonical plan file's bytes name and the SHA-256 of the bytes without
    that member (the canonical form the id is the hash of), without parsing them; (None,
    None) for a file not in that form (its id is then computed from the parsed document).

    Inside a JSON string a quote is escaped, so ``,"plan_id":"`` appears only as a key;
    exactly one such key is required."""
    if not (raw.startswith(b"{") and raw.endswith(b"}\n")):
        return None, None
    found = list(_PLAN_ID_MEMBER.finditer(raw))
    if len(found) != 1:
        return None, None
    at, end = found[0].span()
    view = memoryview(raw)   # no copy of a 100 MB file
    digest = hashlib.sha256(view[:at])
    digest.update(view[end:])
    return json.loads(found[0].group(1)), digest.hexdigest()


__all__ = ["FORMAT_VERSION", "make_document", "transitions", "tallies", "canonical_bytes", "canonical_chunks",
           "compute_plan_id", "load_plan",
           "estimate_api_calls", "check_schema", "schema_problem", "plan_schema", "plain"]
