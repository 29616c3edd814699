"""The shape STYLE.md asks for, checked: one thin Salesforce edge, a pure core,
imports that flow one way."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reconcile"
HTTP_LIBRARIES = {"simple_salesforce", "requests", "urllib3", "http", "socket", "ssl"}
PURE_CORE = ["inputs.py", "rules.py", "planner.py", "plan.py", "model.py", "rollback.py"]


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_only_the_adapter_talks_http():
    for path in PACKAGE.glob("*.py"):
        if path.name == "salesforce.py":
            continue
        assert not top(imported(path)) & {"simple_salesforce", "requests", "urllib3"}, path.name


def test_the_planning_core_touches_no_network_clock_or_sandbox():
    for name in PURE_CORE:
        names = imported(PACKAGE / name)
        assert not top(names) & HTTP_LIBRARIES, name
        assert not any(n.startswith(("reconcile.salesforce", "reconcile.workflow", "reconcile.cli",
                                     "reconcile.sandbox", "reconcile.apply")) for n in names), name
        source = (PACKAGE / name).read_text(encoding="utf-8")
        assert "datetime.now" not in source and "time.time(" not in source, name


def test_nothing_below_the_cli_imports_it():
    for path in list(PACKAGE.glob("*.py")) + list(PACKAGE.glob("render/*.py")):
        if path.name in ("cli.py", "__main__.py", "reference.py"):
            continue
        assert "reconcile.cli" not in imported(path), path.name
