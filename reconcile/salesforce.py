"""The Salesforce adapter: the only module that talks to the org.

``connect`` signs in (access token, OAuth 2.0 JWT bearer, client credentials or
username-password, a Salesforce CLI alias, or SOAP login) and hands the session to
simple-salesforce; every REST request then goes through ``Salesforce._request``, which

* counts each HTTP request sent (``calls``, retries included),
* keeps the org's daily API usage from the ``Sforce-Limit-Info`` header (``usage``),
* retries transient failures of reads (502/503/504, ``SERVER_UNAVAILABLE``,
  ``UNABLE_TO_LOCK_ROW``, connection errors) with bounded, jittered
  exponential backoff (``reconcile.backoff``, shared with Bulk job polling),
* never re-sends a write (a Collections create, update or delete, a Bulk job's
  upload or close) whose outcome an answer left open: a 500, 502, 503 or 504,
  or a connection lost after the request went out, raises ``OutcomeUnknown``
  instead (the org may have saved it before failing to answer; apply settles it
  by reading the records). A write refused before it ran (a 4xx such as
  ``UNABLE_TO_LOCK_ROW``, a connection never made) is retried,
* signs in again once on an expired session (every mode but a pasted access
  token) and resends the request with its own headers intact: a 401 means the
  org did not process the request ("The session ID or OAuth token used has
  expired or is invalid",
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm),
  so sending it again cannot write anything twice,
* and translates every failure into a ``reconcile.errors`` type.

Bulk API 2.0 (``bulk_query``, ``bulk_ingest``) goes through the same
``_request``: every job request (create, upload, close, each poll, each result
page or file) is one counted API call.

Nothing above this module sees a simple-salesforce or requests exception, and
no message or exception raised here carries the access token or password:
errors are raised outside the ``except`` block that caught the library's
exception, so they do not chain to it (its request holds the token).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any
from urllib.parse import urlparse

import jwt
import requests
import simple_salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from urllib3.exceptions import MaxRetryError, NewConnectionError

from reconcile.backoff import MAX_BACKOFF, Backoff
from reconcile.clock import wall_seconds
from reconcile.config import ASSIGNMENT_RULE_SOBJECTS, Config, bulk_is_cheaper, worth_counting
from reconcile.errors import (
    ApiLimitExceeded,
    ConfigError,
    MalformedRequest,
    OutcomeUnknown,
    PermissionDenied,
    ReconcileError,
    SalesforceError,
    SessionExpired,
    TransientError,
)
from reconcile.model import ApiUsage, OrgInfo, RecordError, SaveResult
from reconcile.soql import COUNT_CONTACTS_HEAD, COUNT_CONTACTS_TAIL, ValueTooLong, encode_q, in_batches, in_query_head, soql_quote
from reconcile.soql import SOQL_MAX_CHARS as _SOQL_MAX_CHARS

__all__ = ["connect", "sign_in", "SignIn", "Salesforce", "SalesforceReader", "BulkOutcome", "soql_quote",
           "parse_limit_info"]

TOKEN_VARS = ("SALESFORCE_ACCESS_TOKEN", "SALESFORCE_DOMAIN")
LOGIN_VARS = ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN",
              "SALESFORCE_DOMAIN")
OAUTH_VARS = ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_PRIVATE_KEY_FILE",
              "SALESFORCE_TARGET_ORG")
ALL_VARS = tuple(dict.fromkeys(TOKEN_VARS + LOGIN_VARS + OAUTH_VARS))

# The org's identity, and whether it is production (one row).
ORG_QUERY = "SELECT Id, Name, IsSandbox, OrganizationType FROM Organization LIMIT 1"
DUPLICATE_RULES_QUERY = ("SELECT Id, DeveloperName, MasterLabel, SobjectType FROM DuplicateRule "
                         "WHERE IsActive = true AND SobjectType IN ('Contact', 'Lead', 'Account') "
                         "ORDER BY SobjectType, DeveloperName")
SOQL_MAX_CHARS = _SOQL_MAX_CHARS   # MALFORMED_QUERY above this
TIMEOUT = (15.0, 300.0)           # connect, read (seconds); the org's own limit is 10 minutes
TRANSIENT_STATUS = {502, 503, 504}
# Answers that leave a write's outcome open: the org (500, 503) or a gateway in front of it
# (502, 504) failed after the request arrived, so it may have been saved before the failure.
OUTCOME_OPEN_STATUS = {500, 502, 503, 504}
TRANSIENT_CODES = {"SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW", "QUERY_TIMEOUT",
                   "TEMPORARY_QUERY_MORE_FAILURE"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*\Z")
_LIMIT_INFO = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")
BULK_OPERATIONS = ("insert", "update", "delete")
BULK_NULL = "#N/A"                # a CSV cell that sets a field to null (empty = unchanged)
BULK_FINAL = ("JobComplete", "Failed", "Aborted")
# Bulk query CSV writes UTC datetimes as 2026-11-25T08:00:00.000Z; REST JSON as ...+0000.
_BULK_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


# -- connecting -----------------------------------------------------------------------

# -- signing in ----------------------------------------------------------------------------
#
# Every mode ends in the same place: an access token and the instance URL it works on.
# simple-salesforce's own OAuth helpers build the token URL as ``https://{domain}.salesforce.com``,
# which cannot name a host:port (the sandbox org) or a full URL, so the token requests are
# sent here (PyJWT signs the assertion) and simple-salesforce gets the session it produced.

# A Salesforce OAuth token endpoint answers an error as {"error": ..., "error_description": ...}:
# https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm
OAUTH_ALTERNATIVES = ("use an OAuth sign-in instead: JWT bearer (SALESFORCE_CLIENT_ID, "
                      "SALESFORCE_USERNAME, SALESFORCE_PRIVATE_KEY_FILE), client credentials "
                      "(SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET, SALESFORCE_DOMAIN) or a "
                      "Salesforce CLI alias (SALESFORCE_TARGET_ORG or --target-org)")
# SOAP login() is not served in API v65.0 and later (Salesforce help article 005132110);
# a session it gives works with every REST version, so we log in at the last one that has it.
SOAP_LOGIN_VERSION = "64.0"
JWT_LIFETIME = 180                # seconds; Salesforce accepts an assertion for up to 3 minutes
CLI_TIMEOUT = 120.0               # seconds for one `sf` command


class _Session(requests.Session):
    """A session whose CA bundle (REQUESTS_CA_BUNDLE of the environment ``connect`` was
    given) is not replaced by the process environment's on requests that do not pass
    ``verify`` themselves (simple-salesforce's SOAP login)."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


@dataclass(frozen=True)
class SignIn:
    """How a session is obtained. ``login()`` returns (access token, instance URL);
    ``renewable``: calling it again gives a fresh session without a person (every mode
    but a pasted access token)."""
    mode: str
    login: Callable[[], tuple[str, str]]
    renewable: bool


def connect(config: Config, env: Mapping[str, str] | None = None, *,
            sleep: Callable[[float], None] = time.sleep,
            session: requests.Session | None = None,
            target_org: str | None = None,
            run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Salesforce:
    """Sign in from ``env`` (default: the process environment); see ``sign_in`` for the modes.
    A missing, half-set or refused configuration raises ``ConfigError`` (one line, naming the
    variables to check); nothing is sent to the REST API before the sign-in succeeded."""
    env = os.environ if env is None else env
    session = session or _Session()
    bundle = (env.get("REQUESTS_CA_BUNDLE") or "").strip()
    if bundle:
        if not os.path.isfile(bundle):
            raise ConfigError(f"REQUESTS_CA_BUNDLE names {bundle!r}, which is not a file; "
                              "point it at a PEM certificate bundle or unset it")
        session.verify = bundle
    how = sign_in(config, env, session, target_org=target_org, run=run)
    token, instance_url = how.login()
    sf = simple_salesforce.Salesforce(session_id=token, instance_url=instance_url,
                                      version=config.api_version, session=session)
    return Salesforce(sf, config, sleep=sleep, renew=how.login if how.renewable else None,
                      sign_in=how.mode)


def sign_in(config: Config, env: Mapping[str, str], session: requests.Session, *,
            target_org: str | None = None,
            run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> SignIn:
    """The sign-in mode the environment asks for (``target_org``, the ``--target-org``
    option, wins over the environment):

    * ``SALESFORCE_ACCESS_TOKEN`` + ``SALESFORCE_DOMAIN`` (instance host or URL): a session as is;
    * ``SALESFORCE_CLIENT_ID`` + ``SALESFORCE_USERNAME`` + ``SALESFORCE_PRIVATE_KEY_FILE``
      (+ ``SALESFORCE_DOMAIN``, default ``login``): OAuth 2.0 JWT bearer;
    * ``SALESFORCE_CLIENT_ID`` + ``SALESFORCE_CLIENT_SECRET`` + ``SALESFORCE_DOMAIN`` (a My
      Domain): OAuth 2.0 client credentials;
    * ``SALESFORCE_TARGET_ORG``: a Salesforce CLI alias or username (``sf``);
    * ``SALESFORCE_USERNAME`` + ``SALESFORCE_PASSWORD`` + ``SALESFORCE_DOMAIN``: with
      ``SALESFORCE_CLIENT_ID`` + ``SALESFORCE_CLIENT_SECRET`` the OAuth username-password
      flow, else SOAP ``login()`` (which also needs ``SALESFORCE_SECURITY_TOKEN``).

    ``SALESFORCE_DOMAIN`` is ``login``, ``test``, a My Domain (``acme.my``,
    ``acme.my.salesforce.com``), a host:port or an https URL; the token endpoint is
    ``<that URL>/services/oauth2/token``."""
    value = {name: (env.get(name) or "").strip() for name in ALL_VARS}
    if target_org is not None:
        if not target_org.strip():
            raise ConfigError("--target-org is empty: name a Salesforce CLI alias or username")
        return _cli_sign_in(target_org.strip(), env, run)
    asked = []
    if value["SALESFORCE_ACCESS_TOKEN"]:
        asked.append("SALESFORCE_ACCESS_TOKEN")
    if value["SALESFORCE_PRIVATE_KEY_FILE"]:
        asked.append("SALESFORCE_PRIVATE_KEY_FILE")
    if value["SALESFORCE_PASSWORD"] or value["SALESFORCE_SECURITY_TOKEN"]:
        asked.append("SALESFORCE_PASSWORD")
    elif value["SALESFORCE_CLIENT_SECRET"]:
        asked.append("SALESFORCE_CLIENT_SECRET")
    if value["SALESFORCE_TARGET_ORG"]:
        asked.append("SALESFORCE_TARGET_ORG")
    if len(asked) > 1:
        raise ConfigError(f"{' and '.join(asked)} are both set, and they choose different ways to "
                          "sign in; unset all but one")
    if not asked and value["SALESFORCE_USERNAME"]:
        asked.append("SALESFORCE_PRIVATE_KEY_FILE" if value["SALESFORCE_CLIENT_ID"] else "SALESFORCE_PASSWORD")
    if not asked and value["SALESFORCE_CLIENT_ID"]:
        raise ConfigError("SALESFORCE_CLIENT_ID is set but neither SALESFORCE_PRIVATE_KEY_FILE (JWT "
                          "bearer, with SALESFORCE_USERNAME) nor SALESFORCE_CLIENT_SECRET (client "
                          "credentials, with SALESFORCE_DOMAIN) is")
    if not asked:
        raise ConfigError("no Salesforce connection configured: set SALESFORCE_ACCESS_TOKEN and "
                          "SALESFORCE_DOMAIN, or SALESFORCE_CLIENT_ID with SALESFORCE_USERNAME and "
                          "SALESFORCE_PRIVATE_KEY_FILE (JWT) or SALESFORCE_CLIENT_SECRET and "
                          "SALESFORCE_DOMAIN (client credentials), or SALESFORCE_TARGET_ORG (a "
                          "Salesforce CLI alias), or SALESFORCE_USERNAME, SALESFORCE_PASSWORD, "
                          "SALESFORCE_SECURITY_TOKEN and SALESFORCE_DOMAIN "
                          "(or try `reconcile demo`, which needs none)")
    mode = asked[0]
    names: tuple[str, ...]
    if mode == "SALESFORCE_TARGET_ORG":
        return _cli_sign_in(value[mode], env, run)
    if mode == "SALESFORCE_ACCESS_TOKEN":
        _require("token sign-in", value, ("SALESFORCE_ACCESS_TOKEN", "SALESFORCE_DOMAIN"),
                 "set SALESFORCE_DOMAIN to your instance host, e.g. acme.my.salesforce.com")
        instance_url = _instance_url(value["SALESFORCE_DOMAIN"])
        token = value["SALESFORCE_ACCESS_TOKEN"]
        return SignIn("access token", lambda: (token, instance_url), False)
    if mode == "SALESFORCE_PRIVATE_KEY_FILE":
        names = ("SALESFORCE_CLIENT_ID", "SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE")
        _require("JWT bearer sign-in", value, names)
        return _jwt_sign_in(value, session)
    if mode == "SALESFORCE_CLIENT_SECRET":
        names = ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_DOMAIN")
        _require("client credentials sign-in", value, names,
                 "SALESFORCE_DOMAIN must be your My Domain, e.g. acme.my.salesforce.com")
        url = _domain_url(value["SALESFORCE_DOMAIN"])
        if value["SALESFORCE_DOMAIN"] in ("login", "test"):
            raise ConfigError("client credentials sign-in needs your My Domain in SALESFORCE_DOMAIN "
                              f"(e.g. acme.my.salesforce.com), not {value['SALESFORCE_DOMAIN']!r}")
        form = {"grant_type": "client_credentials", "client_id": value["SALESFORCE_CLIENT_ID"],
                "client_secret": value["SALESFORCE_CLIENT_SECRET"]}
        return SignIn("client credentials", lambda: _token_request(session, url, form, "client credentials", names),
                      True)
    # username and password
    if value["SALESFORCE_CLIENT_ID"] or value["SALESFORCE_CLIENT_SECRET"]:
        names = ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_USERNAME",
                 "SALESFORCE_PASSWORD", "SALESFORCE_DOMAIN")
        _require("OAuth username-password sign-in", value, names)
        url = _domain_url(value["SALESFORCE_DOMAIN"])
        form = {"grant_type": "password", "client_id": value["SALESFORCE_CLIENT_ID"],
                "client_secret": value["SALESFORCE_CLIENT_SECRET"], "username": value["SALESFORCE_USERNAME"],
                "password": value["SALESFORCE_PASSWORD"] + value["SALESFORCE_SECURITY_TOKEN"]}
        return SignIn("username-password (OAuth)",
                      lambda: _token_request(session, url, form, "username-password", names), True)
    missing = [name for name in LOGIN_VARS if not value[name]]
    if missing:
        raise ConfigError(f"username/password login is half-configured: {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set; set "
                          f"{', '.join(LOGIN_VARS)} (SALESFORCE_DOMAIN: login, test or your "
                          "My Domain such as acme.my), or use SALESFORCE_ACCESS_TOKEN instead")
    return _soap_sign_in(value, session, config.api_version)


def _require(what: str, value: Mapping[str, str], names: Sequence[str], hint: str = "") -> None:
    missing = [name for name in names if not value[name]]
    if missing:
        raise ConfigError(f"{what} is half-configured: {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set; set {', '.join(names)}"
                          + (f" ({hint})" if hint else ""))


def _domain_url(domain: str) -> str:
    """``login`` / ``test`` / ``acme.my`` → ``https://….salesforce.com``; a host with a port,
    a ``….salesforce.com`` or ``….force.com`` host, or an https URL is used as it is."""
    if "://" in domain or ":" in domain or domain.endswith((".salesforce.com", ".force.com")) \
            or re.fullmatch(r"[\d.]+", domain):
        return _instance_url(domain)
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", domain):
        raise ConfigError(f"SALESFORCE_DOMAIN={domain!r}: use login, test, your My Domain "
                          "(e.g. acme.my.salesforce.com) or an https URL")
    return f"https://{domain}.salesforce.com"


def _audience(domain_url: str) -> str:
    """The JWT ``aud``: Salesforce's login server (https://login.salesforce.com, or
    https://test.salesforce.com for a sandbox), or the URL itself for any other host
    (an Experience Cloud site, the sandbox org). Documented at
    https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm"""
    host = urlparse(domain_url).hostname or ""
    if host == "test.salesforce.com" or ".sandbox.my.salesforce.com" in f".{host}" or host.endswith(".cs.salesforce.com"):
        return "https://test.salesforce.com"
    if host.endswith(".salesforce.com"):
        return "https://login.salesforce.com"
    return domain_url


def _jwt_sign_in(value: Mapping[str, str], session: requests.Session) -> SignIn:
    names = ("SALESFORCE_CLIENT_ID", "SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE",
             "SALESFORCE_DOMAIN")
    url = _domain_url(value["SALESFORCE_DOMAIN"] or "login")
    path = value["SALESFORCE_PRIVATE_KEY_FILE"]
    try:
        with open(path, "rb") as handle:
            key = handle.read()
    except OSError as exc:
        raise ConfigError(f"SALESFORCE_PRIVATE_KEY_FILE={path!r} cannot be read "
                          f"({exc.strerror or type(exc).__name__})") from None

    def login() -> tuple[str, str]:
        claims = {"iss": value["SALESFORCE_CLIENT_ID"], "sub": value["SALESFORCE_USERNAME"],
                  "aud": _audience(url), "exp": int(wall_seconds()) + JWT_LIFETIME}
        failure = None
        try:
            assertion = jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            failure = ConfigError(f"SALESFORCE_PRIVATE_KEY_FILE={path!r} is not an RSA private key "
                                  "in PEM form (the key whose certificate the connected app holds)")
        if failure is not None:
            raise failure
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        return _token_request(session, url, form, "JWT bearer", names)

    return SignIn("JWT bearer", login, True)


def _token_request(session: requests.Session, domain_url: str, form: Mapping[str, str],
                   flow: str, names: Sequence[str]) -> tuple[str, str]:
    """POST the grant to ``<domain_url>/services/oauth2/token``; (access_token, instance_url),
    or ConfigError with the OAuth error code and the variables to check."""
    token_url = domain_url + "/services/oauth2/token"
    failure: ReconcileError | None = None
    body: Any = None
    response = None
    try:
        response = session.post(token_url, data=dict(form), headers={"Accept": "application/json"},
                                timeout=TIMEOUT, verify=session.verify)
    except requests.exceptions.SSLError:
        failure = ConfigError(f"{token_url}: the server's TLS certificate is not trusted; set "
                              "REQUESTS_CA_BUNDLE to the CA bundle to trust")
    except requests.RequestException as exc:
        failure = TransientError(f"cannot reach {token_url} to sign in ({type(exc).__name__}); "
                                 "check the network and SALESFORCE_DOMAIN")
    if response is not None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            failure = ConfigError(f"{flow} sign-in at {token_url}: HTTP {response.status_code} without "
                                  "an OAuth answer; check SALESFORCE_DOMAIN")
        elif response.status_code != 200 or body.get("error"):
            code = str(body.get("error") or f"HTTP {response.status_code}")
            words = " ".join(str(body.get("error_description") or "").split())
            failure = ConfigError(f"{flow} sign-in refused by {domain_url}: {code}"
                                  + (f" ({words})" if words else "")
                                  + f"; check {', '.join(names)}", code=code)
        elif not body.get("access_token") or not body.get("instance_url"):
            failure = ConfigError(f"{flow} sign-in at {token_url}: the answer has no access_token "
                                  "or instance_url")
    if failure is not None:
        raise failure
    return str(body["access_token"]), _instance_url(str(body["instance_url"]))


def _soap_sign_in(value: Mapping[str, str], session: requests.Session, version: str) -> SignIn:
    url = _domain_url(value["SALESFORCE_DOMAIN"])
    soap_version = version if float(version) < float(SOAP_LOGIN_VERSION) else SOAP_LOGIN_VERSION
    username = value["SALESFORCE_USERNAME"]

    def login() -> tuple[str, str]:
        failure: ReconcileError | None = None
        try:
            token, instance = simple_salesforce.SalesforceLogin(
                username=username, password=value["SALESFORCE_PASSWORD"],
                security_token=value["SALESFORCE_SECURITY_TOKEN"], sf_version=soap_version,
                session=session, scratch_url=url)
        except SalesforceAuthenticationFailed as exc:
            reason = _auth_reason(exc)
            if getattr(exc, "code", None) == "INVALID_LOGIN":
                failure = ConfigError(f"Salesforce login as {username} at {url} failed: {reason}; "
                                      "check SALESFORCE_USERNAME, SALESFORCE_PASSWORD, "
                                      "SALESFORCE_SECURITY_TOKEN and SALESFORCE_DOMAIN",
                                      code="INVALID_LOGIN")
            else:
                failure = ConfigError(f"the org refused SOAP API login() for {username} at {url} "
                                      f"({reason}): it is not served in API v65.0 and later, is off "
                                      "by default in orgs created since Winter '26 and is retired in "
                                      f"Summer '27; {OAUTH_ALTERNATIVES}", code="SOAP_LOGIN_REFUSED")
        except requests.RequestException as exc:
            failure = TransientError(f"cannot reach {url} to log in ({type(exc).__name__}); "
                                     "check the network and SALESFORCE_DOMAIN")
        if failure is not None:
            raise failure
        return token, f"https://{instance}"

    return SignIn("username-password (SOAP login)", login, True)


def _cli_sign_in(alias: str, env: Mapping[str, str],
                 run: Callable[..., subprocess.CompletedProcess]) -> SignIn:
    """A Salesforce CLI alias: instance URL from ``sf org display --json`` (result
    ``instanceUrl``, ``id``, ``username``, ``accessToken``:
    https://github.com/salesforcecli/plugin-org/blob/main/src/commands/org/display.ts); the token from
    ``sf org auth show-access-token --json`` (result ``{"accessToken": …}``,
    https://github.com/salesforcecli/plugin-org/blob/main/src/commands/org/auth/show-access-token.ts),
    or, on CLIs older than that command, from display's own ``accessToken`` — which CLIs
    since May 2026 redact (https://github.com/forcedotcom/cli/issues/3560)."""
    def sf(*args: str) -> tuple[dict | None, str]:
        command = ["sf", *args, "--target-org", alias, "--json"]
        failure = None
        try:
            done = run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=dict(env))
        except FileNotFoundError:
            failure = ConfigError("SALESFORCE_TARGET_ORG/--target-org needs the Salesforce CLI, "
                                  "but `sf` is not on PATH; install it or choose another sign-in")
        except subprocess.TimeoutExpired:
            failure = ConfigError(f"`sf {' '.join(args)}` did not answer in {CLI_TIMEOUT:.0f} seconds")
        if failure is not None:
            raise failure
        try:
            answer = json.loads(done.stdout or "null")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return None, " ".join((done.stderr or done.stdout or f"exit code {done.returncode}").split())[:200]
        if answer.get("status") not in (0, None) or done.returncode != 0:
            words = " ".join(str(answer.get("message") or answer.get("name") or "").split())
            return None, words[:200] or f"exit code {done.returncode}"
        return (answer.get("result") if isinstance(answer.get("result"), dict) else None), ""

    def login() -> tuple[str, str]:
        shown, why = sf("org", "display")
        if shown is None or not shown.get("instanceUrl"):
            raise ConfigError(f"the Salesforce CLI has no usable org {alias!r} ({why or 'no instanceUrl'}); "
                              "check SALESFORCE_TARGET_ORG/--target-org against `sf org list`")
        token_answer, _ = sf("org", "auth", "show-access-token")
        token = str((token_answer or {}).get("accessToken") or "")
        if not token:
            token = str(shown.get("accessToken") or "")
            if "REDACTED" in token.upper():
                token = ""
        if not token:
            raise ConfigError(f"the Salesforce CLI gave no access token for {alias!r}: run "
                              f"`sf org login web --alias {alias}` (or update the CLI) and try again")
        return token, _instance_url(str(shown["instanceUrl"]))

    return SignIn(f"Salesforce CLI ({alias})", login, True)


def _instance_url(domain: str) -> str:
    """``host``, ``host:port`` or ``https://host[:port]`` → ``https://host[:port]``."""
    if domain in ("login", "test"):
        raise ConfigError(f"SALESFORCE_DOMAIN={domain!r} names a login server; with "
                          "SALESFORCE_ACCESS_TOKEN it must be your instance host, "
                          "e.g. acme.my.salesforce.com")
    url = domain if "://" in domain else f"https://{domain}"
    try:
        parsed = urlparse(url)
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if parsed.scheme != "https" or not host or parsed.path not in ("", "/"):
        raise ConfigError(f"SALESFORCE_DOMAIN={domain!r} is not an instance host: use "
                          "host, host:port or https://host[:port], e.g. acme.my.salesforce.com")
    return f"https://{host}" + (f":{port}" if port not in (None, 443) else "")


def _auth_reason(exc: SalesforceAuthenticationFailed) -> str:
    code = getattr(exc, "code", None) or ""
    # simple-salesforce 1.12.10+ keeps Salesforce's words in ``auth_message``
    # (its ``message`` is a class-level template there).
    message = getattr(exc, "auth_message", None) or getattr(exc, "message", None) or ""
    message = " ".join(str(message).split())
    return f"{code}: {message}".strip(": ") or "authentication failed"


# -- SOQL helpers ----------------------------------------------------------------------

def parse_limit_info(header: str | None) -> ApiUsage | None:
    """``api-usage=10018/100000; api-bursts=1/750`` → ``ApiUsage(10018, 100000)``."""
    match = _LIMIT_INFO.search(header or "")
    return ApiUsage(int(match.group(1)), int(match.group(2))) if match else None


def _name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a Salesforce API name: {name!r}")
    return name


def _strip(record: Any) -> Any:
    """Drop ``attributes`` (recursively, for relationship fields)."""
    if isinstance(record, dict):
        return {k: _strip(v) for k, v in record.items() if k != "attributes"}
    return record


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class BulkStarted:
    """An ingest job that was uploaded and closed (``job_id`` None: nothing to send)."""
    job_id: str | None
    action: str
    sobject: str
    records: Sequence[Mapping[str, Any]]


def poll_delays(config: Config) -> Iterator[float]:
    """The waits before each status poll of a Bulk job: the project's backoff (exponential,
    capped), starting short — ``bulk_poll_seconds`` (a small job is often done by the first
    poll), doubled after each poll up to ``bulk_poll_max_seconds``. No jitter: one client
    polls its own job."""
    yield max(0.0, config.bulk_poll_seconds)
    policy = Backoff(max(config.bulk_poll_seconds, 0.001), config.bulk_poll_max_seconds)
    for polls in count(1):
        yield policy.delay(polls)


@dataclass(frozen=True)
class BulkOutcome:
    """What a Bulk API 2.0 ingest job did. Rows are dicts of the result files'
    columns (empty cells are None): ``successful`` has ``sf__Id``, ``sf__Created``
    and the uploaded columns, ``failed`` ``sf__Id`` (None for a failed insert),
    ``sf__Error`` (``CODE:message:fields --``) and the uploaded columns,
    ``unprocessed`` the uploaded columns. Rows come in no particular order:
    match them by id or by a key column, never by position."""
    job_id: str | None
    state: str
    successful: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    unprocessed: list[dict] = field(default_factory=list)
    records_processed: int = 0
    records_failed: int = 0
    error_message: str | None = None


# -- the adapter -------------------------------------------------------------------------

class Salesforce:
    """The writer. ``reader()`` gives the read-only port used by plan and show."""

    def __init__(self, sf: simple_salesforce.Salesforce, config: Config, *,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, timeout: tuple[float, float] = TIMEOUT,
                 renew: Callable[[], tuple[str, str]] | None = None, sign_in: str = "access token"):
        self._sf = sf
        self._renew = renew
        self.sign_in = sign_in
        self._config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._timeout = timeout
        self.calls = 0
        self.usage: ApiUsage | None = None
        # Told the records a running Bulk ingest job has processed, at each poll (apply's progress).
        self.bulk_progress: Callable[[int], None] | None = None
        # Records per query page (Sforce-Query-Options: batchSize, 200..2000); None = the org's default.
        self.query_batch_size: int | None = None
        # (sobject, field) -> rows whose field is not null: what a Bulk query would read.
        self.row_counts: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"<reconcile.salesforce.Salesforce https://{self._sf.sf_instance} calls={self.calls}>"

    def reader(self) -> SalesforceReader:
        return SalesforceReader(self)

    @property
    def base_url(self) -> str:
        return f"https://{self._sf.sf_instance}/services/data/v{self._config.api_version}/"

    # -- reads ---------------------------------------------------------------------------

    def org_info(self) -> OrgInfo:
        records = self.query(ORG_QUERY)
        if not records:
            raise SalesforceError("the org returned no Organization row")
        return self._org(records[0])

    def _org(self, row: Mapping[str, Any]) -> OrgInfo:
        sandbox = row.get("IsSandbox")
        return OrgInfo(instance_url=f"https://{self._sf.sf_instance}", org_id=row["Id"],
                       api_version=self._config.api_version, name=row.get("Name"),
                       is_sandbox=sandbox if isinstance(sandbox, bool) else None,
                       organization_type=row.get("OrganizationType"))

    def describe(self, sobject: str) -> dict:
        return _json(self._request("GET", f"sobjects/{_name(sobject)}/describe/"))

    def whoami(self) -> dict[str, Any]:
        """Who and where this session is: the org (one ``/composite`` request for the
        Organization row and ``/limits/``, one API call) and the user (the OAuth
        UserInfo endpoint, ``/services/oauth2/userinfo``, which is not an API call:
        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_using_userinfo_endpoint.htm)."""
        prefix = urlparse(self.base_url).path
        answer = _json(self._request("POST", "composite/", json={"allOrNone": False, "compositeRequest": [
            {"method": "GET", "referenceId": "organization", "url": f"{prefix}query/?q=" + encode_q(ORG_QUERY)},
            {"method": "GET", "referenceId": "limits", "url": f"{prefix}limits/"}]}))
        parts = {r.get("referenceId"): r for r in (answer or {}).get("compositeResponse", [])}
        rows = ((parts.get("organization") or {}).get("body") or {}).get("records") or []
        if not rows:
            raise SalesforceError("the org returned no Organization row")
        org = self._org(rows[0])
        limits = (parts.get("limits") or {}).get("body") or {}
        daily = limits.get("DailyApiRequests") if isinstance(limits, dict) else None
        if not isinstance(daily, dict) and self.usage is not None:
            daily = {"Max": self.usage.total, "Remaining": self.usage.total - self.usage.used}
        user = _json(self._request("GET", f"https://{self._sf.sf_instance}/services/oauth2/userinfo"))
        return {"instance_url": org.instance_url, "org_id": org.org_id, "org_name": org.name,
                "is_sandbox": org.is_sandbox, "org_kind": org.label,
                "organization_type": org.organization_type, "api_version": org.api_version,
                "username": user.get("preferred_username") if isinstance(user, dict) else None,
                "user_id": user.get("user_id") if isinstance(user, dict) else None,
                "sign_in": self.sign_in,
                "daily_api_requests": ({"max": daily.get("Max"), "remaining": daily.get("Remaining")}
                                       if isinstance(daily, dict) else None)}

    def org_and_describe(self, sobjects: Sequence[str], *,
                         count_field: str | None = None) -> tuple[OrgInfo, dict[str, dict]]:
        """The org's identity and the describes preflight needs, in ONE ``/composite``
        request (independent GET subrequests; one API call for all of them).

        With ``count_field``, the same request also asks ``SELECT COUNT() FROM sobject
        WHERE count_field != null`` per sobject (``row_counts``: what a Bulk query would
        read, so ``query_in`` can choose its read path by cost). A count the org
        refuses is left unknown; it does not fail the request."""
        org, describes, _rules = self._org_describe(sobjects, duplicate_rules=False, count_field=count_field)
        return org, describes

    def preflight_read(self, sobjects: Sequence[str], *, count_field: str | None = None,
                       count_sobjects: Sequence[str] = (),
                       ) -> tuple[OrgInfo, dict[str, dict], list[dict] | None]:
        """``org_and_describe`` plus the org's active duplicate rules for Contact, Lead
        and Account (``DuplicateRule``), still ONE ``/composite`` request: the query rides
        along as one more subrequest, no extra API call. The rules are None when the
        user may not read them (View Setup and Configuration is needed since Summer '20:
        https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-duplicaterule.html).
        ``count_field`` adds the ``COUNT()`` subrequests of ``org_and_describe`` for
        ``count_sobjects`` (default: every described sobject)."""
        return self._org_describe(sobjects, duplicate_rules=True, count_field=count_field,
                                  count_sobjects=count_sobjects)

    def _org_describe(self, sobjects: Sequence[str], *, duplicate_rules: bool,
                      count_field: str | None = None, count_sobjects: Sequence[str] = (),
                      ) -> tuple[OrgInfo, dict[str, dict], list[dict] | None]:
        prefix = urlparse(self.base_url).path
        subrequests = [{"method": "GET", "url": f"{prefix}sobjects/{_name(s)}/describe/",
                        "referenceId": f"describe{i}"} for i, s in enumerate(sobjects)]
        subrequests.append({"method": "GET", "referenceId": "organization",
                            "url": f"{prefix}query/?q=" + encode_q(ORG_QUERY)})
        if duplicate_rules:
            subrequests.append({"method": "GET", "referenceId": "duplicateRules",
                                "url": f"{prefix}query/?q=" + encode_q(DUPLICATE_RULES_QUERY)})
        counted = list(count_sobjects or sobjects) if count_field else []
        counts = [{"method": "GET", "referenceId": f"count{i}",
                   "url": f"{prefix}query/?q=" + encode_q(self._count_soql(s, count_field))}
                  for i, s in enumerate(counted)]
        answer = _json(self._request("POST", "composite/",
                                     json={"allOrNone": False, "compositeRequest": subrequests + counts}))
        by_ref = {r.get("referenceId"): r for r in (answer or {}).get("compositeResponse", [])}
        bodies = {}
        rules: list[dict] | None = None
        for sub in subrequests:
            part = by_ref.get(sub["referenceId"])
            if part is None:
                raise SalesforceError(f"POST composite: no answer for {sub['url']}")
            ok = 200 <= int(part.get("httpStatusCode") or 0) < 300
            if sub["referenceId"] == "duplicateRules":
                # not readable by this user (or no duplicate management): unknown, not fatal
                if ok and isinstance(part.get("body"), dict):
                    rules = [_strip(r) for r in part["body"].get("records") or []]
                continue
            if not ok:
                raise _error_for(f"GET {sub['url'].split('?')[0]}", int(part.get("httpStatusCode") or 0),
                                 part.get("body"))
            bodies[sub["referenceId"]] = part.get("body") or {}
        for i, sobject in enumerate(counted):
            part = by_ref.get(f"count{i}") or {}
            total = (part.get("body") or {}).get("totalSize") if isinstance(part.get("body"), dict) else None
            if 200 <= int(part.get("httpStatusCode") or 0) < 300 and isinstance(total, int):
                self.row_counts[(sobject, str(count_field))] = total
        records = bodies["organization"].get("records") or []
        if not records:
            raise SalesforceError("the org returned no Organization row")
        return self._org(records[0]), {s: bodies[f"describe{i}"] for i, s in enumerate(sobjects)}, rules

    @staticmethod
    def _count_soql(sobject: str, field: str | None) -> str:
        return f"SELECT COUNT() FROM {_name(sobject)} WHERE {_name(str(field))} != null"

    def count_rows(self, sobject: str, field: str) -> int:
        """Rows of ``sobject`` whose ``field`` is not null: one ``COUNT()`` query (whose
        answer is ``totalSize`` alone), remembered in ``row_counts``."""
        page = _json(self._request("GET", "query/", params="q=" + encode_q(self._count_soql(sobject, field))))
        total = page.get("totalSize") if isinstance(page, dict) else None
        if not isinstance(total, int):
            raise SalesforceError(f"COUNT() of {sobject} returned no totalSize")
        self.row_counts[(sobject, field)] = total
        return total

    def query(self, soql: str) -> list[dict]:
        """All records of one SOQL query, following ``nextRecordsUrl``, without ``attributes``."""
        return list(self._query_pages(soql))

    def query_in(self, sobject: str, field: str, values: Iterable[str],
                 fields: Sequence[str]) -> list[dict]:
        """``SELECT fields FROM sobject WHERE field IN (values)`` (values de-duplicated,
        escaped), by whichever read path costs fewer API calls for this input and this org:

        - batched ``IN (…)`` queries, as few as the URL limit allows; or
        - ONE Bulk API 2.0 query over the object's rows with a ``field``
          (``WHERE field != null``), keeping the rows whose ``field`` equals a value,
          trimmed and case-insensitively: the same records (in another order; string
          values as the org returns them). It costs ``config.bulk_query_calls`` for the
          org's row count: known from ``org_and_describe(count_field=…)``, or asked
          with one ``COUNT()`` query when the batches are many enough to make that pay.

        No cliff: one more value costs at most one more batch, or nothing."""
        head = in_query_head(_name(sobject), _name(field), [_name(f) for f in fields])
        unique = _unique(values)
        batches = list(self._in_queries(head, ")", unique))
        rows = self.row_counts.get((sobject, field))
        if rows is None and worth_counting(len(batches), self._config):
            rows = self.count_rows(sobject, field)
        if bulk_is_cheaper(len(batches), rows, self._config):
            return self._query_in_bulk(sobject, field, unique, fields)
        records: list[dict] = []
        seen: set[Any] = set()
        for soql in batches:
            for record in self._query_pages(soql):
                # SOQL matches case-insensitively: "A@x.com" and "a@x.com" in two batches
                # find the same record twice; it is returned once, as from one query
                if record.get("Id") is None or record["Id"] not in seen:
                    seen.add(record.get("Id"))
                    records.append(record)
        return records

    def _query_in_bulk(self, sobject: str, field: str, values: list[str],
                       fields: Sequence[str]) -> list[dict]:
        names = [_name(f) for f in fields]
        extra = field not in names
        select = names + [_name(field)] if extra else names
        wanted = {_fold(v) for v in values if isinstance(v, str)}
        # the whole table's rows with a value, read a page at a time: only matches are kept
        rows = self._bulk_query_rows(f"SELECT {', '.join(select)} FROM {_name(sobject)} "
                                     f"WHERE {field} != null")
        out = []
        for row in rows:
            value = row.get(field)
            if isinstance(value, str) and _fold(value) in wanted:
                if extra:
                    del row[field]
                out.append(row)
        return out

    # -- Bulk API 2.0 -------------------------------------------------------------------

    def bulk_query(self, soql: str) -> list[dict]:
        """All rows of one Bulk API 2.0 query job, as dicts of strings (an empty
        cell is None; a UTC datetime is written ``…+0000`` as REST's JSON does).
        Creates the job, polls it with backoff until ``JobComplete`` (``Failed`` /
        ``Aborted`` → SalesforceError with the job's errorMessage), then reads the
        results in pages of ``config.bulk_max_records``."""
        return list(self._bulk_query_rows(soql))

    def _bulk_query_rows(self, soql: str) -> Iterator[dict]:
        """``bulk_query``'s rows as they are read, one results page at a time: a caller
        that keeps few of them never holds the whole table."""
        job = _json(self._request("POST", "jobs/query", json={
            "operation": "query", "query": soql, "contentType": "CSV",
            "columnDelimiter": "COMMA", "lineEnding": "LF"}))
        job_id = _job_id(job)
        info = self._bulk_wait("query", job_id)
        if info.get("state") != "JobComplete":
            raise SalesforceError(f"bulk query job {job_id} ended {info.get('state')}: "
                                  f"{info.get('errorMessage') or 'no reason given'}",
                                  code=f"BULK_JOB_{str(info.get('state')).upper()}")
        locator: str | None = None
        while True:
            params = {"maxRecords": str(self._config.bulk_max_records)}
            if locator:
                params["locator"] = locator
            response = self._request("GET", f"jobs/query/{job_id}/results", params=params,
                                     headers={"Accept": "text/csv"})
            yield from _iter_csv_rows(response, stamps=True)
            locator = response.headers.get("Sforce-Locator")
            if not locator or locator == "null":
                return

    def bulk_ingest(self, action: str, sobject: str, records: Sequence[Mapping[str, Any]], *,
                    on_job: Callable[[str], None] | None = None) -> BulkOutcome:
        """One Bulk API 2.0 ingest job: ``action`` insert | update | delete; records
        are dicts (with ``Id`` for update and delete; references already resolved).
        The CSV's columns are the union of the records' keys (first-seen order, Id
        first); None or "" is sent as ``#N/A`` (set to null), a key a record lacks
        as an empty cell (leave unchanged).

        ``on_job`` is called with each job's id as soon as the job exists (before its data
        is uploaded): apply journals it, so that a run killed while the job runs can
        settle it (``bulk_job_settle``) instead of writing its records a second time.

        A request refused before the job is closed raises reconcile's error (the
        job is aborted, nothing was written); an upload whose answer is lost goes to
        a new job (``_bulk_upload``); a close whose answer is lost is settled by
        reading the job's state (``_bulk_close``). Once the job was closed, any
        failure — a poll or result read refused — raises OutcomeUnknown: the job
        may have run. A job that ends Failed/Aborted without processing a
        record raises SalesforceError; otherwise the outcome lists every row.

        Leads: Bulk API 2.0 has no ``Sforce-Auto-Assign`` header. Its create-job body
        takes an optional ``assignmentRuleId`` (v49+: "The ID of an assignment rule
        to run for a Case or a Lead",
        https://developer.salesforce.com/docs/atlas.en-us.264.0.api_asynch.meta/api_asynch/create_job.htm);
        we never send one. That no rule runs when it is absent (as with SOAP's
        opt-in AssignmentRuleHeader) is UNCONFIRMED: a Lead job cannot promise
        what the collections path does (owners unchanged).
        """
        return self.bulk_ingest_finish(self.bulk_ingest_start(action, sobject, records, on_job=on_job))

    def bulk_ingest_start(self, action: str, sobject: str, records: Sequence[Mapping[str, Any]], *,
                          on_job: Callable[[str], None] | None = None) -> BulkStarted:
        """``bulk_ingest``'s first half: open the job, upload, close (the job then runs on
        the org's side); ``bulk_ingest_finish`` waits for it and reads its results. In
        between the caller may send other requests (apply writes the Leads meanwhile)."""
        if action not in BULK_OPERATIONS:
            raise ValueError(f"bulk ingest action must be one of {', '.join(BULK_OPERATIONS)}, "
                             f"not {action!r}")
        if not records:
            return BulkStarted(None, action, sobject, records)
        body = _ingest_csv(action, sobject, records)
        job_id = self._bulk_upload(action, sobject, body, on_job)
        try:
            self._bulk_close(job_id)
        except OutcomeUnknown as err:
            raise OutcomeUnknown(f"bulk {action} job {job_id} ({len(records)} {sobject} "
                                 f"records): {err.message}", code=err.code, status=err.status) from None
        return BulkStarted(job_id, action, sobject, records)

    def bulk_ingest_finish(self, started: BulkStarted) -> BulkOutcome:
        """Wait for a job ``bulk_ingest_start`` closed; its outcome (see ``bulk_ingest``)."""
        action, sobject, records, job_id = started.action, started.sobject, started.records, started.job_id
        if job_id is None:
            return BulkOutcome(job_id=None, state="JobComplete")
        try:
            info = self._bulk_wait("ingest", job_id)
            state = str(info.get("state"))
            if state != "JobComplete" and not int(info.get("numberRecordsProcessed") or 0):
                failure: SalesforceError = SalesforceError(
                    f"bulk {action} job {job_id} ({sobject}) ended {state} without writing a "
                    f"record: {info.get('errorMessage') or 'no reason given'}",
                    code=f"BULK_JOB_{state.upper()}")
            else:
                return self._bulk_outcome(action, job_id, state, info, records)
        except SalesforceError as err:
            failure = OutcomeUnknown(f"bulk {action} job {job_id} ({len(records)} {sobject} records) "
                                     f"was closed but its outcome could not be read: {err.message}",
                                     code=err.code, status=err.status)
        raise failure

    def _bulk_outcome(self, action: str, job_id: str, state: str, info: Mapping[str, Any],
                      records: Sequence[Mapping[str, Any]]) -> BulkOutcome:
        """The rows of a finished job, reading only the result files the job info says hold
        something (``numberRecordsProcessed`` counts the failed records too:
        https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm).
        An insert reads ``successfulResults`` for the new ids; an update or delete whose
        failed and unprocessed rows account for every record not saved learns the saved
        ones from what it sent (their ids), without reading ``successfulResults``."""
        processed = int(info.get("numberRecordsProcessed") or 0)
        failed_count = int(info.get("numberRecordsFailed") or 0)
        base = f"jobs/ingest/{job_id}/"
        accept = {"Accept": "text/csv"}

        def read(what: str) -> list[dict]:
            return _csv_rows(self._request("GET", base + what + "/", headers=accept))

        saved = processed - failed_count
        successful = read("successfulResults") if action == "insert" and saved > 0 else []
        failed = read("failedResults") if failed_count else []
        incomplete = state != "JobComplete" or processed < len(records)
        unprocessed = read("unprocessedrecords") if incomplete else []
        accounted = len(failed) == failed_count and saved + len(failed) + len(unprocessed) == len(records)
        if action == "insert":
            if not accounted and saved <= 0:
                successful = read("successfulResults")
        elif not accounted:
            successful = read("successfulResults")
        else:
            not_saved = {str(row.get("sf__Id") or row.get("Id") or "")[:15] for row in (*failed, *unprocessed)}
            successful = [{"sf__Id": str(record["Id"]), "sf__Created": "false"} for record in records
                          if str(record["Id"])[:15] not in not_saved]
        return BulkOutcome(job_id=job_id, state=state, successful=successful, failed=failed,
                           unprocessed=unprocessed, records_processed=processed,
                           records_failed=failed_count, error_message=info.get("errorMessage"))

    def bulk_job_settle(self, job_id: str) -> str:
        """Settle an ingest job an earlier run created but never saw finish: its final
        state. ``Open`` (never closed: nothing was or will be written) is aborted and
        answered ``"Aborted"``; a job still running is waited for; a job the org no longer
        knows is ``"NotFound"`` (jobs older than 7 days are deleted, "Job and Batch Lifespan",
        https://developer.salesforce.com/docs/atlas.en-us.240.0.api_asynch.meta/api_asynch/asynch_api_jobs_lifespan.htm).
        Either way the records are then read to see what the job wrote."""
        try:
            info = _json(self._request("GET", f"jobs/ingest/{job_id}"))
        except SalesforceError as err:
            if err.status == 404:
                return "NotFound"
            raise
        state = info.get("state") if isinstance(info, dict) else None
        if state == "Open":
            self._request("PATCH", f"jobs/ingest/{job_id}", json={"state": "Aborted"})
            return "Aborted"
        if state not in BULK_FINAL:
            state = self._bulk_wait("ingest", job_id).get("state")
        return str(state)

    def _bulk_upload(self, action: str, sobject: str, body: bytes,
                     on_job: Callable[[str], None] | None = None) -> str:
        """Open an ingest job and upload ``body``; the job's id.

        Neither step writes a record: a job processes nothing until it is closed
        ("Salesforce will start processing the job at this point",
        https://developer.salesforce.com/docs/atlas.en-us.224.0.api_bulk_v2.meta/api_bulk_v2/creating_bulk_requests.htm).
        So the create is retried like a read (a job left open by a lost answer stays empty
        and is never closed), and an upload whose answer is lost is not sent again into
        the same job: that job is aborted and the data goes to a new one."""
        attempt = 0
        while True:
            attempt += 1
            job_id = _job_id(_json(self._request("POST", "jobs/ingest", json={
                "object": _name(sobject), "operation": action, "contentType": "CSV",
                "columnDelimiter": "COMMA", "lineEnding": "LF"})))
            if on_job is not None:
                on_job(job_id)
            failure: SalesforceError | None = None
            try:
                self._request("PUT", f"jobs/ingest/{job_id}/batches", data=body,
                              headers={"Content-Type": "text/csv"}, idempotent=False)
                return job_id
            except OutcomeUnknown as err:
                failure = TransientError(f"bulk {action} job {job_id}: the upload's answer was lost "
                                         f"({err.message})", code=err.code, status=err.status)
            except SalesforceError as err:
                failure = err
            self._bulk_abort(job_id)     # never closed: nothing was written
            if not isinstance(failure, TransientError) or attempt >= self._config.max_attempts:
                raise failure
            self._sleep(self._backoff(attempt, None))

    def _bulk_close(self, job_id: str) -> None:
        """Close an ingest job (``UploadComplete``): the job then runs.

        A close whose answer leaves the outcome open (a 5xx, a lost connection) is not
        sent again blindly: the job's state is read. ``Open`` ("An ingest job was created
        and is open for data uploads", Job States,
        https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_bulk_v2/bulk_api_2_job_states.htm):
        the close did not happen, and is sent again; any other state: it did (the job runs,
        or ran). A close
        refused outright (a 4xx) aborts the job: nothing was written."""
        attempt = 0
        while True:
            attempt += 1
            unknown: OutcomeUnknown | None = None
            refused: SalesforceError | None = None
            try:
                self._request("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"},
                              idempotent=False)
                return
            except OutcomeUnknown as err:
                unknown = err
            except SalesforceError as err:
                refused = err
            if refused is not None:
                self._bulk_abort(job_id)
                raise refused
            assert unknown is not None
            try:
                info = _json(self._request("GET", f"jobs/ingest/{job_id}"))
            except SalesforceError as err:
                raise OutcomeUnknown(f"{unknown.message}; reading the job's state failed too "
                                     f"({err.message})", code=unknown.code, status=unknown.status) from None
            if not isinstance(info, dict) or info.get("state") != "Open":
                return                    # closed by the request whose answer was lost
            if attempt >= self._config.max_attempts:
                self._bulk_abort(job_id)
                raise TransientError(f"{unknown.message}; the job is still Open (not closed, nothing "
                                     f"written) after {attempt} attempts", code=unknown.code,
                                     status=unknown.status)
            self._sleep(self._backoff(attempt, None))

    def _bulk_wait(self, kind: str, job_id: str) -> dict:
        """Poll ``jobs/{kind}/{id}`` until a final state, waiting ``poll_delays`` between polls."""
        waited = 0.0
        for delay in poll_delays(self._config):
            self._sleep(delay)
            waited += delay
            info = _json(self._request("GET", f"jobs/{kind}/{job_id}"))
            state = info.get("state") if isinstance(info, dict) else None
            if kind == "ingest" and self.bulk_progress is not None and isinstance(info, dict):
                self.bulk_progress(int(info.get("numberRecordsProcessed") or 0))
            if state in BULK_FINAL:
                return info
            if waited >= self._config.bulk_timeout_seconds:
                raise TransientError(f"bulk {kind} job {job_id} is still {state} after "
                                     f"{waited:.0f} seconds", code="BULK_JOB_TIMEOUT")
        raise AssertionError("poll_delays never ends")

    def _bulk_abort(self, job_id: str) -> None:
        try:
            self._request("PATCH", f"jobs/ingest/{job_id}", json={"state": "Aborted"})
        except SalesforceError:
            pass                          # an Open job expires by itself after 24 hours

    def count_contacts_by_account(self, account_ids: Iterable[str]) -> dict[str, int]:
        """Contacts per Account id (0 for an Account without any)."""
        ids = _unique(account_ids)
        counts = dict.fromkeys(ids, 0)
        for soql in self._in_queries(COUNT_CONTACTS_HEAD, COUNT_CONTACTS_TAIL, ids):
            for row in self._query_pages(soql):
                counts[row["AccountId"]] = int(row["cnt"])
        return counts

    def retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict | None]:
        """Records by id, in ``ids`` order (``None`` where the id is missing or not
        visible); one ``POST composite/sobjects/{type}`` per ``config.retrieve_size`` ids."""
        path = f"composite/sobjects/{_name(sobject)}"
        names = [_name(f) for f in fields]
        out: list[dict | None] = []
        size = self._config.retrieve_size
        for start in range(0, len(ids), size):
            chunk = list(ids[start:start + size])
            rows = _json(self._request("POST", path, json={"ids": chunk, "fields": names}))
            if not isinstance(rows, list) or len(rows) != len(chunk):
                raise SalesforceError(f"retrieve {sobject}: expected {len(chunk)} results, "
                                      f"got {len(rows) if isinstance(rows, list) else rows!r}")
            out.extend(_strip(row) if row else None for row in rows)
        return out

    # -- writes: one request each ------------------------------------------------------------

    # ``allow_duplicates``: send ``Sforce-Duplicate-Rule-Header: allowSave=true``, which saves
    # past duplicate rules that alert (not those that block); rollback's restores use it.
    def create(self, sobject: str, records: list[dict], *, allow_duplicates: bool = False) -> list[SaveResult]:
        body = {"allOrNone": False,
                "records": [{"attributes": {"type": _name(sobject)}, **r} for r in self._guard(records)]}
        response = self._request("POST", "composite/sobjects", json=body,
                                 headers=self._write_headers(sobject, allow_duplicates), idempotent=False)
        return self._save_results(response, len(records), created=True)

    def update(self, sobject: str, records: list[dict], *, allow_duplicates: bool = False) -> list[SaveResult]:
        for r in records:
            if not (r.get("Id") or r.get("id")):
                raise ValueError(f"update {sobject}: every record needs an Id")
        body = {"allOrNone": False,
                "records": [{"attributes": {"type": _name(sobject)}, **r} for r in self._guard(records)]}
        # Not resent when the answer is lost either: an update sent twice could overwrite
        # an edit made in between. apply settles it by reading the records.
        response = self._request("PATCH", "composite/sobjects", json=body,
                                 headers=self._write_headers(sobject, allow_duplicates), idempotent=False)
        return self._save_results(response, len(records))

    def delete(self, ids: list[str]) -> list[SaveResult]:
        params = {"ids": ",".join(self._guard(ids)), "allOrNone": "false"}
        response = self._request("DELETE", "composite/sobjects", params=params, idempotent=False)
        return self._save_results(response, len(ids))

    # -- internals -------------------------------------------------------------------------

    def _guard(self, items: list) -> list:
        if len(items) > self._config.collection_size:
            raise ValueError(f"{len(items)} records in one collections request; "
                             f"at most {self._config.collection_size} (the caller chunks)")
        return items

    @staticmethod
    def _write_headers(sobject: str, allow_duplicates: bool = False) -> dict[str, str]:
        # Lead and Account assignment rules would otherwise move owners on every write.
        headers = {"Sforce-Auto-Assign": "FALSE"} if sobject in ASSIGNMENT_RULE_SOBJECTS else {}
        if allow_duplicates:
            # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm
            headers["Sforce-Duplicate-Rule-Header"] = "allowSave=true"
        return headers

    @staticmethod
    def _save_results(response: requests.Response, expected: int, *, created: bool = False) -> list[SaveResult]:
        # A 200 that does not say what happened to each record leaves the outcome unknown.
        items = _json(response, OutcomeUnknown)
        if not isinstance(items, list) or len(items) != expected:
            raise OutcomeUnknown(f"collections request: expected {expected} results, got "
                                 f"{len(items) if isinstance(items, list) else type(items).__name__}")
        results = []
        for item in items:
            ok = bool(item.get("success"))
            errors = tuple(RecordError(status_code=e.get("statusCode") or e.get("errorCode") or "UNKNOWN",
                                       message=_error_message(e),
                                       fields=tuple(e.get("fields") or ()))
                           for e in item.get("errors") or ())
            results.append(SaveResult(id=item.get("id"), success=ok, errors=errors,
                                      created=created and ok))
        return results

    def _in_queries(self, head: str, tail: str, values: list[str]) -> Iterator[str]:
        """SOQL statements ``head + 'v1','v2',… + tail``, each as long as fits both
        ``config.max_query_url`` bytes of request URL and SOQL's 100,000 characters."""
        url_budget = self._config.max_query_url - len(self.base_url + "query/?q=")
        try:
            for batch in in_batches(head, tail, values, url_budget, SOQL_MAX_CHARS):
                yield head + ",".join(batch) + tail
        except ValueTooLong as exc:
            raise MalformedRequest(str(exc)) from None

    def _query_pages(self, soql: str) -> Iterator[dict]:
        headers = ({"Sforce-Query-Options": f"batchSize={self.query_batch_size}"}
                   if self.query_batch_size else None)
        page = _json(self._request("GET", "query/", params="q=" + encode_q(soql), headers=headers))
        while True:
            for record in page.get("records", ()):
                yield _strip(record)
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            page = _json(self._request("GET", f"https://{self._sf.sf_instance}{next_url}",
                                       headers=headers))

    def _request(self, method: str, path: str, *, params: Mapping[str, str] | str | None = None,
                 json: Any = None, data: bytes | None = None,
                 headers: Mapping[str, str] | None = None,
                 idempotent: bool = True) -> requests.Response:
        """Send one REST request (with retries); return the 2xx response or raise."""
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            url = path if path.startswith("https://") else self.base_url + path
            what = f"{method} {urlparse(url).path}"
            request_headers = {"Authorization": f"Bearer {self._sf.session_id}",
                               "Accept": "application/json", **(headers or {})}
            if json is not None:
                request_headers["Content-Type"] = "application/json"
            self.calls += 1
            failure: SalesforceError | ConfigError | None = None
            response = None
            try:
                response = self._sf.session.request(method, url, params=params, json=json,
                                                    data=data, headers=request_headers, timeout=self._timeout,
                                                    verify=self._sf.session.verify)
            except requests.exceptions.SSLError:
                failure = ConfigError(f"{what}: the server's TLS certificate is not trusted; behind a "
                                      "corporate proxy (or with the sandbox org) set REQUESTS_CA_BUNDLE "
                                      "to the CA bundle to trust")
            except requests.RequestException as exc:
                if not idempotent and not _not_sent(exc):
                    failure = OutcomeUnknown(f"{what}: the connection failed after the request was "
                                             f"sent ({type(exc).__name__}); it may or may not have "
                                             "been applied")
                else:
                    failure = TransientError(f"{what}: cannot connect to {urlparse(url).netloc or url} "
                                             f"({type(exc).__name__}); check SALESFORCE_DOMAIN (or the "
                                             "org of --target-org) and the network")
            if response is not None:
                usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
                if usage is not None:
                    self.usage = usage
                if response.status_code < 300:
                    return response
                failure = _translate(what, response)
                if not idempotent and response.status_code in OUTCOME_OPEN_STATUS:
                    # The request arrived; whether it was saved before the failure, nobody says.
                    failure = OutcomeUnknown(f"{what}: HTTP {response.status_code}"
                                             + (f" {failure.code}" if failure.code else "")
                                             + " after the request was sent; it may or may not have been "
                                             "applied", code=failure.code, status=response.status_code)
                if isinstance(failure, SessionExpired) and not relogged and self._renew is not None:
                    relogged = True
                    self._relogin()
                    attempt -= 1          # the re-login's resend is not a retry
                    continue
                if isinstance(failure, SessionExpired) and relogged:
                    failure = SessionExpired(f"{what}: HTTP {response.status_code} {failure.code} again with a "
                                             f"session signed in just now ({self.sign_in}); check the user's "
                                             "access: the connected app's policies, IP ranges, permissions",
                                             code=failure.code, status=response.status_code)
            if isinstance(failure, TransientError) and attempt < self._config.max_attempts:
                self._sleep(self._backoff(attempt, response))
                continue
            if isinstance(failure, TransientError) and attempt > 1:
                failure = TransientError(f"{failure.message} (gave up after {attempt} attempts)",
                                         code=failure.code, status=failure.status)
            assert failure is not None  # every path above returned or set it
            raise failure

    def _backoff(self, attempt: int, response: requests.Response | None) -> float:
        retry_after = response.headers.get("Retry-After", "") if response is not None else ""
        return Backoff(self._config.backoff_seconds, MAX_BACKOFF).delay(
            attempt - 1, random=self._rng.random, at_least=float(retry_after) if retry_after.isdigit() else 0.0)

    def _relogin(self) -> None:
        """Sign in again (the same mode) and use the new session from now on."""
        assert self._renew is not None
        failure = None
        try:
            token, instance_url = self._renew()
        except ReconcileError as exc:
            failure = SessionExpired(f"the session expired and signing in again failed: {exc.message}",
                                     code="INVALID_SESSION_ID", status=401)
        if failure is not None:
            raise failure
        self._sf.session_id = token
        self._sf.sf_instance = urlparse(instance_url).netloc


