"""A second, independent client measures the sandbox org's fidelity: jsforce 3
(the Node.js Salesforce library, used against real orgs) runs the operations in
tests/jsforce/check.js — sign-in (OAuth username-password, SOAP login, client
credentials, refusals), versions, resources, identity, limits, describe, query
and queryMore, one-record and sObject Collections writes, composite with write
subrequests, Bulk API 2.0 ingest and query — each checked against what
Salesforce documents (the page is cited next to each check in the script).

Node trusts the sandbox's own certificate authority through NODE_EXTRA_CA_CERTS;
certificate verification stays on.

The test skips, saying why, when node/npm are not installed or the script's
dependencies are not (``npm ci --prefix tests/jsforce``; ``.ci/run`` does it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconcile.sandbox.server import SandboxServer

HERE = Path(__file__).parent / "jsforce"

pytestmark = pytest.mark.e2e


def _node_ready() -> str | None:
    """Why the jsforce check cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (jsforce needs Node.js 18+)"
    if not (HERE / "node_modules" / "jsforce" / "package.json").exists():
        return "jsforce is not installed: run `npm ci --prefix tests/jsforce`"
    return None


def run_jsforce(sandbox: SandboxServer) -> dict:
    app = sandbox.oauth.app
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(HERE)),
        "NODE_EXTRA_CA_CERTS": str(sandbox.ca_path),
        "SANDBOX_URL": sandbox.instance_url,
        "SANDBOX_TOKEN": sandbox.token,
        "SANDBOX_CLIENT_ID": app.client_id,
        "SANDBOX_CLIENT_SECRET": app.client_secret,
        "SANDBOX_USERNAME": app.username,
        "SANDBOX_PASSWORD": app.password,
        "SANDBOX_SECURITY_TOKEN": app.security_token,
    }
    done = subprocess.run(["node", str(HERE / "check.js")], env=env, cwd=HERE, capture_output=True, check=False,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.skipif(_node_ready() is not None, reason=_node_ready() or "")
def test_jsforce_operations_behave_as_salesforce_documents():
    with SandboxServer(seed="demo") as sandbox:
        report = run_jsforce(sandbox)
    failed = [f"{op['name']}: {op['detail']}" for op in report["operations"] if not op["ok"]]
    assert report["total"] >= 35
    assert not failed, f"{report['passed']} of {report['total']} behaved as documented:\n" + "\n".join(failed)
