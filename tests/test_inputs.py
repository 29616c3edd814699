"""Outcome files: every kind of bad input gives an exact ``file:line:column`` message,
all problems are reported at once, and rows for one person are merged (SPEC §1)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from reconcile.errors import InputError
from reconcile.inputs import read_outcomes
from reconcile.model import Cupola, OutcomeKind, RowRef

HEADER = ("email,outcome,new_email,new_title,first_name,last_name,organization,title,"
          "multipub_id,cupola_status,observed_at,source_id")


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def csv_file(tmp_path: Path, *rows: str, name: str = "outcomes.csv", header: str = HEADER) -> Path:
    return write(tmp_path, name, "\n".join([header, *rows]) + "\n")


def problems(*paths: Path) -> list[str]:
    with pytest.raises(InputError) as info:
        read_outcomes(list(paths))
    return info.value.problems


def test_reads_csv_with_bom_and_normalises(tmp_path):
    path = write(tmp_path, "o.csv", "\ufeff" + HEADER + "\n"
                 + " Ann@Acme.COM ,Email_Change, Ann@NewCo.com ,,,,,,,Active,2026-11-20T11:00:00+01:00,<m1>\n")
    result = read_outcomes([path])
    (o,) = result.outcomes
    assert (o.email, o.kind, o.new_email, o.cupola_status) == ("ann@acme.com", OutcomeKind.EMAIL_CHANGE,
                                                                "ann@newco.com", Cupola.ACTIVE)
    assert o.observed_at == "2026-11-20T10:00:00Z"
    assert o.rows == (RowRef(file="o.csv", line=2, outcome="email_change", source_id="<m1>",
                             observed_at="2026-11-20T10:00:00Z"),)
    assert result.inputs == ({"name": "o.csv", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": 1},)


def test_reads_json_lines_and_ignores_unknown_keys(tmp_path):
    path = write(tmp_path, "o.jsonl", json.dumps({"email": "a@x.com", "outcome": "inactive", "extra": [1]}) + "\n\n"
                 + json.dumps({"email": "b@x.com", "outcome": "title_change", "new_title": "CTO",
                               "multipub_id": 42}) + "\n")
    result = read_outcomes([path])
    assert [(o.email, o.rows[0].line, o.multipub_id) for o in result.outcomes] == [("a@x.com", 1, ""),
                                                                                   ("b@x.com", 3, "42")]


def test_sniffs_format_without_a_known_extension(tmp_path):
    jsonl = write(tmp_path, "o.txt", '{"email": "a@x.com", "outcome": "inactive"}\n')
    csv_ = write(tmp_path, "p.txt", "email,outcome\nb@x.com,inactive\n")
    assert [o.email for o in read_outcomes([jsonl, csv_]).outcomes] == ["a@x.com", "b@x.com"]


def test_unknown_columns_are_ignored_and_apostrophes_are_valid(tmp_path):
    path = csv_file(tmp_path, "o'brien@acme.com,inactive,x", header="email,outcome,comment")
    assert read_outcomes([path]).outcomes[0].email == "o'brien@acme.com"


def test_missing_required_column_is_reported_on_line_1(tmp_path):
    path = csv_file(tmp_path, "a@x.com", header="email,new_email")
    assert problems(path) == ["outcomes.csv:1:outcome: required column missing (header has: email, new_email)"]


def test_column_an_outcome_needs_is_reported_once(tmp_path):
    path = csv_file(tmp_path, "a@x.com,email_change", "b@x.com,inactive", "c@x.com,email_change",
                    header="email,outcome")
    assert problems(path) == ["outcomes.csv:1:new_email: column missing; 2 row(s) need it (line 2, 4)"]


@pytest.mark.parametrize("row, expected", [
    ("a@x.com,deactivate,,,,,,,,,,",
     'outcomes.csv:2:outcome: "deactivate" is not a valid outcome; valid outcomes: inactive, reactivate, '
     'email_change, title_change, replacement, new_contact'),
    ("a@x.com,email_change,bob@,,,,,,,active,,", 'outcomes.csv:2:new_email: "bob@" is not a valid e-mail address'),
    ("not-an-address,inactive,,,,,,,,,,", 'outcomes.csv:2:email: "not-an-address" is not a valid e-mail address'),
    (",inactive,,,,,,,,,,", "outcomes.csv:2:email: missing; every row needs the e-mail address it is about"),
    ("a@x.com,email_change,,,,,,,,active,,", "outcomes.csv:2:new_email: missing; email_change needs new_email"),
    ("a@x.com,title_change,,,,,,,,active,,", "outcomes.csv:2:new_title: missing; title_change needs new_title"),
    ("a@x.com,title_change,,   ,,,,,,active,,",
     "outcomes.csv:2:new_title: is blank (only whitespace); title_change would blank the title"),
    ("a@x.com,replacement,,,,,,,,active,,",
     "outcomes.csv:2:new_email: missing; replacement needs new_email and/or new_title"),
    ("a@x.com,replacement,b@x.com, ,,,,,,active,,",
     "outcomes.csv:2:new_title: is blank (only whitespace); replacement would blank the title"),
    ("a@x.com,new_contact,,,Ann,,Acme,,,,,", "outcomes.csv:2:last_name: missing; new_contact needs last_name"),
    ("a@x.com,new_contact,,,Ann,Smith,,,,,,", "outcomes.csv:2:organization: missing; new_contact needs organization"),
    ("a@x.com,inactive,,,,,,,,maybe,,",
     'outcomes.csv:2:cupola_status: "maybe" is not valid; expected active, inactive or empty'),
    ("a@x.com,inactive,,,,,,,,,last tuesday,",
     'outcomes.csv:2:observed_at: "last tuesday" is not an ISO-8601 time (e.g. 2026-11-20T10:00:00Z)'),
    ("a@x.com,inactive,,,,,,,,,,,extra", "outcomes.csv:2: row has 13 values but the header has 12 columns"),
])
def test_bad_row_gives_exact_message(tmp_path, row, expected):
    assert problems(csv_file(tmp_path, row)) == [expected]


def test_all_problems_in_all_files_are_reported(tmp_path):
    first = csv_file(tmp_path, "a@x.com,inactive,,,,,,,,,,", "b@,inactive,,,,,,,,,,",
                     "c@x.com,email_change,c@,,,,,,,,,", name="one.csv")
    second = write(tmp_path, "two.jsonl", '{"email": "d@x.com", "outcome": "inactive"}\n[1, 2]\n{"outcome": "x"}\n'
                   '{"email": "e@x.com", "outcome": "title_change", "new_title": true}\n{bad json\n')
    assert problems(first, second) == [
        'one.csv:3:email: "b@" is not a valid e-mail address',
        'one.csv:4:new_email: "c@" is not a valid e-mail address',
        "two.jsonl:2: expected a JSON object, got list",
        "two.jsonl:3:email: required key missing",
        "two.jsonl:4:new_title: must be a string, got true",
        "two.jsonl:5: not valid JSON (Expecting property name enclosed in double quotes at character 2)",
    ]


def test_file_problems(tmp_path):
    latin1 = write(tmp_path, "latin1.csv", "email,outcome\nrene@x.com,inactive\nren\xe9@x.com,inactive\n".encode("latin-1"))
    empty = write(tmp_path, "empty.csv", b"\xef\xbb\xbf  \n")
    assert problems(latin1, empty, tmp_path / "missing.csv", tmp_path) == [
        "latin1.csv:3:email: not valid UTF-8 (byte 0xe9 at offset 37); save the file as UTF-8",
        "empty.csv: empty file (expected a header row and outcome rows)",
        "missing.csv: file not found",
        f"{tmp_path.name}: is a directory, not an outcome file",
    ]


def test_bytes_that_are_not_utf8_are_located_by_line_and_column(tmp_path):
    csv_ = write(tmp_path, "t.csv", b"email,outcome,new_title\na@x.com,inactive,\nb@x.com,title_change,Direkt\xf6r\n")
    jsonl = write(tmp_path, "t.jsonl", b'{"email": "a@x.com", "outcome": "inactive"}\n'
                                       b'{"email": "b@x.com", "outcome": "title_change", "new_title": "Direkt\xf6r"}\n')
    assert problems(csv_, jsonl) == [
        "t.csv:3:new_title: not valid UTF-8 (byte 0xf6 at offset 69); save the file as UTF-8",
        "t.jsonl:2:new_title: not valid UTF-8 (byte 0xf6 at offset 112); save the file as UTF-8",
    ]


@pytest.mark.parametrize("address", [".ann@x.com", "ann.@x.com", "ann..lee@x.com", "a" * 65 + "@x.com"])
def test_local_parts_salesforce_would_refuse_are_malformed(tmp_path, address):
    assert problems(csv_file(tmp_path, f"{address},inactive,,,,,,,,,,")) == [
        f'outcomes.csv:2:email: "{address}" is not a valid e-mail address']
    assert read_outcomes([csv_file(tmp_path, "ann.lee+x@x.com,inactive,,,,,,,,,,")]).outcomes


def test_json_lines_split_only_at_newlines(tmp_path):
    # U+2028 and U+0085 are legal unescaped inside a JSON string; they do not end the line.
    path = write(tmp_path, "o.jsonl", '{"email": "a@x.com", "outcome": "title_change", "new_title": "A\u2028B\x85C"}\r\n'
                                      '{"email": "b@", "outcome": "inactive"}\r\n')
    # (U+0085 is a C1 control character: refused in a title, on its own line 1.)
    assert problems(path) == ["o.jsonl:1:new_title: holds U+0085 control character at character 4; control, "
                              "zero-width and bidi characters are refused (remove it)",
                              'o.jsonl:2:email: "b@" is not a valid e-mail address']
    path = write(tmp_path, "p.jsonl", '{"email": "a@x.com", "outcome": "title_change", "new_title": "A\u2028B"}\n')
    assert read_outcomes([path]).outcomes[0].new_title == "A\u2028B"


def test_a_json_key_given_twice_is_refused(tmp_path):
    path = write(tmp_path, "o.jsonl", '{"email": "a@x.com", "outcome": "inactive", "outcome": "reactivate"}\n'
                                      '{"email": "b@x.com", "Outcome": "inactive", "outcome": "reactivate"}\n'
                                      '{"email": "c@x.com", "outcome": "inactive", "note": 1, "note": 2}\n')
    assert problems(path) == ["o.jsonl:1:outcome: key appears twice in the object",
                              "o.jsonl:2:outcome: key appears twice in the object"]


def test_multiline_csv_rows_keep_their_starting_line(tmp_path):
    path = csv_file(tmp_path, 'a@x.com,title_change,,"Head of\nSales",,,,,,active,,', "b@,inactive,,,,,,,,,,")
    # A line break inside a title is refused (a Title is one line); the next row keeps its own line.
    assert problems(path) == ["outcomes.csv:2:new_title: holds U+000A control character at character 8; control, "
                              "zero-width and bidi characters are refused (remove it)",
                              'outcomes.csv:4:email: "b@" is not a valid e-mail address']


def test_same_determination_rows_are_merged(tmp_path):
    path = csv_file(tmp_path, "a@x.com,inactive,,,,,,,,,,", "A@X.com,inactive,,,,,,,,,,<2>",
                    "b@x.com,title_change,,CTO,,,,,,active,,", "b@x.com,title_change,,CTO,,,,,,,,")
    result = read_outcomes([path])
    assert result.conflicts == ()
    a, b = result.outcomes
    assert [r.line for r in a.rows] == [2, 3]
    # rows disagree on cupola and none is strictly latest: the least permissive value wins
    assert b.cupola_status is Cupola.NONE and b.notes


def test_contradictions_resolved_by_strictly_later_observed_at(tmp_path):
    path = csv_file(tmp_path, "a@x.com,inactive,,,,,,,,,2026-11-01T10:00:00Z,",
                    "a@x.com,reactivate,,,,,,,,,2026-11-02T10:00:00Z,",
                    "b@x.com,email_change,b1@x.com,,,,,,,active,2026-11-02T10:00:00Z,",
                    "b@x.com,email_change,b2@x.com,,,,,,,active,2026-11-02T11:00:00+01:00,",
                    "c@x.com,inactive,,,,,,,,,2026-11-02T10:00:00Z,", "c@x.com,reactivate,,,,,,,,,,")
    result = read_outcomes([path])
    (a,) = result.outcomes
    assert (a.kind, [r.line for r in a.rows], [r.line for r in a.overridden]) == (OutcomeKind.REACTIVATE, [3], [2])
    assert [(c.email, c.kinds, len(c.rows)) for c in result.conflicts] == [
        ("b@x.com", ("email_change", "email_change"), 2), ("c@x.com", ("inactive", "reactivate"), 2)]
    assert result.conflicts[0].details == ("email_change new_email=b1@x.com (outcomes.csv:4)",
                                           "email_change new_email=b2@x.com (outcomes.csv:5)")


def test_multipub_if_any_row_says_so(tmp_path):
    path = csv_file(tmp_path, "a@x.com,inactive,,,,,,,MP-1,,,", "a@x.com,inactive,,,,,,,,,,")
    (o,) = read_outcomes([path]).outcomes
    assert o.multipub_id == "MP-1" and "treated as a Multipub person" in o.notes[0]


def test_header_only_file_is_an_empty_input(tmp_path):
    result = read_outcomes([csv_file(tmp_path)])
    assert result.outcomes == () and result.inputs[0]["rows"] == 0


def test_100k_rows_validate_fast(tmp_path):
    lines = [HEADER]
    kinds = ["inactive,,", "reactivate,,", "email_change,new{0}@example.org,", "title_change,,Title {0}"]
    for i in range(100_000):
        lines.append(f"person{i}@example.com,{kinds[i % 4].format(i)},,,,,,active,2026-11-20T10:00:00Z,<{i}>")
    path = write(tmp_path, "big.csv", "\n".join(lines) + "\n")
    start = time.perf_counter()
    result = read_outcomes([path])
    elapsed = time.perf_counter() - start
    print(f"\n100,000 rows read and validated in {elapsed:.2f} s")
    assert len(result.outcomes) == 100_000
    assert elapsed < 10


# -- characters a reviewer cannot see, look-alikes, what Salesforce's Email field takes --------

def _jsonl(tmp_path: Path, *objs: dict) -> Path:
    return write(tmp_path, "o.jsonl", "".join(json.dumps(o) + "\n" for o in objs))


def test_control_zero_width_and_bidi_characters_are_refused_in_every_column(tmp_path):
    path = _jsonl(tmp_path,
                  {"email": "a\u0000b@x.com", "outcome": "inactive"},
                  {"email": "ok@x.com", "outcome": "title_change", "new_title": "Boss\u202eevil"},
                  {"email": "ok2@x.com", "outcome": "title_change", "new_title": "Bo\u200bss"},
                  {"email": "ok3@x.com", "outcome": "new_contact", "last_name": "Lee\x1b[2J",
                   "organization": "Acme"},
                  {"email": "ok4@x.com", "outcome": "new_contact", "last_name": "Lee", "first_name": "\ufeffAnn",
                   "organization": "Acme"})
    assert problems(path) == [
        "o.jsonl:1:email: holds U+0000 control character at character 2; control, zero-width and bidi "
        "characters are refused (remove it)",
        "o.jsonl:2:new_title: holds U+202E RIGHT-TO-LEFT OVERRIDE at character 5; control, zero-width and bidi "
        "characters are refused (remove it)",
        "o.jsonl:3:new_title: holds U+200B ZERO WIDTH SPACE at character 3; control, zero-width and bidi "
        "characters are refused (remove it)",
        "o.jsonl:4:last_name: holds U+001B control character at character 4; control, zero-width and bidi "
        "characters are refused (remove it)",
        "o.jsonl:5:first_name: holds U+FEFF ZERO WIDTH NO-BREAK SPACE at character 1; control, zero-width and "
        "bidi characters are refused (remove it)",
    ]


def test_a_mixed_script_look_alike_address_is_refused(tmp_path):
    path = _jsonl(tmp_path, {"email": "p\u0430ypal@example.com", "outcome": "inactive"},
                  {"email": "a@x.com", "outcome": "email_change", "new_email": "b\u043eb@x.com"})
    assert problems(path) == [
        "o.jsonl:1:email: \"p\u0430ypal@example.com\" mixes Cyrillic and Latin letters (look-alike characters "
        "such as '\u0430' U+0430 CYRILLIC SMALL LETTER A); retype the address in one script",
        "o.jsonl:2:new_email: \"b\u043eb@x.com\" mixes Cyrillic and Latin letters (look-alike characters "
        "such as '\u043e' U+043E CYRILLIC SMALL LETTER O); retype the address in one script",
    ]


def test_an_idn_domain_is_refused_with_its_punycode_form(tmp_path):
    path = _jsonl(tmp_path, {"email": "jo@b\u00fccher.de", "outcome": "inactive"},
                  {"email": "j\u00f6@x.de", "outcome": "inactive"})
    assert problems(path) == [
        "o.jsonl:1:email: \"jo@b\u00fccher.de\" has an internationalized (IDN) domain; reconcile takes ASCII "
        "domains only: write it as jo@xn--bcher-kva.de",
        "o.jsonl:2:email: \"j\u00f6@x.de\" has non-ASCII characters in its local part; reconcile takes ASCII "
        "addresses only (Salesforce stores these only with Email Address Internationalization)",
    ]


def test_a_backslash_or_quote_in_the_local_part_is_refused(tmp_path):
    """Salesforce's Email field takes letters, digits and ! # $ % & ' * + - / = ? ^ _ ` { | } ~ .
    in the local part, no backslash and no quoted strings:
    https://help.salesforce.com/apex/HTViewSolution?id=000001145"""
    path = _jsonl(tmp_path, {"email": "a\\b@x.com", "outcome": "inactive"},
                  {"email": "\"ab@x.com", "outcome": "inactive"},
                  {"email": "\"a b\"@x.com", "outcome": "inactive"},
                  {"email": "o'neil+{x}|y~z@x.com", "outcome": "inactive"})
    assert problems(path) == [
        "o.jsonl:1:email: \"a\\\\b@x.com\" has a backslash in its local part; Salesforce accepts letters, digits "
        "and ! # $ % & ' * + - / = ? ^ _ ` { | } ~ . only",
        "o.jsonl:2:email: \"\\\"ab@x.com\" has an unterminated quote (\"); remove the quote character",
        "o.jsonl:3:email: \"\\\"a b\\\"@x.com\" has a quoted local part, which Salesforce's Email field does "
        "not accept",
    ]


def test_an_unterminated_csv_quote_gets_its_own_message(tmp_path):
    path = write(tmp_path, "o.csv", 'email,outcome\n"a@b.com,inactive\nc@d.com,inactive\nd@e.com,inactive\n')
    assert problems(path) == [
        'o.csv:2:email: a quote (") opened here is never closed, so the rest of the file (to line 4) was read '
        "as one value; close or remove the quote"]
    path = write(tmp_path, "p.csv", 'email,outcome\na@b.com,"inactive\nc@d.com,inactive\n')
    assert problems(path)[0].startswith('p.csv:2:outcome: a quote (") opened here is never closed')
