"""The sandbox org's data: records of Contact, Lead and Account, thread-safe,
with the write rules Salesforce applies (field checks, restricted picklists,
required fields, the duplicate rule, delete protection), timestamps, indexes
for the equality lookups SOQL runs most, and JSON persistence.

Writes come in two kinds:

* admin writes from Python (``insert``, ``insert_many``, ``edit``,
  ``touch_system``, ``delete``): no duplicate rule, no faults; ``insert`` may
  set the audit fields (CreatedDate, LastModifiedDate, SystemModstamp), as a
  data load with "Set Audit Fields upon Record Creation" can;
* API writes (``api_create``, ``api_update``, ``api_delete``), which answer
  with Salesforce SaveResult items and honour ``allOrNone``.

Every write is a transaction with one timestamp, strictly later than every
timestamp the org has handed out before (so a write in the same millisecond
still moves the stamps). Records in one transaction share its stamp, as in
Salesforce.

Choices where Salesforce is configurable: duplicate rules are the standard
ones as shipped (``duplicates.py``: Contact and Lead rules that match both
objects by e-mail; alert on create, report only on edit), switchable per org
with ``configure_duplicate_rule`` (an alert or a Block on edit, a rule off)
and kept in the state. Deleting an Account that Contacts still point at
fails with DELETE_FAILED instead of cascading.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconcile.sandbox import describe, duplicates, ids, soql
from reconcile.sandbox.describe import FIELDS, STRING_TYPES, WRITABLE_SOBJECTS

STATE_FORMAT = 1
INDEXED_FIELDS = ("Email", "Name", "AccountId")
_SYSTEM_STAMPS = ("CreatedDate", "LastModifiedDate", "SystemModstamp")
# permissive, like Salesforce: one @, no spaces, a dot in the domain
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")

# A hook the server passes to API writes: (operation, record id) -> an item
# error dict to answer with instead, or None. Operations: "update", "delete".
FaultHook = Callable[[str, str], dict | None]


def item_error(code: str, message: str, fields: Iterable[str] = ()) -> dict:
    return {"statusCode": code, "message": message, "fields": list(fields)}


class WriteError(ValueError):
    """An admin write broke a rule; ``.error`` is the Salesforce item error."""

    def __init__(self, error: dict):
        super().__init__(f"{error['statusCode']}: {error['message']}")
        self.error = error


def _parse_stamp(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")


def _index_key(field_name: str, value: Any) -> Any:
    return value.casefold() if isinstance(value, str) and field_name != "AccountId" else value


class Store:
    """The org. All public methods are thread-safe and return copies."""

    def __init__(self, state: dict | None = None, *, on_change: Callable[[], None] | None = None):
        self.lock = threading.RLock()
        self._on_change = on_change
        self._active: dict[str, dict[str, dict]] = {name: {} for name in WRITABLE_SOBJECTS}
        self._deleted: dict[str, dict[str, dict]] = {name: {} for name in WRITABLE_SOBJECTS}
        self._index: dict[str, dict[str, dict[Any, set[str]]]] = {
            name: {f: {} for f in INDEXED_FIELDS if f in FIELDS[name]}
            for name in WRITABLE_SOBJECTS
        }
        self._counters: dict[str, int] = {}
        self._last_stamp = ""
        self.org_id = ids.make_id("00D", 1)
        self.org_name = "Reconcile Sandbox"
        # What ``SELECT IsSandbox, OrganizationType FROM Organization`` answers; the
        # demo org is a sandbox, a test may make it production (not part of the state).
        self.is_sandbox = True
        self.organization_type = "Enterprise Edition"
        self.duplicate_rules: list[duplicates.Rule] = duplicates.standard_rules()
        if state:
            self._load(state)

    # -- persistence -------------------------------------------------------

    def _load(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported sandbox state format: {state.get('format')!r}")
        self.org_id = state["org"]["Id"]
        self.org_name = state["org"]["Name"]
        self._counters = dict(state.get("counters", {}))
        self._last_stamp = state.get("last_stamp", "")
        self.duplicate_rules = duplicates.rules_from_state(state.get("duplicate_rules"))
        for sobject, records in state.get("records", {}).items():
            for record in records:
                self._put(sobject, dict(record))
        for sobject, records in state.get("deleted", {}).items():
            for record in records:
                self._deleted[sobject][record["Id"]] = dict(record)
        for bucket in (self._active, self._deleted):
            for records in bucket.values():
                for record in records.values():
                    self._last_stamp = max(self._last_stamp, record.get("SystemModstamp") or "")
                    self._bump_counter(record["Id"])

    def to_state(self) -> dict:
        """The whole org as JSON-able data (also the state file's content)."""
        with self.lock:
            return {
                "format": STATE_FORMAT,
                "org": {"Id": self.org_id, "Name": self.org_name},
                "counters": dict(self._counters),
                "last_stamp": self._last_stamp,
                "duplicate_rules": duplicates.rules_to_state(self.duplicate_rules),
                "records": {s: [dict(r) for r in recs.values()] for s, recs in self._active.items()},
                "deleted": {s: [dict(r) for r in recs.values()] for s, recs in self._deleted.items()},
            }

    def restore(self, state: dict) -> None:
        """Put the org back as ``to_state()`` gave it (a composite request with
        ``allOrNone`` rolls every subrequest back this way)."""
        with self.lock:
            issued = dict(self._counters)      # ids handed out meanwhile stay used
            for bucket in (self._active, self._deleted):
                for records in bucket.values():
                    records.clear()
            for by_field in self._index.values():
                for values in by_field.values():
                    values.clear()
            self._load(state)
            for prefix, n in issued.items():
                self._counters[prefix] = max(n, self._counters.get(prefix, 0))

    def snapshot(self) -> dict:
        """The org as data, to compare before/after: ``{"org": ..., "records":
        {sobject: {id: fields}}, "deleted": {sobject: {id: fields}}}``."""
        with self.lock:
            return {
                "org": {"Id": self.org_id, "Name": self.org_name},
                "records": {s: copy.deepcopy(recs) for s, recs in self._active.items()},
                "deleted": {s: copy.deepcopy(recs) for s, recs in self._deleted.items()},
            }

    def save(self, path: Path) -> None:
        """Write the state atomically (temp file + rename)."""
        with self.lock:
            data = json.dumps(self.to_state(), ensure_ascii=False, separators=(",", ":"))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # -- clock and ids -----------------------------------------------------

    def _next_stamp(self) -> str:
        now = soql.format_stamp(datetime.now(UTC))
        if now <= self._last_stamp:
            later = _parse_stamp(self._last_stamp) + timedelta(milliseconds=1)
            now = soql.format_stamp(later)
        self._last_stamp = now
        return now

    def _bump_counter(self, record_id: str) -> None:
        prefix = record_id[:3]
        try:
            n = _base62_value(record_id[6:15])
        except ValueError:
            return
        if n > self._counters.get(prefix, 0):
            self._counters[prefix] = n

    def new_id(self, prefix: str) -> str:
        with self.lock:
            n = self._counters.get(prefix, 0) + 1
            self._counters[prefix] = n
            return ids.make_id(prefix, n)

    # -- low-level row storage (caller holds the lock) ---------------------

    def _put(self, sobject: str, record: dict) -> None:
        self._active[sobject][record["Id"]] = record
        for name, index in self._index[sobject].items():
            value = record.get(name)
            if value is not None:
                index.setdefault(_index_key(name, value), set()).add(record["Id"])

    def _remove(self, sobject: str, record_id: str) -> dict | None:
        record = self._active[sobject].pop(record_id, None)
        if record is not None:
            for name, index in self._index[sobject].items():
                value = record.get(name)
                if value is not None:
                    key = _index_key(name, value)
                    bucket = index.get(key)
                    if bucket is not None:
                        bucket.discard(record_id)
                        if not bucket:
                            del index[key]
        return record

    def _locate(self, record_id: str) -> tuple[str | None, dict | None, bool]:
        """(sobject, record, is_deleted) for a normalized id."""
        sobject = ids.sobject_of(record_id)
        if sobject not in self._active:
            return sobject, None, False
        record = self._active[sobject].get(record_id)
        if record is not None:
            return sobject, record, False
        record = self._deleted[sobject].get(record_id)
        return sobject, record, record is not None

    # -- reads -------------------------------------------------------------

    def records(self, sobject: str) -> list[dict]:
        """Copies of every live record of one type, in creation order."""
        with self.lock:
            return [dict(r) for r in self._active[sobject].values()]

    def deleted_records(self, sobject: str) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self._deleted[sobject].values()]

    def get(self, record_id: str, *, include_deleted: bool = False) -> dict | None:
        """A copy of one record (15- or 18-char id); None when unknown or
        deleted (deleted ones with ``include_deleted=True``, IsDeleted true)."""
        normalized = ids.normalize(record_id)
        if normalized is None:
            return None
        with self.lock:
            if ids.sobject_of(normalized) == "DuplicateRule":   # read-only rows (retrieve())
                return next((row for row in self._duplicate_rule_rows() if row["Id"] == normalized), None)
            _, record, deleted = self._locate(normalized)
            if record is None or (deleted and not include_deleted):
                return None
            return dict(record)

    def find(self, sobject: str, field_name: str, value: Any) -> list[dict]:
        """Live records whose ``field_name`` equals ``value`` (strings
        case-insensitively)."""
        with self.lock:
            if field_name in self._index[sobject]:
                hits = self._index[sobject][field_name].get(_index_key(field_name, value), ())
                return [dict(self._active[sobject][i]) for i in sorted(hits)]
            key = _index_key(field_name, value)
            return [dict(r) for r in self._active[sobject].values()
                    if _index_key(field_name, r.get(field_name)) == key]

    def count(self, sobject: str) -> int:
        with self.lock:
            return len(self._active[sobject])

    # -- field rules -------------------------------------------------------

    def _check(self, sobject: str, fields: dict, *, creating: bool,
               admin: bool = False) -> tuple[dict, dict | None]:
        """Canonical, coerced field values, or the first item error."""
        names = describe.CANONICAL[sobject]
        schema = FIELDS[sobject]
        clean: dict[str, Any] = {}
        readonly: list[str] = []
        for key, value in fields.items():
            if key == "attributes":
                continue
            canonical = names.get(key.lower())
            if canonical is None:
                return {}, item_error("INVALID_FIELD",
                                      f"No such column '{key}' on sobject of type {sobject}")
            spec = schema[canonical]
            if canonical == "Id":
                if creating:
                    return {}, item_error("INVALID_FIELD_FOR_INSERT_UPDATE",
                                          "cannot specify Id in an insert call", ["Id"])
                continue
            allowed = spec.createable if creating else spec.updateable
            if admin and creating and canonical in _SYSTEM_STAMPS:
                allowed = True  # audit fields on a data load
            if not allowed:
                readonly.append(canonical)
                continue
            clean[canonical] = value
        if readonly:
            return {}, item_error(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(readonly)}. Please check the "
                "security settings of this field and verify that it is read/write for your "
                "profile or permission set.",
                readonly,
            )
        for canonical, value in list(clean.items()):
            spec = schema[canonical]
            if spec.type in STRING_TYPES:
                if value is not None and not isinstance(value, str):
                    if isinstance(value, (bool, dict, list)):
                        return {}, _wrong_type(spec, value)
                    value = str(value)
                if value == "":
                    value = None
                if value is not None and spec.length and len(value) > spec.length:
                    return {}, item_error(
                        "STRING_TOO_LONG",
                        f"{spec.label}: data value too large: {value[:80]} "
                        f"(max length={spec.length})",
                        [canonical],
                    )
            elif spec.type == "boolean":
                if not isinstance(value, bool):
                    return {}, _wrong_type(spec, value)
            elif spec.type == "reference":
                if value in (None, ""):
                    value = None
                else:
                    target = ids.normalize(value)
                    if target is None or ids.sobject_of(target) not in spec.reference_to:
                        return {}, item_error(
                            "FIELD_INTEGRITY_EXCEPTION",
                            f"{spec.label}: id value of incorrect type: {value}", [canonical])
                    _, ref, deleted = self._locate(target)
                    if ref is None:
                        return {}, item_error("INVALID_CROSS_REFERENCE_KEY",
                                              f"{spec.label}: invalid cross reference id",
                                              [canonical])
                    if deleted:
                        return {}, item_error("ENTITY_IS_DELETED", "entity is deleted",
                                              [canonical])
                    value = target
            elif spec.type == "datetime":
                if not isinstance(value, str):
                    return {}, _wrong_type(spec, value)
                try:
                    value = soql.format_stamp(_parse_any_datetime(value))
                except ValueError:
                    return {}, _wrong_type(spec, value)
            if spec.type == "email" and value is not None and not _EMAIL_RE.match(value):
                return {}, item_error("INVALID_EMAIL_ADDRESS",
                                      f"{spec.label}: invalid email address: {value}",
                                      [canonical])
            if spec.restricted and value is not None and value not in spec.picklist:
                return {}, item_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                      f"bad value for restricted picklist field: {value}",
                                      [canonical])
            clean[canonical] = value
        missing = [
            name for name, spec in schema.items()
            if not spec.nillable and spec.createable and not spec.defaulted
            and (name in clean if not creating else True) and clean.get(name) is None
        ]
        if not creating:
            missing += [name for name, spec in schema.items()
                        if spec.defaulted and not spec.nillable and name in clean
                        and clean[name] is None and spec.updateable]
        if missing:
            return {}, item_error("REQUIRED_FIELD_MISSING",
                                  f"Required fields are missing: [{', '.join(missing)}]", missing)
        return clean, None

    def _new_record(self, sobject: str, clean: dict, stamp: str) -> dict:
        record = dict(_DEFAULTS[sobject])
        record.update(clean)
        record["Id"] = self.new_id(ids.KEY_PREFIXES[sobject])
        record["IsDeleted"] = False
        created = clean.get("CreatedDate") or stamp
        record["CreatedDate"] = created
        record["LastModifiedDate"] = clean.get("LastModifiedDate") or created
        record["SystemModstamp"] = max(clean.get("SystemModstamp") or record["LastModifiedDate"],
                                       record["LastModifiedDate"])
        if record["SystemModstamp"] > self._last_stamp:
            self._last_stamp = record["SystemModstamp"]
        _derive(sobject, record)
        return record

    def configure_duplicate_rule(self, name: str, *, active: bool | None = None,
                                 on_create: str | None = None, on_edit: str | None = None) -> None:
        """Change one duplicate rule (developer name or label) as an admin would in
        Setup: ``on_create`` / ``on_edit`` one of "allow" (report only), "alert", "block"."""
        with self.lock:
            self.duplicate_rules = duplicates.configure(
                self.duplicate_rules, name, active=active, on_create=on_create, on_edit=on_edit)
        self._changed()

    def _duplicate_rule_rows(self) -> list[dict]:
        return duplicates.rule_rows(self.duplicate_rules, lambda n: ids.make_id(ids.KEY_PREFIXES["DuplicateRule"], n),
                                    duplicates.RULES_CREATED)

    def _duplicate_error(self, sobject: str, email: Any, *, creating: bool, allow_save: bool,
                         version: str, record_id: str | None = None) -> dict | None:
        def holders(target: str, address: str) -> list[str]:
            return sorted(self._index[target]["Email"].get(address.casefold(), ()))
        if not isinstance(email, str):
            return None
        return duplicates.check(self.duplicate_rules, sobject, email, creating=creating,
                                allow_save=allow_save, holders=holders, version=version,
                                record_id=record_id)

    # -- admin writes (Python API) ------------------------------------------

    def insert(self, sobject: str, fields: dict) -> str:
        """Create a record as an admin would (no duplicate rule). Audit fields
        may be given; raises WriteError on a broken field rule."""
        return self.insert_many(sobject, [fields])[0]

    def insert_many(self, sobject: str, records: list[dict]) -> list[str]:
        """Create many records in one transaction (one stamp, one save)."""
        out: list[str] = []
        with self.lock:
            stamp = self._next_stamp()
            fast_keys = {n for n, s in FIELDS[sobject].items() if s.type in STRING_TYPES
                         and s.type not in ("email", "picklist")}
            for fields in records:
                if fields.keys() <= fast_keys and all(
                        isinstance(v, str) and len(v) <= FIELDS[sobject][k].length
                        for k, v in fields.items()):
                    clean = dict(fields)
                    missing = [n for n, s in FIELDS[sobject].items() if s.required
                               and not clean.get(n)]
                    if missing:
                        raise WriteError(item_error(
                            "REQUIRED_FIELD_MISSING",
                            f"Required fields are missing: [{', '.join(missing)}]", missing))
                else:
                    clean, error = self._check(sobject, fields, creating=True, admin=True)
                    if error:
                        raise WriteError(error)
                record = self._new_record(sobject, clean, stamp)
                self._put(sobject, record)
                out.append(record["Id"])
        self._changed()
        return out

    def edit(self, record_id: str, fields: dict) -> None:
        """"Someone else" edits a record: moves LastModifiedDate and SystemModstamp."""
        with self.lock:
            sobject, record = self._live(record_id)
            clean, error = self._check(sobject, fields, creating=False)
            if error:
                raise WriteError(error)
            self._apply_update(sobject, record, clean, self._next_stamp())
        self._changed()

    def touch_system(self, record_id: str) -> None:
        """Automation touches a record: moves SystemModstamp only."""
        with self.lock:
            _, record = self._live(record_id)
            record["SystemModstamp"] = self._next_stamp()
        self._changed()

    def delete(self, record_id: str) -> None:
        """Admin delete (to the recycle bin), no delete protection."""
        with self.lock:
            sobject, record = self._live(record_id)
            self._apply_delete(sobject, record["Id"], self._next_stamp())
        self._changed()

    def _live(self, record_id: str) -> tuple[str, dict]:
        normalized = ids.normalize(record_id)
        if normalized is None:
            raise KeyError(f"malformed id {record_id}")
        sobject, record, deleted = self._locate(normalized)
        if record is None or deleted:
            raise KeyError(f"no live record {record_id}")
        return sobject, record  # type: ignore[return-value]

    def _apply_update(self, sobject: str, record: dict, clean: dict, stamp: str) -> None:
        self._remove(sobject, record["Id"])
        record.update(clean)
        _derive(sobject, record)
        record["LastModifiedDate"] = stamp
        record["SystemModstamp"] = stamp
        self._put(sobject, record)

    def _apply_delete(self, sobject: str, record_id: str, stamp: str) -> None:
        record = self._remove(sobject, record_id)
        assert record is not None
        record["IsDeleted"] = True
        record["LastModifiedDate"] = stamp
        record["SystemModstamp"] = stamp
        self._deleted[sobject][record_id] = record

    # -- API writes ----------------------------------------------------------

    def _undo_point(self, record_id: str) -> tuple:
        sobject = ids.sobject_of(record_id)
        assert sobject is not None, record_id  # a record the store holds has a known prefix
        live = self._active[sobject].get(record_id)
        gone = self._deleted[sobject].get(record_id)
        return (sobject, record_id, dict(live) if live else None, dict(gone) if gone else None)

    def _rollback(self, undo: list[tuple]) -> None:
        for sobject, record_id, live, gone in reversed(undo):
            self._remove(sobject, record_id)
            self._deleted[sobject].pop(record_id, None)
            if live is not None:
                self._put(sobject, live)
            if gone is not None:
                self._deleted[sobject][record_id] = gone

    def _finish(self, results: list[dict], applied: list, undo: list, all_or_none: bool
                ) -> tuple[list[dict], list[tuple]]:
        if all_or_none and any(not r["success"] for r in results):
            self._rollback(undo)
            rolled = item_error(
                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "Record rolled back because not all records were valid and the request was "
                "using AllOrNone header")
            results = [r if not r["success"] else {"success": False, "errors": [dict(rolled)]}
                       for r in results]
            return results, []
        return results, applied

    def api_create(self, records: list[Any], *, all_or_none: bool = False,
                   default_type: str | None = None, allow_duplicates: bool = False,
                   version: str = duplicates.URL_VERSION) -> tuple[list[dict], list[tuple]]:
        """Collections/sObject create. Returns (SaveResults in request order,
        applied writes as (method, sobject, id, fields)). ``allow_duplicates``: the
        request said ``allowSave=true`` (passes duplicate rules that alert, not Block)."""
        results: list[dict] = []
        applied: list[tuple] = []
        undo: list[tuple] = []
        with self.lock:
            stamp = None
            for fields in records:
                if not isinstance(fields, dict):
                    results.append(_failed(item_error("JSON_PARSER_ERROR", "record is not an object")))
                    continue
                attrs = fields.get("attributes") or {}
                type_name = attrs.get("type") if isinstance(attrs, dict) else None
                type_name = type_name or default_type
                if not type_name:
                    results.append(_failed(item_error(
                        "INVALID_TYPE", "Must send a concrete entity type.")))
                    continue
                sobject = describe.canonical_sobject(type_name)
                if sobject is None:
                    results.append(_failed(item_error(
                        "INVALID_TYPE", f"sObject type '{type_name}' is not supported.")))
                    continue
                if sobject not in WRITABLE_SOBJECTS:
                    results.append(_failed(item_error(
                        "INVALID_TYPE_FOR_OPERATION", f"entity type cannot be inserted: {sobject}")))
                    continue
                clean, error = self._check(sobject, fields, creating=True)
                if error is None:
                    error = self._duplicate_error(sobject, clean.get("Email"), creating=True,
                                                  allow_save=allow_duplicates, version=version)
                if error:
                    results.append(_failed(error))
                    continue
                stamp = stamp or self._next_stamp()
                record = self._new_record(sobject, clean, stamp)
                undo.append((sobject, record["Id"], None, None))
                self._put(sobject, record)
                results.append({"id": record["Id"], "success": True, "errors": []})
                applied.append(("POST", sobject, record["Id"], dict(clean)))
            results, applied = self._finish(results, applied, undo, all_or_none)
        if applied:
            self._changed()
        return results, applied

    def api_update(self, records: list[Any], *, all_or_none: bool = False,
                   default_type: str | None = None, hook: FaultHook | None = None,
                   allow_duplicates: bool = False, version: str = duplicates.URL_VERSION,
                   ) -> tuple[list[dict], list[tuple]]:
        """Collections/sObject update (each record has ``id`` or ``Id``). Duplicate
        rules run when the update changes the e-mail."""
        results: list[dict] = []
        applied: list[tuple] = []
        undo: list[tuple] = []
        with self.lock:
            stamp = None
            for fields in records:
                if not isinstance(fields, dict):
                    results.append(_failed(item_error("JSON_PARSER_ERROR", "record is not an object")))
                    continue
                raw_id = fields.get("id", fields.get("Id"))
                attrs = fields.get("attributes") or {}
                type_name = (attrs.get("type") if isinstance(attrs, dict) else None) or default_type
                sobject, record, error = self._target(raw_id, type_name, "update")
                if error is None and hook is not None:
                    error = hook("update", record["Id"])  # type: ignore[index]
                if error is None:
                    body = {k: v for k, v in fields.items() if k not in ("id", "Id")}
                    clean, error = self._check(sobject, body, creating=False)  # type: ignore[arg-type]
                # on edit a rule runs only when a matched field's value changes
                # (https://help.salesforce.com/s/articleView?id=005237351&type=1)
                if error is None and clean.get("Email") is not None and clean["Email"] != record.get("Email"):  # type: ignore[union-attr]
                    error = self._duplicate_error(sobject, clean["Email"], creating=False,  # type: ignore[arg-type]
                                                  allow_save=allow_duplicates, version=version,
                                                  record_id=record["Id"])  # type: ignore[index]
                if error is None and hook is not None:
                    error = hook("validate", record["Id"])  # type: ignore[index]
                if error:
                    results.append(_failed(error, raw_id if record is not None else None))
                    continue
                stamp = stamp or self._next_stamp()
                undo.append(self._undo_point(record["Id"]))  # type: ignore[index]
                self._apply_update(sobject, record, clean, stamp)  # type: ignore[arg-type]
                results.append({"id": record["Id"], "success": True, "errors": []})  # type: ignore[index]
                applied.append(("PATCH", sobject, record["Id"], dict(clean)))  # type: ignore[index]
            results, applied = self._finish(results, applied, undo, all_or_none)
        if applied:
            self._changed()
        return results, applied

    def api_delete(self, raw_ids: list[str], *, all_or_none: bool = False,
                   default_type: str | None = None, hook: FaultHook | None = None,
                   ) -> tuple[list[dict], list[tuple]]:
        results: list[dict] = []
        applied: list[tuple] = []
        undo: list[tuple] = []
        with self.lock:
            stamp = None
            for raw_id in raw_ids:
                sobject, record, error = self._target(raw_id, default_type, "delete")
                if error is None and hook is not None:
                    error = hook("delete", record["Id"])  # type: ignore[index]
                if error is None and sobject == "Account":
                    children = self._index["Contact"]["AccountId"].get(record["Id"])  # type: ignore[index]
                    if children:
                        names = ", ".join(sorted(
                            self._active["Contact"][c]["Name"] or "" for c in children)[:5])
                        error = item_error(
                            "DELETE_FAILED",
                            f"Your attempt to delete {record['Name']} could not be completed "  # type: ignore[index]
                            f"because it is associated with the following contacts.: {names}")
                if error:
                    results.append(_failed(error, raw_id if record is not None else None))
                    continue
                stamp = stamp or self._next_stamp()
                undo.append(self._undo_point(record["Id"]))  # type: ignore[index]
                self._apply_delete(sobject, record["Id"], stamp)  # type: ignore[arg-type,index]
                results.append({"id": record["Id"], "success": True, "errors": []})  # type: ignore[index]
                applied.append(("DELETE", sobject, record["Id"], {}))  # type: ignore[index]
            results, applied = self._finish(results, applied, undo, all_or_none)
        if applied:
            self._changed()
        return results, applied

    def _target(self, raw_id: Any, type_name: str | None, operation: str
                ) -> tuple[str | None, dict | None, dict | None]:
        """(sobject, live record, error) for the id of an update or delete."""
        if raw_id in (None, ""):
            return None, None, item_error("MISSING_ARGUMENT",
                                          f"Id not specified in an {operation} call")
        normalized = ids.normalize(raw_id)
        if normalized is None:
            return None, None, item_error("MALFORMED_ID", f"malformed id {raw_id}")
        sobject = ids.sobject_of(normalized)
        wanted = describe.canonical_sobject(type_name) if type_name else None
        if sobject in describe.SCHEMA and sobject not in WRITABLE_SOBJECTS and wanted in (None, sobject):
            # a read-only object: the API only reads DuplicateRule (and Organization) rows
            return None, None, item_error("INVALID_TYPE_FOR_OPERATION",
                                          f"entity type cannot be {operation}d: {sobject}")
        if sobject not in WRITABLE_SOBJECTS or (type_name and wanted != sobject):
            label = wanted or type_name or "Record"
            return None, None, item_error("MALFORMED_ID",
                                          f"{label} ID: id value of incorrect type: {raw_id}", ["Id"])
        _, record, deleted = self._locate(normalized)
        if record is None:
            return sobject, None, item_error("INVALID_CROSS_REFERENCE_KEY",
                                             "invalid cross reference id")
        if deleted:
            return sobject, None, item_error("ENTITY_IS_DELETED", "entity is deleted")
        return sobject, record, None

    # -- queries ---------------------------------------------------------------

    def run_query(self, query: soql.Query, *, include_deleted: bool = False) -> list[dict]:
        """Matching records (copies of the selected and ordering fields and
        Id), ordered, limited. For an
        aggregate query: the AggregateResult rows (without attributes)."""
        with self.lock:
            if query.sobject == "Organization":
                rows = [{"Id": self.org_id, "Name": self.org_name, "IsSandbox": self.is_sandbox,
                         "OrganizationType": self.organization_type}]
            elif query.sobject == "DuplicateRule":
                rows = self._duplicate_rule_rows()
            else:
                rows = self._candidates(query.sobject, query.where, include_deleted)
            predicate = soql.compile_predicate(query.where)
            if query.is_aggregate:
                matched = [dict(r) for r in rows if predicate(r)]
            else:
                keep = {ref.name for ref in query.select} | {ref.name for ref, _, _ in query.order_by}
                keep.add("Id")
                matched = [{k: r.get(k) for k in keep} for r in rows if predicate(r)]
        if query.is_aggregate:
            matched = _aggregate(query, matched)
        for ref, descending, nulls_last in reversed(query.order_by):
            matched.sort(key=soql.sort_key(ref.name, descending, nulls_last), reverse=descending)
        if query.offset:
            matched = matched[query.offset:]
        if query.limit is not None:
            matched = matched[:query.limit]
        return matched

    def _candidates(self, sobject: str, where, include_deleted: bool) -> list[dict]:
        hits = self._index_lookup(sobject, where)
        active = self._active[sobject]
        deleted = self._deleted[sobject]
        if hits is None:
            rows = list(active.values())
            if include_deleted:
                rows += list(deleted.values())
                rows.sort(key=lambda r: r["Id"])
            return rows
        rows = [active[i] for i in hits if i in active]
        if include_deleted:
            # the recycle bin is not indexed: offer all of it to the predicate
            rows += list(deleted.values())
        rows.sort(key=lambda r: r["Id"])
        return rows

    def _index_lookup(self, sobject: str, node) -> set[str] | None:
        """Live ids that may match (a superset; Id literals as given), or
        None when a scan is needed."""
        if isinstance(node, soql.BoolOp):
            parts = [self._index_lookup(sobject, t) for t in node.terms]
            if node.op == "and":
                known = [p for p in parts if p is not None]
                return min(known, key=len) if known else None
            if any(p is None for p in parts):
                return None
            return set().union(*parts)  # type: ignore[arg-type]
        if isinstance(node, soql.Compare) and node.op == "=":
            values: tuple = (node.value,)
        elif isinstance(node, soql.In) and not node.negated:
            values = node.values
        else:
            return None
        name = node.field.name
        if name == "Id":
            # deleted ids may be wanted by queryAll; the caller filters
            return {v for v in values if v is not None}
        index = self._index[sobject].get(name)
        if index is None or None in values:
            return None
        out: set[str] = set()
        for value in values:
            out.update(index.get(value, ()))  # literals are already folded
        return out


