"""The plan for a terminal: the frozen summary line and ``show``.

Everything taken from the plan (e-mails, titles, ids, details) goes into
``rich.text.Text`` objects, never into markup strings, so a value such as
``[bold]`` prints literally. Colour only doubles what the ``+``/``~``/``-``
markers and the ``before → after`` arrows already say, so piped output reads
the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconcile.chars import escape_tree
from reconcile.config import Config
from reconcile.model import pointed_ref
from reconcile.render.digest import REASON_LABELS, Digest, Transition, digest, field_values
from reconcile.steps import Step, build_steps

ACTIONS = ("create", "update", "delete")

#: marker, colour, Terraform-like phrase for each action.
ACTION_STYLE: dict[str, tuple[str, str, str]] = {
    "create": ("+", "green", "will be created"),
    "update": ("~", "yellow", "will be updated in-place"),
    "delete": ("-", "red", "will be deleted"),
}

NO_CHANGES = "No changes. Salesforce already matches the outcomes."



# -- small helpers shared with the HTML and CSV renderers ----------------------------

def counts(doc: Mapping[str, Any]) -> dict[str, int]:
    """The six summary counts; taken from ``summary``, else counted from the lists."""
    summary = doc.get("summary") or {}
    changes = doc.get("changes") or []
    counted = {action: sum(1 for c in changes if c.get("action") == action) for action in ACTIONS}
    for key in ("skipped", "review", "unchanged"):
        counted[key] = len(doc.get(key) or [])
    return {key: int(summary.get(key, counted[key])) for key in
            ("create", "update", "delete", "skipped", "review", "unchanged")}


def summary_line(doc: Mapping[str, Any]) -> str:
    """``Plan: 1 to create, 12 to update, 0 to delete; 3 skipped, 2 for review``.

    Terraform's wording, always all five numbers: scripts parse this line.
    """
    n = counts(doc)
    return (f"Plan: {n['create']} to create, {n['update']} to update, {n['delete']} to delete; "
            f"{n['skipped']} skipped, {n['review']} for review")


def short_id(plan_id: str | None) -> str:
    return (plan_id or "")[:12]


def reference(value: Any) -> str | None:
    """The ref inside ``"@{Account:acme corp}"`` (a record this plan creates), else None."""
    return pointed_ref(value)


def format_value(value: Any) -> str:
    """A field value as the reviewer should read it: strings quoted, null as ``null``."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def row_label(row: Mapping[str, Any]) -> str:
    """``outcomes.csv:12 (inactive)``."""
    label = f"{row.get('file', '?')}:{row.get('line', '?')}"
    if row.get("outcome"):
        label += f" ({row['outcome']})"
    return label


def reason_label(code: str | None) -> str:
    return REASON_LABELS.get(code or "", code or "")


def record_label(item: Mapping[str, Any]) -> str:
    """``Contact 003…`` / ``Account (new: Account:acme corp)`` / ``—``."""
    sobject = item.get("sobject") or ""
    if item.get("record_id"):
        return f"{sobject} {item['record_id']}".strip()
    if item.get("ref"):
        return f"new {sobject} ({item['ref']})".strip()
    return sobject or "—"


