"""Salesforce record ids: 15-character case-sensitive ids, and the 18-character
form whose last three characters encode the case of the first fifteen.

Layout of the ids the sandbox makes: 3-char key prefix (``003`` Contact,
``00Q`` Lead, ``001`` Account, ``00D`` organization, ``01g`` query locator),
a 2-char pod, a reserved ``0`` and a 9-digit base-62 counter. Base-62 digits
are ordered ``0-9A-Za-z`` (ASCII order), so ids of one prefix sort in creation
order.
"""

from __future__ import annotations

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALNUM = frozenset(_BASE62)

KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "Organization": "00D",
    "DuplicateRule": "0Bm",
}
SOBJECT_BY_PREFIX = {prefix: name for name, prefix in KEY_PREFIXES.items()}
QUERY_LOCATOR_PREFIX = "01g"
POD = "Dn"


def case_suffix(id15: str) -> str:
    """The three characters that make a 15-char id case-insensitively unique."""
    out = []
    for start in (0, 5, 10):
        bits = 0
        for offset, ch in enumerate(id15[start:start + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << offset
        out.append(_SUFFIX_ALPHABET[bits])
    return "".join(out)


def base62(n: int, width: int) -> str:
    digits = []
    while n:
        n, r = divmod(n, 62)
        digits.append(_BASE62[r])
    text = "".join(reversed(digits)) or "0"
    if len(text) > width:
        raise ValueError(f"counter {n} does not fit {width} base-62 digits")
    return text.rjust(width, "0")


def make_id(prefix: str, counter: int) -> str:
    """The 18-character id number ``counter`` of a key prefix."""
    id15 = f"{prefix}{POD}0{base62(counter, 9)}"
    return id15 + case_suffix(id15)


def normalize(value: object) -> str | None:
    """The canonical 18-character form of a 15- or 18-character id, or None
    when ``value`` is not a well-formed id. An 18-character id is accepted in
    any letter case: its suffix restores the case of the first fifteen."""
    if not isinstance(value, str) or len(value) not in (15, 18):
        return None
    if not all(ch in _ALNUM for ch in value):
        return None
    if len(value) == 15:
        return value + case_suffix(value)
    suffix = value[15:].upper()
    chars = []
    for i, ch in enumerate(value[:15]):
        pos = _SUFFIX_ALPHABET.find(suffix[i // 5])
        if pos < 0:
            return None
        chars.append(ch.upper() if pos & (1 << (i % 5)) else ch.lower())
    id15 = "".join(chars)
    if case_suffix(id15) != suffix:
        return None
    return id15 + suffix


def sobject_of(record_id: str) -> str | None:
    """The sObject a (normalized) id belongs to, by key prefix."""
    return SOBJECT_BY_PREFIX.get(record_id[:3])
