"""``reconcile benchmark``: each phase in its own process, its peak RSS, API calls and
wall time, beside the pipeline's own approach (issue 13). A small run; the 1k / 10k /
100k figures in the README come from the same code."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reconcile.bench import baseline_calls, run_benchmark, seed_org
from reconcile.cli import app
from reconcile.sandbox import SandboxServer

pytestmark = pytest.mark.e2e


def test_seeded_org_has_the_asked_shape():
    with SandboxServer(seed="empty") as sb:
        counts = seed_org(sb.store, 400, leads_share=0.5, duplicate_share=0.05)
        contacts = sb.store.records("Contact")
        assert counts == {"contacts": 400, "leads": 200} and len(contacts) == 400
        emails = [c["Email"] for c in contacts]
        assert len(emails) - len(set(emails)) == 20          # 5 % share another's address
        assert len(sb.store.records("Lead")) == 200


def test_baseline_is_two_queries_per_person_and_one_update_per_record():
    assert baseline_calls(1000, 1175) == {"read": 2000, "write": 1175, "total": 3175}


def test_benchmark_reports_every_phase_with_its_own_process_memory():
    lines: list[str] = []
    [row] = run_benchmark([300], say=lines.append, apply_up_to=300)
    assert row["outcomes"] == 300 and row["contacts"] == 300 and row["leads"] == 150
    for phase in ("plan", "approve", "apply"):
        assert row[phase]["seconds"] > 0
        # a whole Python process: more than the interpreter alone, far less than the org's
        assert 15 < row[phase]["peak_rss_mb"] < 500, (phase, row[phase])
    assert row["approve"]["api_calls"] == 0
    # 300 outcomes: the /composite request, then one batched query per object
    assert row["plan"]["api_calls"] == 3
    assert row["apply"]["api_calls"] == row["plan"]["estimated_apply_calls"]
    assert row["baseline"]["total"] == 2 * 300 + row["changes"]
    assert row["baseline"]["total"] > 20 * row["plan"]["api_calls"]
    assert any("baseline" in line for line in lines)


def test_benchmark_command_prints_json_and_refuses_bad_shares():
    result = CliRunner().invoke(app, ["benchmark", "--sizes", "100", "--apply-up-to", "0", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["apply"] is None and row["plan"]["api_calls"] >= 1
    bad = CliRunner().invoke(app, ["benchmark", "--sizes", "100", "--duplicates", "1.5"])
    assert bad.exit_code != 0 and "--duplicates" in bad.output
