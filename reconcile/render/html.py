"""The plan as a standalone HTML page for the Salesforce owner who approves it.

Summary first: the org kind, the counts, the transitions ("5,200 × Contact
Contact_Status__c Active → Inactive") with a few example records each, what
needs a decision and what goes to Marketing, each reason code explained where it
is used. Below it, every record, grouped like the summary in collapsed
``<details>`` (closed when printed, so a plan of any size prints in a few
pages), with a small inline script that filters the groups by address, id,
field or reason. The page holds at most ``PAGE_ROWS`` record rows, shared out
over the groups; the rest of a group is in ``changes.csv`` (and ``review.csv``,
the hand-off files), so the page stays a few megabytes however large the plan.

One jinja2 template, ``plan.html.j2``, shipped inside the package as
``reconcile.templates``. The environment autoescapes everything and is strict
about undefined names; the page has inline CSS, one inline script allowed by
its SHA-256 in the Content-Security-Policy (nothing else runs), and no external
assets, so it works offline, and a value such as ``<script>`` from the input is
only text.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from reconcile.chars import escape_invisible
from reconcile.config import Config
from reconcile.render.csvs import HANDOFF_FILES
from reconcile.render.digest import (
    CUPOLA_HELP,
    Digest,
    Group,
    Transition,
    digest,
    field_values,
)
from reconcile.render.text import ACTION_STYLE, NO_CHANGES, counts, format_value, reference, rows_label, short_id, summary_line
from reconcile.steps import Step, build_steps

TEMPLATE = "plan.html.j2"

#: Transitions in the summary table (largest first); the rest are counted in one line.
SUMMARY_TRANSITIONS = 25
#: Examples a summary row shows.
SUMMARY_EXAMPLES = 3
#: Record rows on the whole page, shared out over the groups (a small group is shown whole).
PAGE_ROWS = 12_000
#: A plan with at most this many record rows opens every group: it reads (and prints) whole.
OPEN_UP_TO = 60

#: What each duplicate rule means, beside its count.
DUPLICATE_HELP: dict[str, str] = {
    "LastModifiedDate": "The record a user edited last is written; the others are left as they are.",
    "SystemModstamp": "LastModifiedDate tied, so the record the system touched last is written.",
    "Id": "Both dates tied, so the record with the greatest Id is written.",
}

#: The page's only script: filter the record groups. Allowed by its hash, nothing else runs.
FILTER_SCRIPT = """
(function () {
  "use strict";
  var box = document.getElementById("filter");
  var input = document.getElementById("filter-q");
  var status = document.getElementById("filter-status");
  if (!box || !input || !status) { return; }
  box.hidden = false;
  var groups = null;
  function load() {
    groups = Array.prototype.map.call(document.querySelectorAll("details.group"), function (el) {
      var rows = Array.prototype.slice.call(el.querySelectorAll("tbody tr"));
      return { el: el, open: el.open, hits: el.querySelector(".hits"),
               head: el.querySelector("summary").textContent.toLowerCase(),
               rows: rows, text: rows.map(function (r) { return r.textContent.toLowerCase(); }) };
    });
  }
  function run() {
    if (groups === null) { load(); }
    var q = input.value.trim().toLowerCase();
    var total = 0;
    groups.forEach(function (g) {
      var whole = q === "" || g.head.indexOf(q) >= 0;
      var n = 0;
      g.rows.forEach(function (row, i) {
        var hit = whole || g.text[i].indexOf(q) >= 0;
        row.hidden = !hit;
        if (hit) { n += 1; }
      });
      g.el.hidden = q !== "" && n === 0;
      g.el.open = q === "" ? g.open : n > 0;
      if (g.hits) { g.hits.textContent = q === "" ? "" : n + " shown"; }
      total += n;
    });
    status.textContent = q === "" ? "" : total + " matching row" + (total === 1 ? "" : "s") + " on this page";
  }
  var timer = null;
  input.addEventListener("input", function () {
    if (timer !== null) { clearTimeout(timer); }
    timer = setTimeout(run, 150);
  });
  function openTarget() {
    var target = /^#(list-[A-Za-z0-9_-]+)$/.exec(location.hash);
    var el = target ? document.getElementById(target[1]) : null;
    if (el && el.tagName === "DETAILS") { el.open = true; }
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
  var asked = /^#filter=(.*)$/.exec(location.hash);
  if (asked) {
    input.value = decodeURIComponent(asked[1]);
    run();
  }
}());
"""


def _csp_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


@dataclass(frozen=True)
class Example:
    """One example record of a summary row."""
    email: str
    record: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class SummaryRow:
    """A transition in the summary table."""
    key: str = field(metadata={"help": "the anchor of its group in the record list"})
    action: str = field(metadata={"help": "create | update | delete"})
    marker: str = field(metadata={"help": "+ ~ -"})
    sobject: str = field(metadata={"help": "Contact | Lead | Account"})
    field_name: str | None = field(metadata={"help": "the field (updates)"})
    before: str | None = field(metadata={"help": "the value before, as text; None when various"})
    after: str | None = field(metadata={"help": "the value after, as text; None when various"})
    various: bool = field(metadata={"help": "each record has its own values"})
    count: int = field(metadata={"help": "field changes (updates) or records (creates, deletes)"})
    examples: tuple[Example, ...] = field(metadata={"help": "a few records"})


@dataclass(frozen=True)
class ReasonRow:
    """A reason code (review, skipped), a duplicate rule or a hand-off file in the summary."""
    key: str
    code: str
    label: str
    help: str
    count: int
    examples: tuple[Example, ...]


@dataclass(frozen=True)
class RecordRow:
    """One row of the per-record list."""
    email: str
    record: str
    before: str | None
    after: str | None
    note: str
    source: str


@dataclass(frozen=True)
class ListGroup:
    """A collapsed group of the per-record list."""
    key: str = field(metadata={"help": "anchor id"})
    kind: str = field(metadata={"help": "change | review | skipped | duplicate | handoff | unchanged"})
    title: str = field(metadata={"help": "what the group is, in words"})
    code: str = field(metadata={"help": "reason code, field or file (searchable)"})
    count: int = field(metadata={"help": "rows in the group (the plan's number)"})
    rows: tuple[RecordRow, ...] = field(metadata={"help": "the rows on the page (at most count)"})
    values: str = field(metadata={"help": "value columns: 'pair' (before, after: values differ per row), "
                                           "'fields' (a created or deleted record's fields) or ''"})
    common: tuple[str, ...] = field(metadata={"help": "reasons every change of the group shares"})
    elsewhere: str = field(metadata={"help": "the file holding every row"})


@dataclass(frozen=True)
class PlanPage:
    """Everything ``plan.html.j2`` reads. ``plan`` is the raw document for the plain facts."""
    plan: Mapping[str, Any]
    title: str
    short_id: str
    summary_line: str
    counts: Mapping[str, int]
    digest: Digest
    transitions: tuple[SummaryRow, ...]
    more_transitions: tuple[int, int]          # (transitions not in the table, their count)
    review: tuple[ReasonRow, ...]
    skipped: tuple[ReasonRow, ...]
    duplicates: tuple[ReasonRow, ...]
    handoff: tuple[ReasonRow, ...]
    groups: tuple[ListGroup, ...]
    rows_shown: int
    rows_total: int
    page_rows: int
    open_groups: bool
    no_changes: str
    cupola_help: str
    script: Markup
    csp: str
    steps: tuple[Step, ...] = ()          # the apply steps (reconcile.steps): what apply sends, in order


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


def _record(item: Mapping[str, Any]) -> str:
    """``Contact 003…``, ``new Contact`` (a create's ref), or ``—`` (no record: see the detail)."""
    sobject = item.get("sobject") or ""
    if item.get("record_id"):
        return f"{sobject} {item['record_id']}".strip()
    if item.get("ref"):
        return f"new {item['ref']}"
    return f"no {sobject} yet" if sobject else "—"


def _record_fields(change: Mapping[str, Any]) -> str:
    """A created record's fields (their ``after``), or a deleted record's (their ``before``)."""
    key = "before" if change.get("action") == "delete" else "after"
    parts = []
    for name, values in sorted((change.get("fields") or {}).items()):
        value = (values or {}).get(key)
        ref = reference(value)
        parts.append(f"{name} = {_display(value)}" + (f" (the {ref} this plan creates)" if ref else ""))
    return "; ".join(parts)


def _change_example(t: Transition, change: Mapping[str, Any]) -> Example:
    """The summary's example: the address and the id (the object is in its own column);
    for values that differ per record, the values themselves."""
    before, after = field_values(change, t.field)
    rid = str(change.get("record_id") or change.get("ref") or "")
    if t.various:
        return Example("", rid, _display(before), _display(after))
    return Example(str(change.get("email") or ""), rid, None, None)


def _item_example(item: Mapping[str, Any]) -> Example:
    return Example(str(item.get("email") or ""), _record(item), None, None)


def _summary_row(t: Transition) -> SummaryRow:
    return SummaryRow(
        key=t.key, action=t.action, marker=ACTION_STYLE.get(t.action, ("?",))[0], sobject=t.sobject,
        field_name=t.field, before=None if t.various or t.field is None else _display(t.before),
        after=None if t.various or t.field is None else _display(t.after), various=t.various, count=t.count,
        examples=tuple(_change_example(t, c) for c in t.examples[:SUMMARY_EXAMPLES]))


def _reason_rows(prefix: str, groups: Sequence[Group], example: Any) -> tuple[ReasonRow, ...]:
    return tuple(ReasonRow(f"{prefix}-{g.code}", g.code, g.label, g.help or DUPLICATE_HELP.get(g.code, ""), g.count,
                           tuple(example(i) for i in g.items[:SUMMARY_EXAMPLES])) for g in groups)


def _duplicate_example(group: Mapping[str, Any]) -> Example:
    chosen = group.get("chosen") or {}
    others = ", ".join(str(o.get("id") or "") for o in group.get("others") or [])
    return Example(str(group.get("email") or ""), f"{group.get('sobject') or ''} {chosen.get('id') or ''} written"
                   + (f"; {others} untouched" if others else ""), None, None)


def _handoff_example(row: Mapping[str, Any]) -> Example:
    return Example(str(row.get("email") or ""), f"Multipub {row.get('multipub_id') or ''}".strip(),
                   None, f"new e-mail {row['new_email']}" if row.get("new_email") else None)


def budget(sizes: Sequence[int], total: int) -> list[int]:
    """Rows each group shows: all of every group when they fit in ``total``; else small
    groups whole and the same share for every large one (water-filling, smallest first;
    every group shows a row while there are rows left)."""
    if sum(sizes) <= total:
        return list(sizes)
    shown = [0] * len(sizes)
    left = total
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for pos, i in enumerate(order):
        share = max(left // (len(order) - pos), 1 if left > 0 else 0)
        shown[i] = min(sizes[i], share)
        left -= shown[i]
    return shown


def _common_reasons(changes: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    if not changes:
        return ()
    first = list(changes[0].get("reasons") or ())
    shared = set(first)
    for change in changes[1:]:
        shared &= set(change.get("reasons") or ())
        if not shared:
            break
    return tuple(r for r in first if r in shared)


def _change_row(t: Transition, values: str, common: tuple[str, ...], own: str, c: Mapping[str, Any]) -> RecordRow:
    before, after = field_values(c, t.field)
    if t.action != "update":   # the fields the record is created with, or had when deleted
        before, after = None, _record_fields(c)
    elif values:
        before, after = _display(before), _display(after)
    else:
        before = after = None
    return RecordRow(str(c.get("email") or ""), str(c.get("record_id") or f"new {c.get('ref')}"),
                     before, after, "; ".join(r for r in c.get("reasons") or ()
                                              if r not in common and not (own and own in r)),
                     rows_label(c.get("rows") or []))


def _item_row(i: Mapping[str, Any]) -> RecordRow:
    return RecordRow(str(i.get("email") or ""), _record(i), None, None, str(i.get("detail") or ""),
                     rows_label(i.get("rows") or []))


def _duplicate_row(group: Mapping[str, Any]) -> RecordRow:
    chosen = group.get("chosen") or {}
    others = "; ".join(f"{o.get('id')} (LastModifiedDate {o.get('LastModifiedDate')}, SystemModstamp "
                       f"{o.get('SystemModstamp')})" for o in group.get("others") or [])
    return RecordRow(str(group.get("email") or ""), f"{group.get('sobject') or ''} {chosen.get('id') or ''}",
                     None, None, f"chosen: LastModifiedDate {chosen.get('LastModifiedDate')}, SystemModstamp "
                     f"{chosen.get('SystemModstamp')}; left untouched: {others}", "")


def _handoff_row(h: Mapping[str, Any]) -> RecordRow:
    return RecordRow(str(h.get("email") or ""), f"Multipub {h.get('multipub_id') or ''}", None, None,
                     (f"new e-mail {h['new_email']}; " if h.get("new_email") else "")
                     + "Contacts " + (", ".join(h.get("contact_ids") or ()) or "none"),
                     str(h.get("source_id") or ""))


def _unchanged_row(u: Mapping[str, Any]) -> RecordRow:
    return RecordRow(str(u.get("email") or ""), _record(u), None, None, str(u.get("detail") or ""), "")


def _groups(doc: Mapping[str, Any], d: Digest) -> tuple[list[dict[str, Any]], int]:
    """The per-record list: one group per transition, reason, duplicate rule, hand-off file,
    and the unchanged records, each with every item and how to make its row (only the rows
    the page budget keeps are made: at 100,000 changes most are in ``changes.csv`` only)."""
    members: dict[str, list[Mapping[str, Any]]] = {t.key: [] for t in d.transitions}
    index = {(t.action, t.sobject, t.field, format_value(t.before), format_value(t.after)): t.key
             for t in d.transitions if not t.various}
    various = {(t.action, t.sobject, t.field): t.key for t in d.transitions if t.various}
    for change in doc.get("changes") or []:
        action, sobject = str(change.get("action")), str(change.get("sobject"))
        if action != "update":
            key = index.get((action, sobject, None, "null", "null"))
            if key:
                members[key].append(change)
            continue
        for name, values in (change.get("fields") or {}).items():
            values = values or {}
            key = index.get((action, sobject, name, format_value(values.get("before")), format_value(values.get("after"))))
            key = key or various.get((action, sobject, name))
            if key:
                members[key].append(change)
    specs: list[dict[str, Any]] = []
    for t in d.transitions:
        changes = members[t.key]
        common = _common_reasons(changes)
        values = "pair" if t.various else ("fields" if t.action != "update" else "")
        if t.action == "update":
            title = f"{t.field}: " + ("a different value each" if t.various else
                                       f"{_display(t.before)} → {_display(t.after)}")
        else:
            title = "new records" if t.action == "create" else "records deleted"
        own = f"→ {t.field} = " if values and t.field else ""   # the rule's words restate before/after: left out
        specs.append({"key": f"list-{t.key}", "kind": "change", "title": f"{ACTION_STYLE[t.action][0]} {t.action} "
                      f"{t.sobject} · {title}", "code": t.field or t.action, "count": t.count, "items": changes,
                      "row": partial(_change_row, t, values, common, own),
                      "values": values, "common": common, "elsewhere": "changes.csv"})
    for kind, groups, elsewhere in (("review", d.review, "review.csv"), ("skipped", d.skipped, "plan.json")):
        for g in groups:
            specs.append({"key": f"list-{kind}-{g.code}", "kind": kind,
                          "title": f"For review · {g.label}" if kind == "review" else g.label, "code": g.code,
                          "count": g.count, "items": g.items, "row": _item_row, "values": "", "common": (),
                          "elsewhere": elsewhere})
    for g in d.duplicates:
        specs.append({"key": f"list-duplicates-{g.code}", "kind": "duplicate",
                      "title": f"Duplicate groups · decided by {g.code} ({g.label})", "code": g.code,
                      "count": g.count, "items": g.items, "row": _duplicate_row, "values": "", "common": (),
                      "elsewhere": "plan.json"})
    for g in d.handoff:
        specs.append({"key": f"list-handoff-{g.code}", "kind": "handoff", "title": f"Hand-off to Marketing · {g.label}",
                      "code": g.code, "count": g.count, "items": g.items, "row": _handoff_row, "values": "",
                      "common": (), "elsewhere": HANDOFF_FILES.get(g.code, (g.code,))[0]})
    unchanged = doc.get("unchanged") or []
    if unchanged:
        specs.append({"key": "list-unchanged", "kind": "unchanged", "title": "Unchanged · already hold the desired values",
                      "code": "unchanged", "count": len(unchanged), "items": unchanged, "row": _unchanged_row,
                      "values": "", "common": (), "elsewhere": "plan.json"})
    return specs, sum(len(s["items"]) for s in specs)


def page_context(doc: Mapping[str, Any], config: Config | None = None) -> PlanPage:
    """The template's context for one plan document; ``config``: the sizes the apply
    steps are listed with (the defaults when not given)."""
    n = counts(doc)
    d = digest(doc, n)
    specs, total = _groups(doc, d)
    shown = budget([len(s["items"]) for s in specs], PAGE_ROWS)
    groups = tuple(ListGroup(**{key: v for key, v in s.items() if key not in ("items", "row")},
                             rows=tuple(map(s["row"], s["items"][:k]))) for s, k in zip(specs, shown, strict=True))
    sid = short_id(doc.get("plan_id"))
    kind = doc.get("kind") or "apply"
    rest = d.transitions[SUMMARY_TRANSITIONS:]
    return PlanPage(
        plan=_Doc(doc),
        title=f"reconcile {'rollback ' if kind == 'rollback' else ''}plan {sid}",
        short_id=sid,
        summary_line=summary_line(doc),
        counts=n,
        digest=d,
        transitions=tuple(_summary_row(t) for t in d.transitions[:SUMMARY_TRANSITIONS]),
        more_transitions=(len(rest), sum(t.count for t in rest)),
        review=_reason_rows("review", d.review, _item_example),
        skipped=_reason_rows("skipped", d.skipped, _item_example),
        duplicates=_reason_rows("duplicates", d.duplicates, _duplicate_example),
        handoff=_reason_rows("handoff", d.handoff, _handoff_example),
        groups=groups,
        rows_shown=sum(shown),
        rows_total=total,
        page_rows=PAGE_ROWS,
        open_groups=total <= OPEN_UP_TO,
        no_changes=NO_CHANGES,
        cupola_help=CUPOLA_HELP,
        script=Markup(FILTER_SCRIPT),
        csp=_csp_hash(FILTER_SCRIPT),
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
    return "".join(html_pieces(doc, config))


def html_pieces(doc: Mapping[str, Any], config: Config | None = None) -> Iterator[str]:
    """``render_html``'s text in the pieces the template yields them: the archive writes
    them as they come, so a 100 MB page is never one string (nor a list of its pieces)."""
    return _environment().get_template(TEMPLATE).generate(page=page_context(doc, config))
