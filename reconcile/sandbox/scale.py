"""A large demo org and its outcomes, for trying a plan of thousands of changes.

``reconcile sandbox serve --seed scale:N`` seeds an org for N people and
``reconcile sandbox outcomes --seed scale:N`` writes the outcomes that go with
it. Both are functions of N alone (no randomness, no clock), so two people who
use the same N read the same plan.

Person ``i`` is ``p000123@scale.example.com``; ``i % 40`` picks what happens to
them, so every size has the same mix:

=========  ==========================================================  =======
i % 40     outcome and record                                          plan
=========  ==========================================================  =======
0–19       inactive, an Active Contact                                 update
20–23      reactivate, an Inactive Contact                             update
24–27      title_change to the next title of a small ladder            update
28–30      email_change to a new address                               update
31         replacement: new address and title                          update
32         title_change, CUPOLA row inactive                           review
33         email_change, no CUPOLA row                                 review
34         inactive, a Multipub person                                 skipped + hand-off
35         inactive, no record                                         skipped
36         inactive, a working Lead                                    update
37         reactivate, an Inactive Lead                                update
38         inactive, two Contacts (the later one is written)           update + duplicate
39         new_contact (created only with --allow-create); every       skipped / review
           other one an email_change to an address another holds
=========  ==========================================================  =======

and every 400th person (``i % 400 == 5``) sends a contradictory second
reply with no ``observed_at`` (review), every 400th (``i % 400 == 15``) is
already Inactive (unchanged).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from reconcile.sandbox import soql
from reconcile.sandbox.demo import OUTCOME_COLUMNS
from reconcile.sandbox.store import Store

#: The largest N ``scale:N`` accepts (the org lives in memory).
MAX_PEOPLE = 1_000_000

TITLES = ("Analyst", "Senior Analyst", "Engineer", "Senior Engineer", "Manager", "Director")
NEXT_TITLE = {"Analyst": "Senior Analyst", "Senior Analyst": "Manager", "Engineer": "Senior Engineer",
              "Senior Engineer": "Manager", "Manager": "Director", "Director": "Vice President"}
COMPANIES = ("Northwind Publishing", "Contoso Media", "Fabrikam Press", "Litware Journals", "Tailspin News")
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def parse_seed(seed: str) -> int | None:
    """N for ``scale:N`` (``scale:10k`` and ``scale:10_000`` too), None for another seed."""
    if not seed.startswith("scale:"):
        return None
    text = seed.removeprefix("scale:").strip().lower().replace("_", "").replace(",", "")
    factor = 1_000 if text.endswith("k") else 1
    text = text.removesuffix("k")
    if not text.isdigit() or not 1 <= int(text) * factor <= MAX_PEOPLE:
        raise ValueError(f"seed {seed!r}: use scale:N with N from 1 to {MAX_PEOPLE:,} (e.g. scale:10000)")
    return int(text) * factor


def email(i: int) -> str:
    return f"p{i:06d}@scale.example.com"


def _stamp(seconds: int) -> str:
    return soql.format_stamp(_EPOCH + timedelta(seconds=seconds))


def _title(i: int) -> str:
    return TITLES[(i // 40) % len(TITLES)]


def build_scale_org(n: int) -> dict:
    """The org's state for ``scale:n``."""
    store = Store()
    account_ids = [store.insert("Account", {"Name": name, "CreatedDate": _stamp(0), "LastModifiedDate": _stamp(0),
                                            "SystemModstamp": _stamp(0)}) for name in COMPANIES]
    contacts, leads = [], []
    for i in range(n):
        bucket = i % 40
        if bucket in (35, 39) and not (bucket == 39 and i % 80 == 79):
            continue   # no record: NOT_FOUND, or a new contact
        stamp = _stamp(3600 + i)
        base = {"Email": email(i), "FirstName": "Person", "LastName": f"No. {i}", "Title": _title(i),
                "CreatedDate": _stamp(60), "LastModifiedDate": stamp, "SystemModstamp": stamp}
        if bucket in (36, 37):
            leads.append({**base, "Company": COMPANIES[i % len(COMPANIES)],
                          "Status": "Working - Contacted" if bucket == 36 else "Inactive"})
            continue
        inactive = bucket in (20, 21, 22, 23) or i % 400 == 15
        contacts.append({**base, "AccountId": account_ids[i % len(account_ids)],
                         "Contact_Status__c": "Inactive" if inactive else "Active"})
        if bucket == 38:   # a duplicate, edited earlier: the planner writes the later one
            contacts.append({**contacts[-1], "LastModifiedDate": _stamp(60 + i), "SystemModstamp": _stamp(60 + i)})
        if bucket == 39:   # the address someone else's email_change asks for
            contacts.append({**contacts[-1], "Email": f"taken{i:06d}@scale.example.com"})
    store.insert_many("Contact", contacts)
    store.insert_many("Lead", leads)
    state = store.to_state()
    state["org"]["Name"] = f"Reconcile Scale Org ({n:,} people)"
    state["last_stamp"] = max(r["SystemModstamp"] for records in state["records"].values() for r in records)
    return state


def scale_outcomes_csv(n: int) -> str:
    """The pipeline outcomes that go with ``scale:n``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(OUTCOME_COLUMNS)
    for i in range(n):
        bucket = i % 40
        row = dict.fromkeys(OUTCOME_COLUMNS, "")
        row.update(email=email(i), outcome="inactive", cupola_status="active",
                   observed_at="2026-11-20T10:00:00Z", source_id=f"<scale-{i:06d}@autoresponder.example.net>")
        if 20 <= bucket <= 23 or bucket == 37:
            row["outcome"] = "reactivate"
        elif 24 <= bucket <= 27 or bucket == 32:
            row.update(outcome="title_change", new_title=NEXT_TITLE[_title(i)])
            if bucket == 32:
                row["cupola_status"] = "inactive"
        elif 28 <= bucket <= 31 or bucket == 33:
            row.update(outcome="email_change", new_email=f"p{i:06d}@new.scale.example.org")
            if bucket == 31:
                row.update(outcome="replacement", new_title=NEXT_TITLE[_title(i)])
            if bucket == 33:
                row["cupola_status"] = ""
        elif bucket == 34:
            row["multipub_id"] = f"MP-{i:06d}"
        elif bucket == 39 and i % 80 == 79:
            row.update(outcome="email_change", new_email=f"taken{i:06d}@scale.example.com")
        elif bucket == 39:
            row.update(outcome="new_contact", first_name="New", last_name=f"Person {i}",
                       organization=COMPANIES[i % len(COMPANIES)], title="Analyst")
        if i % 400 == 5:   # a contradictory second reply; neither has observed_at to settle them
            row["observed_at"] = ""
        writer.writerow([row[c] for c in OUTCOME_COLUMNS])
        if i % 400 == 5:
            writer.writerow([{**row, "outcome": "reactivate", "observed_at": "",
                              "source_id": f"<scale-{i:06d}-b@autoresponder.example.net>"}[c] for c in OUTCOME_COLUMNS])
    return out.getvalue()