_DEFAULTS = {sobject: {name: spec.default for name, spec in FIELDS[sobject].items()}
             for sobject in WRITABLE_SOBJECTS}


def _derive(sobject: str, record: dict) -> None:
    """Compound fields: a person's Name is FirstName + LastName."""
    if sobject in ("Contact", "Lead"):
        parts = [record.get("FirstName"), record.get("LastName")]
        record["Name"] = " ".join(p for p in parts if p) or None


def _aggregate(query: soql.Query, rows: list[dict]) -> list[dict]:
    group_names = [ref.name for ref in query.group_by]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = tuple(_index_key(n, row.get(n)) for n in group_names)
        groups.setdefault(key, []).append(row)
    if not group_names and not groups:
        groups[()] = []
    out = []
    for members in groups.values():
        result: dict[str, Any] = {}
        for item in query.select:
            if isinstance(item, soql.Count):
                if item.field is None:
                    result[item.alias] = len(members)
                else:
                    result[item.alias] = sum(1 for m in members if m.get(item.field.name) is not None)
            else:
                result[item.name] = members[0].get(item.name) if members else None
        out.append(result)
    return out


def _failed(error: dict, record_id: str | None = None) -> dict:
    result: dict[str, Any] = {"success": False, "errors": [error]}
    if record_id is not None:
        result = {"id": record_id, **result}
    return result


def _wrong_type(spec, value) -> dict:
    return item_error("INVALID_TYPE_ON_FIELD_IN_RECORD",
                      f"{spec.label}: value not of required type: {value}", [spec.name])


def _parse_any_datetime(text: str) -> datetime:
    iso = text.strip().replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", iso):
        iso = iso[:-2] + ":" + iso[-2:]
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _base62_value(text: str) -> int:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    n = 0
    for ch in text:
        pos = alphabet.find(ch)
        if pos < 0:
            raise ValueError(text)
        n = n * 62 + pos
    return n
