"""Shared pytest configuration."""

from __future__ import annotations

# -- golden scenarios (tests/test_scenarios.py) ------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite the expected plan.json / summary.txt of tests/scenarios/ from the current code")


# -- the command line against the demo org (tests/test_cli.py, test_rollback.py) --------

import pytest  # noqa: E402


@pytest.fixture()
def org():
    """A fresh sandbox org seeded with the demo org."""
    from reconcile.sandbox import SandboxServer
    with SandboxServer(seed="demo") as sb:
        yield sb


@pytest.fixture()
def cli(org, tmp_path):
    """``cli("plan", …)`` runs the CLI against ``org`` with a frozen clock and a
    private archive (``cli.archive``); returns click's Result (stdout, stderr, exit_code)."""
    from typer.testing import CliRunner

    from reconcile.cli import app

    runner = CliRunner()
    archive = tmp_path / "plans"
    env = {**org.env, "RECONCILE_NOW": "2026-11-25T09:00:00.000Z", "RECONCILE_ARCHIVE": str(archive)}

    def run(*args: str):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    run.archive = archive
    return run
