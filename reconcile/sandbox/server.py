"""The sandbox org's HTTPS server: the Salesforce REST endpoints reconcile
uses, with Salesforce's response and error shapes, on 127.0.0.1.

Request bodies come with ``Content-Length`` or ``Transfer-Encoding: chunked``.
Endpoints (``vXX.X`` is any version from 42.0 to 68.0)::

    GET    /services/data/                                versions (no auth, not counted)
    GET    /services/data/vXX.X/                          resources
    GET    /services/data/vXX.X/limits/
    GET    /services/data/vXX.X/query?q=  | queryAll?q=   SOQL (see soql.py), paged
    GET    /services/data/vXX.X/query/<locator>-<offset>  next page
    GET    /services/data/vXX.X/sobjects/[<type>/[describe/]]
    POST   /services/data/vXX.X/sobjects/<type>/          create one
    GET|PATCH|DELETE /services/data/vXX.X/sobjects/<type>/<id>
    POST|PATCH|DELETE /services/data/vXX.X/composite/sobjects   collections
    GET|POST /services/data/vXX.X/composite/sobjects/<type>     retrieve by ids
    POST   /services/data/vXX.X/composite              up to 25 subrequests (reads and writes,
                                                       @{ref.field} references, allOrNone)
    POST|GET /services/data/vXX.X/jobs/ingest | jobs/query        Bulk API 2.0 (see bulk.py)
    GET|PATCH|DELETE .../jobs/ingest/<id> | jobs/query/<id>
    PUT    .../jobs/ingest/<id>/batches                           CSV upload
    GET    .../jobs/ingest/<id>/successfulResults | failedResults | unprocessedrecords
    GET    .../jobs/query/<id>/results?maxRecords=&locator=
    POST   /services/oauth2/token, GET /services/oauth2/userinfo, GET /id/<org>/<user>
    POST   /services/Soap/u/NN.0                                  sign-in (see oauth.py; not API calls)
    GET|POST /__sandbox/faults, GET /__sandbox/stats, POST /__sandbox/stats/reset,
    GET /__sandbox/snapshot                                      test control (no auth)
"""

from __future__ import annotations

import email.utils
import hmac
import json
import re
import secrets
import socket
import ssl
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reconcile.sandbox import bulk, describe, ids, oauth, soql
from reconcile.sandbox.faults import Faults, Stats, commit_error
from reconcile.sandbox.store import Store

MIN_VERSION, MAX_VERSION = 42, 68
MAX_URI_BYTES = 16_384
MAX_BODY_BYTES = 150 * 1024 * 1024  # Bulk API 2.0's largest upload
MAX_COLLECTION = 200
MAX_COMPOSITE = 25
COMPOSITE_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
MAX_RETRIEVE = 2_000
DEFAULT_BATCH = 2_000
_VERSION_RE = re.compile(r"^v(\d{2})\.0$")
_REFERENCE_ID = re.compile(r"[A-Za-z0-9_]+")
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_SEASONS = ("Spring", "Summer", "Winter")


def _version_label(major: int) -> str:
    i = major - 42
    return f"{_SEASONS[i % 3]} '{18 + (i + 1) // 3}"


