"""The plan as a standalone HTML page for the Salesforce owner who approves it.

One jinja2 template, ``plan.html.j2``, shipped inside the package as
``reconcile.templates`` (so it renders from an installed wheel as well as from
the source tree). The environment autoescapes everything and is strict about
undefined names; the page has inline CSS only, no scripts and no external
assets, and a Content-Security-Policy that forbids both, so it works offline,
prints cleanly, and a value such as ``<script>`` from the input is only text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from reconcile.chars import escape_invisible
from reconcile.config import Config
from reconcile.render.text import (
    ACTION_STYLE,
    DECIDED_BY_LABELS,
    NO_CHANGES,
    REASON_LABELS,
    counts,
    format_value,
    reference,
    row_label,
    short_id,
    summary_line,
)
from reconcile.steps import SOBJECT_WRITE_ORDER, Step, build_steps

TEMPLATE = "plan.html.j2"

#: Order of the per-sobject change tables: the order apply writes them (``reconcile.steps``).
SOBJECT_ORDER = SOBJECT_WRITE_ORDER


@dataclass(frozen=True)
class FieldRow:
    """One field of one change, as the page shows it."""
    name: str = field(metadata={"help": "Salesforce field API name"})
    before: str = field(metadata={"help": "value before, as text (non-strings as JSON)"})
    after: str = field(metadata={"help": "value after, as text"})
    before_empty: bool = field(metadata={"help": "before is null (a create)"})
    after_empty: bool = field(metadata={"help": "after is null (a delete)"})
    after_ref: str | None = field(metadata={"help": "the ref of a record this plan creates, when after is @{ref}"})


@dataclass(frozen=True)
class ChangeView:
    """One change: a tbody in its sobject's table."""
    change_id: str = field(metadata={"help": "stable id of the change"})
    action: str = field(metadata={"help": "create | update | delete"})
    marker: str = field(metadata={"help": "+ ~ -"})
    sobject: str = field(metadata={"help": "Contact | Lead | Account"})
    record_id: str | None = field(metadata={"help": "Salesforce id, None for a create"})
    ref: str | None = field(metadata={"help": "for a create: how later changes point at it"})
    email: str = field(metadata={"help": "the person's e-mail"})
    fields: tuple[FieldRow, ...] = field(metadata={"help": "the fields written"})
    reasons: tuple[str, ...] = field(metadata={"help": "the rules that fired, in words"})
    rows: tuple[str, ...] = field(metadata={"help": "input rows behind it, file:line (outcome)"})


@dataclass(frozen=True)
class SObjectTable:
    sobject: str = field(metadata={"help": "the sobject of every change in the table"})
    changes: tuple[ChangeView, ...] = field(metadata={"help": "in apply order"})


@dataclass(frozen=True)
class PlanPage:
    """Everything ``plan.html.j2`` reads. ``plan`` is the raw document for the plain lists."""
    plan: Mapping[str, Any] = field(metadata={"help": "the plan document (SPEC §4)"})
    title: str = field(metadata={"help": "page title"})
    short_id: str = field(metadata={"help": "first 12 hex digits of plan_id"})
    summary_line: str = field(metadata={"help": "Plan: N to create, … for review"})
    counts: Mapping[str, int] = field(metadata={"help": "create, update, delete, skipped, review, unchanged"})
    tables: tuple[SObjectTable, ...] = field(metadata={"help": "changes, one table per sobject"})
    no_changes: str = field(metadata={"help": "what an empty plan says"})
    reason_labels: Mapping[str, str] = field(metadata={"help": "reason code -> words"})
    decided_by_labels: Mapping[str, str] = field(metadata={"help": "decided_by -> words"})
    handoff: Mapping[str, tuple[Mapping[str, Any], ...]] = field(
        metadata={"help": "Marketing hand-off rows by file (inactive_people, email_update_requests)"})
    steps: tuple[Step, ...] = field(
        default=(), metadata={"help": "the apply steps (reconcile.steps): what apply sends, in order"})


