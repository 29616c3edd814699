"""Characters a person cannot see: control characters, zero-width and bidi marks.

One definition shared by input validation (``inputs.py`` refuses them) and the
renderers (``render`` shows them escaped, so a value from the org cannot hide
text, reorder a line or drive a terminal). Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["INVISIBLE", "first_invisible", "describe", "escape_invisible", "scripts"]

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


def escape_invisible(text: str) -> str:
    """``text`` with every invisible character written as a visible escape (``\\x00``,
    ``\\u202e``): what a renderer shows for a value taken from the org."""
    if INVISIBLE.search(text) is None:   # the common case: no copy
        return text
    return INVISIBLE.sub(_escape, text)


def scripts(text: str) -> set[str]:
    """The scripts of the letters in ``text`` (first word of each letter's Unicode name:
    LATIN, CYRILLIC, GREEK, …); digits and punctuation have none."""
    out = set()
    for char in text:
        if char.isalpha():
            out.add(unicodedata.name(char, "UNKNOWN").split(" ")[0])
    return out