def _error_message(error: Mapping[str, Any]) -> str:
    """An item error's message; a DUPLICATES_DETECTED one also names the duplicate rule,
    whether it blocks, and the matching records (its ``duplicateResult``:
    https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-duplicateresult.html)."""
    message = str(error.get("message") or "")
    dup = error.get("duplicateResult")
    if not isinstance(dup, Mapping):
        return message
    matches = []
    for result in dup.get("matchResults") or ():
        if not isinstance(result, Mapping):
            continue
        for match in result.get("matchRecords") or ():
            record = match.get("record") if isinstance(match, Mapping) else None
            if isinstance(record, Mapping) and record.get("Id"):
                kind = (record.get("attributes") or {}).get("type") or result.get("entityType") or "record"
                matches.append(f"{kind} {record['Id']}")
    rule = dup.get("duplicateRule") or "a duplicate rule"
    action = "blocks" if dup.get("allowSave") is False else "alerts"
    found = ", ".join(matches) if matches else "records not named"
    return f"{message} (duplicate rule {rule} {action}; matching: {found})"


def _json(response: requests.Response, error: type[SalesforceError] = SalesforceError) -> Any:
    try:
        return response.json()
    except ValueError:
        pass
    raise error(f"{response.request.method} {urlparse(response.url).path}: HTTP {response.status_code} "
                f"with a body that is not JSON: {response.text[:100]!r}", status=response.status_code)


