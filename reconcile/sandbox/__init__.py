"""The sandbox org: a small Salesforce REST server on 127.0.0.1 over HTTPS,
with a seeded demo org, for ``reconcile demo`` and the end-to-end tests.

    from reconcile.sandbox import SandboxServer
    with SandboxServer(seed="demo") as sb:
        sb.env        # SALESFORCE_ACCESS_TOKEN, SALESFORCE_DOMAIN, REQUESTS_CA_BUNDLE
        sb.store      # the org's data (store.py)
        sb.faults     # switchable faults (faults.py)
        sb.stats      # what the org saw (faults.py)
"""

from reconcile.sandbox.server import SandboxServer

__all__ = ["SandboxServer"]
