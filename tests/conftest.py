"""Shared pytest configuration."""

from __future__ import annotations


# -- golden scenarios (tests/test_scenarios.py) ------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite the expected plan.json / summary.txt of tests/scenarios/ from the current code")
