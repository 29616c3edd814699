"""Renderers: a plan document (SPEC §4) as terminal text, an HTML page, and CSV files.

Each reads the plan document (a plain dict) and nothing else. Values in a plan
come from the org as well as from checked input, so every renderer shows them
through ``printable``: a control, zero-width or bidi character is written as a
visible escape (``\\x1b``, ``\\u202e``) and can neither drive a terminal nor
hide or reorder text on the page a person approves. The HTML page applies it to
every ``{{ … }}`` (the jinja ``finalize`` hook), ``show`` to the whole document
before it renders, the CSVs to every cell.
"""

from reconcile.chars import escape_invisible as printable
from reconcile.chars import escape_tree as printable_tree
from reconcile.render.csvs import changes_csv, handoff_csvs, review_csv
from reconcile.render.html import render_html
from reconcile.render.text import render_show, summary_line

__all__ = ["printable", "printable_tree", "changes_csv", "handoff_csvs", "render_html", "render_show", "review_csv",
           "summary_line"]
