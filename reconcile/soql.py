"""SOQL text, pure: string literals, the query-string encoding, and ``IN (…)`` lists
split to fit a request URL. The adapter sends these queries; ``reconcile.steps``
counts them with the same arithmetic, so the estimate is what apply sends.

Why not simple-salesforce's ``format_soql`` / ``quote_soql_value`` (checked in
1.12.10): they escape the eight named sequences of "Quoted String Escape
Sequences" (https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm)
exactly as ``soql_quote`` does (a test holds the two to it), but pass every
other control character through raw, where the page offers ``\\uXXXX``; and
importing them would load simple-salesforce and requests into the pure core
(``steps`` and the plan's estimate count with these functions), which the
architecture test and ruff's banned-API rule keep in ``salesforce.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote_plus

__all__ = ["SOQL_MAX_CHARS", "QUERY_SAFE", "soql_quote", "encode_q", "in_query_head", "in_batches",
           "ValueTooLong", "COUNT_CONTACTS_HEAD", "COUNT_CONTACTS_TAIL"]

SOQL_MAX_CHARS = 100_000          # MALFORMED_QUERY above this
# Characters RFC 3986 allows as they are in a query string. Leaving the quotes, commas
# and at-signs of an ``Email IN ('a@x.com', …)`` list unescaped fits about a third more
# addresses into each request URL than percent-encoding them would.
QUERY_SAFE = "'@,()*"

_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\b": "\\b", "\f": "\\f"}


# How many Contacts point at each of a list of Accounts (apply, before deleting Accounts).
COUNT_CONTACTS_HEAD = "SELECT AccountId, COUNT(Id) cnt FROM Contact WHERE AccountId IN ("
COUNT_CONTACTS_TAIL = ") GROUP BY AccountId"


class ValueTooLong(ValueError):
    """One value does not fit any query."""

    def __init__(self, value: str):
        super().__init__(f"a value is too long for one query ({len(value)} characters): {value[:60]!r}…")
        self.value = value


def soql_quote(value: str) -> str:
    """A SOQL string literal, quoted and escaped (backslash escapes for the reserved
    and named characters, a ``\\u`` escape with four hex digits for any other control character)."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def encode_q(soql: str) -> str:
    """``soql`` as the value of ``?q=`` in a request URL."""
    return quote_plus(soql, safe=QUERY_SAFE)


def in_query_head(sobject: str, field: str, fields: Sequence[str]) -> str:
    """``SELECT f1, f2 FROM sobject WHERE field IN (`` (names already checked)."""
    return f"SELECT {', '.join(fields)} FROM {sobject} WHERE {field} IN ("


def in_batches(head: str, tail: str, values: Iterable[str], url_budget: int,
               max_chars: int = SOQL_MAX_CHARS) -> Iterator[list[str]]:
    """The quoted literals of ``values`` in batches: ``head + ','.join(batch) + tail`` fits
    ``url_budget`` characters of encoded query string and ``max_chars`` of SOQL.
    Raises ``ValueTooLong`` for a value that fits no query."""
    fixed_url = len(encode_q(head)) + len(encode_q(tail))
    fixed_chars = len(head) + len(tail)
    batch: list[str] = []
    url_len, chars = fixed_url, fixed_chars
    for value in values:
        literal = soql_quote(value)
        more_url = len(encode_q(literal)) + (1 if batch else 0)
        more_chars = len(literal) + (1 if batch else 0)
        if batch and (url_len + more_url > url_budget or chars + more_chars > max_chars):
            yield batch
            batch, url_len, chars = [], fixed_url, fixed_chars
            more_url, more_chars = len(encode_q(literal)), len(literal)
        if url_len + more_url > url_budget or chars + more_chars > max_chars:
            raise ValueTooLong(value)
        batch.append(literal)
        url_len, chars = url_len + more_url, chars + more_chars
    if batch:
        yield batch