def versions_body() -> list[dict]:
    return [{"label": _version_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(MIN_VERSION, MAX_VERSION + 1)]


def error_body(code: str, message: str, fields: list[str] | None = None) -> list[dict]:
    entry: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    return [entry]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = error_body(code, message, fields)


NOT_FOUND = ("NOT_FOUND", "The requested resource does not exist")


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict = field(default_factory=dict)
    summary: str = ""
    write: bool = False
    applied: list = field(default_factory=list)
    lead: bool = False
    drop: bool = False  # close the connection instead of answering
    csv: bytes | None = None  # a text/csv body (Bulk API 2.0) instead of JSON
    content_type: str = "text/csv"  # of a ``csv`` body (SOAP login answers text/xml)


def after_commit_response(status: int, summary: str, **kw: Any) -> Response:
    """A write that was saved, answered with ``status`` by the ``fail_after_commit`` fault."""
    error = commit_error(status)
    note = f"{status} after saving: {summary} (fault)"
    if "text" in error:
        return Response(status, csv=error["text"], content_type="text/html", summary=note, **kw)
    return Response(status, error["body"], summary=note, **kw)


def load_seed(seed: str) -> dict | None:
    """The state of a named seed org: "demo" (the bundled demo org), "empty", or
    "scale:N" (a large org for N people, see ``scale.py``)."""
    from reconcile.sandbox import scale

    people = scale.parse_seed(seed)
    if people is not None:
        return scale.build_scale_org(people)
    if seed == "empty":
        return None
    if seed == "demo":
        text = resources.files("reconcile.sandbox").joinpath("demo_org.json").read_text("utf-8")
        return json.loads(text)
    raise ValueError(f"unknown seed {seed!r}: use 'demo', 'empty' or 'scale:N'")


class SandboxServer:
    """A Salesforce REST org on ``https://127.0.0.1:PORT``, served from a
    daemon thread. ``state_path``: JSON state loaded when it exists, else
    written from the seed; every write is saved to it atomically. ``None``
    keeps the org in memory."""

    def __init__(self, state_path: Path | str | None = None, seed: str = "demo",
                 port: int = 0, daily_api_limit: int = 15_000, host: str = "127.0.0.1",
                 session_seconds: float | None = None, soap_login: bool = True,
                 production: bool = False):
        self.state_path = Path(state_path) if state_path is not None else None
        self.host = host
        self._requested_port = port
        self.daily_api_limit = daily_api_limit
        self._save_lock = threading.Lock()
        state = None
        if self.state_path is not None and self.state_path.exists():
            state = json.loads(self.state_path.read_text("utf-8"))
        else:
            state = load_seed(seed)
        self.store = Store(state, on_change=self._persist)
        if production:
            self.store.is_sandbox = False
        if self.state_path is not None and not self.state_path.exists():
            self._persist()
        self.faults = Faults()
        self.stats = Stats()
        # Bulk API 2.0 jobs; ``bulk.polls_in_progress`` status reads say InProgress first.
        self.bulk = bulk.BulkJobs(self.store, self.faults,
                                  lambda: soql.format_stamp(datetime.now(UTC)),
                                  on_applied=self.stats.record_writes)
        self.token = f"{self.store.org_id[:15]}!{secrets.token_urlsafe(48)}"
        # The token endpoint, SOAP login and the sessions they issue (see oauth.py).
        self.oauth = oauth.OAuth(self.store.org_id, session_seconds, soap_login)
        self.api_used = 0
        self._usage_lock = threading.Lock()
        self._cursors: OrderedDict[str, tuple[list, int, str]] = OrderedDict()
        self._cursor_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.ca_path: Path | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> SandboxServer:
        import trustme  # the sandbox's own certificate authority

        ca = trustme.CA(organization_name="reconcile sandbox CA")
        leaf = ca.issue_cert(self.host, "localhost")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(context)
        if self.state_path is not None:
            self.ca_path = self.state_path.resolve().with_name(self.state_path.name + ".ca.pem")
        else:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="reconcile-sandbox-")
            self.ca_path = Path(self._tmpdir.name) / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_path))
        # The JWT connected app: its certificate verifies assertions, its key signs them.
        app_cert = ca.issue_cert("jwt-app.sandbox.invalid", key_type=trustme.KeyType.RSA)
        self.oauth.app.certificate_pem = app_cert.cert_chain_pems[0].bytes()
        key_path = self.ca_path.with_name(self.ca_path.name.replace("ca.pem", "jwt-key.pem"))
        app_cert.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        self.oauth.app.private_key_path = key_path

        handler = type("SandboxHandler", (_Handler,), {"sandbox": self})
        self._httpd = _HTTPServer((self.host, self._requested_port), handler, context)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"sandbox-org-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox server is not running")
        return self._httpd.server_address[1]

    @property
    def instance_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def identity_url(self) -> str:
        """The integration user's Identity URL (``/id/<org id>/<user id>``)."""
        return f"{self.instance_url}/id/{self.store.org_id}/{self.oauth.app.user_id}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "SALESFORCE_ACCESS_TOKEN": self.token,
            "SALESFORCE_DOMAIN": f"{self.host}:{self.port}",
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
        }

    def env_for(self, mode: str) -> dict[str, str]:
        """The environment that signs reconcile in with ``mode``: token | jwt |
        client_credentials | password (OAuth username-password) | soap."""
        app = self.oauth.app
        base = {"REQUESTS_CA_BUNDLE": str(self.ca_path), "SALESFORCE_DOMAIN": self.instance_url}
        if mode == "token":
            return dict(self.env)
        if mode == "jwt":
            return {**base, "SALESFORCE_CLIENT_ID": app.client_id, "SALESFORCE_USERNAME": app.username,
                    "SALESFORCE_PRIVATE_KEY_FILE": str(app.private_key_path)}
        if mode == "client_credentials":
            return {**base, "SALESFORCE_CLIENT_ID": app.client_id,
                    "SALESFORCE_CLIENT_SECRET": app.client_secret}
        if mode == "password":
            return {**base, "SALESFORCE_CLIENT_ID": app.client_id, "SALESFORCE_CLIENT_SECRET": app.client_secret,
                    "SALESFORCE_USERNAME": app.username, "SALESFORCE_PASSWORD": app.password,
                    "SALESFORCE_SECURITY_TOKEN": app.security_token}
        if mode == "soap":
            return {**base, "SALESFORCE_USERNAME": app.username, "SALESFORCE_PASSWORD": app.password,
                    "SALESFORCE_SECURITY_TOKEN": app.security_token}
        raise ValueError(f"unknown sign-in mode {mode!r}")

    def _persist(self) -> None:
        if self.state_path is None:
            return
        with self._save_lock:
            self.store.save(self.state_path)

    # -- the API, called by the handler ---------------------------------------

    def usage_header(self) -> str:
        return f"api-usage={self.api_used}/{self.daily_api_limit}"

    def handle_api(self, method: str, path: str, query: dict[str, list[str]],
                   headers, body: bytes) -> Response:
        if self.faults.take_503(path):
            return Response(503, error_body(
                "SERVER_UNAVAILABLE",
                "A server that's necessary for this call is unavailable. Other types of "
                "requests could still work."), summary="503 SERVER_UNAVAILABLE (fault)")
        if self.faults.session_expired or not self._authorized(headers.get("Authorization")):
            return Response(401, error_body("INVALID_SESSION_ID", "Session expired or invalid"),
                            summary="401 INVALID_SESSION_ID")
        with self._usage_lock:
            over = self.faults.take_limit() or self.api_used >= self.daily_api_limit
            if not over:
                self.api_used += 1
        if over:
            return Response(403, error_body("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
                            summary="403 REQUEST_LIMIT_EXCEEDED")
        parts = [p for p in path.split("/") if p][2:]  # after services/data
        match = _VERSION_RE.match(parts[0]) if parts else None
        if not match or not MIN_VERSION <= int(match.group(1)) <= MAX_VERSION:
            raise ApiError(404, *NOT_FOUND)
        version = parts[0][1:]
        rest = parts[1:]
        ctx = _Request(self, method, version, rest, query, headers, body)
        return ctx.dispatch()

    def _authorized(self, value: str | None) -> bool:
        if not value:
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return False
        token = token.strip()
        return hmac.compare_digest(token.encode(), self.token.encode()) or self.oauth.valid(token)

    # cursors of paged queries
    def open_cursor(self, records: list, batch: int, version: str) -> str:
        locator = self.store.new_id(ids.QUERY_LOCATOR_PREFIX)
        with self._cursor_lock:
            self._cursors[locator] = (records, batch, version)
            while len(self._cursors) > 100:
                self._cursors.popitem(last=False)
        return locator

    def page(self, records: list, start: int, batch: int, version: str,
             locator: str | None) -> dict:
        chunk = records[start:start + batch]
        body: dict[str, Any] = {"totalSize": len(records), "done": start + batch >= len(records)}
        if not body["done"]:
            if locator is None:
                locator = self.open_cursor(records, batch, version)
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{start + batch}"
        body["records"] = chunk
        return body

    def cursor(self, locator: str) -> tuple[list, int, str] | None:
        with self._cursor_lock:
            return self._cursors.get(locator)


class _Request:
    """One API request after auth: routes to a handler method."""

    def __init__(self, sandbox: SandboxServer, method: str, version: str, rest: list[str],
                 query: dict[str, list[str]], headers, body: bytes):
        self.sb = sandbox
        self.store = sandbox.store
        self.method = method
        self.version = version
        self.rest = rest
        self.query = query
        self.headers = headers
        self.raw_body = body

    # helpers
    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def json_body(self) -> Any:
        try:
            return json.loads(self.raw_body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", f"Unexpected character in request body: {exc}") from None

    def url_of(self, sobject: str, record_id: str) -> str:
        return f"/services/data/v{self.version}/sobjects/{sobject}/{record_id}"

    def render(self, sobject: str, record: dict, fields: list[str]) -> dict:
        out: dict[str, Any] = {"attributes": {"type": sobject, "url": self.url_of(sobject, record["Id"])}}
        for name in fields:
            out[name] = record.get(name)
        return out

    def not_allowed(self, allowed: str) -> ApiError:
        return ApiError(405, "METHOD_NOT_ALLOWED",
                        f"HTTP Method '{self.method}' not allowed. Allowed are {allowed}")

    def sobject(self, name: str) -> str:
        canonical = describe.canonical_sobject(name)
        if canonical is None:
            raise ApiError(404, *NOT_FOUND)
        return canonical

    def fields_param(self, sobject: str, raw: list[str] | str | None) -> list[str]:
        if raw is None:
            return []
        names = raw.split(",") if isinstance(raw, str) else list(raw)
        out = []
        for name in names:
            name = name.strip()
            if not name:
                continue
            canonical = describe.CANONICAL[sobject].get(name.lower())
            if canonical is None:
                raise ApiError(400, "INVALID_FIELD",
                               f"No such column '{name}' on entity '{sobject}'. If you are "
                               "attempting to use a custom field, be sure to append the '__c' "
                               "after the custom field name. Please reference your WSDL or the "
                               "describe call for the appropriate names.")
            out.append(canonical)
        return out

    def all_or_none(self, value: Any) -> bool:
        if isinstance(value, str):
            return value.lower() == "true"
        return bool(value)

    # routing
    def dispatch(self) -> Response:
        rest, method = self.rest, self.method
        if not rest:
            if method != "GET":
                raise self.not_allowed("GET,HEAD")
            return self.resources()
        head = rest[0]
        if head == "limits" and len(rest) == 1:
            if method != "GET":
                raise self.not_allowed("GET,HEAD")
            return self.limits()
        if head in ("query", "queryAll"):
            if method != "GET":
                raise self.not_allowed("GET,HEAD")
            if len(rest) == 1:
                return self.soql(include_deleted=head == "queryAll")
            if len(rest) == 2:
                return self.query_more(rest[1])
        if head == "sobjects":
            if len(rest) == 1:
                if method != "GET":
                    raise self.not_allowed("GET,HEAD")
                return Response(200, describe.describe_global(self.version))
            sobject = self.sobject(rest[1])
            if len(rest) == 2:
                if method == "GET":
                    return Response(200, describe.describe_basic(sobject, self.version))
                if method == "POST":
                    return self.create_one(sobject)
                raise self.not_allowed("GET,HEAD,POST")
            if len(rest) == 3 and rest[2] == "describe":
                if method != "GET":
                    raise self.not_allowed("GET,HEAD")
                return Response(200, describe.describe_sobject(sobject, self.version))
            if len(rest) == 3:
                return self.row(sobject, rest[2])
        if head == "jobs":
            return self.bulk_jobs()
        if head == "composite" and len(rest) == 1:
            if method != "POST":
                raise self.not_allowed("POST")
            return self.composite()
        if head == "composite" and len(rest) >= 2 and rest[1] == "sobjects":
            if len(rest) == 2:
                if method == "POST":
                    return self.collection_create()
                if method == "PATCH":
                    return self.collection_update()
                if method == "DELETE":
                    return self.collection_delete()
                raise self.not_allowed("POST,PATCH,DELETE")
            if len(rest) == 3:
                if method in ("GET", "POST"):
                    return self.collection_retrieve(self.sobject(rest[2]))
                raise self.not_allowed("GET,POST")
        raise ApiError(404, *NOT_FOUND)

    # Composite: up to 25 subrequests, one API call, run in order; a later one may use
    # an earlier one's answer as ``@{referenceId.field}`` (``.`` for a field, ``[n]``
    # for a list item) in its url or body. With ``allOrNone`` true a failed subrequest
    # rolls the whole request back and every other subrequest answers 400
    # PROCESSING_HALTED; otherwise the others run and only those that reference a
    # failed one are not run. The top-level answer is 200 either way.
    # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_composite.htm
    # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_subrequest_result.htm
    def composite(self) -> Response:
        body = self.json_body()
        subrequests = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subrequests, list) or not subrequests:
            raise ApiError(400, "INVALID_INPUT", "compositeRequest is required")
        if len(subrequests) > MAX_COMPOSITE:
            raise ApiError(400, "INVALID_BATCH_SIZE", "A composite request can have up to 25 subrequests")
        for sub in subrequests:   # the whole request is refused before any subrequest runs
            if not isinstance(sub, dict) or sub.get("method") not in COMPOSITE_METHODS:
                raise ApiError(400, "INVALID_INPUT", "Each subrequest needs a method: "
                               + ", ".join(COMPOSITE_METHODS))
            if not isinstance(sub.get("url"), str) or not sub["url"].startswith("/services/data/"):
                raise ApiError(400, "INVALID_INPUT", "Each subrequest needs a url under /services/data/")
            if not isinstance(sub.get("referenceId"), str) or not _REFERENCE_ID.fullmatch(sub["referenceId"]):
                raise ApiError(400, "INVALID_INPUT", "Each subrequest needs a referenceId of letters, "
                               "digits and underscores")
        all_or_none = self.all_or_none(body.get("allOrNone", False))
        with self.store.lock:
            before = self.store.to_state() if all_or_none else None
            answers, applied, failed = self._run_subrequests(subrequests, all_or_none)
            if all_or_none and failed:
                self.store.restore(before)  # type: ignore[arg-type]
                halted = error_body("PROCESSING_HALTED", "The transaction was rolled back since "
                                    "another operation in the same transaction failed.")
                answers = [a if a["referenceId"] == failed else
                           {"body": halted, "httpHeaders": {}, "httpStatusCode": 400,
                            "referenceId": a["referenceId"]} for a in answers]
                applied = []
        ok = sum(1 for a in answers if a["httpStatusCode"] < 300)
        return Response(200, {"compositeResponse": answers}, write=bool(applied), applied=applied,
                        summary=f"200 composite {len(answers)} subrequests ok={ok}")

    def _run_subrequests(self, subrequests: list, all_or_none: bool) -> tuple[list, list, str | None]:
        """(answers, applied writes, referenceId of the first failure when all_or_none)."""
        answers: list[dict] = []
        done: dict[str, dict] = {}
        applied: list = []
        for sub in subrequests:
            ref = sub["referenceId"]
            try:
                url = _resolve(sub["url"], done)
                sub_body = _resolve(sub.get("body"), done)
            except ApiError as err:
                answer = {"body": err.body, "httpHeaders": {}, "httpStatusCode": err.status, "referenceId": ref}
            else:
                answer = self._subrequest(sub["method"], url, sub_body, ref, all_or_none)
                applied.extend(answer.pop("_applied"))
            answers.append(answer)
            done[ref] = answer
            if all_or_none and answer["httpStatusCode"] >= 400:
                return answers + [{"body": None, "httpHeaders": {}, "httpStatusCode": 400,
                                   "referenceId": s["referenceId"]}
                                  for s in subrequests[len(answers):]], applied, ref
        return answers, applied, None

    def _subrequest(self, method: str, url: str, body: Any, ref: str, all_or_none: bool) -> dict:
        split = urlsplit(url)
        parts = [p for p in split.path.split("/") if p][2:]
        match = _VERSION_RE.match(parts[0]) if parts else None
        if isinstance(body, dict) and all_or_none and parts[1:3] == ["composite", "sobjects"]:
            body = {**body, "allOrNone": True}   # the outer allOrNone governs collections too
        raw = b"" if body is None else json.dumps(body).encode("utf-8")
        headers: dict[str, str] = {}
        applied: list = []
        try:
            if not match or parts[1:2] == ["composite"] and len(parts) == 2:
                raise ApiError(404, *NOT_FOUND)
            inner = _Request(self.sb, method, parts[0][1:], parts[1:],
                             parse_qs(split.query, keep_blank_values=True), self.headers, raw).dispatch()
            status, answer, applied = inner.status, inner.body, inner.applied
            if status == 201 and isinstance(answer, dict) and answer.get("id") and len(parts) == 3:
                headers["Location"] = self.url_of(self.sobject(parts[2]), answer["id"])
        except ApiError as err:
            status, answer = err.status, err.body
        return {"body": answer, "httpHeaders": headers, "httpStatusCode": status, "referenceId": ref,
                "_applied": applied}

    # Bulk API 2.0
    def bulk_jobs(self) -> Response:
        try:
            answer = self.sb.bulk.handle(self.method, self.version, self.rest[1:], self.query,
                                         self.raw_body, self.headers.get("Content-Type") or "")
        except bulk.BulkError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        if answer.after_commit is not None:
            return after_commit_response(answer.after_commit, answer.summary, write=answer.write,
                                         applied=answer.applied, lead=answer.lead)
        return Response(answer.status, answer.body, headers=dict(answer.headers),
                        summary=answer.summary, write=answer.write, applied=answer.applied,
                        lead=answer.lead, drop=answer.drop, csv=answer.csv)

    # resources
    def resources(self) -> Response:
        """Resources by version; ``identity`` is the session user's absolute Identity URL
        (https://developer.salesforce.com/docs/platform/api-rest/guide/dome-discoveryresource.md)."""
        base = f"/services/data/v{self.version}"
        names = ("sobjects", "query", "queryAll", "composite", "limits", "jobs")
        body = {name: f"{base}/{name}" for name in names}
        body["identity"] = self.sb.identity_url
        return Response(200, body)

    def limits(self) -> Response:
        used, limit = self.sb.api_used, self.sb.daily_api_limit

        def left(n: int, spent: int) -> dict:
            return {"Max": n, "Remaining": max(n - spent, 0)}

        jobs = self.sb.bulk
        return Response(200, {
            "DailyApiRequests": left(limit, used),
            # shared by Bulk API and Bulk API 2.0; a 2.0 ingest job uses one per 10,000 rows
            "DailyBulkApiBatches": left(bulk.DAILY_BATCHES, jobs.batches_used),
            "DailyBulkV2QueryJobs": left(bulk.DAILY_QUERY_JOBS, jobs.query_jobs_used),
            "DailyBulkV2QueryFileStorageMB": left(bulk.DAILY_QUERY_STORAGE_MB, jobs.query_storage_mb_used),
            "DataStorageMB": {"Max": 1024, "Remaining": 1000},
        })

    # SOQL
    def soql(self, include_deleted: bool) -> Response:
        text = self.param("q")
        if text is None:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            parsed = soql.parse(text)
        except soql.SoqlError as exc:
            raise ApiError(400, exc.code, exc.message) from None
        rows = self.store.run_query(parsed, include_deleted=include_deleted)
        summary = f"200 {parsed.sobject} rows={len(rows)} q={text[:120]}"
        if parsed.is_count_only:
            return Response(200, {"totalSize": rows[0][parsed.select[0].alias] if rows else 0,
                                  "done": True, "records": []}, summary=summary)
        if parsed.is_aggregate:
            records = [{"attributes": {"type": "AggregateResult"}, **row} for row in rows]
        else:
            names = [item.name for item in parsed.select]
            records = [self.render(parsed.sobject, row, names) for row in rows]
        batch = DEFAULT_BATCH
        options = self.headers.get("Sforce-Query-Options") or ""
        m = re.search(r"batchSize\s*=\s*(\d+)", options)
        if m:
            batch = min(max(int(m.group(1)), 200), DEFAULT_BATCH)
        return Response(200, self.sb.page(records, 0, batch, self.version, None), summary=summary)

    def query_more(self, token: str) -> Response:
        locator, _, offset = token.partition("-")
        cursor = self.sb.cursor(locator)
        if cursor is None or not offset.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records, batch, version = cursor
        start = int(offset)
        return Response(200, self.sb.page(records, start, batch, version, locator),
                        summary=f"200 queryMore {locator} from {start}")

    # one row
    def row(self, sobject: str, raw_id: str) -> Response:
        record_id = ids.normalize(raw_id)
        if record_id is None or ids.sobject_of(record_id) != sobject:
            raise ApiError(404, "NOT_FOUND",
                           f"Provided external ID field does not exist or is not accessible: {raw_id}")
        record = self.store.get(record_id, include_deleted=True)
        if record is None:
            raise ApiError(404, *NOT_FOUND)
        if record["IsDeleted"]:
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        if self.method in ("GET", "PATCH"):
            self.precondition(record)
        if self.method == "GET":
            names = self.fields_param(sobject, self.param("fields")) or list(describe.FIELDS[sobject])
            return Response(200, self.render(sobject, record, names))
        if self.method == "PATCH":
            body = self.json_body()
            if not isinstance(body, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
            results, applied = self.store.api_update(
                [{**body, "Id": record_id}], default_type=sobject, hook=self.sb.faults.row_error,
                allow_duplicates=self.allow_duplicates(), version=self.version)
            return self.single_result(results[0], applied, sobject, ok_status=204)
        if self.method == "DELETE":
            results, applied = self.store.api_delete(
                [record_id], default_type=sobject, hook=self.sb.faults.row_error)
            return self.single_result(results[0], applied, sobject, ok_status=204)
        raise self.not_allowed("GET,HEAD,PATCH,DELETE")

    def precondition(self, record: dict) -> None:
        value = self.headers.get("If-Unmodified-Since")
        if not value:
            return
        try:
            since = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise ApiError(400, "INVALID_HEADER_TYPE", f"Invalid If-Unmodified-Since: {value}") from None
        modified = record["LastModifiedDate"][:19]  # HTTP dates have whole seconds
        if modified > soql.format_stamp(since)[:19]:
            raise ApiError(412, "PRECONDITION_FAILED",
                           "The requested resource has been modified since "
                           f"{value}: LastModifiedDate {record['LastModifiedDate']}")

    def create_one(self, sobject: str) -> Response:
        body = self.json_body()
        if not isinstance(body, dict):
            raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        results, applied = self.store.api_create(
            [body], default_type=sobject, allow_duplicates=self.allow_duplicates(),
            version=self.version)
        return self.single_result(results[0], applied, sobject, ok_status=201)

    def single_result(self, result: dict, applied: list, sobject: str, ok_status: int) -> Response:
        summary = f"{sobject} {'ok' if result['success'] else result['errors'][0]['statusCode']}"
        lead = sobject == "Lead"
        if result["success"]:
            body = result if ok_status == 201 else None
            return Response(ok_status, body, summary=f"{ok_status} {summary}", write=True, applied=applied, lead=lead)
        # a DUPLICATES_DETECTED error keeps its duplicateResult (REST shapes it like SOAP's DuplicateError)
        errors = [{"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"],
                   **({"duplicateResult": e["duplicateResult"]} if "duplicateResult" in e else {})}
                  for e in result["errors"]]
        return Response(400, errors, summary=f"400 {summary}", write=True, applied=applied, lead=lead)

    def allow_duplicates(self) -> bool:
        value = self.headers.get("Sforce-Duplicate-Rule-Header") or ""
        return bool(re.search(r"allowSave\s*=\s*true", value, re.IGNORECASE))

    # collections
    def collection_records(self) -> tuple[list, bool]:
        body = self.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(400, "JSON_PARSER_ERROR",
                           "Cannot deserialize the request: expected an object with 'records'")
        records = body["records"]
        if len(records) > MAX_COLLECTION:
            raise ApiError(400, "EXCEEDED_ID_LIMIT",
                           "record limit reached. cannot submit more than 200 records into this call")
        return records, self.all_or_none(body.get("allOrNone", False))

    def collection_result(self, verb: str, results: list, applied: list, leads: bool) -> Response:
        ok = sum(1 for r in results if r["success"])
        summary = f"200 {verb} records={len(results)} ok={ok} failed={len(results) - ok}"
        status = self.sb.faults.take_after_commit("collections")
        if status is not None:
            return after_commit_response(status, summary, write=True, applied=applied, lead=leads)
        return Response(200, results, summary=summary, write=True, applied=applied,
                        lead=leads, drop=self.sb.faults.take_drop())

    def collection_create(self) -> Response:
        records, all_or_none = self.collection_records()
        results, applied = self.store.api_create(records, all_or_none=all_or_none,
                                                 allow_duplicates=self.allow_duplicates(),
                                                 version=self.version)
        leads = any(isinstance(r, dict) and isinstance(r.get("attributes"), dict)
                    and str(r["attributes"].get("type", "")).lower() == "lead" for r in records)
        return self.collection_result("create", results, applied, leads)

    def collection_update(self) -> Response:
        records, all_or_none = self.collection_records()
        results, applied = self.store.api_update(records, all_or_none=all_or_none,
                                                 hook=self.sb.faults.row_error,
                                                 allow_duplicates=self.allow_duplicates(),
                                                 version=self.version)
        leads = any(isinstance(r, dict) and str(r.get("id", r.get("Id")) or "").startswith("00Q")
                    for r in records)
        return self.collection_result("update", results, applied, leads)

    def collection_delete(self) -> Response:
        raw = self.param("ids")
        if not raw:
            raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
        id_list = [i.strip() for i in raw.split(",") if i.strip()]
        if len(id_list) > MAX_COLLECTION:
            raise ApiError(400, "EXCEEDED_ID_LIMIT",
                           "record limit reached. cannot submit more than 200 records into this call")
        results, applied = self.store.api_delete(
            id_list, all_or_none=self.all_or_none(self.param("allOrNone") or "false"),
            hook=self.sb.faults.row_error)
        leads = any(i.startswith("00Q") for i in id_list)
        return self.collection_result("delete", results, applied, leads)

    def collection_retrieve(self, sobject: str) -> Response:
        if self.method == "GET":
            raw_ids = [i for i in (self.param("ids") or "").split(",") if i]
            raw_fields: Any = self.param("fields")
        else:
            body = self.json_body()
            if not isinstance(body, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "Expected a JSON object with ids and fields")
            raw_ids, raw_fields = body.get("ids") or [], body.get("fields")
            if not isinstance(raw_ids, list):
                raise ApiError(400, "JSON_PARSER_ERROR", "ids must be a list")
        if not raw_ids:
            raise ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
        if len(raw_ids) > MAX_RETRIEVE:
            raise ApiError(400, "EXCEEDED_ID_LIMIT",
                           f"record limit reached. cannot submit more than {MAX_RETRIEVE} "
                           "records into this call")
        names = self.fields_param(sobject, raw_fields)
        if not names:
            raise ApiError(400, "MISSING_ARGUMENT", "fields parameter is required")
        if "Id" not in names:
            names = ["Id", *names]
        out: list[dict | None] = []
        for raw in raw_ids:
            record_id = ids.normalize(raw) if isinstance(raw, str) else None
            record = self.store.get(record_id) if record_id else None
            if record is None or ids.sobject_of(record["Id"]) != sobject:
                out.append(None)
            else:
                out.append(self.render(sobject, record, names))
        found = sum(1 for r in out if r is not None)
        return Response(200, out, summary=f"200 retrieve {sobject} ids={len(raw_ids)} found={found}")


def _resolve(value: Any, done: dict[str, dict]) -> Any:
    """``value`` with each ``@{referenceId.path}`` replaced by that field of an earlier
    subrequest's answer body (a string that is one whole reference keeps the value's
    type). A reference to a failed or unknown subrequest, or to a missing field:
    ApiError 400 PROCESSING_HALTED — the subrequest is not run."""
    if isinstance(value, dict):
        return {k: _resolve(v, done) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, done) for v in value]
    if not isinstance(value, str) or "@{" not in value:
        return value

    def lookup(match: re.Match) -> Any:
        ref, path = match.group(1), match.group(2)
        answer = done.get(ref)
        found: Any = answer["body"] if answer and answer["httpStatusCode"] < 300 else None
        for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", path):
            if isinstance(found, dict) and step[0]:
                found = found.get(step[0])
            elif isinstance(found, list) and step[1] and int(step[1]) < len(found):
                found = found[int(step[1])]
            else:
                found = None
        if found is None:
            raise ApiError(400, "PROCESSING_HALTED",
                           f"Invalid reference specified. No value for {ref}{path} found in {ref}. "
                           f"Provided referenceId ({ref}) must be a successful earlier subrequest.")
        return found

    whole = _REFERENCE.fullmatch(value)
    if whole:
        return lookup(whole)
    return _REFERENCE.sub(lambda m: str(lookup(m)), value)