def changes_by_action(doc: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Changes grouped by action, apply order kept inside each group."""
    grouped: dict[str, list[Mapping[str, Any]]] = {action: [] for action in ACTIONS}
    for change in doc.get("changes") or []:
        grouped.setdefault(change.get("action", "update"), []).append(change)
    return grouped


# -- show ------------------------------------------------------------------------------

def _t(*parts: str | tuple[str, str]) -> Text:
    """Build a Text from plain strings and (text, style) pairs; never parses markup."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            text.append(part[0], style=part[1])
        else:
            text.append(part)
    return text


def _hanging(console: Console, indent: int, label: Text | str, body: Text | str) -> None:
    """Print ``label body`` with wrapped lines of ``body`` indented under its start."""
    label = label if isinstance(label, Text) else Text(label, style="dim")
    body = body if isinstance(body, Text) else Text(body)
    grid = Table.grid(padding=(0, 1 if label.plain else 0))
    grid.add_column(width=indent + len(label.plain), no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(Text(" " * indent) + label, body)
    console.print(grid)


def _header(doc: Mapping[str, Any], console: Console) -> None:
    plan_id = doc.get("plan_id") or ""
    kind = doc.get("kind") or "apply"
    title = _t(("Plan ", "bold"), (short_id(plan_id), "bold cyan"))
    if kind == "rollback":
        title.append("  (rollback)", style="bold magenta")
    org = doc.get("org") or {}
    if org.get("is_sandbox") is False:
        title.append("  PRODUCTION org", style="bold white on red")
    elif org.get("is_sandbox") is True:
        title.append("  Sandbox org", style="bold blue")
    console.print(title)

    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column(overflow="fold")
    info.add_row(Text("plan id"), Text(plan_id))
    info.add_row(Text("kind"), Text(kind))
    parent = doc.get("parent_plan_id")
    info.add_row(Text("parent"), Text(parent or "—"))
    info.add_row(Text("created"), Text(str(doc.get("created_at") or "—")))
    if doc.get("tool_version"):
        info.add_row(Text("tool"), Text(f"reconcile {doc['tool_version']}"))
    org_text = (f"{org['name']} · " if org.get("name") else "") + str(org.get("instance_url") or "—")
    if org.get("organization_type"):
        org_text += f"  {org['organization_type']}"
    if org.get("org_id"):
        org_text += f"  (org {org['org_id']})"
    if org.get("api_version"):
        org_text += f"  API v{org['api_version']}"
    info.add_row(Text("org"), Text(org_text))
    inputs = doc.get("inputs") or []
    for i, item in enumerate(inputs):
        line = f"{item.get('name', '?')}  {item.get('rows', '?')} rows  sha256 {str(item.get('sha256', ''))[:16]}…"
        info.add_row(Text("inputs" if i == 0 else ""), Text(line))
    if not inputs:
        info.add_row(Text("inputs"), Text("—"))
    options = doc.get("options") or {}
    if options:
        info.add_row(Text("options"), Text(", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(options.items()))))
    console.print(info)
    console.print()


def _change(change: Mapping[str, Any], console: Console) -> None:
    action = change.get("action", "update")
    marker, colour, phrase = ACTION_STYLE.get(action, ("?", "white", f"will be {action}d"))
    head = _t("  ", (f"{marker} ", f"bold {colour}"), (record_label(change), "bold"))
    if change.get("email"):
        head.append(f" <{change['email']}>")
    head.append(f" {phrase}", style="dim")
    console.print(head)

    fields = change.get("fields") or {}
    width = max((len(name) for name in fields), default=0)
    for name in sorted(fields):
        values = fields[name] or {}
        before, after = values.get("before"), values.get("after")
        line = _t("      ", (f"{marker} ", colour), name.ljust(width), "  ")
        if action == "create":
            line.append(format_value(after), style="green")
        elif action == "delete":
            line.append(format_value(before), style="red")
            line.append(" → ")
            line.append("null", style="dim")
        else:
            line.append(format_value(before), style="red")
            line.append(" → ")
            line.append(format_value(after), style="green")
        ref = reference(after)
        if ref:
            line.append(f"  (known after apply: the {ref} this plan creates)", style="dim")
        console.print(line)

    for reason in change.get("reasons") or []:
        _hanging(console, 8, "because", reason)
    rows = change.get("rows") or []
    if rows:
        _hanging(console, 8, "from   ", rows_label(rows))
    console.print()


def _changes(doc: Mapping[str, Any], console: Console) -> None:
    grouped = changes_by_action(doc)
    if not any(grouped.values()):
        console.print(Text(NO_CHANGES, style="bold green"))
        console.print()
        return
    console.print(Text("reconcile will perform the following actions:"))
    present = [a for a in ACTIONS if grouped.get(a)]
    for action in present:
        marker, colour, _ = ACTION_STYLE[action]
        console.print(_t("  ", (f"{marker} {action}", colour)))
    console.print()
    for action in present:
        items = grouped[action]
        colour = ACTION_STYLE[action][1]
        console.print(Text(f"{action.capitalize()} ({len(items)})", style=f"bold {colour}"))
        for change in items:
            _change(change, console)


def _duplicates(doc: Mapping[str, Any], console: Console) -> None:
    groups = doc.get("duplicates") or []
    if not groups:
        return
    console.print(Text(f"Duplicate groups ({len(groups)}): only the chosen record is written", style="bold"))
    for group in groups:
        decided = group.get("decided_by") or ""
        console.print(_t("  ", (group.get("sobject") or "", "bold"), " ", group.get("email") or "",
                         ("  decided by ", "dim"), decided))
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2), header_style="dim")
        table.add_column(Text(""), no_wrap=True)
        table.add_column(Text("record"), no_wrap=True)
        table.add_column(Text("LastModifiedDate"), overflow="fold")
        table.add_column(Text("SystemModstamp"), overflow="fold")
        chosen = group.get("chosen") or {}
        table.add_row(Text("    chosen", style="green"), Text(chosen.get("id") or "", style="bold"),
                      Text(chosen.get("LastModifiedDate") or ""), Text(chosen.get("SystemModstamp") or ""))
        for other in group.get("others") or []:
            table.add_row(Text("    other", style="dim"), Text(other.get("id") or ""),
                          Text(other.get("LastModifiedDate") or ""), Text(other.get("SystemModstamp") or ""))
        console.print(table)
    console.print(Text("  Other records in a group are left untouched.", style="dim"))
    console.print()


def _skipped(doc: Mapping[str, Any], console: Console) -> None:
    items = doc.get("skipped") or []
    if not items:
        return
    console.print(Text(f"Skipped ({len(items)}): not written", style="bold"))
    for item in items:
        console.print(_t("  · ", item.get("email") or "", "  ", (item.get("reason") or "", "bold"),
                         ("  " + record_label(item), "dim")))
        _hanging(console, 6, "", item.get("detail") or reason_label(item.get("reason")))
    console.print()


def _review(doc: Mapping[str, Any], console: Console) -> None:
    items = doc.get("review") or []
    if not items:
        return
    console.print(Text(f"For human review ({len(items)}): not written; a Salesforce owner decides",
                       style="bold magenta"))
    for item in items:
        console.print(_t(("  ! ", "magenta"), item.get("email") or "", "  ",
                         (item.get("reason") or "", "bold")))
        _hanging(console, 6, "", item.get("detail") or reason_label(item.get("reason")))
        where = [record_label(item)] if item.get("sobject") or item.get("record_id") else []
        if item.get("rows"):
            where.append("from " + rows_label(item["rows"]))
        if where:
            _hanging(console, 6, "", Text(" · ".join(where), style="dim"))
    console.print()


def _tail(doc: Mapping[str, Any], console: Console, *, notes: int | None = None) -> None:
    n = counts(doc)
    if n["unchanged"]:
        console.print(Text(f"Unchanged: {n['unchanged']:,} record{'' if n['unchanged'] == 1 else 's'} already "
                           f"hold{'s' if n['unchanged'] == 1 else ''} the desired values."))
    handoff = doc.get("handoff") or []
    if handoff:
        by_file: dict[str, int] = {}
        for row in handoff:
            by_file[row.get("file", "")] = by_file.get(row.get("file", ""), 0) + 1
        parts = ", ".join(f"{count:,} in output_document_{name}.csv" for name, count in sorted(by_file.items()))
        console.print(Text(f"Hand-off to Marketing: {parts}."))
    checked = doc.get("preflight") or {}
    if "duplicate_rules" in checked:
        rules = checked["duplicate_rules"]
        listed = ("unknown (this user may not read DuplicateRule)" if rules is None else
                  ", ".join(f"{r.get('label')} ({r.get('sobject')})" for r in rules) or "none")
        _hanging(console, 0, "Duplicate rules active in the org:", listed)
    all_notes = doc.get("notes") or []
    for note in all_notes[:notes]:
        _hanging(console, 0, "Note:", note)
    if notes is not None and len(all_notes) > notes:
        console.print(Text(f"… and {len(all_notes) - notes:,} more notes (reconcile show --full)", style="dim"))
    console.print()
    console.print(Text(summary_line(doc), style="bold"))
    calls = doc.get("estimated_api_calls")
    if calls is not None:
        console.print(Text(f"Estimated API calls for apply: {calls:,}"))


# -- the summary: counts per transition and per reason, with a few examples -----------------

#: ``show`` lists this many transitions (largest first); the rest are counted in one line.
SHOW_TRANSITIONS = 8
#: ``show`` lists every change below the summary when the plan has at most this many items
#: (changes, skipped, review, duplicate groups): a small plan reads whole.
SHOW_ALL_UP_TO = 30
SHOW_NOTES = 3


def transition_words(t: Transition) -> str:
    """``Contact_Status__c "Active" → "Inactive"`` / ``Email (a different value each)`` / ``new records``."""
    if t.action == "create":
        return "new records"
    if t.action == "delete":
        return "records deleted"
    if t.various:
        return f"{t.field}  (a different value each)"
    return f"{t.field}  {format_value(t.before)} → {format_value(t.after)}"


def example_words(t: Transition, change: Mapping[str, Any]) -> str:
    """One example of a transition, as short as it can be and still be found: the e-mail
    (or the id), or the values themselves when each record has its own."""
    if t.action == "update" and t.various:
        before, after = field_values(change, t.field)
        return f"{format_value(before)} → {format_value(after)}"
    return str(change.get("email") or change.get("record_id") or change.get("ref") or "?")


def examples_line(words: Iterable[str], room: int = 64) -> str:
    """``e.g. a, b, c`` with as many examples as fit in ``room`` characters (one at least)."""
    shown: list[str] = []
    for word in words:
        if shown and len("; ".join([*shown, word])) > room:
            break
        shown.append(word)
    return "e.g. " + "; ".join(shown) if shown else ""


def _summary(doc: Mapping[str, Any], console: Console, d: Digest, *, listed: bool) -> None:
    console.print(Text(summary_line(doc), style="bold"))
    console.print()
    sid = short_id(doc.get("plan_id"))
    if not d.transitions:
        console.print(Text(NO_CHANGES, style="bold green"))
    else:
        records = sum(d.counts[a] for a in ACTIONS)
        console.print(Text(f"What changes ({d.field_changes:,} field changes and "
                           f"{d.counts['create'] + d.counts['delete']:,} records created or deleted; "
                           f"{records:,} records in all), largest first:", style="bold"))
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="dim")
        table.add_column(Text("count"), justify="right", no_wrap=True)
        table.add_column(Text(""), no_wrap=True)
        table.add_column(Text("object"), no_wrap=True)
        table.add_column(Text("change, for example"), overflow="fold")
        room = max(30, console.width - 32)   # the width left for the examples column
        for t in d.transitions[:SHOW_TRANSITIONS]:
            marker, colour, _ = ACTION_STYLE.get(t.action, ("?", "white", ""))
            cell = Text(transition_words(t))
            if t.examples:
                cell.append("\n" + examples_line((example_words(t, c) for c in t.examples), room), style="dim")
            table.add_row(Text(f"{t.count:,}"), Text(f"{marker} {t.action}", style=colour), Text(t.sobject), cell)
        console.print(table)
        rest = d.transitions[SHOW_TRANSITIONS:]
        if rest and listed:
            console.print(Text(f"  … {len(rest):,} more transitions ({sum(t.count for t in rest):,} changes), "
                               "every change below", style="dim"))
        elif rest:
            console.print(Text(f"  … {len(rest):,} more transitions ({sum(t.count for t in rest):,} changes): "
                               f"reconcile show {sid} --full, or changes.csv", style="dim"))
    console.print()
    for title, groups, where in (("Needs a decision", d.review, "nothing is written for them; review.csv lists them"),
                                 ("Skipped", d.skipped, "not written, by rule")):
        if not groups:
            continue
        total = sum(g.count for g in groups)
        console.print(Text(f"{title} ({total:,}): {where}", style="bold magenta" if groups is d.review else "bold"))
        for g in groups:
            line = _t(f"  {g.count:>7,}  ", (g.code, "bold"), f"  {g.label}")
            console.print(line)
            words = (f"{i.get('email') or '?'} ({record_label(i)})" if i.get("record_id") else i.get("email") or "?"
                     for i in g.items[:3])
            console.print(Text(f"           {examples_line(words)}", style="dim"))
        if groups is d.review and d.mentions_cupola:   # the page says it at length (CUPOLA_HELP)
            console.print(Text("  CUPOLA: e-mail and title changes are written only when cupola_status is active.",
                               style="dim"))
        console.print()
    if d.duplicates:
        parts = ", ".join(f"{g.count:,} by {g.code}" for g in d.duplicates)
        console.print(Text(f"Duplicates: {sum(g.count for g in d.duplicates):,} groups of records sharing an e-mail; "
                           f"only the chosen one is written ({parts})."))


def _steps(steps: Iterable[Step], console: Console) -> None:
    """The apply steps (``reconcile.steps``): what apply sends, in order."""
    console.print(Text("Apply steps (what apply sends, in this order):", style="bold"))
    for number, step in enumerate(steps, start=1):
        _hanging(console, 2, Text(f"{number}."), step.describe())


def render_show(doc: Mapping[str, Any], console: Console, config: Config | None = None, *,
                full: bool = False) -> None:
    """Print the plan for a terminal (``reconcile show PLAN``): the header, the summary
    (counts per transition and per reason, with examples), the apply steps, and every
    change only with ``full`` or for a small plan (``SHOW_ALL_UP_TO``). ``config``: the
    sizes the apply steps are listed with (the defaults when not given)."""
    steps = build_steps(doc, config or Config())
    doc = escape_tree(doc)   # an escape sequence or bidi override from the org is shown, not obeyed
    n = counts(doc)
    d = digest(doc, n)
    items = sum(n[a] for a in ACTIONS) + n["skipped"] + n["review"] + len(doc.get("duplicates") or [])
    listed = full or items <= SHOW_ALL_UP_TO
    _header(doc, console)
    _summary(doc, console, d, listed=listed)
    if listed:
        console.print(Text("Every change", style="bold underline"))
        console.print()
        _changes(doc, console)
        _duplicates(doc, console)
        _skipped(doc, console)
        _review(doc, console)
    if not listed:
        console.print()
    _steps(steps, console)
    _tail(doc, console, notes=None if listed else SHOW_NOTES)
    if not listed:
        console.print(Text(f"Every change: reconcile show {short_id(doc.get('plan_id'))} --full, "
                           "or changes.csv and plan.html in the plan's folder.", style="dim"))


def rows_label(rows: Iterable[Mapping[str, Any]]) -> str:
    """``a.csv:3 (inactive); b.jsonl:4 (reactivate)``."""
    return "; ".join(row_label(r) for r in rows)
