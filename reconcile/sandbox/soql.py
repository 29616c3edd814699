"""A small SOQL: tokenizer, recursive-descent parser and the predicate/ordering
helpers the store runs a query with.

Supported::

    SELECT item[, item...] FROM sobject
      [WHERE condition] [GROUP BY field[, field...]]
      [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST][, ...]] [LIMIT n] [OFFSET n]

    item      := field | COUNT() | COUNT(field) [alias]
    condition := term (AND term)* | term (OR term)*     -- mixing needs parentheses
    term      := NOT term | '(' condition ')'
               | field (= | != | <> | < | <= | > | >= | LIKE) literal
               | field [NOT] IN '(' literal[, literal...] ')'
    literal   := 'quoted string' | number | true | false | null | date | datetime

String comparisons are case-insensitive, as for every non-unique field in
Salesforce. Errors are :class:`SoqlError` carrying Salesforce's errorCode
(MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE, INVALID_QUERY_FILTER_OPERATOR).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconcile.sandbox import describe, ids

MAX_QUERY_LENGTH = 100_000

KEYWORDS = frozenset(
    "select from where and or not in like group by order asc desc nulls first last "
    "limit offset true false null having".split()
)

_ESCAPES = {
    "n": "\n", "N": "\n", "r": "\r", "R": "\r", "t": "\t", "T": "\t",
    "b": "\b", "B": "\b", "f": "\f", "F": "\f",
    '"': '"', "'": "'", "\\": "\\",
}
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})"
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\w:])")
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?(?![\w.])")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_PLAIN_RE = re.compile(r"[^'\\\\]+")
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")


class SoqlError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str  # ident | string | number | date | datetime | op | punct | eof
    text: str
    pos: int
    value: Any = None
    like: str | None = None  # for strings: the pattern with LIKE escapes kept


def _malformed(query: str, pos: int, what: str) -> SoqlError:
    line_start = query.rfind("\n", 0, pos) + 1
    row = query.count("\n", 0, pos) + 1
    col = pos - line_start + 1
    shown = query if len(query) <= 500 else query[:500] + "..."
    return SoqlError(
        "MALFORMED_QUERY",
        f"\n{shown}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{what}",
    )


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            tokens.append(_read_string(query, i))
            i = tokens[-1].pos + len(tokens[-1].text)
            continue
        if ch in "(),":
            tokens.append(Token("punct", ch, i))
            i += 1
            continue
        op = next((o for o in _OPERATORS if query.startswith(o, i)), None)
        if op:
            tokens.append(Token("op", op, i))
            i += len(op)
            continue
        for kind, regex in (("datetime", _DATETIME_RE), ("date", _DATE_RE),
                            ("number", _NUMBER_RE), ("ident", _IDENT_RE)):
            m = regex.match(query, i)
            if m:
                text = m.group(0)
                value: Any = text
                if kind == "datetime":
                    value = _parse_datetime(text)
                elif kind == "date":
                    value = text + "T00:00:00.000+0000"
                elif kind == "number":
                    value = float(text) if "." in text else int(text)
                tokens.append(Token(kind, text, i, value))
                i = m.end()
                break
        else:
            raise _malformed(query, i, f"unexpected token: '{ch}'")
    tokens.append(Token("eof", "", n))
    return tokens


def _read_string(query: str, start: int) -> Token:
    out: list[str] = []
    like: list[str] = []
    i = start + 1
    n = len(query)
    while i < n:
        plain = _PLAIN_RE.match(query, i)
        if plain:
            out.append(plain.group(0))
            like.append(plain.group(0))
            i = plain.end()
            continue
        ch = query[i]
        if ch == "'":
            return Token("string", query[start:i + 1], start, "".join(out), "".join(like))
        if ch == "\\":
            if i + 1 >= n:
                break
            nxt = query[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                like.append("\\\\" if nxt == "\\" else _ESCAPES[nxt])
                i += 2
                continue
            if nxt in "_%":
                out.append(nxt)
                like.append("\\" + nxt)
                i += 2
                continue
            if nxt == "u":
                hexdigits = query[i + 2:i + 6]
                if len(hexdigits) == 4 and all(c in "0123456789abcdefABCDEF" for c in hexdigits):
                    out.append(chr(int(hexdigits, 16)))
                    like.append(out[-1])
                    i += 6
                    continue
            raise _malformed(query, i, "Invalid string literal '" + query[start:i + 2]
                             + "'. Illegal character sequence '\\" + nxt + "' in string literal.")
        out.append(ch)
        like.append(ch)
        i += 1
    raise _malformed(query, start, "unexpected token: unterminated string literal")


def _parse_datetime(text: str) -> str:
    iso = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", iso):
        iso = iso[:-2] + ":" + iso[-2:]
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return format_stamp(moment)


def format_stamp(moment: datetime) -> str:
    """Salesforce's JSON datetime: ``2026-11-25T08:00:00.000+0000``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


