"""Canonical JSON: the one encoding of every document reconcile hashes or
chains — plans, approvals, results, journal lines, the apply lock's info.

Sorted keys, no insignificant white space, UTF-8 as is (json's C encoder: fast
at 100k changes). Two equal documents give the same bytes, so a SHA-256 of
them identifies the content. ``canonical_chunks`` gives the same bytes in
pieces, so a 100,000-change plan or result is never held as one string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
# Items of a large top-level array or object encoded at a time.
CHUNK_ITEMS = 2_000


def canonical_json(value: Any) -> str:
    """One line of canonical JSON, without the newline."""
    return _ENCODER.encode(value)


def canonical_bytes(value: Any) -> bytes:
    """Canonical JSON as UTF-8, ending in one newline: the form files are written in."""
    if isinstance(value, Mapping):
        return b"".join(canonical_chunks(value))
    return (canonical_json(value) + "\n").encode("utf-8")


def canonical_chunks(doc: Mapping[str, Any], *, items: tuple[str, Iterable[Any]] | None = None,
                     chunk_items: int = CHUNK_ITEMS) -> Iterator[bytes]:
    """``canonical_bytes(doc)`` in pieces (the same bytes): a top-level array or object
    longer than ``chunk_items`` is encoded that many items at a time. ``items`` =
    (key, iterable) adds one more member, an array read from the iterable as it is
    encoded (never held whole)."""
    extra_key = items[0] if items is not None else None
    if extra_key is not None and extra_key in doc:
        raise ValueError(f"canonical_chunks: {extra_key!r} is both in the document and streamed")
    yield b"{"
    for i, key in enumerate(sorted([*doc, *([extra_key] if extra_key is not None else [])])):
        yield (("," if i else "") + _ENCODER.encode(key) + ":").encode("utf-8")
        value = items[1] if items is not None and key == extra_key else doc[key]
        if key == extra_key or (isinstance(value, list) and len(value) > chunk_items):
            yield from _array_chunks(value, chunk_items)
        elif isinstance(value, dict) and len(value) > chunk_items:
            keys = sorted(value)
            yield b"{"
            for at in range(0, len(keys), chunk_items):
                part = _ENCODER.encode({k: value[k] for k in keys[at:at + chunk_items]})[1:-1]
                yield (("," if at else "") + part).encode("utf-8")
            yield b"}"
        else:
            yield _ENCODER.encode(value).encode("utf-8")
    yield b"}\n"


def _array_chunks(values: Iterable[Any], chunk_items: int) -> Iterator[bytes]:
    yield b"["
    batch: list[Any] = []
    first = True
    for value in values:
        batch.append(value)
        if len(batch) == chunk_items:
            yield (("" if first else ",") + _ENCODER.encode(batch)[1:-1]).encode("utf-8")
            first, batch = False, []
    if batch:
        yield (("" if first else ",") + _ENCODER.encode(batch)[1:-1]).encode("utf-8")
    yield b"]"
