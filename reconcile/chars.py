"""Characters a person cannot see: control characters, zero-width and bidi marks.

One definition shared by input validation (``inputs.py`` refuses them) and the
renderers (``render`` shows them escaped, so a value from the org cannot hide
text, reorder a line or drive a terminal). Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

__all__ = ["INVISIBLE", "first_invisible", "describe", "escape_invisible", "escape_tree", "scripts"]

# C0 and C1 controls and DEL; zero-width space/joiners, LRM/RLM, ALM; bidi embeddings,
# overrides and isolates; word joiner and invisible operators; the BOM / zero-width
# no-break space; soft hyphen.
INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
                       "\u2060-\u2064\u2066-\u2069\ufeff]")


def describe(char: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE``; controls have no Unicode name, so ``U+0000 control``."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X} control character"


def first_invisible(text: str) -> re.Match[str] | None:
    return INVISIBLE.search(text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# What a CSV cell may keep: the csv module quotes tabs and line breaks, and a spreadsheet
# shows them as whitespace.
_INVISIBLE_IN_CSV = re.compile(INVISIBLE.pattern.replace("\x00-\x1f", "\x00-\x08\x0b\x0c\x0e-\x1f"))


def escape_invisible(text: str, *, csv_cell: bool = False) -> str:
    """``text`` with every invisible character written as a visible escape (``\\x00``,
    ``\\u202e``): what a renderer shows for a value taken from the org. ``csv_cell``
    keeps tabs and line breaks (quoted by the CSV writer, harmless in a spreadsheet)."""
    pattern = _INVISIBLE_IN_CSV if csv_cell else INVISIBLE
    if pattern.search(text) is None:   # the common case: no copy
        return text
    return pattern.sub(_escape, text)


def scripts(text: str) -> set[str]:
    """The scripts of the letters in ``text`` (first word of each letter's Unicode name:
    LATIN, CYRILLIC, GREEK, …); digits and punctuation have none."""
    out = set()
    for char in text:
        if char.isalpha():
            out.add(unicodedata.name(char, "UNKNOWN").split(" ")[0])
    return out


def escape_tree(value: Any) -> Any:
    """``escape_invisible`` applied to every string (keys too) in nested dicts and lists."""
    if isinstance(value, str):
        return escape_invisible(value)
    if isinstance(value, dict):
        return {escape_tree(k): escape_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_tree(v) for v in value]
    return value
