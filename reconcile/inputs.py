"""Outcome files → a validated ``OutcomeSet``.

CSV (UTF-8, header row, a BOM is fine) or JSON Lines, one determination a row
(SPEC §1). Everything is validated before anything is returned: every problem
in every file is collected as ``file:line:column: what is wrong`` and raised
together as one ``InputError``. Rows for the same e-mail are then merged into
one determination per person, or a ``Conflict`` when they contradict each
other and ``observed_at`` cannot settle it.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconcile.chars import describe, first_invisible, scripts
from reconcile.errors import InputError
from reconcile.model import Conflict, Cupola, Outcome, OutcomeKind, OutcomeSet, RowRef
from reconcile.outcomes import COLUMNS, OUTCOMES, PAYLOAD_COLUMNS, needed_by

REQUIRED_COLUMNS = ("email", "outcome")
_VALID_OUTCOMES = ", ".join(k.value for k in OutcomeKind)
_VALID_CUPOLA = 'active, inactive or empty'

# One "@"; a local part of dot-separated atoms (no leading, trailing or doubled dot)
# made of the characters Salesforce documents for it: ASCII letters, digits and
# ! # $ % & ' * + - / = ? ^ _ ` { | } ~ (RFC 5322 "atext"; no backslash, no quoted
# local parts), https://help.salesforce.com/apex/HTViewSolution?id=000001145 ; a dotted
# ASCII domain of letters, digits and hyphens; no spaces.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_EMAIL = re.compile(r"^(?=[^@]{1,64}@)(?=.{1,254}$)"
                    rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
                    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")

# Columns some outcome requires of every row (outcomes.py); checked against the
# header once, then per row.
_NEEDED_BY = needed_by()


@dataclass
class _Row:
    """One validated input row (values trimmed; emails lower-cased)."""
    ref: RowRef
    kind: OutcomeKind
    values: dict[str, str]
    observed: datetime | None

    def payload(self) -> tuple[str, ...]:
        return tuple(self.values[name] for name in OUTCOMES[self.kind].payload)


@dataclass
class _File:
    name: str
    problems: list[str] = field(default_factory=list)

    def problem(self, line: int | None, column: str | None, what: str) -> None:
        where = self.name if line is None else f"{self.name}:{line}"
        if column is not None:
            where += f":{column}"
        self.problems.append(f"{where}: {what}")


def read_outcomes(paths: Sequence[Path]) -> OutcomeSet:
    """Read, validate and merge outcome files; raise ``InputError`` listing every problem."""
    if not paths:
        raise InputError(["no outcome files given"])
    # Hundreds of thousands of small acyclic objects: the cyclic collector would only
    # rescan them over and over (about a third of the time), so it waits until we are done.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _read_all(paths)
    finally:
        if gc_was_enabled:
            gc.enable()


def _read_all(paths: Sequence[Path]) -> OutcomeSet:
    problems: list[str] = []
    rows: list[_Row] = []
    inputs: list[dict[str, object]] = []
    for path in paths:
        path = Path(path)
        f = _File(path.name)
        data = _read_bytes(path, f)
        if data is not None:
            text = _decode(path, data, f)
            if text is not None:
                counter = [0]
                rows.extend(_parse(path, text, f, counter))
                inputs.append({"name": path.name, "sha256": hashlib.sha256(data).hexdigest(),
                               "rows": counter[0]})
        problems.extend(f.problems)
    if problems:
        raise InputError(problems)
    outcomes, conflicts = _merge(rows)
    return OutcomeSet(outcomes=tuple(outcomes), conflicts=tuple(conflicts), inputs=tuple(inputs))


# -- reading ---------------------------------------------------------------------

def _read_bytes(path: Path, f: _File) -> bytes | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        f.problem(None, None, "file not found")
        return None
    except IsADirectoryError:
        f.problem(None, None, "is a directory, not an outcome file")
        return None
    except OSError as exc:
        f.problem(None, None, f"cannot be read ({exc.strerror or exc})")
        return None
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        f.problem(None, None, "empty file (expected a header row and outcome rows)")
        return None
    return data


def _decode(path: Path, data: bytes, f: _File) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        f.problem(line, _undecodable_column(path, data, line),
                  f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8")
        return None


def _undecodable_column(path: Path, data: bytes, line: int) -> str | None:
    """The column (CSV header name or JSON key) whose value holds the first byte that is
    not UTF-8, when it can be told; the byte reads as U+FFFD in a lenient decoding."""
    text = data.decode("utf-8-sig", errors="replace")
    bad = "\ufffd"
    try:
        if _is_jsonl(path, text):
            obj = json.loads(text.split("\n")[line - 1])
            keys = [k for k, v in obj.items() if isinstance(v, str) and bad in v] if isinstance(obj, dict) else []
            return str(keys[0]).strip().lower() if keys and bad not in keys[0] else None
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in next(reader)]
        if any(bad in h for h in header):
            return None
        for rec in reader:
            for index, value in enumerate(rec):
                if bad in value:
                    return header[index] if index < len(header) and header[index] else None
    except (ValueError, csv.Error, StopIteration):
        pass
    return None


def _is_jsonl(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return True
    if suffix == ".csv":
        return False
    return text.lstrip().startswith("{")


def _parse(path: Path, text: str, f: _File, counter: list[int]) -> Iterator[_Row]:
    """Validated rows; ``counter[0]`` counts the data rows read (valid or not)."""
    records = _jsonl_records(text, f) if _is_jsonl(path, text) else _csv_records(text, f)
    for line, values, present in records:
        counter[0] += 1
        row = _validate(line, values, present, f)
        if row is not None:
            yield row


def _csv_records(text: str, f: _File) -> Iterator[tuple[int, dict[str, str], frozenset[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        f.problem(1, None, f"cannot read the header row ({exc})")
        return
    names = [h.strip().lower() for h in header]
    seen: set[str] = set()
    for name in names:
        if name in seen and name in COLUMNS:
            f.problem(1, name, "column appears twice in the header")
        seen.add(name)
    missing = [c for c in REQUIRED_COLUMNS if c not in seen]
    for column in missing:
        f.problem(1, column, f"required column missing (header has: {', '.join(h for h in names if h) or 'nothing'})")
    if missing:
        return
    present = frozenset(n for n in names if n in COLUMNS)
    width = len(names)
    needed_missing = {c for c in _NEEDED_BY if c not in present}
    needing: dict[str, list[int]] = {c: [] for c in needed_missing}
    last_line = reader.line_num
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            f.problem(last_line + 1, None, f"malformed CSV ({exc})")
            break
        line, last_line = last_line + 1, reader.line_num
        if not any(c.strip() for c in rec):
            continue
        spanning = [i for i, c in enumerate(rec) if "\n" in c or "\r" in c]
        if spanning and _unterminated(text, line):
            index = spanning[0]
            f.problem(line, names[index] if index < len(names) and names[index] else None,
                      "a quote (\") opened here is never closed, so the rest of the file "
                      f"(to line {last_line}) was read as one value; close or remove the quote")
            break
        if len(rec) > width:
            f.problem(line, None, f"row has {len(rec)} values but the header has {width} columns")
            continue
        values = dict(zip(names, rec, strict=False))  # a short row's missing values read as empty
        if needed_missing:
            kind = values.get("outcome", "").strip().lower()
            for column in needed_missing:
                if kind in _NEEDED_BY[column]:
                    needing[column].append(line)
        yield line, values, present
    for column in sorted(needed_missing):
        lines = needing[column]
        if lines:
            shown = ", ".join(map(str, lines[:10])) + (", …" if len(lines) > 10 else "")
            f.problem(1, column, f"column missing; {len(lines)} row(s) need it (line {shown})")


def _unterminated(text: str, line: int) -> bool:
    """Does the CSV record starting at ``line`` open a quote it never closes? (Python's
    lenient reader then reads the rest of the file into one value without a word.)"""
    rest = "\n".join(text.split("\n")[line - 1:])
    try:
        next(csv.reader(io.StringIO(rest, newline=""), strict=True))
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    except StopIteration:
        return False
    return False


def _json_object(pairs: list[tuple[str, object]]) -> dict[str, object] | list[tuple[str, object]]:
    """A JSON object as a dict, or its pairs when a key appears twice (JSON would keep
    only the last value silently)."""
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else pairs


def _jsonl_records(text: str, f: _File) -> Iterator[tuple[int, dict[str, str], frozenset[str]]]:
    # JSON Lines are separated by "\n" only: str.splitlines() would also split at
    # U+2028, U+0085 and other characters a JSON string may hold unescaped.
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=_json_object)
        except json.JSONDecodeError as exc:
            f.problem(line, None, f"not valid JSON ({exc.msg} at character {exc.colno})")
            continue
        if isinstance(obj, list) and raw.lstrip().startswith("{"):  # a key given twice
            pairs, obj, twice = obj, {}, False
            for key, value in pairs:
                if key in obj and str(key).strip().lower() in COLUMNS:
                    f.problem(line, str(key).strip().lower(), "key appears twice in the object")
                    twice = True
                obj[key] = value
            if twice:
                continue
        if not isinstance(obj, dict):
            f.problem(line, None, f"expected a JSON object, got {type(obj).__name__}")
            continue
        values: dict[str, str] = {}
        bad = False
        for key, value in obj.items():
            name = str(key).strip().lower()
            if name not in COLUMNS:
                continue
            if name in values:
                f.problem(line, name, "key appears twice in the object")
                bad = True
                continue
            if value is None:
                values[name] = ""
            elif isinstance(value, str):
                values[name] = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                values[name] = str(value)
            else:
                f.problem(line, name, f"must be a string, got {json.dumps(value)}")
                bad = True
        for column in REQUIRED_COLUMNS:
            if column not in values:
                f.problem(line, column, "required key missing")
                bad = True
        if not bad:
            yield line, values, frozenset(COLUMNS)  # a key missing on this line is this line's problem


# -- validating one row ---------------------------------------------------------

_KINDS = {k.value: k for k in OutcomeKind}
_TIMES: dict[str, tuple[datetime, str] | None] = {}


def _validate(line: int, raw: dict[str, str], present: frozenset[str], f: _File) -> _Row | None:
    before = len(f.problems)
    get = raw.get
    v = {name: get(name, "").strip() for name in COLUMNS}

    unseen = _invisible(v, line, f)
    email = v["email"].lower()
    if not email:
        f.problem(line, "email", "missing; every row needs the e-mail address it is about")
    elif "email" not in unseen and not _EMAIL.match(email):
        f.problem(line, "email", _email_problem(v["email"]))
    v["email"] = email

    kind: OutcomeKind | None = None
    outcome = v["outcome"].lower()
    if not outcome:
        f.problem(line, "outcome", f"missing; valid outcomes: {_VALID_OUTCOMES}")
    else:
        kind = _KINDS.get(outcome)
        if kind is None:
            f.problem(line, "outcome", f"{json.dumps(v['outcome'], ensure_ascii=False)} is not a valid outcome; "
                                       f"valid outcomes: {_VALID_OUTCOMES}")

    if v["new_email"]:
        v["new_email"] = v["new_email"].lower()
        if "new_email" not in unseen and not _EMAIL.match(v["new_email"]):
            f.problem(line, "new_email", _email_problem(raw["new_email"].strip()))

    cupola = v["cupola_status"].lower()
    if cupola not in ("active", "inactive", ""):
        f.problem(line, "cupola_status", f"{json.dumps(v['cupola_status'], ensure_ascii=False)} is not valid; "
                                         f"expected {_VALID_CUPOLA}")
    v["cupola_status"] = cupola

    observed: datetime | None = None
    if v["observed_at"]:
        if v["observed_at"] not in _TIMES:
            if len(_TIMES) > 100_000:
                _TIMES.clear()
            parsed = _parse_time(v["observed_at"])
            _TIMES[v["observed_at"]] = None if parsed is None else (parsed, _format_time(parsed))
        known = _TIMES[v["observed_at"]]
        if known is None:
            f.problem(line, "observed_at", f"{json.dumps(v['observed_at'], ensure_ascii=False)} is not an "
                                           "ISO-8601 time (e.g. 2026-11-20T10:00:00Z)")
        else:
            observed, v["observed_at"] = known

    if kind is not None:
        _check_required(line, kind, raw, v, present, f)

    if len(f.problems) > before or kind is None:
        return None
    ref = RowRef(file=f.name, line=line, outcome=kind.value, source_id=v["source_id"],
                 observed_at=v["observed_at"])
    return _Row(ref=ref, kind=kind, values=v, observed=observed)


def _invisible(v: dict[str, str], line: int, f: _File) -> set[str]:
    """Columns holding a control, zero-width or bidi character (each reported): a
    person reviewing the plan cannot see them, and the org would store them."""
    bad = set()
    for name, value in v.items():
        match = first_invisible(value)
        if match is not None:
            bad.add(name)
            f.problem(line, name, f"holds {describe(match.group())} at character {match.start() + 1}; "
                                  "control, zero-width and bidi characters are refused (remove it)")
    return bad


def _email_problem(text: str) -> str:
    """Why ``text`` is not an address reconcile writes, as specifically as can be told."""
    shown = json.dumps(text, ensure_ascii=False)
    local, at, domain = text.rpartition("@")
    if not text.isascii():
        found = sorted(scripts(text))
        if len(found) > 1:
            odd = next(c for c in text if not c.isascii() and c.isalpha())
            return (f"{shown} mixes {' and '.join(s.title() for s in found)} letters (look-alike "
                    f"characters such as {odd!r} {describe(odd)}); retype the address in one script")
        if at and local.isascii():
            try:
                puny = domain.encode("idna").decode("ascii")
            except UnicodeError:
                return f"{shown} has an internationalized domain that cannot be written as punycode"
            return (f"{shown} has an internationalized (IDN) domain; reconcile takes ASCII domains "
                    f"only: write it as {local}@{puny}")
        return (f"{shown} has non-ASCII characters in its local part; reconcile takes ASCII "
                "addresses only (Salesforce stores these only with Email Address Internationalization)")
    if text.count('"') % 2:
        return f"{shown} has an unterminated quote (\"); remove the quote character"
    if '"' in text:
        return f"{shown} has a quoted local part, which Salesforce's Email field does not accept"
    if "\\" in local:
        return (f"{shown} has a backslash in its local part; Salesforce accepts letters, digits "
                "and ! # $ % & ' * + - / = ? ^ _ ` { | } ~ . only")
    return f"{shown} is not a valid e-mail address"


def _check_required(line: int, kind: OutcomeKind, raw: dict[str, str], v: dict[str, str],
                    present: frozenset[str], f: _File) -> None:
    """A value the outcome needs is there, and none that it writes is only whitespace
    (a present-but-blank value would blank the field it writes)."""
    spec = OUTCOMES[kind]
    if spec.needs_any:
        blank = {n.column for n in spec.needs if raw.get(n.column, "") and not v[n.column]}
        for need in spec.needs:
            if need.column in blank:
                f.problem(line, need.column, f"is blank (only whitespace); {kind.value} would blank the {need.what}")
        if not blank and not any(v[n.column] for n in spec.needs):
            f.problem(line, spec.needs[0].column,
                      f"missing; {kind.value} needs {' and/or '.join(n.column for n in spec.needs)}")
        return
    for need in spec.needs:
        name = need.column
        if v[name]:
            continue
        if raw.get(name, ""):
            f.problem(line, name, f"is blank (only whitespace); {kind.value} would blank the {need.what}")
        elif name in present:  # a wholly missing column is reported once, on line 1
            f.problem(line, name, f"missing; {kind.value} needs {name}")


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:  # no offset given: read as UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _format_time(value: datetime) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return value.strftime(fmt)


# -- merging rows into determinations ---------------------------------------------

def _describe(kind: OutcomeKind, payload: tuple[str, ...]) -> str:
    parts = [f"{name}={value}" for name, value in zip(OUTCOMES[kind].payload, payload, strict=True) if value]
    return " ".join([kind.value, *parts])


def _where(rows: Iterable[_Row]) -> str:
    return ", ".join(f"{r.ref.file}:{r.ref.line}" for r in rows)


def _merge(rows: list[_Row]) -> tuple[list[Outcome], list[Conflict]]:
    by_email: dict[str, list[_Row]] = {}
    for row in rows:
        by_email.setdefault(row.values["email"], []).append(row)
    outcomes: list[Outcome] = []
    conflicts: list[Conflict] = []
    for email in sorted(by_email):
        person = by_email[email]
        if len(person) == 1:
            outcomes.append(_single(email, person[0]))
            continue
        groups: dict[tuple[OutcomeKind, tuple[str, ...]], list[_Row]] = {}
        for row in person:
            groups.setdefault((row.kind, row.payload()), []).append(row)
        notes: list[str] = []
        if len(groups) == 1:
            winner, overridden = person, []
        else:
            winner_key = _latest_group(groups)
            if winner_key is None:
                keys = list(groups)
                conflicts.append(Conflict(
                    email=email,
                    kinds=tuple(k.value for k, _ in keys),
                    rows=tuple(r.ref for r in person),
                    details=tuple(f"{_describe(k, p)} ({_where(groups[(k, p)])})" for k, p in keys)))
                continue
            winner = groups[winner_key]
            overridden = [r for r in person if (r.kind, r.payload()) != winner_key]
            notes.append(f"{email}: {_describe(*winner_key)} ({_where(winner)}) has the latest observed_at "
                         "and overrides " + "; ".join(f"{_describe(r.kind, r.payload())} ({_where([r])})"
                                                      for r in overridden))
        outcomes.append(_outcome(email, winner, person, overridden, notes))
    return outcomes, conflicts


_CUPOLA = {c.value: c for c in Cupola}


def _single(email: str, row: _Row) -> Outcome:
    """The common case: one row for the person."""
    v = row.values
    return Outcome(
        email=email, kind=row.kind, **_owned(row),
        multipub_id=v["multipub_id"], cupola_status=_CUPOLA[v["cupola_status"]],
        observed_at=v["observed_at"], source_id=v["source_id"], rows=(row.ref,))


def _owned(row: _Row) -> dict[str, Any]:
    """``Outcome`` keyword arguments: the row's values of the outcome's own columns, and
    ``""`` for every other outcome's columns (not this outcome's)."""
    owned = OUTCOMES[row.kind].payload
    return {name: row.values[name] if name in owned else "" for name in PAYLOAD_COLUMNS}


def _latest_group(groups: dict[tuple[OutcomeKind, tuple[str, ...]], list[_Row]]
                  ) -> tuple[OutcomeKind, tuple[str, ...]] | None:
    """The determination whose latest row is strictly later than every other row, if any."""
    rows = [r for g in groups.values() for r in g]
    if any(r.observed is None for r in rows):
        return None
    latest = max(r.observed for r in rows)  # type: ignore[type-var]
    keys = {(r.kind, r.payload()) for r in rows if r.observed == latest}
    return keys.pop() if len(keys) == 1 else None


def _outcome(email: str, winner: list[_Row], person: list[_Row], overridden: list[_Row],
             notes: list[str]) -> Outcome:
    first = winner[0]
    # The row that speaks for the determination: the strictly latest observed, else the last one.
    main = _latest_row(winner)
    cupolas = {r.values["cupola_status"] for r in winner}
    cupola = main.values["cupola_status"] if main is not None else None
    if len(cupolas) > 1:
        if cupola is None:  # no row is strictly the latest: the least permissive value
            cupola = "inactive" if "inactive" in cupolas else ""
        notes.append(f"{email}: rows disagree on cupola_status ({', '.join(sorted(c or 'empty' for c in cupolas))}); "
                     f"using {cupola or 'empty'} ({'the latest row' if main is not None else 'the least permissive'})")
    elif cupola is None:
        cupola = first.values["cupola_status"]
    # Multipub if any row (winning or not) says so: Marketing's ownership is not a determination.
    multipubs = sorted({r.values["multipub_id"] for r in person if r.values["multipub_id"]})
    if len(multipubs) > 1 or (multipubs and any(not r.values["multipub_id"] for r in person)):
        notes.append(f"{email}: rows disagree on multipub_id ({', '.join(multipubs)} and/or empty); "
                     f"treated as a Multipub person ({multipubs[0]})")
    speaker = main or winner[-1]
    return Outcome(
        email=email, kind=first.kind, **_owned(first),
        multipub_id=multipubs[0] if multipubs else "",
        cupola_status=Cupola(cupola),
        observed_at=speaker.values["observed_at"], source_id=speaker.values["source_id"],
        rows=tuple(r.ref for r in winner),
        overridden=tuple(r.ref for r in overridden),
        notes=tuple(notes))


def _latest_row(rows: list[_Row]) -> _Row | None:
    if len(rows) == 1:
        return rows[0]
    if any(r.observed is None for r in rows):
        return None
    latest = max(r.observed for r in rows)  # type: ignore[type-var]
    top = [r for r in rows if r.observed == latest]
    return top[0] if len(top) == 1 else None