def _fold(value: str) -> str:
    return value.strip().casefold()


def _job_id(job: Any) -> str:
    if not isinstance(job, dict) or not isinstance(job.get("id"), str) or not job["id"]:
        raise SalesforceError(f"a bulk job was created but its id is missing: {str(job)[:100]!r}")
    return job["id"]


def _bulk_cell(value: Any) -> str:
    if value is None or value == "":
        return BULK_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _ingest_csv(action: str, sobject: str, records: Sequence[Mapping[str, Any]]) -> bytes:
    columns: dict[str, None] = {}
    if action != "insert":
        columns["Id"] = None
    for record in records:
        if action != "insert" and not record.get("Id"):
            raise ValueError(f"bulk {action} {sobject}: every record needs an Id")
        for key in (record if action != "delete" else ()):
            columns.setdefault(_name(key), None)
    names = list(columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for record in records:
        writer.writerow(["" if name not in record else _bulk_cell(record[name]) for name in names])
    return out.getvalue().encode("utf-8")


def _csv_rows(response: requests.Response, *, stamps: bool = False) -> list[dict]:
    """A CSV body → dicts (empty cell → None; with ``stamps``, ``…Z`` datetimes → ``…+0000``)."""
    return list(_iter_csv_rows(response, stamps=stamps))


def _iter_csv_rows(response: requests.Response, *, stamps: bool = False) -> Iterator[dict]:
    text = response.content.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        return
    for cells in reader:
        if not cells:
            continue
        row: dict[str, str | None] = {}
        for name, cell in zip(header, cells, strict=False):  # a short row: its last cells are empty
            if cell == "":
                row[name] = None
            elif stamps and _BULK_STAMP.match(cell):
                row[name] = cell[:-1] + "+0000"
            else:
                row[name] = cell
        yield row


def _not_sent(exc: requests.RequestException) -> bool:
    """True when the request certainly never reached the server (no connection was made)."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, NewConnectionError)


def _translate(what: str, response: requests.Response) -> SalesforceError:
    """A non-2xx response → reconcile's error (Salesforce's errorCode and words kept)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return _error_for(what, response.status_code, body, response.text)


