"""Renderers: a plan document (SPEC §4) as terminal text, an HTML page, and CSV files.

Each reads the plan document (a plain dict) and nothing else.
"""

from reconcile.render.csvs import handoff_csvs, review_csv
from reconcile.render.html import render_html
from reconcile.render.text import render_show, summary_line

__all__ = ["handoff_csvs", "render_html", "render_show", "review_csv", "summary_line"]
