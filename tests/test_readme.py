"""The README's first commands and command reference stay true."""

import re
from pathlib import Path

from reconcile.reference import command_reference

README = Path(__file__).resolve().parents[1] / "README.md"
START = "<!-- kept in step with `--help` by tests/test_readme.py -->\n"
END = "\n## Development"


def test_command_reference_matches_help(request):
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    current, tail = rest.split(END, 1)
    expected = command_reference() + "\n"
    if request.config.getoption("--update-goldens"):
        README.write_text(head + START + expected + END + tail, encoding="utf-8")
        return
    assert current == expected, "README command reference is stale: run `pytest --update-goldens`"


def test_readme_first_commands_are_install_demo_and_tests():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    assert "pip install" in block and "reconcile demo" in block and "pytest" in block