class _HTTPServer(ThreadingHTTPServer):
    """TLS per connection, with the handshake in the connection's own thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, handler, context: ssl.SSLContext):
        self.context = context
        self._open: set = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self):
        conn, addr = self.socket.accept()
        conn = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._open_lock:
            self._open.add(conn)
        return conn, addr

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
            self._open.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):  # quiet: clients hang up
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SandboxOrg/1.0"
    sys_version = ""
    timeout = 120
    sandbox: SandboxServer

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._handle()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

    def _read_body(self) -> bytes | None:
        """The request body: ``Content-Length`` bytes, or a ``Transfer-Encoding:
        chunked`` body read to its last chunk (RFC 9112 §7.1; Node's fetch streams
        a Bulk API 2.0 upload that way). None: a body that cannot be read, answered
        400 and the connection closed (its leftover bytes would corrupt the next
        request)."""
        encoding = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in encoding:
            parts, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    chunk = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None
                if chunk == 0:
                    break
                size += chunk
                if size > MAX_BODY_BYTES:
                    return None
                parts.append(self.rfile.read(chunk))
                self.rfile.readline(1024)          # the CRLF after the chunk
            while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass                                # trailer fields, ignored
            return b"".join(parts)
        raw = self.headers.get("Content-Length") or "0"
        if not raw.strip().isdigit() or int(raw) > MAX_BODY_BYTES:
            return None
        length = int(raw)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        sb = self.sandbox
        body = self._read_body()
        if body is None:
            self.close_connection = True
            return self._send(Response(400, error_body("JSON_PARSER_ERROR",
                                                       "The request body could not be read")))
        split = urlsplit(self.path)
        path = split.path
        if path.startswith("/__sandbox/"):
            return self._control(path, body)
        if path.startswith(("/services/oauth2/", "/services/Soap/u/", "/id/")):
            return self._send(self._sign_in(path, body))
        is_api = path.startswith("/services/data/v")
        if len(self.path.encode("utf-8")) > MAX_URI_BYTES:
            response = Response(414, error_body("URI_TOO_LONG", "URI Too Long"),
                                summary="414 URI_TOO_LONG")
        elif path.rstrip("/") == "/services/data":
            is_api = False
            response = Response(200, versions_body()) if self.command == "GET" else \
                Response(405, error_body("METHOD_NOT_ALLOWED", "Allowed are GET,HEAD"))
        elif not is_api:
            response = Response(404, error_body(*NOT_FOUND))
        else:
            query = parse_qs(split.query, keep_blank_values=True)
            try:
                response = sb.handle_api(self.command, path, query, self.headers, body)
            except ApiError as exc:
                response = Response(exc.status, exc.body,
                                    summary=f"{exc.status} {exc.body[0]['errorCode']}")
            except Exception as exc:  # an honest 500, as Salesforce answers one
                response = Response(500, error_body("UNKNOWN_EXCEPTION", f"sandbox error: {exc!r}"),
                                    summary="500 UNKNOWN_EXCEPTION")
        if is_api:
            auto_assign = self.headers.get("Sforce-Auto-Assign")
            summary = response.summary or str(response.status)
            if response.lead:
                summary += f" Sforce-Auto-Assign={auto_assign if auto_assign is not None else '(absent)'}"
            if response.drop:
                summary += " (connection dropped after processing)"
            sb.stats.record(self.command, path, summary, write=response.write,
                            applied=response.applied, lead_auto_assign=(response.lead, auto_assign))
            response.headers.setdefault("Sforce-Limit-Info", sb.usage_header())
        if response.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(response)

    def _send(self, response: Response) -> None:
        if response.csv is not None:
            payload = response.csv
        else:
            payload = b"" if response.body is None else json.dumps(response.body).encode("utf-8")
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.csv is not None:
            self.send_header("Content-Type", response.content_type)
        elif response.body is not None:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _sign_in(self, path: str, body: bytes) -> Response:
        """The token, UserInfo and SOAP login endpoints (not API requests: not counted)."""
        sb = self.sandbox
        route = (self.command, path.rstrip("/"))
        if route == ("POST", "/services/oauth2/token"):
            status, answer = sb.oauth.token(body, self.headers, sb.instance_url)
            return Response(status, answer)
        if route == ("GET", "/services/oauth2/userinfo"):
            scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() == "bearer" and (token == sb.token or sb.oauth.valid(token)):
                return Response(200, sb.oauth.userinfo(sb.instance_url))
            return Response(401, None, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if self.command == "GET" and path.rstrip("/") == urlsplit(sb.identity_url).path:
            return self._identity(sb)
        match = re.fullmatch(r"/services/Soap/u/(\d+)\.0", path.rstrip("/"))
        if self.command == "POST" and match:
            status, xml = sb.oauth.soap_login(int(match.group(1)), body, sb.instance_url)
            return Response(status, csv=xml, content_type="text/xml; charset=utf-8")
        return Response(404, error_body(*NOT_FOUND))

    def _identity(self, sb: SandboxServer) -> Response:
        """The Identity URL: who the session's user is, with the org's API URLs. The
        token comes as ``Authorization: Bearer`` or the ``oauth_token`` parameter;
        ``version`` fills the URLs' ``{version}`` placeholder (``latest``: the newest).
        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_openid.htm"""
        query = parse_qs(urlsplit(self.path).query)
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            token = (query.get("oauth_token") or query.get("access_token") or [""])[-1]
        token = token.strip()
        if not token:
            return Response(403, csv=b"Missing_OAuth_Token", content_type="text/plain")
        if not (hmac.compare_digest(token.encode(), sb.token.encode()) or sb.oauth.valid(token)):
            return Response(403, csv=b"Bad_OAuth_Token", content_type="text/plain")
        version = (query.get("version") or ["{version}"])[-1]
        if version == "latest":
            version = f"{MAX_VERSION}.0"
        app, base = sb.oauth.app, sb.instance_url
        return Response(200, {
            "id": sb.identity_url, "asserted_user": True, "user_id": app.user_id,
            "organization_id": sb.store.org_id, "username": app.username,
            "nick_name": app.username.split("@")[0], "display_name": "Integration User",
            "email": app.username, "email_verified": True, "first_name": "Integration",
            "last_name": "User", "timezone": "GMT", "active": True, "user_type": "STANDARD",
            "language": "en_US", "locale": "en_US", "utcOffset": 0,
            "urls": {name: f"{base}/services/data/v{version}/{tail}" for name, tail in (
                ("rest", ""), ("sobjects", "sobjects/"), ("search", "search/"), ("query", "query/"),
                ("recent", "recent/"))} | {
                "enterprise": f"{base}/services/Soap/c/{version}/{sb.store.org_id}",
                "partner": f"{base}/services/Soap/u/{version}/{sb.store.org_id}",
                "metadata": f"{base}/services/Soap/m/{version}/{sb.store.org_id}",
                "profile": f"{base}/{app.user_id}"},
        })

    def _control(self, path: str, body: bytes) -> None:
        sb = self.sandbox
        route = (self.command, path.rstrip("/"))
        try:
            if route == ("GET", "/__sandbox/faults"):
                response = Response(200, sb.faults.state())
            elif route == ("POST", "/__sandbox/faults"):
                sb.faults.apply_json(json.loads(body.decode("utf-8") or "{}"))
                response = Response(200, sb.faults.state())
            elif route == ("GET", "/__sandbox/stats"):
                response = Response(200, sb.stats.as_dict())
            elif route == ("POST", "/__sandbox/stats/reset"):
                sb.stats.reset()
                response = Response(200, sb.stats.as_dict())
            elif route == ("GET", "/__sandbox/snapshot"):
                response = Response(200, sb.store.snapshot())
            else:
                response = Response(404, error_body(*NOT_FOUND))
        except (ValueError, TypeError) as exc:
            response = Response(400, error_body("INVALID_FAULT", str(exc)))
        self._send(response)