def _error_for(what: str, status: int, body: Any, text_body: str = "") -> SalesforceError:
    """A non-2xx status and its body (also a composite subresponse's) → reconcile's error."""
    code, message = None, ""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        code, message = body[0].get("errorCode"), body[0].get("message") or ""
    elif isinstance(body, dict):
        code, message = body.get("errorCode") or body.get("error"), body.get("message") or ""
    elif text_body:
        message = text_body[:200]
    message = " ".join(str(message).split())
    text = f"{what}: HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if status == 401 or code == "INVALID_SESSION_ID":
        return SessionExpired(f"{text} — the session or access token is invalid or expired; "
                              "get a new one (SALESFORCE_ACCESS_TOKEN) and run again",
                              code=code or "INVALID_SESSION_ID", status=status)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return ApiLimitExceeded(f"{text} — the org's API request limit is reached; "
                                "try again later", code=code, status=status)
    if status in TRANSIENT_STATUS or code in TRANSIENT_CODES:
        return TransientError(text, code=code, status=status)
    if status == 403:
        return PermissionDenied(f"{text} — the user lacks access", code=code, status=status)
    if status == 400:
        return MalformedRequest(text, code=code, status=status)
    return SalesforceError(text, code=code, status=status)


class SalesforceReader:
    """The read-only port: plan and show get this, so they cannot write."""

    def __init__(self, sf: Salesforce):
        self._sf = sf

    @property
    def calls(self) -> int:
        return self._sf.calls

    @property
    def usage(self) -> ApiUsage | None:
        return self._sf.usage

    def org_info(self) -> OrgInfo:
        return self._sf.org_info()

    def whoami(self) -> dict[str, Any]:
        return self._sf.whoami()

    def describe(self, sobject: str) -> dict:
        return self._sf.describe(sobject)

    def org_and_describe(self, sobjects: Sequence[str], *,
                         count_field: str | None = None) -> tuple[OrgInfo, dict[str, dict]]:
        return self._sf.org_and_describe(sobjects, count_field=count_field)

    def preflight_read(self, sobjects: Sequence[str], *, count_field: str | None = None,
                       count_sobjects: Sequence[str] = (),
                       ) -> tuple[OrgInfo, dict[str, dict], list[dict] | None]:
        return self._sf.preflight_read(sobjects, count_field=count_field, count_sobjects=count_sobjects)

    def query_in(self, sobject: str, field: str, values: Iterable[str],
                 fields: Sequence[str]) -> list[dict]:
        return self._sf.query_in(sobject, field, values, fields)

    def count_contacts_by_account(self, account_ids: Iterable[str]) -> dict[str, int]:
        return self._sf.count_contacts_by_account(account_ids)

    def bulk_query(self, soql: str) -> list[dict]:
        return self._sf.bulk_query(soql)

    def retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict | None]:
        return self._sf.retrieve(sobject, ids, fields)
