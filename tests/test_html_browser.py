"""What a person sees: the sample plan's HTML page rendered by headless Chromium."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reconcile.render import render_html, summary_line

FIXTURE = Path(__file__).parent / "fixtures" / "sample_plan.json"
CHROMIUM = next(filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


class _Page(HTMLParser):
    """The DOM as Chromium dumped it: visible text, and every element name seen."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: set[str] = set()
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag in ("style", "title", "head", "script"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "title", "head", "script"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    @property
    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def plan() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rendered(plan, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    page = tmp / "plan.html"
    page.write_text(render_html(plan), encoding="utf-8")
    dom = _chromium(tmp, "--dump-dom", page.as_uri()).stdout
    shot = tmp / "plan.png"
    _chromium(tmp, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    parsed = _Page()
    parsed.feed(dom)
    return {"dom": dom, "page": parsed, "screenshot": shot}


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_the_page_shows_the_summary_counts(rendered, plan):
    text = rendered["page"].visible
    assert summary_line(plan) in text
    for count, label in [(2, "to create"), (8, "to update"), (1, "to delete"), (4, "skipped"), (4, "for review")]:
        assert f"{count} {label}" in text
    assert "4 review items need a decision from a Salesforce owner" in text


def test_the_page_shows_every_change_before_and_after(rendered, plan):
    text = rendered["page"].visible
    for change in plan["changes"]:
        for values in change["fields"].values():
            for value in (values["before"], values["after"]):
                if value is not None:
                    assert _squash(value) in text, value   # a pointer to a created record too


def test_the_page_shows_duplicate_groups_and_the_review_list(rendered, plan):
    text = rendered["page"].visible
    for group in plan["duplicates"]:
        for record in [group["chosen"], *group["others"]]:
            assert record["id"] in text
        assert f"decided by {group['decided_by']}" in text
    for item in plan["review"]:
        assert item["reason"] in text
        assert item["email"] in text


def test_the_script_title_is_only_text(rendered):
    assert rendered["dom"].count("<script") == 1   # the page's own filter
    assert "<script>alert(1)</script>" in rendered["page"].visible
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered["dom"]


def test_the_screenshot_is_a_png_of_the_page(rendered):
    data = rendered["screenshot"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    assert len(data) > 50_000  # a blank page compresses to a few kilobytes
