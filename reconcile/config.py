"""Configuration: field names and status values (orgs differ), thresholds,
the archive directory and the API version.

Defaults are SPEC §2's. A ``reconcile.toml`` in the working directory (or the
file named by ``--config`` / ``RECONCILE_CONFIG``) overrides any of them::

    [fields]
    contact_status = "Contact_Status__c"
    [values]
    lead_reactivate = "Open - Not Contacted"
    [apply]
    api_share = 0.8
    [approval]
    allowed_signers = "allowed_signers"   # relative to this file
    require_signature = true
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from reconcile.errors import ConfigError

# Winter '27, the current release on 2026-12-02: "Winter '27 (API version 68.0)" in
# https://developer.salesforce.com/docs/atlas.en-us.apexref.meta/apexref/apex_releasenotes.htm
DEFAULT_API_VERSION = "68.0"
# What one Bulk API 2.0 ingest job costs in API calls when every record is saved: create,
# upload, close and two status polls; a create job also reads its successful results (the
# new ids). The failed and unprocessed result files are read only when the job reports
# failed or unprocessed records (an update or delete then also reads the successful ones
# only if the counts leave a record unaccounted for).
BULK_CALLS_PER_JOB = 5
# One Bulk API 2.0 upload: "upload data that does not exceed 100 MB" (150 MB once base64
# encoded: https://developer.salesforce.com/docs/platform/api-asynch/guide/upload-job-data.html).
BULK_UPLOAD_BYTES = 100_000_000
# Records a rolling 24 hours may upload through Bulk API 2.0 ingest jobs (the only record
# limit; the org splits a job into 10,000-record batches itself:
# https://developer.salesforce.com/docs/atlas.en-us.228.0.api_bulk_v2.meta/api_bulk_v2/bulk_api_2_limits.htm).
BULK_RECORDS_PER_DAY = 150_000_000
# ... and one Bulk API 2.0 query: create, two polls, one page of results.
BULK_QUERY_CALLS = 4
# Objects whose writes send ``Sforce-Auto-Assign: FALSE`` (the REST Assignment Rule header
# applies to Accounts, Cases and Leads; without it the active assignment rules run:
# https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_autoassign.htm).
# Bulk API 2.0 has no such header, so apply writes them through Collections only.
ASSIGNMENT_RULE_SOBJECTS = ("Lead", "Account")


def bulk_job_calls(action: str) -> int:
    """API calls of one Bulk API 2.0 ingest job that saves every record (``action``:
    create / update / delete, or the Bulk operation insert / update / delete)."""
    return BULK_CALLS_PER_JOB + (1 if str(action) in ("create", "insert") else 0)


def bulk_query_calls(rows: int, config: Config) -> int:
    """What one Bulk API 2.0 query over ``rows`` records costs: create, two polls, and
    one results page per ``bulk_max_records`` rows (at least one)."""
    return BULK_QUERY_CALLS - 1 + max(1, math.ceil(rows / config.bulk_max_records))


def worth_counting(soql_calls: int, config: Config) -> bool:
    """Whether asking the org how many rows a Bulk query would read (one ``COUNT()``
    request) can pay off against ``soql_calls`` batched ``IN (…)`` queries: only when
    even a one-page Bulk query plus the count costs fewer calls."""
    return 1 + bulk_query_calls(0, config) < soql_calls


def bulk_is_cheaper(soql_calls: int, rows: int | None, config: Config) -> bool:
    """The read path by cost, for one object: ONE Bulk query over the object's ``rows``
    rows (its whole table of non-empty values) when that costs fewer API calls than
    ``soql_calls`` batched queries; batched queries when the rows are unknown."""
    return rows is not None and bulk_query_calls(rows, config) < soql_calls


@dataclass(frozen=True)
class Config:
    # Contact status lives in a custom picklist (Contact has no native active flag).
    contact_status_field: str = "Contact_Status__c"
    contact_active: str = "Active"
    contact_inactive: str = "Inactive"
    # Lead status is the standard Status picklist.
    lead_status_field: str = "Status"
    lead_inactive: str = "Inactive"
    lead_reactivate: str = "Open - Not Contacted"
    # A Lead whose Status is one of these (or empty) is not active.
    lead_inactive_statuses: tuple[str, ...] = ("Disqualified", "Inactive")
    email_field: str = "Email"
    title_field: str = "Title"
    account_name_field: str = "Name"

    api_version: str = DEFAULT_API_VERSION
    # Writes: sObject Collections up to this many records; Bulk API 2.0 above bulk_threshold.
    collection_size: int = 200
    retrieve_size: int = 2000
    bulk_threshold: int = 2_000
    # Bulk API 2.0 writes: at most this many records and bytes of CSV per ingest job (one
    # journal frame each); a group is cut into as few jobs as these allow, of even sizes.
    bulk_job_size: int = BULK_RECORDS_PER_DAY
    bulk_job_bytes: int = BULK_UPLOAD_BYTES
    # Rows asked for per bulk query results page (``maxRecords``).
    bulk_max_records: int = 100_000
    # Polling a bulk job: first wait in seconds (short: a small job is often done by then),
    # doubled up to the cap; give up waiting after bulk_timeout_seconds in all.
    bulk_poll_seconds: float = 0.1
    bulk_poll_max_seconds: float = 30.0
    bulk_timeout_seconds: float = 3600.0
    # Stop before the org's daily API usage would pass this share of its allowance.
    api_share: float = 0.8
    # Retries of transient failures: attempts and first backoff in seconds.
    max_attempts: int = 5
    backoff_seconds: float = 0.5
    # SOQL: the longest request URL (bytes) a batched ``Email IN (...)`` query may use.
    max_query_url: int = 15_000

    archive_dir: Path = field(default_factory=lambda: Path("plans"))

    # Signed approvals (reconcile/signing.py). Paths relative to reconcile.toml's folder.
    allowed_signers: str = ""        # ssh-keygen ALLOWED SIGNERS file: who may approve
    require_signature: bool = False  # apply refuses an unsigned or badly signed approval
    signing_key: str = ""            # approve signs with this key when --sign is not given

    def contact_fields(self) -> tuple[str, ...]:
        """Fields read for each Contact in the snapshot (``outcomes.fields_read`` adds
        any field an outcome writes that is not named here)."""
        return ("Id", "Email", "FirstName", "LastName", self.title_field,
                self.contact_status_field, "AccountId", "LastModifiedDate", "SystemModstamp")

    def lead_fields(self) -> tuple[str, ...]:
        """Fields read for each Lead in the snapshot."""
        return ("Id", "Email", "FirstName", "LastName", self.title_field,
                self.lead_status_field, "Company", "IsConverted", "LastModifiedDate", "SystemModstamp")


_SECTIONS = {
    "fields": {"contact_status": "contact_status_field", "lead_status": "lead_status_field",
               "email": "email_field", "title": "title_field"},
    "values": {"contact_active": "contact_active", "contact_inactive": "contact_inactive",
               "lead_inactive": "lead_inactive", "lead_reactivate": "lead_reactivate",
               "lead_inactive_statuses": "lead_inactive_statuses"},
    "apply": {"collection_size": "collection_size", "bulk_threshold": "bulk_threshold",
              "api_share": "api_share", "max_attempts": "max_attempts",
              "backoff_seconds": "backoff_seconds", "bulk_job_size": "bulk_job_size",
              "bulk_job_bytes": "bulk_job_bytes"},
    "salesforce": {"api_version": "api_version",
                   "bulk_max_records": "bulk_max_records", "bulk_poll_seconds": "bulk_poll_seconds",
                   "bulk_poll_max_seconds": "bulk_poll_max_seconds",
                   "bulk_timeout_seconds": "bulk_timeout_seconds"},
    "archive": {"dir": "archive_dir"},
    "approval": {"allowed_signers": "allowed_signers", "require_signature": "require_signature",
                 "signing_key": "signing_key"},
}
# Values that name a file: read relative to the configuration file's folder.
_PATHS = ("allowed_signers", "signing_key")


def load_config(path: Path | None = None, *, archive: Path | None = None,
                env: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file, then the environment, then explicit options."""
    env = dict(os.environ) if env is None else env
    values: dict[str, object] = {}
    if path is None and env.get("RECONCILE_CONFIG"):
        path = Path(env["RECONCILE_CONFIG"])
    if path is None and Path("reconcile.toml").is_file():
        path = Path("reconcile.toml")
    if path is not None:
        values.update(_read_toml(path))
    if env.get("SALESFORCE_API_VERSION"):
        values["api_version"] = env["SALESFORCE_API_VERSION"].lstrip("v")
    if env.get("RECONCILE_ARCHIVE"):
        values["archive_dir"] = Path(env["RECONCILE_ARCHIVE"])
    if archive is not None:
        values["archive_dir"] = Path(archive)
    config = Config(**values)  # type: ignore[arg-type]
    if not 0 < config.api_share <= 1:
        raise ConfigError(f"{path or 'configuration'}: apply.api_share must be between 0 and 1, got {config.api_share}")
    if not 1 <= config.collection_size <= 200:
        raise ConfigError(f"{path or 'configuration'}: apply.collection_size must be 1..200, got {config.collection_size}")
    return config


def _read_toml(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    known = {f.name: f for f in dataclasses.fields(Config)}
    out: dict[str, object] = {}
    for section, table in data.items():
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(_SECTIONS)}")
        for key, value in table.items():
            name = _SECTIONS[section].get(key)
            if name is None:
                raise ConfigError(f"{path}: unknown key {section}.{key}; known: {', '.join(_SECTIONS[section])}")
            default = getattr(Config(), name)
            if isinstance(default, tuple):
                value = tuple(value)
            elif isinstance(default, Path):
                value = Path(value)
            elif isinstance(default, float) and isinstance(value, int):
                value = float(value)
            if not isinstance(value, type(default)):
                raise ConfigError(f"{path}: {section}.{key} must be {type(default).__name__}, got {value!r}")
            if name in _PATHS and value:
                value = str(path.parent / Path(str(value)).expanduser())
            out[name] = value
    assert set(out) <= set(known)
    return out
