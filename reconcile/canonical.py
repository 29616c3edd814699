"""Canonical JSON: the one encoding of every document reconcile hashes or
chains — plans, approvals, results, journal lines, the apply lock's info.

Sorted keys, no insignificant white space, UTF-8 as is (json's C encoder: fast
at 100k changes). Two equal documents give the same bytes, so a SHA-256 of
them identifies the content.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> str:
    """One line of canonical JSON, without the newline."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def canonical_bytes(value: Any) -> bytes:
    """Canonical JSON as UTF-8, ending in one newline: the form files are written in."""
    return (canonical_json(value) + "\n").encode("utf-8")
