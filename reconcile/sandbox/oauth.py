"""The sandbox org's sign-in: the OAuth 2.0 token endpoint, the UserInfo endpoint
and SOAP ``login()``, with Salesforce's shapes.

* ``POST /services/oauth2/token`` (form-encoded) grants
  ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (an RS256 assertion verified
  against the connected app's certificate: ``iss`` the consumer key, ``sub`` the
  username, ``aud`` https://login.salesforce.com, https://test.salesforce.com or the
  org's own URL, ``exp`` in the future;
  https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm),
  ``client_credentials`` and ``password``. A success is
  ``{"access_token", "instance_url", "id", "token_type": "Bearer", "issued_at",
  "signature", "scope"}``; a refusal is HTTP 400 ``{"error", "error_description"}``
  (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm).
* ``GET /services/oauth2/userinfo`` (Bearer): who the session belongs to.
* ``POST /services/Soap/u/NN.0``: SOAP ``login()`` for NN up to 64; refused with a
  SOAP fault for 65.0 and later (not served there, Salesforce help article 005132110)
  and whenever ``soap_login_enabled`` is off (the default for orgs created since Winter '26).

Issued sessions last ``session_seconds`` (None: until the server stops), and
``expire_after(n)`` ends every issued session after n more API requests made
with one — a session expiring in the middle of a run. (The server's own static
token, ``SandboxServer.token``, is governed by ``Faults.expire_session`` instead.) Token requests are not API requests:
they are not counted against the daily allowance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import jwt
from cryptography import x509

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LAST_SOAP_LOGIN_VERSION = 64


@dataclass
class OAuthApp:
    """The org's connected app and its integration user."""
    client_id: str = field(default_factory=lambda: "3MVG9" + secrets.token_urlsafe(40).replace("-", "A"))
    client_secret: str = field(default_factory=lambda: secrets.token_hex(32).upper())
    username: str = "integration@sandbox.example.org"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    security_token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    user_id: str = "005000000000001AAA"
    certificate_pem: bytes = b""          # the JWT app's certificate (public key)
    private_key_path: Path | None = None  # its private key, written for the tests and `serve`


