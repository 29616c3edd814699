"""Bulk API 2.0 in the sandbox org: ingest and query jobs, with Salesforce's
shapes (``/services/data/vXX.X/jobs/...``).

Ingest: ``POST jobs/ingest`` opens a job; ``PUT jobs/ingest/{id}/batches``
uploads its CSV (201); ``PATCH jobs/ingest/{id}`` ``{"state": "UploadComplete"}``
closes it and the rows go through the store's API write rules (field checks,
restricted picklists, the duplicate rule on insert, the faults' lock and
validation hooks), ``#N/A`` setting a field to null and an empty cell leaving it
unchanged. Result files (``successfulResults``, ``failedResults``,
``unprocessedrecords``) list rows in a shuffled (deterministic per job) order,
as Salesforce does not keep upload order.

Query: ``POST jobs/query`` runs the SOQL (the sandbox's own parser) and the
job starts ``UploadComplete``; ``GET jobs/query/{id}/results`` pages the CSV
with ``maxRecords`` / ``locator`` and the ``Sforce-Locator`` (``"null"`` at the
end) and ``Sforce-NumberOfRecords`` headers.

Jobs are processed when they are closed (ingest) or created (query); the first
``polls_in_progress`` status reads after that still say ``InProgress`` so that
clients exercise their polling. With ``process_delay`` (seconds) an ingest job
runs that long after its close, in the background, as Salesforce processes jobs
asynchronously ("Salesforce will start processing the job at this point",
https://developer.salesforce.com/docs/atlas.en-us.224.0.api_bulk_v2.meta/api_bulk_v2/creating_bulk_requests.htm):
until then it is ``UploadComplete``/``InProgress`` and its records are untouched,
so a client killed right after the close finds them unwritten.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconcile.sandbox import describe, ids, soql

JOB_PREFIX = "750"
USER_ID = ids.make_id("005", 1)
DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^",
              "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_OPERATIONS = ("insert", "update", "delete")
FINAL_STATES = ("JobComplete", "Failed", "Aborted")
NULL = "#N/A"
# The org's daily Bulk allowances (/limits): batches are shared by Bulk API and Bulk
# API 2.0, where only ingest jobs use them, one per 10,000 records
# (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_understanding_bulk2_ingest.htm);
# query jobs and their result storage have their own
# (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/bulk_api_2_limits.htm).
DAILY_BATCHES = 15_000
DAILY_QUERY_JOBS = 10_000
DAILY_QUERY_STORAGE_MB = 1_048_576
RECORDS_PER_BATCH = 10_000


class BulkError(Exception):
    """A request-level refusal: the server answers ``[{errorCode, message}]``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Answer:
    status: int
    body: Any = None                 # JSON-able
    csv: bytes | None = None         # a text/csv body instead
    headers: dict = field(default_factory=dict)
    summary: str = ""
    write: bool = False
    applied: list = field(default_factory=list)
    lead: bool = False
    drop: bool = False
    after_commit: int | None = None  # fault: answer this status although the request was carried out


@dataclass
class Job:
    id: str
    kind: str                        # "ingest" | "query"
    operation: str
    object: str
    version: str
    created: str
    delimiter: str = "COMMA"
    line_ending: str = "LF"
    state: str = "Open"
    final_state: str = "JobComplete"
    polls_left: int = 0
    modstamp: str = ""
    error_message: str | None = None
    data: bytes | None = None
    header: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)
    failed: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    processed: int = 0
    failures: int = 0
    running: bool = False            # closed, processing not done yet (``process_delay``)
    query: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


