"""`pip install .` gives a working command with its templates and sandbox data — from a built wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, cwd=out)
    return next(out.glob("reconcile-*.whl"))


def test_wheel_carries_templates_schema_and_demo_org(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "reconcile/templates/plan.html.j2" in names
    assert "reconcile/schema/plan.schema.json" in names
    assert "reconcile/sandbox/demo_org.json" in names
    assert "reconcile/sandbox/demo_outcomes.csv" in names
    assert not any(n.startswith(("tests/", "plans/", "cassettes/")) for n in names)


def test_installed_wheel_runs_from_anywhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60)

    help_ = run("-m", "reconcile", "--help")
    assert help_.returncode == 0 and "plan" in help_.stdout
    origin = run("-c", "import reconcile, reconcile.templates as t; print(reconcile.__file__)")
    assert origin.stdout.strip().startswith(str(target))
    sample = ROOT / "tests" / "fixtures" / "sample_plan.json"
    html = run("-c", "import json,sys; from reconcile.render.html import render_html; "
                     f"print(len(render_html(json.load(open({str(sample)!r})))))")
    assert html.returncode == 0 and int(html.stdout) > 1000, html.stderr
    assert (target / "bin" / "reconcile").exists()
