"""The shape STYLE.md asks for, checked: one thin Salesforce edge, a pure core,
imports that flow one way."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reconcile"
HTTP_LIBRARIES = {"simple_salesforce", "requests", "urllib3", "http", "socket", "ssl"}
PURE_CORE = ["inputs.py", "outcomes.py", "rules.py", "planner.py", "plan.py", "model.py", "rollback.py"]


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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """reconcile module -> the reconcile modules it imports (at any depth of the file:
    an import inside a function still makes a cycle a reader has to untangle)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (depth-first search)."""
    state: dict[str, int] = {}      # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_the_package():
    """A package's __init__ importing its own modules is not a cycle worth naming: packages
    (reconcile, reconcile.render, …) are left out, their modules are checked."""
    graph = import_graph()
    packages = {p.parent for p in PACKAGE.rglob("__init__.py")}
    package_names = {_module_name(p / "__init__.py") for p in packages}
    graph = {k: v - package_names for k, v in graph.items() if k not in package_names}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_one_clock_one_canonical_json():
    """The time of day is read in clock.py only (durations use time.perf_counter);
    documents are hashed in one encoding, canonical.py's (the bundled sandbox org,
    a server of its own, is not counted)."""
    for path in list(PACKAGE.glob("*.py")) + list(PACKAGE.glob("render/*.py")):
        source = path.read_text(encoding="utf-8")
        if path.name != "clock.py":
            assert "datetime.now" not in source and "time.time(" not in source, path.name
        if path.name != "canonical.py":
            assert 'separators=(",", ":")' not in source, path.name


def test_every_declared_dependency_is_imported_and_every_import_declared():
    """pyproject.toml's dependencies are exactly the third-party packages reconcile/
    imports (decision 0007: pandas and deepdiff were declared and imported nowhere)."""
    import re
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-")
                for d in project["dependencies"]}
    modules: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        modules |= top(imported(path))
    third_party = modules - set(sys.stdlib_module_names) - {"reconcile", "__future__"}
    dist_of = packages_distributions()
    used = {dist.lower().replace("_", "-") for m in third_party for dist in dist_of.get(m, [m])}
    assert used - declared == set(), "imported but not declared"
    assert declared - used == set(), "declared but imported nowhere"