class BulkJobs:
    """The org's bulk jobs (in memory, like the query cursors)."""

    def __init__(self, store, faults, stamp: Callable[[], str], polls_in_progress: int = 1,
                 on_applied: Callable[[list], None] = lambda applied: None):
        self.store = store
        self.faults = faults
        self._stamp = stamp
        self.polls_in_progress = polls_in_progress
        self.process_delay = 0.0
        self._on_applied = on_applied        # records written in the background
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        # What /limits reports as used today (the sandbox's day is its lifetime).
        self.batches_used = 0
        self.query_jobs_used = 0
        self.query_storage_mb_used = 0

    # -- routing -------------------------------------------------------------

    def handle(self, method: str, version: str, rest: list[str], params: dict[str, list[str]],
               body: bytes, content_type: str) -> Answer:
        """``rest`` is the path after ``jobs/``: [kind] | [kind, id] | [kind, id, what]."""
        if not rest or rest[0] not in ("ingest", "query"):
            raise BulkError(404, "NOT_FOUND", "The requested resource does not exist")
        kind = rest[0]
        if len(rest) == 1:
            if method == "POST":
                return self.create(kind, version, _json_object(body))
            if method == "GET":
                return self.list_jobs(kind)
            raise _not_allowed(method, "GET,POST")
        job = self._job(kind, rest[1])
        if len(rest) == 2:
            if method == "GET":
                return Answer(200, self.info(job, poll=True), summary=f"200 {kind} job {job.state}")
            if method == "PATCH":
                return self.set_state(job, _json_object(body))
            if method == "DELETE":
                with self._lock:
                    self._jobs.pop(job.id, None)
                return Answer(204, summary=f"204 deleted {kind} job")
            raise _not_allowed(method, "GET,PATCH,DELETE")
        what = rest[2].lower()
        if len(rest) == 3 and kind == "ingest" and what == "batches":
            if method != "PUT":
                raise _not_allowed(method, "PUT")
            return self.upload(job, body, content_type)
        if len(rest) == 3 and kind == "ingest" and what in (
                "successfulresults", "failedresults", "unprocessedrecords"):
            if method != "GET":
                raise _not_allowed(method, "GET")
            return self.ingest_results(job, what)
        if len(rest) == 3 and kind == "query" and what == "results":
            if method != "GET":
                raise _not_allowed(method, "GET")
            return self.query_results(job, params)
        raise BulkError(404, "NOT_FOUND", "The requested resource does not exist")

    def _job(self, kind: str, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(ids.normalize(job_id) or job_id)
        if job is None or job.kind != kind:
            raise BulkError(404, "NOT_FOUND", "The requested resource does not exist")
        return job

    # -- jobs ------------------------------------------------------------------

    def create(self, kind: str, version: str, spec: dict) -> Answer:
        delimiter = spec.get("columnDelimiter") or "COMMA"
        line_ending = spec.get("lineEnding") or "LF"
        if (spec.get("contentType") or "CSV") != "CSV":
            raise BulkError(400, "INVALIDJOB", f"InvalidJob : Invalid content type: {spec.get('contentType')}")
        if delimiter not in DELIMITERS:
            raise BulkError(400, "INVALIDJOB", f"InvalidJob : Invalid column delimiter: {delimiter}")
        if line_ending not in LINE_ENDINGS:
            raise BulkError(400, "INVALIDJOB", f"InvalidJob : Invalid line ending: {line_ending}")
        stamp = self._stamp()
        if kind == "ingest":
            operation = spec.get("operation")
            if operation not in INGEST_OPERATIONS:
                raise BulkError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
            sobject = describe.canonical_sobject(str(spec.get("object") or ""))
            if sobject not in describe.WRITABLE_SOBJECTS:
                raise BulkError(400, "INVALIDJOB",
                                f"InvalidJob : Unable to find object: {spec.get('object')}")
            job = Job(self.store.new_id(JOB_PREFIX), "ingest", operation, sobject, version, stamp,
                      delimiter, line_ending, modstamp=stamp)
        else:
            operation = spec.get("operation") or "query"
            if operation not in ("query", "queryAll"):
                raise BulkError(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
            text = spec.get("query")
            if not isinstance(text, str) or not text.strip():
                raise BulkError(400, "INVALIDJOB", "InvalidJob : a query is required")
            try:
                parsed = soql.parse(text)
            except soql.SoqlError as exc:
                raise BulkError(400, exc.code, exc.message) from None
            if parsed.is_aggregate:
                raise BulkError(400, "INVALIDJOB", "InvalidJob : aggregate queries are not "
                                "supported by Bulk API 2.0 query")
            job = Job(self.store.new_id(JOB_PREFIX), "query", operation, parsed.sobject, version,
                      stamp, delimiter, line_ending, modstamp=stamp, query=text)
            self._run_query(job, parsed)
            size = len(_csv_bytes(job.columns, job.rows, job.delimiter, job.line_ending))
            with self._lock:
                self.query_jobs_used += 1
                self.query_storage_mb_used += -(-size // (1024 * 1024))
        with self._lock:
            self._jobs[job.id] = job
        info = self.info(job, poll=False)
        if kind == "ingest":
            info["contentUrl"] = f"services/data/v{version}/jobs/ingest/{job.id}/batches"
        return Answer(200, info, summary=f"200 {kind} job {job.operation} {job.object}")

    def list_jobs(self, kind: str) -> Answer:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.kind == kind]
        return Answer(200, {"done": True, "records": [self.info(j, poll=False) for j in jobs],
                            "nextRecordsUrl": None}, summary=f"200 {kind} jobs={len(jobs)}")

    def info(self, job: Job, *, poll: bool) -> dict:
        with self._lock:
            if poll and job.state in ("UploadComplete", "InProgress"):
                if job.running:
                    job.state = "InProgress"
                elif job.polls_left > 0:
                    job.polls_left -= 1
                    job.state = "InProgress"
                else:
                    job.state = job.final_state
            out: dict[str, Any] = {
                "id": job.id, "operation": job.operation, "object": job.object,
                "createdById": USER_ID, "createdDate": job.created,
                "systemModstamp": job.modstamp, "state": job.state,
                "concurrencyMode": "Parallel", "contentType": "CSV",
                "apiVersion": float(job.version),
                "jobType": "V2Ingest" if job.kind == "ingest" else "V2Query",
                "lineEnding": job.line_ending, "columnDelimiter": job.delimiter,
            }
            if job.kind == "query":
                out["query"] = job.query
            if poll:
                out["numberRecordsProcessed"] = job.processed
                if job.kind == "ingest":
                    out["numberRecordsFailed"] = job.failures
                out.update(retries=0, totalProcessingTime=0, apiActiveProcessingTime=0,
                           apexProcessingTime=0)
                if job.error_message:
                    out["errorMessage"] = job.error_message
            return out

    def set_state(self, job: Job, spec: dict) -> Answer:
        wanted = spec.get("state")
        if wanted == "Aborted":
            with self._lock:
                if job.state in FINAL_STATES:
                    raise BulkError(400, "INVALIDJOBSTATE",
                                    f"Aborting already {job.state} Job not allowed")
                if job.state == "Open" and job.kind == "ingest":
                    job.unprocessed = _rows(job)[1] if job.data else []
                job.state = job.final_state = "Aborted"
                job.modstamp = self._stamp()
            return Answer(200, self.info(job, poll=False), summary="200 job Aborted")
        if wanted != "UploadComplete" or job.kind != "ingest":
            raise BulkError(400, "INVALIDJOBSTATE", f"Invalid state: {wanted}")
        with self._lock:
            if job.state != "Open":
                raise BulkError(409, "INVALIDJOBSTATE",
                                f"Job is not Open (it is {job.state}); it cannot be closed")
            job.state = "UploadComplete"
            job.polls_left = self.polls_in_progress
            job.running = self.process_delay > 0
        if job.running:
            timer = threading.Timer(self.process_delay, self._process_later, (job,))
            timer.daemon = True
            timer.start()
            applied: list = []
        else:
            applied = self._process(job)
        info = self.info(job, poll=False)
        return Answer(200, info, write=True, applied=applied, lead=job.object == "Lead",
                      drop=self.faults.take_drop(),
                      after_commit=self.faults.take_after_commit("bulk_close"),
                      summary=f"200 close ingest {job.operation} {job.object} "
                              f"records={job.processed} failed={job.failures}")

    # -- ingest ------------------------------------------------------------------

    def upload(self, job: Job, body: bytes, content_type: str) -> Answer:
        if not content_type.lower().startswith("text/csv"):
            raise BulkError(400, "INVALIDJOB",
                            f"InvalidJob : the content type must be text/csv, not {content_type}")
        with self._lock:
            if job.state != "Open":
                raise BulkError(409, "INVALIDJOBSTATE",
                                f"Job is not Open (it is {job.state}); data cannot be uploaded")
            job.data = body  # a re-sent upload replaces the first
        return Answer(201, summary=f"201 upload {len(body)} bytes",
                      after_commit=self.faults.take_after_commit("bulk_upload"))

    def _process(self, job: Job) -> list:
        """Run the job's rows through the store; fill the result files."""
        failure = self.faults.take_bulk_failure()
        header, rows = _rows(job) if job.data else ([], [])
        names = describe.CANONICAL[job.object]
        unknown = [h for h in header if h.lower() not in names]
        if failure is None and not job.data:
            failure = "InvalidBatch : no data was uploaded to this job"
        if failure is None and unknown:
            failure = f"InvalidBatch : Field name not found : {unknown[0]}"
        if failure is None and job.operation in ("update", "delete") and "id" not in (
                h.lower() for h in header):
            failure = "InvalidBatch : Field name not found : Id"
        if failure is not None:
            with self._lock:
                job.header, job.unprocessed = header, rows
                job.final_state, job.error_message = "Failed", failure
                job.modstamp = self._stamp()
            return []
        canonical = [names[h.lower()] for h in header]
        records = [_record(job.object, canonical, row) for row in rows]
        with self._lock:
            self.batches_used += max(1, -(-len(rows) // RECORDS_PER_BATCH))
        if job.operation == "insert":
            results, applied = self.store.api_create(
                [{"attributes": {"type": job.object}, **r} for r in records],
                default_type=job.object)
        elif job.operation == "update":
            results, applied = self.store.api_update(records, default_type=job.object,
                                                     hook=self.faults.row_error)
        else:
            results, applied = self.store.api_delete([r.get("Id") or "" for r in records],
                                                     default_type=job.object,
                                                     hook=self.faults.row_error)
        successful, failed = [], []
        for row, result in zip(rows, results, strict=True):
            padded = (row + [""] * len(header))[:len(header)]
            if result["success"]:
                created = "true" if job.operation == "insert" else "false"
                successful.append([result["id"], created, *padded])
            else:
                record_id = result.get("id") or ""
                if record_id:
                    record_id = ids.normalize(record_id) or record_id
                failed.append([record_id, _sf_error(result["errors"][0]), *padded])
        shuffle = random.Random(job.id)
        shuffle.shuffle(successful)
        shuffle.shuffle(failed)
        with self._lock:
            job.header, job.successful, job.failed = header, successful, failed
            job.processed, job.failures = len(rows), len(failed)
            job.modstamp = self._stamp()
        return applied

    def _process_later(self, job: Job) -> None:
        applied = self._process(job)
        self._on_applied(applied)
        with self._lock:
            job.running = False

    def ingest_results(self, job: Job, what: str) -> Answer:
        with self._lock:
            if job.state not in FINAL_STATES:
                raise BulkError(409, "INVALIDJOBSTATE",
                                f"Job is {job.state}; results are available once it is complete")
            if what == "successfulresults":
                columns, rows = ["sf__Id", "sf__Created", *job.header], job.successful
            elif what == "failedresults":
                columns, rows = ["sf__Id", "sf__Error", *job.header], job.failed
            else:
                columns, rows = list(job.header), job.unprocessed
        payload = _csv_bytes(columns, rows, job.delimiter, job.line_ending)
        return Answer(200, csv=payload, summary=f"200 {what} rows={len(rows)}")

    # -- query -------------------------------------------------------------------

    def _run_query(self, job: Job, parsed) -> None:
        failure = self.faults.take_bulk_failure()
        job.state, job.polls_left = "UploadComplete", self.polls_in_progress
        if failure is not None:
            job.final_state, job.error_message = "Failed", failure
            return
        rows = self.store.run_query(parsed, include_deleted=job.operation == "queryAll")
        names = [item.name for item in parsed.select]
        types = {name: spec.type for name, spec in describe.FIELDS[parsed.sobject].items()} \
            if parsed.sobject in describe.FIELDS else {}
        job.columns = names
        job.rows = [[_cell(row.get(n), types.get(n)) for n in names] for row in rows]
        job.processed = len(job.rows)

    def query_results(self, job: Job, params: dict[str, list[str]]) -> Answer:
        with self._lock:
            if job.state != "JobComplete":
                raise BulkError(412, "JOB_NOT_COMPLETE" if job.state not in FINAL_STATES
                                else "INVALIDJOBSTATE", f"Job is {job.state}, not JobComplete")
        locator = (params.get("locator") or [""])[-1]
        raw_max = (params.get("maxRecords") or [""])[-1]
        start = 0
        if locator and locator != "null":
            try:
                start = int(base64.urlsafe_b64decode(locator + "=" * (-len(locator) % 4)).decode())
            except (ValueError, UnicodeDecodeError):
                raise BulkError(400, "INVALID_LOCATOR", f"Invalid locator: {locator}") from None
        if raw_max and (not raw_max.isdigit() or int(raw_max) < 1):
            raise BulkError(400, "INVALIDJOB", f"Invalid maxRecords: {raw_max}")
        size = int(raw_max) if raw_max else max(len(job.rows), 1)
        page = job.rows[start:start + size]
        end = start + len(page)
        next_locator = "null" if end >= len(job.rows) else \
            base64.urlsafe_b64encode(str(end).encode()).decode().rstrip("=")
        payload = _csv_bytes(job.columns, page, job.delimiter, job.line_ending)
        return Answer(200, csv=payload,
                      headers={"Sforce-Locator": next_locator, "Sforce-NumberOfRecords": str(len(page))},
                      summary=f"200 query results rows={len(page)} from {start}")


# -- helpers -------------------------------------------------------------------------


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BulkError(400, "JSON_PARSER_ERROR", f"Unexpected character in request body: {exc}") from None
    if not isinstance(value, dict):
        raise BulkError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return value


def _not_allowed(method: str, allowed: str) -> BulkError:
    return BulkError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")


def _rows(job: Job) -> tuple[list[str], list[list[str]]]:
    text = (job.data or b"").decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[job.delimiter])
    lines = [row for row in reader if row]
    return (lines[0], lines[1:]) if lines else ([], [])


def _record(sobject: str, columns: list[str], row: list[str]) -> dict:
    """One CSV row → field values: an empty cell is left out (unchanged), ``#N/A`` is null."""
    out: dict[str, Any] = {}
    for name, cell in zip(columns, row, strict=False):
        if cell == "":
            continue
        if cell == NULL:
            out[name] = None
            continue
        spec = describe.FIELDS[sobject].get(name)
        if spec is not None and spec.type == "boolean" and cell.lower() in ("true", "false"):
            out[name] = cell.lower() == "true"
        else:
            out[name] = cell
    return out


def _sf_error(error: dict) -> str:
    """``CODE:message:field1,field2 --`` as in Bulk failedResults."""
    return f"{error['statusCode']}:{error['message']}:{','.join(error.get('fields') or ())} --"


def _cell(value: Any, ftype: str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if ftype == "datetime" and isinstance(value, str) and value.endswith("+0000"):
        return value[:-5] + "Z"   # Bulk query CSV writes UTC datetimes with Z
    return str(value)


def _csv_bytes(columns: list[str], rows: list[list[str]], delimiter: str, line_ending: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=DELIMITERS[delimiter], lineterminator=LINE_ENDINGS[line_ending],
                        quoting=csv.QUOTE_ALL)
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")