class _Doc(dict):
    """The plan document with missing optional keys reading as empty, not as errors.

    StrictUndefined catches typos in the template; a plan without ``handoff``
    or ``notes`` (older or hand-written) still renders.
    """

    _DEFAULTS: Mapping[str, Any] = {
        "plan_id": "", "kind": "apply", "parent_plan_id": None, "created_at": "", "tool_version": "",
        "format_version": "", "org": {}, "inputs": [], "options": {}, "duplicates": [], "skipped": [],
        "review": [], "unchanged": [], "handoff": [], "notes": [], "estimated_api_calls": None,
    }

    def __init__(self, doc: Mapping[str, Any]):
        super().__init__(self._DEFAULTS)
        super().update({k: v for k, v in doc.items() if v is not None or k == "parent_plan_id"})


def _display(value: Any) -> str:
    """A value for the page: strings as they are (empty as ""), anything else as JSON."""
    if isinstance(value, str):
        return value if value != "" else '""'
    return format_value(value)


def _change_view(change: Mapping[str, Any]) -> ChangeView:
    action = change.get("action") or "update"
    fields = []
    for name in sorted(change.get("fields") or {}):
        values = (change.get("fields") or {})[name] or {}
        before, after = values.get("before"), values.get("after")
        fields.append(FieldRow(
            name=name,
            before=_display(before), after=_display(after),
            before_empty=before is None or action == "create",
            after_empty=after is None or action == "delete",
            after_ref=reference(after),
        ))
    return ChangeView(
        change_id=str(change.get("change_id") or ""),
        action=action,
        marker=ACTION_STYLE.get(action, ("?",))[0],
        sobject=str(change.get("sobject") or ""),
        record_id=change.get("record_id"),
        ref=change.get("ref"),
        email=str(change.get("email") or ""),
        fields=tuple(fields),
        reasons=tuple(str(r) for r in change.get("reasons") or ()),
        rows=tuple(row_label(r) for r in change.get("rows") or ()),
    )


def page_context(doc: Mapping[str, Any], config: Config | None = None) -> PlanPage:
    """The template's context for one plan document; ``config``: the sizes the apply
    steps are listed with (the defaults when not given)."""
    views = [_change_view(c) for c in doc.get("changes") or []]
    present = [s for s in SOBJECT_ORDER if any(v.sobject == s for v in views)]
    present += sorted({v.sobject for v in views} - set(present))
    tables = tuple(SObjectTable(s, tuple(v for v in views if v.sobject == s)) for s in present)
    handoff: dict[str, list[Mapping[str, Any]]] = {"inactive_people": [], "email_update_requests": []}
    for row in doc.get("handoff") or []:
        handoff.setdefault(str(row.get("file") or ""), []).append(row)
    sid = short_id(doc.get("plan_id"))
    kind = doc.get("kind") or "apply"
    return PlanPage(
        plan=_Doc(doc),
        title=f"reconcile {'rollback ' if kind == 'rollback' else ''}plan {sid}",
        short_id=sid,
        summary_line=summary_line(doc),
        counts=counts(doc),
        tables=tables,
        no_changes=NO_CHANGES,
        reason_labels=REASON_LABELS,
        decided_by_labels=DECIDED_BY_LABELS,
        handoff={k: tuple(v) for k, v in handoff.items()},
        steps=tuple(build_steps(doc, config or Config())),
    )


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("reconcile.templates", "."),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_printable,
    )


def _printable(value: Any) -> Any:
    """Every ``{{ … }}`` on the page: invisible characters in a value shown escaped.
    Markup is the template's own (``tojson`` already escapes everything non-ASCII)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return escape_invisible(value)
    return value


def render_html(doc: Mapping[str, Any], config: Config | None = None) -> str:
    """The plan as one self-contained HTML page (``plan.html`` in the archive)."""
    context = page_context(doc, config)
    template = _environment().get_template(TEMPLATE)
    return template.render(page=context)
