"""The plan's CSV files: every field change, the human-review list and Marketing's hand-off files.

Control, zero-width and bidi characters (from the org) are written as visible
escapes (``reconcile.chars.escape_invisible``). People open these in Excel, so a cell that Excel would read as a formula
(starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is
written with a leading ``'``, which Excel shows as text (OWASP "CSV Injection").
Every file has its header row, even when it has no data rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from reconcile.chars import escape_invisible
from reconcile.render.text import rows_label

CHANGE_COLUMNS = ("change_id", "action", "sobject", "record_id", "email", "field", "before", "after", "reasons")
REVIEW_COLUMNS = ("email", "reason", "detail", "sobject", "record_id", "source_rows")
INACTIVE_COLUMNS = ("email", "multipub_id", "contact_ids", "observed_at", "source_id")
EMAIL_UPDATE_COLUMNS = ("email", "new_email", "multipub_id", "contact_ids", "observed_at", "source_id")

#: hand-off ``file`` value -> (file name, columns)
HANDOFF_FILES: dict[str, tuple[str, Sequence[str]]] = {
    "inactive_people": ("output_document_inactive_people.csv", INACTIVE_COLUMNS),
    "email_update_requests": ("output_document_email_update_requests.csv", EMAIL_UPDATE_COLUMNS),
}

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """A value as a CSV cell that a spreadsheet shows as text, never runs as a formula."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        text = ";".join(str(v) for v in value)
    else:
        text = str(value)
    text = escape_invisible(text, csv_cell=True)   # a control or bidi character from the org, shown, not obeyed
    if text.startswith(_FORMULA_START) or text.lstrip(" ").startswith(_FORMULA_START):
        return "'" + text
    return text


def _csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def _cell_value(value: Any) -> Any:
    """A field value for a cell: text as it is, null empty, anything else as JSON."""
    return value if value is None or isinstance(value, str) else json.dumps(value, sort_keys=True)


def change_rows(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per field change, in plan order (a create or delete: one row per field)."""
    for change in doc.get("changes") or []:
        common = {key: change.get(key) for key in ("change_id", "action", "sobject", "record_id", "email")}
        common["reasons"] = "; ".join(change.get("reasons") or ())
        for name, values in (change.get("fields") or {}).items():
            values = values or {}
            yield {**common, "field": name, "before": _cell_value(values.get("before")),
                   "after": _cell_value(values.get("after"))}


def changes_csv(doc: Mapping[str, Any]) -> str:
    """``changes.csv``: every field change of the plan, for spreadsheets and auditors."""
    return _csv(CHANGE_COLUMNS, change_rows(doc))


def review_csv(doc: Mapping[str, Any]) -> str:
    """``review.csv``: the people a Salesforce owner must decide on, one a row."""
    rows = []
    for item in doc.get("review") or []:
        rows.append({**item, "source_rows": rows_label(item.get("rows") or [])})
    return _csv(REVIEW_COLUMNS, rows)


def handoff_csvs(doc: Mapping[str, Any]) -> dict[str, str]:
    """Marketing's hand-off files, by file name; both always present, with headers."""
    by_file: dict[str, list[Mapping[str, Any]]] = {key: [] for key in HANDOFF_FILES}
    for row in doc.get("handoff") or []:
        if row.get("file") in by_file:
            by_file[row["file"]].append(row)
    return {name: _csv(columns, by_file[key]) for key, (name, columns) in HANDOFF_FILES.items()}
