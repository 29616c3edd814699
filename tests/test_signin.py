"""Every sign-in mode, end to end against the sandbox org (plan, approve, apply), the
refusals (one line, exit code 1, no API call), renewal of a session that expires in
the middle of an apply, and the token endpoint's documented answers."""

from __future__ import annotations

import json
import re
import stat
import sys
from importlib import resources
from pathlib import Path

import pytest
import requests
import trustme
from typer.testing import CliRunner

from reconcile import salesforce
from reconcile.cli import app
from reconcile.config import Config
from reconcile.errors import ConfigError
from reconcile.sandbox import SandboxServer

pytestmark = pytest.mark.e2e

ALL_VARS = {name: "" for name in salesforce.ALL_VARS}
NOW = "2026-11-25T09:00:00.000Z"


@pytest.fixture()
def org():
    with SandboxServer(seed="demo") as sb:
        yield sb


def outcomes(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.csv"
    path.write_bytes((resources.files("reconcile.sandbox") / "demo_outcomes.csv").read_bytes())
    return path


def runner(env: dict[str, str], tmp_path: Path):
    archive = tmp_path / "plans"
    full = {**ALL_VARS, **env, "RECONCILE_NOW": NOW, "RECONCILE_ARCHIVE": str(archive)}

    def run(*args: str):
        return CliRunner().invoke(app, list(args), env=full, catch_exceptions=False)
    return run


def fake_sf(tmp_path: Path, org: SandboxServer, *, redacts: bool = True) -> dict[str, str]:
    """A stand-in ``sf`` on PATH answering like Salesforce CLI's --json output:
    ``{"status": 0, "result": {...}}``, or ``{"status": 1, "name", "message"}``.
    ``redacts``: a CLI since May 2026 (display redacts accessToken; ``org auth
    show-access-token`` gives it, result ``{"accessToken"}``:
    https://github.com/salesforcecli/plugin-org/blob/main/src/commands/org/auth/show-access-token.ts,
    https://github.com/forcedotcom/cli/issues/3560); else an older CLI without
    that command, whose display prints the token."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    token = org.oauth.issue()
    script = bin_dir / "sf"
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
alias = args[args.index("--target-org") + 1] if "--target-org" in args else None
redacts = {redacts!r}
if alias != "sandbox":
    print(json.dumps({{"status": 1, "name": "NamedOrgNotFoundError",
                      "message": f"No authorization information found for {{alias}}.", "exitCode": 1}}))
    sys.exit(1)
if args[:2] == ["org", "display"]:
    shown = "[REDACTED] Use 'sf org auth show-access-token' to view" if redacts else {token!r}
    print(json.dumps({{"status": 0, "result": {{"id": {org.store.org_id!r}, "instanceUrl": {org.instance_url!r},
                      "username": "integration@sandbox.example.org", "alias": alias,
                      "accessToken": shown, "connectedStatus": "Connected"}}}}))
elif args[:3] == ["org", "auth", "show-access-token"] and redacts:
    print(json.dumps({{"status": 0, "result": {{"accessToken": {token!r}}}}}))
else:
    print(json.dumps({{"status": 1, "name": "CommandNotFound", "message": "not a sf command", "exitCode": 127}}))
    sys.exit(127)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    import os
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "REQUESTS_CA_BUNDLE": str(org.ca_path)}


def plan_approve_apply(run, files: Path, *extra: str):
    planned = run(*extra, "plan", str(files), "--allow-create")
    assert planned.exit_code == 0, planned.output
    plan_id = re.search(r"Saved plan ([0-9a-f]{12})", planned.stdout).group(1)
    assert "Org: Sandbox — " in planned.stdout
    approved = run("approve", plan_id, "--by", "Jane Admin")
    assert approved.exit_code == 0, approved.output
    applied = run(*extra, "apply", plan_id)
    return plan_id, applied


def assert_written_once(org: SandboxServer) -> None:
    ids = [(sobject, record_id) for _m, sobject, record_id, _f in org.stats.writes]
    assert ids and len(ids) == len(set(ids))


@pytest.mark.parametrize("mode", ["token", "jwt", "client_credentials", "password", "soap"])
def test_every_environment_sign_in_plans_and_applies(org, tmp_path, mode):
    run = runner(org.env_for(mode), tmp_path)
    _, applied = plan_approve_apply(run, outcomes(tmp_path))
    assert applied.exit_code == 0, applied.output
    assert "Apply complete" in applied.stdout
    assert_written_once(org)
    expected = {"jwt": ["urn:ietf:params:oauth:grant-type:jwt-bearer"] * 2,
                "client_credentials": ["client_credentials"] * 2, "password": ["password"] * 2}
    assert org.oauth.grants == expected.get(mode, [])   # one sign-in per command that connects


@pytest.mark.parametrize("redacts", [True, False])
def test_a_salesforce_cli_alias_plans_and_applies(org, tmp_path, redacts):
    env = fake_sf(tmp_path, org, redacts=redacts)
    run = runner({**env, "SALESFORCE_TARGET_ORG": "sandbox"}, tmp_path)
    _, applied = plan_approve_apply(run, outcomes(tmp_path))
    assert applied.exit_code == 0, applied.output
    assert_written_once(org)


def test_the_target_org_option_wins_over_the_environment(org, tmp_path):
    env = fake_sf(tmp_path, org)
    run = runner({**env, "SALESFORCE_ACCESS_TOKEN": "not-a-token", "SALESFORCE_DOMAIN": "x.invalid"}, tmp_path)
    result = run("--target-org", "sandbox", "whoami", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["sign_in"] == "Salesforce CLI (sandbox)" and info["org_id"] == org.store.org_id


def not_a_key(tmp_path: Path) -> str:
    path = tmp_path / "garbage.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    return str(path)


def wrong_key(tmp_path: Path) -> str:
    other = trustme.CA().issue_cert("someone-else.invalid", key_type=trustme.KeyType.RSA)
    path = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(path))
    return str(path)


@pytest.mark.parametrize("case, change, expect", [
    ("wrong key", lambda org, tmp: ("jwt", {"SALESFORCE_PRIVATE_KEY_FILE": wrong_key(tmp)}), "invalid_grant"),
    ("wrong client id", lambda org, tmp: ("jwt", {"SALESFORCE_CLIENT_ID": "3MVG9nope"}), "invalid_client_id"),
    ("wrong user", lambda org, tmp: ("jwt", {"SALESFORCE_USERNAME": "eve@example.org"}), "invalid_grant"),
    ("wrong secret", lambda org, tmp: ("client_credentials", {"SALESFORCE_CLIENT_SECRET": "nope"}), "invalid_client"),
    ("wrong password", lambda org, tmp: ("password", {"SALESFORCE_PASSWORD": "nope"}), "invalid_grant"),
    ("wrong SOAP password", lambda org, tmp: ("soap", {"SALESFORCE_PASSWORD": "nope"}), "INVALID_LOGIN"),
    ("unreadable key", lambda org, tmp: ("jwt", {"SALESFORCE_PRIVATE_KEY_FILE": str(tmp / "none.pem")}),
     "SALESFORCE_PRIVATE_KEY_FILE"),
    ("not a key", lambda org, tmp: ("jwt", {"SALESFORCE_PRIVATE_KEY_FILE": not_a_key(tmp)}),
     "is not an RSA private key"),
])
def test_a_refused_sign_in_is_one_line_exit_1_and_no_api_call(org, tmp_path, case, change, expect):
    mode, override = change(org, tmp_path)
    run = runner({**org.env_for(mode), **override}, tmp_path)
    org.stats.reset()
    result = run("plan", str(outcomes(tmp_path)))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert org.stats.requests == 0
    for secret in (org.oauth.app.client_secret, org.oauth.app.password):
        assert secret not in result.output


def test_an_unknown_cli_alias_is_one_line_and_no_api_call(org, tmp_path):
    env = fake_sf(tmp_path, org)
    run = runner({**env, "SALESFORCE_TARGET_ORG": "nope"}, tmp_path)
    org.stats.reset()
    result = run("plan", str(outcomes(tmp_path)))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No authorization information found for nope" in lines[0]
    assert "SALESFORCE_TARGET_ORG" in lines[0]
    assert org.stats.requests == 0


def test_sf_missing_from_path_is_one_line(org, tmp_path):
    run = runner({"PATH": str(tmp_path), "SALESFORCE_TARGET_ORG": "sandbox"}, tmp_path)
    result = run("whoami")
    assert result.exit_code == 1 and "`sf` is not on PATH" in result.stderr


@pytest.mark.parametrize("version, soap_enabled", [("66.0", False), ("61.0", False)])
def test_a_refused_soap_login_names_the_oauth_alternatives(tmp_path, version, soap_enabled):
    with SandboxServer(seed="demo", soap_login=soap_enabled) as org:
        run = runner({**org.env_for("soap"), "SALESFORCE_API_VERSION": version}, tmp_path)
        result = run("whoami")
        assert result.exit_code == 1
        line = result.stderr.strip()
        assert "\n" not in line
        assert "SOAP API login()" in line and "JWT bearer" in line and "client credentials" in line
        assert "SALESFORCE_TARGET_ORG" in line
        assert org.stats.requests == 0


def test_the_sandbox_refuses_soap_login_from_v65():
    """SOAP login() is not served in API v65.0 and later (Salesforce help article
    005132110, https://help.salesforce.com/s/articleView?id=005132110&type=1)."""
    with SandboxServer(seed="demo") as org:
        body = "<n1:username>x</n1:username><n1:password>y</n1:password>"
        answer = requests.post(f"{org.instance_url}/services/Soap/u/65.0", data=body, verify=str(org.ca_path))
        assert answer.status_code == 500 and "<sf:exceptionCode>" in answer.text


@pytest.mark.parametrize("after, resent", [
    (3, "GET"),        # the create pre-check query
    (4, "POST"),       # the Contact create (a write)
    (8, "PATCH"),      # the Lead update (a write)
])
def test_a_session_expiring_mid_apply_under_jwt_is_renewed_and_nothing_is_written_twice(org, tmp_path, after,
                                                                                          resent):
    run = runner(org.env_for("jwt"), tmp_path)
    planned = run("plan", str(outcomes(tmp_path)), "--allow-create")
    plan_id = re.search(r"Saved plan ([0-9a-f]{12})", planned.stdout).group(1)
    assert run("approve", plan_id, "--by", "Jane").exit_code == 0
    org.stats.reset()
    org.oauth.expire_after(after)    # every session ends after that many more API requests
    applied = run("apply", plan_id)
    assert applied.exit_code == 0, applied.output
    log = org.stats.log
    expired = [i for i, (_m, _p, summary) in enumerate(log) if "INVALID_SESSION_ID" in summary]
    assert expired == [after]                                  # once, where it was meant to
    assert log[after + 1][:2] == log[after][:2] and log[after][0] == resent   # the same request, resent
    assert org.oauth.grants.count("urn:ietf:params:oauth:grant-type:jwt-bearer") == 3  # plan, apply, renewal
    assert_written_once(org)
    result = json.loads(next((tmp_path / "plans").glob(f"{plan_id}*/apply.json")).read_text())
    assert result["status"] == "applied" and {r["status"] for r in result["results"]} == {"applied"}


def test_sessions_last_session_seconds(monkeypatch):
    from reconcile.sandbox import oauth
    clock = [1000.0]
    monkeypatch.setattr(oauth.time, "monotonic", lambda: clock[0])
    sessions = oauth.OAuth("00D000000000001AAA", session_seconds=60)
    token = sessions.issue()
    assert sessions.valid(token)
    clock[0] += 61
    assert not sessions.valid(token) and not sessions.valid("00D000000000001!other")


def test_a_pasted_token_is_not_renewed(org, tmp_path):
    sf = salesforce.connect(Config(), org.env)
    org.faults.expire_session()
    with pytest.raises(Exception) as err:
        sf.org_info()
    assert "INVALID_SESSION_ID" in str(err.value) and org.oauth.grants == []


@pytest.mark.parametrize("env, named", [
    ({"SALESFORCE_ACCESS_TOKEN": "t", "SALESFORCE_PRIVATE_KEY_FILE": "k.pem"},
     ["SALESFORCE_ACCESS_TOKEN", "SALESFORCE_PRIVATE_KEY_FILE"]),
    ({"SALESFORCE_TARGET_ORG": "a", "SALESFORCE_PASSWORD": "p"}, ["SALESFORCE_PASSWORD", "SALESFORCE_TARGET_ORG"]),
    ({"SALESFORCE_CLIENT_ID": "c"}, ["SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_CLIENT_SECRET"]),
    ({"SALESFORCE_CLIENT_ID": "c", "SALESFORCE_USERNAME": "u"}, ["SALESFORCE_PRIVATE_KEY_FILE"]),
    ({"SALESFORCE_CLIENT_SECRET": "s"}, ["SALESFORCE_CLIENT_ID", "SALESFORCE_DOMAIN"]),
    ({"SALESFORCE_CLIENT_ID": "c", "SALESFORCE_CLIENT_SECRET": "s", "SALESFORCE_DOMAIN": "login"},
     ["SALESFORCE_DOMAIN"]),
    ({"SALESFORCE_CLIENT_ID": "c", "SALESFORCE_USERNAME": "u", "SALESFORCE_PASSWORD": "p"},
     ["SALESFORCE_CLIENT_SECRET", "SALESFORCE_DOMAIN"]),
    ({"SALESFORCE_CLIENT_SECRET": "s", "SALESFORCE_USERNAME": "u", "SALESFORCE_PASSWORD": "p",
      "SALESFORCE_DOMAIN": "login"}, ["SALESFORCE_CLIENT_ID"]),
])
def test_ambiguous_or_half_set_environments_name_the_variables(env, named):
    with pytest.raises(ConfigError) as err:
        salesforce.connect(Config(), env)
    message = str(err.value)
    assert "\n" not in message
    for name in named:
        assert name in message


@pytest.mark.parametrize("domain, url", [
    ("login", "https://login.salesforce.com"),
    ("test", "https://test.salesforce.com"),
    ("acme.my", "https://acme.my.salesforce.com"),
    ("acme.my.salesforce.com", "https://acme.my.salesforce.com"),
    ("acme--dev.sandbox.my.salesforce.com", "https://acme--dev.sandbox.my.salesforce.com"),
    ("https://acme.my.salesforce.com/", "https://acme.my.salesforce.com"),
    ("127.0.0.1:8443", "https://127.0.0.1:8443"),
])
def test_the_domain_names_the_token_endpoint(domain, url):
    assert salesforce._domain_url(domain) == url


def test_the_jwt_audience_is_the_login_server_or_the_host():
    assert salesforce._audience("https://acme.my.salesforce.com") == "https://login.salesforce.com"
    assert salesforce._audience("https://acme--dev.sandbox.my.salesforce.com") == "https://test.salesforce.com"
    assert salesforce._audience("https://127.0.0.1:8443") == "https://127.0.0.1:8443"


# -- Salesforce's documented token endpoint answers fed to the adapter ------------------------

class TokenEndpoint(requests.adapters.BaseAdapter):
    """Answers every POST with one canned (status, JSON body)."""

    def __init__(self, status: int, body: dict):
        super().__init__()
        self.status, self.body, self.sent = status, body, []

    def send(self, request, **kwargs):
        self.sent.append(request)
        response = requests.Response()
        response.status_code = self.status
        response._content = json.dumps(self.body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url, response.request = request.url, request
        return response

    def close(self):
        pass


def session_with(adapter) -> requests.Session:
    session = requests.Session()
    session.mount("https://", adapter)
    return session


def test_documented_success_answer_gives_the_session():
    """The token response of the OAuth 2.0 client credentials / JWT bearer flows:
    access_token, signature, scope, instance_url, id, token_type, issued_at
    (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm,
    https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm)."""
    endpoint = TokenEndpoint(200, {
        "access_token": ("00DB0000000TfcR!AQQAQFhoK8vTMg_rKA.esrJ2bCs.OOIjJgl.9Cx6O7KqjZmHMLOyVb."
                         "U61BU9tm4xRusf7d3fD1P9oefzqS6i9sJMPWj48IK"),
        "signature": "d/SxeYBxH0GSVko0HMgcUxuZy0PA2cDDz1u7g7JtDHw=",
        "scope": "web openid api id", "instance_url": "https://yourInstance.salesforce.com",
        "id": "https://yourInstance.salesforce.com/id/00DB0000000TfcRMAS/005B0000005Bk90IAC",
        "token_type": "Bearer", "issued_at": "1558553873237"})
    token, instance = salesforce._token_request(session_with(endpoint), "https://acme.my.salesforce.com",
                                                {"grant_type": "client_credentials"}, "client credentials",
                                                ("SALESFORCE_CLIENT_ID",))
    # hosts are case-insensitive
    assert token.startswith("00DB0000000TfcR!") and instance == "https://yourinstance.salesforce.com"
    assert endpoint.sent[0].url == "https://acme.my.salesforce.com/services/oauth2/token"


@pytest.mark.parametrize("status, body, code", [
    # "If an error occurs in the OAuth 2.0 JWT bearer flow, the authorizing server replies with a
    # standard OAuth error response" — HTTP 400 {"error", "error_description"}
    # (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flow_errors.htm)
    (400, {"error": "invalid_grant", "error_description": "audience is invalid"}, "invalid_grant"),
    (400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}, "invalid_client_id"),
    (400, {"error": "invalid_client", "error_description": "invalid client credentials"}, "invalid_client"),
    (400, {"error": "invalid_grant", "error_description": "user hasn't approved this consumer"}, "invalid_grant"),
    (400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"},
     "unsupported_grant_type"),
])
def test_documented_error_answers_are_one_line_with_the_code(status, body, code):
    endpoint = TokenEndpoint(status, body)
    names = ("SALESFORCE_CLIENT_ID", "SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE")
    with pytest.raises(ConfigError) as err:
        salesforce._token_request(session_with(endpoint), "https://login.salesforce.com",
                                  {"grant_type": "x"}, "JWT bearer", names)
    message = str(err.value)
    assert err.value.code == code and f": {code} ({body['error_description']})" in message
    assert "\n" not in message and all(name in message for name in names)
    assert err.value.__context__ is None


def test_a_production_org_is_named_in_the_plan_the_terminal_and_the_page(tmp_path):
    with SandboxServer(seed="demo", production=True) as org:
        run = runner(org.env_for("jwt"), tmp_path)
        planned = run("plan", str(outcomes(tmp_path)), "--allow-create")
        assert planned.exit_code == 0, planned.output
        assert "Org: PRODUCTION — Reconcile Demo Org (Enterprise Edition)" in planned.stdout
        plan_dir = next((tmp_path / "plans").iterdir())
        doc = json.loads((plan_dir / "plan.json").read_text())
        assert doc["org"]["is_sandbox"] is False
        assert doc["org"]["organization_type"] == "Enterprise Edition" and doc["org"]["name"]
        assert doc["org"]["api_version"] == Config().api_version
        assert "PRODUCTION org" in (plan_dir / "plan.html").read_text()
        shown = run("show", doc["plan_id"][:12])
        assert "PRODUCTION" in shown.stdout
        approved = run("approve", doc["plan_id"][:12], "--by", "Jane")
        assert "PRODUCTION" in approved.stdout


def test_whoami_says_where_and_who(org, tmp_path):
    run = runner(org.env_for("client_credentials"), tmp_path)
    result = run("whoami", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["org_id"] == org.store.org_id and info["is_sandbox"] is True and info["org_kind"] == "Sandbox"
    assert info["username"] == org.oauth.app.username and info["sign_in"] == "client credentials"
    assert info["api_version"] == Config().api_version
    assert info["daily_api_requests"]["max"] == org.daily_api_limit
    assert 0 < info["daily_api_requests"]["remaining"] < org.daily_api_limit
    text = run("whoami")
    assert "Sandbox" in text.stdout and "API requests left today" in text.stdout