# -- the AST -------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRef:
    name: str  # canonical after binding
    pos: int


@dataclass(frozen=True)
class Count:
    field: FieldRef | None
    alias: str


@dataclass(frozen=True)
class Compare:
    field: FieldRef
    op: str  # = != < <= > >= like
    value: Any
    like: str | None = None


@dataclass(frozen=True)
class In:
    field: FieldRef
    values: tuple
    negated: bool


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    terms: tuple


@dataclass(frozen=True)
class Not:
    term: Any


@dataclass
class Query:
    text: str
    sobject: str
    select: list  # FieldRef | Count
    where: Any = None
    group_by: list = field(default_factory=list)
    order_by: list = field(default_factory=list)  # (FieldRef, descending, nulls_last)
    limit: int | None = None
    offset: int = 0

    @property
    def is_aggregate(self) -> bool:
        return bool(self.group_by) or any(isinstance(item, Count) for item in self.select)

    @property
    def is_count_only(self) -> bool:
        """``SELECT COUNT() FROM ...``: the answer is totalSize alone."""
        return (len(self.select) == 1 and isinstance(self.select[0], Count)
                and self.select[0].field is None)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    # helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, tok: Token | None = None, what: str | None = None) -> SoqlError:
        tok = tok or self.tok
        if what is None:
            what = ("unexpected token: <EOF>" if tok.kind == "eof"
                    else f"unexpected token: {tok.text}")
        return _malformed(self.text, tok.pos, what)

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text.lower() in words

    def take_kw(self, word: str) -> Token:
        if not self.is_kw(word):
            raise self.error()
        tok = self.tok
        self.i += 1
        return tok

    def take_punct(self, ch: str) -> Token:
        if self.tok.kind != "punct" or self.tok.text != ch:
            raise self.error()
        tok = self.tok
        self.i += 1
        return tok

    def at_punct(self, ch: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text == ch

    def ident(self) -> FieldRef:
        tok = self.tok
        if tok.kind != "ident" or tok.text.lower() in KEYWORDS:
            raise self.error()
        self.i += 1
        return FieldRef(tok.text, tok.pos)

    def integer(self) -> int:
        tok = self.tok
        if tok.kind != "number" or not isinstance(tok.value, int) or tok.value < 0:
            raise self.error()
        self.i += 1
        return tok.value

    # grammar
    def query(self) -> Query:
        self.take_kw("select")
        select = [self.select_item(0)]
        while self.at_punct(","):
            self.i += 1
            select.append(self.select_item(sum(isinstance(s, Count) for s in select)))
        self.take_kw("from")
        obj = self.ident()
        query = Query(self.text, obj.name, select)
        query.sobject_pos = obj.pos  # type: ignore[attr-defined]
        if self.is_kw("where"):
            self.i += 1
            query.where = self.condition()
        if self.is_kw("group"):
            self.i += 1
            self.take_kw("by")
            query.group_by.append(self.ident())
            while self.at_punct(","):
                self.i += 1
                query.group_by.append(self.ident())
        if self.is_kw("order"):
            self.i += 1
            self.take_kw("by")
            query.order_by.append(self.order_item())
            while self.at_punct(","):
                self.i += 1
                query.order_by.append(self.order_item())
        if self.is_kw("limit"):
            self.i += 1
            query.limit = self.integer()
        if self.is_kw("offset"):
            self.i += 1
            query.offset = self.integer()
        if self.tok.kind != "eof":
            raise self.error()
        return query

    def select_item(self, n_aggregates: int):
        if self.is_kw("count") and self.tokens[self.i + 1].text == "(":
            self.i += 2
            target = None if self.at_punct(")") else self.ident()
            self.take_punct(")")
            alias = f"expr{n_aggregates}"
            if self.tok.kind == "ident" and self.tok.text.lower() not in KEYWORDS:
                alias = self.tok.text
                self.i += 1
            return Count(target, alias)
        return self.ident()

    def order_item(self):
        ref = self.ident()
        descending = False
        if self.is_kw("asc", "desc"):
            descending = self.tok.text.lower() == "desc"
            self.i += 1
        nulls_last = descending
        if self.is_kw("nulls"):
            self.i += 1
            if not self.is_kw("first", "last"):
                raise self.error()
            nulls_last = self.tok.text.lower() == "last"
            self.i += 1
        return (ref, descending, nulls_last)

    def condition(self):
        first = self.term()
        if not self.is_kw("and", "or"):
            return first
        op = self.tok.text.lower()
        terms = [first]
        while self.is_kw("and", "or"):
            if self.tok.text.lower() != op:
                raise self.error()  # SOQL needs parentheses to mix AND and OR
            self.i += 1
            terms.append(self.term())
        return BoolOp(op, tuple(terms))

    def term(self):
        if self.is_kw("not"):
            self.i += 1
            return Not(self.term())
        if self.at_punct("("):
            self.i += 1
            inner = self.condition()
            self.take_punct(")")
            return inner
        ref = self.ident()
        if self.is_kw("in") or (self.is_kw("not") and self.tokens[self.i + 1].text.lower() == "in"):
            negated = self.is_kw("not")
            self.i += 2 if negated else 1
            self.take_punct("(")
            values = [self.literal()[0]]
            while self.at_punct(","):
                self.i += 1
                values.append(self.literal()[0])
            self.take_punct(")")
            return In(ref, tuple(values), negated)
        if self.is_kw("like"):
            self.i += 1
            tok = self.tok
            if tok.kind != "string":
                raise self.error()
            self.i += 1
            return Compare(ref, "like", tok.value, tok.like)
        if self.tok.kind != "op":
            raise self.error()
        op = "!=" if self.tok.text == "<>" else self.tok.text
        self.i += 1
        value, _ = self.literal()
        return Compare(ref, op, value)

    def literal(self):
        tok = self.tok
        if tok.kind in ("string", "number", "date", "datetime"):
            self.i += 1
            return tok.value, tok
        if tok.kind == "ident" and tok.text.lower() in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[tok.text.lower()], tok
        raise self.error()


def parse(text: str) -> Query:
    """Parse and bind a query against the sandbox schema (raises SoqlError)."""
    if len(text) > MAX_QUERY_LENGTH:
        raise SoqlError(
            "MALFORMED_QUERY",
            f"Query string was longer than {MAX_QUERY_LENGTH:,} characters",
        )
    parser = _Parser(text)
    query = parser.query()
    _bind(query)
    return query


# -- binding: names against the schema ----------------------------------------


def _bind(query: Query) -> None:
    sobject = describe.canonical_sobject(query.sobject)
    if sobject is None:
        pos = query.sobject_pos  # type: ignore[attr-defined]
        raise SoqlError(
            "INVALID_TYPE",
            _malformed(query.text, pos, "").message.rstrip("\n")
            + f"\nsObject type '{query.sobject}' is not supported. If you are attempting to use "
            "a custom object, be sure to append the '__c' after the entity name. Please "
            "reference your WSDL or the describe call for the appropriate names.",
        )
    query.sobject = sobject
    names = describe.CANONICAL[sobject]

    def bind(ref: FieldRef) -> FieldRef:
        canonical = names.get(ref.name.lower())
        if canonical is None:
            raise SoqlError(
                "INVALID_FIELD",
                _malformed(query.text, ref.pos, "").message.rstrip("\n")
                + f"\nNo such column '{ref.name}' on entity '{sobject}'. If you are attempting "
                "to use a custom field, be sure to append the '__c' after the custom field "
                "name. Please reference your WSDL or the describe call for the appropriate names.",
            )
        return FieldRef(canonical, ref.pos)

    select: list[FieldRef | Count] = []
    for item in query.select:
        if isinstance(item, Count):
            select.append(Count(bind(item.field) if item.field else None, item.alias))
        else:
            select.append(bind(item))
    query.select = select
    query.group_by = [bind(ref) for ref in query.group_by]
    query.order_by = [(bind(ref), desc, nl) for ref, desc, nl in query.order_by]
    query.where = _bind_condition(query, query.where, bind)
    if query.is_aggregate:
        grouped = {ref.name for ref in query.group_by}
        for item in query.select:
            if isinstance(item, FieldRef) and item.name not in grouped:
                raise _malformed(query.text, item.pos,
                                 f"Field must be grouped or aggregated: {item.name}")
        if query.is_count_only and len(query.select) != 1:
            raise _malformed(query.text, 0, "COUNT() must be the only element in the SELECT list")


def _bind_condition(query: Query, node, bind):
    if node is None:
        return None
    if isinstance(node, BoolOp):
        return BoolOp(node.op, tuple(_bind_condition(query, t, bind) for t in node.terms))
    if isinstance(node, Not):
        return Not(_bind_condition(query, node.term, bind))
    ref = bind(node.field)
    ftype = describe.FIELDS[query.sobject][ref.name].type
    if isinstance(node, In):
        return In(ref, tuple(_coerce(query, ftype, v) for v in node.values), node.negated)
    return Compare(ref, node.op, _coerce(query, ftype, node.value), node.like)


def _coerce(query: Query, ftype: str, value):
    """Literal -> the form values are stored in (ids 18-char, strings folded)."""
    if value is None:
        return None
    if ftype in ("id", "reference"):
        if not isinstance(value, str):
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
        normalized = ids.normalize(value)
        if normalized is None:
            raise SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
        return normalized
    if isinstance(value, str):
        return value if ftype == "datetime" else value.casefold()
    return value


# -- evaluation ----------------------------------------------------------------


def _like_regex(pattern: str) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def compile_predicate(node) -> Callable[[dict], bool]:
    """A function record -> bool for a bound WHERE tree (None: always true)."""
    if node is None:
        return lambda record: True
    if isinstance(node, BoolOp):
        parts = [compile_predicate(t) for t in node.terms]
        if node.op == "and":
            return lambda record: all(p(record) for p in parts)
        return lambda record: any(p(record) for p in parts)
    if isinstance(node, Not):
        inner = compile_predicate(node.term)
        return lambda record: not inner(record)
    name = node.field.name

    def get(record):
        value = record.get(name)
        return value.casefold() if isinstance(value, str) and name not in _EXACT else value

    if isinstance(node, In):
        values = frozenset(node.values)
        if node.negated:
            return lambda record: get(record) not in values
        return lambda record: get(record) in values
    op, literal = node.op, node.value
    if op == "=":
        return lambda record: get(record) == literal
    if op == "!=":
        return lambda record: get(record) != literal
    if op == "like":
        regex = _like_regex(node.like or "")
        return lambda record: isinstance(record.get(name), str) and bool(
            regex.fullmatch(record.get(name)))
    compare = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
               ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op]

    def ordered(record):
        value = get(record)
        if value is None or literal is None:
            return False
        try:
            return compare(value, literal)
        except TypeError:
            return False

    return ordered


_EXACT = frozenset({"Id", "AccountId", "CreatedDate", "LastModifiedDate", "SystemModstamp"})


def sort_key(name: str, descending: bool, nulls_last: bool):
    """Key for one ORDER BY item (apply keys right-to-left with stable sorts)."""
    def key(record):
        value = record.get(name)
        if value is None:
            # nulls sort as if they were smallest / largest per NULLS FIRST/LAST
            return (1 if nulls_last != descending else -1, "")
        if isinstance(value, str) and name not in _EXACT:
            value = value.casefold()
        return (0, value)
    return key