class OAuth:
    """Sessions and sign-in for one SandboxServer."""

    def __init__(self, org_id: str, session_seconds: float | None = None,
                 soap_login: bool = True):
        self.org_id = org_id
        self.app = OAuthApp()
        self.session_seconds = session_seconds
        self.soap_login_enabled = soap_login
        self.grants: list[str] = []       # every grant asked for, in order (tests read it)
        self._sessions: dict[str, float | None] = {}
        self._countdown: int | None = None
        self._lock = threading.Lock()

    # -- sessions -----------------------------------------------------------------------

    def issue(self) -> str:
        token = f"{self.org_id[:15]}!{secrets.token_urlsafe(48)}"
        expires = time.monotonic() + self.session_seconds if self.session_seconds else None
        with self._lock:
            self._sessions[token] = expires
        return token

    def valid(self, token: str) -> bool:
        """Is ``token`` a live issued session? Each check is one API request: it also
        moves an ``expire_after`` countdown."""
        with self._lock:
            if self._countdown is not None:
                if self._countdown <= 0:
                    self._sessions.clear()
                    self._countdown = None
                else:
                    self._countdown -= 1
            for known, expires in self._sessions.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return expires is None or time.monotonic() < expires
        return False

    def expire_after(self, requests: int) -> None:
        """Every issued session ends after ``requests`` more API requests made with one."""
        with self._lock:
            self._countdown = requests

    # -- endpoints --------------------------------------------------------------------------

    def token(self, body: bytes, headers: Any, instance_url: str) -> tuple[int, dict]:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        basic = _basic_auth(headers.get("Authorization"))
        client_id = form.get("client_id") or (basic[0] if basic else "")
        client_secret = form.get("client_secret") or (basic[1] if basic else "")
        if grant == JWT_GRANT:
            return self._jwt(form.get("assertion", ""), instance_url)
        if grant not in ("client_credentials", "password"):
            return _refuse("unsupported_grant_type", "grant type not supported")
        if not _same(client_id, self.app.client_id):
            return _refuse("invalid_client_id", "client identifier invalid")
        if not _same(client_secret, self.app.client_secret):
            return _refuse("invalid_client", "invalid client credentials")
        if grant == "password":
            expected = self.app.password + self.app.security_token
            if not (_same(form.get("username", ""), self.app.username)
                    and (_same(form.get("password", ""), expected)
                         or _same(form.get("password", ""), self.app.password))):
                return _refuse("invalid_grant", "authentication failure")
        return 200, self._granted(instance_url)

    def _jwt(self, assertion: str, instance_url: str) -> tuple[int, dict]:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _refuse("invalid_grant", "invalid assertion")
        if not _same(str(claims.get("iss", "")), self.app.client_id):
            return _refuse("invalid_client_id", "client identifier invalid")
        try:
            public_key = x509.load_pem_x509_certificate(self.app.certificate_pem).public_key()
            jwt.decode(assertion, public_key, algorithms=["RS256"],  # type: ignore[arg-type]
                       audience=["https://login.salesforce.com", "https://test.salesforce.com",
                                 instance_url],
                       options={"require": ["iss", "sub", "aud", "exp"]})
        except jwt.ExpiredSignatureError:
            return _refuse("invalid_grant", "expired authorization code")
        except jwt.InvalidAudienceError:
            return _refuse("invalid_grant", "audience is invalid")
        except jwt.PyJWTError:
            return _refuse("invalid_grant", "invalid assertion")
        if claims.get("sub") != self.app.username:
            return _refuse("invalid_grant", "user hasn't approved this consumer")
        return 200, self._granted(instance_url)

    def _granted(self, instance_url: str) -> dict:
        token = self.issue()
        issued = str(int(time.time() * 1000))
        identity = f"{instance_url}/id/{self.org_id}/{self.app.user_id}"
        signature = base64.b64encode(hmac.new(self.app.client_secret.encode(),
                                              (identity + issued).encode(), hashlib.sha256).digest())
        return {"access_token": token, "signature": signature.decode(), "scope": "api",
                "instance_url": instance_url, "id": identity, "token_type": "Bearer",
                "issued_at": issued}

    def userinfo(self, instance_url: str) -> dict:
        return {"sub": f"{instance_url}/id/{self.org_id}/{self.app.user_id}",
                "user_id": self.app.user_id, "organization_id": self.org_id,
                "preferred_username": self.app.username, "name": "Integration User",
                "email": self.app.username, "user_type": "STANDARD"}

    def soap_login(self, version: int, body: bytes, instance_url: str) -> tuple[int, bytes]:
        """SOAP ``login()``: a ``loginResponse`` with ``sessionId`` and ``serverUrl``,
        or a ``soapenv:Fault`` whose ``sf:exceptionCode`` / ``sf:exceptionMessage``
        say why (the elements simple-salesforce and other clients read)."""
        if version > LAST_SOAP_LOGIN_VERSION:
            return 500, _fault("UNSUPPORTED_API_VERSION",
                               f"SOAP API login() is not available in API version {version}.0")
        if not self.soap_login_enabled:
            return 500, _fault("INVALID_OPERATION",
                               "SOAP API login() is disabled in this org; use OAuth")
        text = body.decode("utf-8", "replace")
        username = _element(text, "username")
        password = _element(text, "password")
        if username != self.app.username or password not in (
                self.app.password + self.app.security_token, self.app.password):
            return 500, _fault("INVALID_LOGIN", "Invalid username, password, security token; "
                               "or user locked out.")
        token = escape(self.issue())
        server = escape(f"{instance_url}/services/Soap/u/{version}.0/{self.org_id}")
        metadata = escape(f"{instance_url}/services/Soap/m/{version}.0/{self.org_id}")
        return 200, (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{metadata}</metadataServerUrl>"
            f"<passwordExpired>false</passwordExpired><serverUrl>{server}</serverUrl>"
            f"<sessionId>{token}</sessionId><userId>{self.app.user_id}</userId>"
            # LoginResult.userInfo (GetUserInfoResult): clients read the org id here
            f"<userInfo><organizationId>{self.org_id}</organizationId>"
            f"<userEmail>{escape(self.app.username)}</userEmail>"
            "<userFullName>Integration User</userFullName>"
            f"<userId>{self.app.user_id}</userId><userName>{escape(self.app.username)}</userName>"
            "<userType>Standard</userType></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>").encode()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refuse(code: str, description: str) -> tuple[int, dict]:
    return 400, {"error": code, "error_description": description}


def _basic_auth(value: str | None) -> tuple[str, str] | None:
    scheme, _, data = (value or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, secret = base64.b64decode(data).decode("utf-8").partition(":")
    except ValueError:
        return None
    return user, secret


def _element(text: str, name: str) -> str:
    """The text of the first ``<…:name>`` or ``<name>`` element (XML-unescaped)."""
    from xml.sax.saxutils import unescape
    for opener in (f":{name}>", f"<{name}>"):
        start = text.find(opener)
        if start >= 0:
            start += len(opener)
            end = text.find("</", start)
            return unescape(text[start:end]) if end >= 0 else ""
    return ""


def _fault(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{escape(code)}: {escape(message)}</faultstring>"
        f"<detail><sf:LoginFault><sf:exceptionCode>{escape(code)}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage></sf:LoginFault></detail>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>").encode()
