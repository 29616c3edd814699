"""The demo org and its pipeline outcomes, generated deterministically.

``demo_org.json`` (the seed "demo") and ``demo_outcomes.csv`` beside this
module are this script's output; regenerate them after editing the tables
below with ``python -m reconcile.sandbox.demo``.

The org covers what the planner's rules (SPEC §2) must get right: duplicate
Contacts decided by LastModifiedDate, and a pair whose LastModifiedDate ties
so that SystemModstamp decides; a Contact and a Lead sharing an address;
mixed-case addresses; an apostrophe in an address; Multipub people;
CUPOLA-inactive and no-CUPOLA people asking for updates; Leads to deactivate
and to reactivate; an e-mail change to an address another Contact holds; a
record that already holds the desired value; an unknown address; new
contacts whose organization exists (twice, by name) and does not; and
contradictory outcome rows with and without ``observed_at``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from reconcile.sandbox.store import Store

HERE = Path(__file__).resolve().parent
ORG_FILE = HERE / "demo_org.json"
OUTCOMES_FILE = HERE / "demo_outcomes.csv"

OUTCOME_COLUMNS = ("email", "outcome", "new_email", "new_title", "first_name", "last_name",
                   "organization", "title", "multipub_id", "cupola_status", "observed_at",
                   "source_id")

# key, name, website, created
ACCOUNTS = [
    ("acme_big", "Acme Corporation", "https://acme.example.com", "2026-01-05T09:00:00.000+0000"),
    ("acme_small", "Acme Corporation", "https://acme-east.example.com", "2026-02-10T09:00:00.000+0000"),
    ("globex", "Globex Industries", "https://globex.example.com", "2026-01-06T09:00:00.000+0000"),
    ("initech", "Initech", "https://initech.example.org", "2026-01-07T09:00:00.000+0000"),
    ("umbrella", "Umbrella Health", "https://umbrella.example.org", "2026-01-08T09:00:00.000+0000"),
    ("stark", "Stark Logistics", None, "2026-01-09T09:00:00.000+0000"),
]

# email, first, last, title, status, account key, LastModifiedDate, SystemModstamp (None: = LMD)
CONTACTS = [
    ("alice.archer@example.com", "Alice", "Archer", "Account Manager", "Active", "acme_big",
     "2026-04-02T10:15:00.000+0000", None),
    ("bob.builder@example.com", "Bob", "Builder", "Engineer", "Active", "globex",
     "2026-03-11T08:30:00.000+0000", None),
    ("Mary.Major@Example.com", "Mary", "Major", "Director of Research", "Active", "initech",
     "2026-05-20T14:00:00.000+0000", None),
    ("o'brien@example.com", "Sean", "O'Brien", "Analyst", "Active", "umbrella",
     "2026-02-14T11:45:00.000+0000", None),
    # duplicates decided by LastModifiedDate: the second one is the latest
    ("dana.dupont@example.com", "Dana", "Dupont", "Sales Manager", "Active", "acme_big",
     "2026-03-01T09:00:00.000+0000", "2026-03-01T09:00:00.000+0000"),
    ("Dana.Dupont@example.com", "Dana", "Dupont", "Sales Manager", "Active", "acme_big",
     "2026-06-01T09:00:00.000+0000", "2026-06-01T09:00:00.000+0000"),
    # duplicates whose LastModifiedDate ties: SystemModstamp decides (the first one)
    ("tia.tiebreak@example.com", "Tia", "Tiebreak", "Buyer", "Active", "globex",
     "2026-05-05T10:00:00.000+0000", "2026-07-01T03:00:00.000+0000"),
    ("tia.tiebreak@example.com", "Tia", "Tiebreak", "Buyer", "Active", "globex",
     "2026-05-05T10:00:00.000+0000", "2026-05-06T03:00:00.000+0000"),
    # a Contact and a Lead share this address
    ("pat.shared@example.com", "Pat", "Shared", "Consultant", "Active", "stark",
     "2026-04-18T16:20:00.000+0000", None),
    # Multipub people (Marketing owns these Contacts)
    ("mo.multipub@example.com", "Mo", "Multipub", "Editor", "Active", "initech",
     "2026-02-02T12:00:00.000+0000", None),
    ("mia.mover@example.com", "Mia", "Mover", "Reporter", "Active", "umbrella",
     "2026-02-03T12:00:00.000+0000", None),
    # title changes the CUPOLA gate must stop
    ("ivy.inactive@example.com", "Ivy", "Inactive", "Coordinator", "Active", "globex",
     "2026-03-21T10:00:00.000+0000", None),
    ("nora.nocupola@example.com", "Nora", "Nocupola", "Planner", "Active", "stark",
     "2026-03-22T10:00:00.000+0000", None),
    # an e-mail change to an address another Contact holds
    ("tom.taken@example.com", "Tom", "Taken", "Technician", "Active", "initech",
     "2026-04-01T10:00:00.000+0000", None),
    ("jane.holder@example.com", "Jane", "Holder", "Office Manager", "Active", "initech",
     "2026-04-01T11:00:00.000+0000", None),
    # already hold the desired value: no-ops
    ("nina.noop@example.com", "Nina", "Noop", "Assistant", "Inactive", "acme_small",
     "2026-06-10T09:00:00.000+0000", None),
    ("tina.same@example.com", "Tina", "Same", "Chief Technology Officer", "Active", "globex",
     "2026-06-11T09:00:00.000+0000", None),
    # reactivation and replacement
    ("rita.return@example.com", "Rita", "Return", "Producer", "Inactive", "umbrella",
     "2026-01-30T09:00:00.000+0000", None),
    ("ron.replace@example.com", "Ron", "Replace", "Operations Lead", "Active", "stark",
     "2026-05-15T09:00:00.000+0000", None),
    # contradictory outcome rows
    ("cara.conflict@example.com", "Cara", "Conflict", "Designer", "Active", "acme_big",
     "2026-07-07T09:00:00.000+0000", None),
    ("cody.clash@example.com", "Cody", "Clash", "Writer", "Inactive", "globex",
     "2026-07-08T09:00:00.000+0000", None),
    # two identical rows: one determination
    ("sam.twice@example.com", "Sam", "Twice", "Photographer", "Active", "initech",
     "2026-07-09T09:00:00.000+0000", None),
    # the rest of the org
    ("eve.elliott@example.com", "Eve", "Elliott", "CFO", "Active", "acme_big",
     "2026-01-15T09:00:00.000+0000", None),
    ("frank.fischer@example.org", "Frank", "Fischer", "Controller", "Active", "globex",
     "2026-01-16T09:00:00.000+0000", None),
    ("grace.gupta@example.org", "Grace", "Gupta", "Data Scientist", "Active", "initech",
     "2026-01-17T09:00:00.000+0000", None),
    ("hugo.hart@example.com", "Hugo", "Hart", None, "Active", "umbrella",
     "2026-01-18T09:00:00.000+0000", None),
    ("iris.ito@example.com", "Iris", "Ito", "Nurse Manager", "Inactive", "umbrella",
     "2026-01-19T09:00:00.000+0000", None),
    ("jack.jones@example.org", "Jack", "Jones", "Driver", "Active", "stark",
     None, None),
    ("kim.kowalski@example.com", None, "Kowalski", "Intern", None, None,
     "2026-01-21T09:00:00.000+0000", None),
    ("liam.lopez@example.com", "Liam", "Lopez", "Architect", "Active", "globex",
     "2026-01-22T09:00:00.000+0000", None),
]

# email, first, last, company, title, status, LastModifiedDate
LEADS = [
    ("pat.shared@example.com", "Pat", "Shared", "Stark Logistics", "Consultant",
     "Working - Contacted", "2026-04-19T09:00:00.000+0000"),
    ("lee.leaving@example.com", "Lee", "Leaving", "Vandelay Imports", "Importer",
     "Open - Not Contacted", "2026-03-03T09:00:00.000+0000"),
    ("rex.revive@example.com", "Rex", "Revive", "Kramerica", "Founder",
     "Inactive", "2026-03-04T09:00:00.000+0000"),
    ("lena.lead@example.com", "Lena", "Lead", "Pendant Publishing", "Editor",
     "Working - Contacted", "2026-03-05T09:00:00.000+0000"),
    ("Quinn.Quiet@Example.org", "Quinn", "Quiet", "Monk's Cafe", "Owner",
     "Inactive", "2026-03-06T09:00:00.000+0000"),
    ("dave.disq@example.com", "Dave", "Disq", "Bania Comedy", "Performer",
     "Disqualified", "2026-03-07T09:00:00.000+0000"),
    ("olga.open@example.org", "Olga", "Open", "Peterman Catalog", "Writer",
     "Open - Not Contacted", "2026-03-08T09:00:00.000+0000"),
    ("wes.working@example.com", "Wes", "Working", "Play Now", "Buyer",
     "Working - Contacted", "2026-03-09T09:00:00.000+0000"),
    ("cleo.closed@example.com", "Cleo", "Closed", "Tracy Corp", "Manager",
     "Closed - Not Converted", "2026-03-10T09:00:00.000+0000"),
    ("conny.converted@example.org", "Conny", "Converted", "Hennigan's", "Director",
     "Closed - Converted", "2026-03-11T09:00:00.000+0000"),
    ("mo.multipub@example.com", "Mo", "Multipub", "Initech", "Editor",
     "Working - Contacted", "2026-03-12T09:00:00.000+0000"),
    ("zed.zero@example.com", None, "Zero", "Zeta Labs", None,
     "Open - Not Contacted", "2026-03-13T09:00:00.000+0000"),
]

# (email, outcome, new_email, new_title, first, last, organization, title, multipub_id,
#  cupola_status, observed_at)
OUTCOMES = [
    ("alice.archer@example.com", "inactive", "", "", "", "", "", "", "", "active", "2026-11-20T08:00:00Z"),
    ("bob.builder@example.com", "title_change", "", "Senior Engineer", "", "", "", "", "", "active", "2026-11-20T08:05:00Z"),
    ("mary.major@example.com", "email_change", "mary.major@example.org", "", "", "", "", "", "", "active", "2026-11-20T08:10:00Z"),
    ("o'brien@example.com", "inactive", "", "", "", "", "", "", "", "active", "2026-11-20T08:15:00Z"),
    ("dana.dupont@example.com", "title_change", "", "VP Sales", "", "", "", "", "", "active", "2026-11-20T08:20:00Z"),
    ("tia.tiebreak@example.com", "inactive", "", "", "", "", "", "", "", "inactive", "2026-11-20T08:25:00Z"),
    ("pat.shared@example.com", "inactive", "", "", "", "", "", "", "", "active", "2026-11-20T08:30:00Z"),
    ("mo.multipub@example.com", "inactive", "", "", "", "", "", "", "MP-1001", "active", "2026-11-20T08:35:00Z"),
    ("mia.mover@example.com", "email_change", "mia.mover@example.org", "", "", "", "", "", "MP-1002", "active", "2026-11-20T08:40:00Z"),
    ("ivy.inactive@example.com", "title_change", "", "Senior Coordinator", "", "", "", "", "", "inactive", "2026-11-20T08:45:00Z"),
    ("nora.nocupola@example.com", "title_change", "", "Lead Planner", "", "", "", "", "", "", "2026-11-20T08:50:00Z"),
    ("tom.taken@example.com", "email_change", "jane.holder@example.com", "", "", "", "", "", "", "active", "2026-11-20T08:55:00Z"),
    ("nina.noop@example.com", "inactive", "", "", "", "", "", "", "", "inactive", "2026-11-20T09:00:00Z"),
    ("tina.same@example.com", "title_change", "", "Chief Technology Officer", "", "", "", "", "", "active", "2026-11-20T09:05:00Z"),
    ("rita.return@example.com", "reactivate", "", "", "", "", "", "", "", "active", "2026-11-20T09:10:00Z"),
    ("ron.replace@example.com", "replacement", "ron.replace@example.org", "Head of Operations", "", "", "", "", "", "active", "2026-11-20T09:15:00Z"),
    ("cara.conflict@example.com", "inactive", "", "", "", "", "", "", "", "active", "2026-11-01T10:00:00Z"),
    ("cara.conflict@example.com", "title_change", "", "Lead Designer", "", "", "", "", "", "active", "2026-11-10T10:00:00Z"),
    ("cody.clash@example.com", "inactive", "", "", "", "", "", "", "", "active", ""),
    ("cody.clash@example.com", "reactivate", "", "", "", "", "", "", "", "active", ""),
    ("sam.twice@example.com", "inactive", "", "", "", "", "", "", "", "active", "2026-11-20T09:20:00Z"),
    ("sam.twice@example.com", "inactive", "", "", "", "", "", "", "", "active", "2026-11-21T09:20:00Z"),
    ("lee.leaving@example.com", "inactive", "", "", "", "", "", "", "", "", "2026-11-20T09:25:00Z"),
    ("rex.revive@example.com", "reactivate", "", "", "", "", "", "", "", "", "2026-11-20T09:30:00Z"),
    ("lena.lead@example.com", "title_change", "", "Managing Editor", "", "", "", "", "", "active", "2026-11-20T09:35:00Z"),
    ("quinn.quiet@example.org", "inactive", "", "", "", "", "", "", "", "", "2026-11-20T09:40:00Z"),
    ("ghost.unknown@example.com", "inactive", "", "", "", "", "", "", "", "active", "2026-11-20T09:45:00Z"),
    ("nadia.newhire@example.com", "new_contact", "", "", "Nadia", "Newhire", "Acme Corporation", "Product Manager", "", "active", "2026-11-20T09:50:00Z"),
    ("felix.fresh@example.org", "new_contact", "", "", "Felix", "Fresh", "Nimbus Analytics", "Founder", "", "active", "2026-11-20T09:55:00Z"),
    ("eve.elliott@example.com", "title_change", "", "Chief Financial Officer", "", "", "", "", "", "active", "2026-11-20T10:00:00Z"),
]


def build_org() -> dict:
    """The demo org's state (the content of demo_org.json)."""
    store = Store()
    account_ids: dict[str, str] = {}
    for key, name, website, created in ACCOUNTS:
        account_ids[key] = store.insert("Account", {
            "Name": name, "Website": website, "CreatedDate": created,
            "LastModifiedDate": created, "SystemModstamp": created,
        })
    for email, first, last, title, status, account, lmd, sms in CONTACTS:
        lmd = lmd or "2026-01-20T09:00:00.000+0000"
        store.insert("Contact", {
            "Email": email, "FirstName": first, "LastName": last, "Title": title,
            "Contact_Status__c": status, "AccountId": account_ids.get(account or ""),
            "CreatedDate": "2026-01-12T09:00:00.000+0000", "LastModifiedDate": lmd,
            "SystemModstamp": sms or lmd,
        })
    for email, first, last, company, title, status, lmd in LEADS:
        store.insert("Lead", {
            "Email": email, "FirstName": first, "LastName": last, "Company": company,
            "Title": title, "Status": status, "CreatedDate": "2026-01-13T09:00:00.000+0000",
            "LastModifiedDate": lmd, "SystemModstamp": lmd,
        })
    state = store.to_state()
    state["org"]["Name"] = "Reconcile Demo Org"
    stamps = [r["SystemModstamp"] for records in state["records"].values() for r in records]
    state["last_stamp"] = max(stamps)
    return state


def outcomes_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(OUTCOME_COLUMNS)
    for n, row in enumerate(OUTCOMES, start=1):
        writer.writerow([*row, f"<demo-{n:03d}@autoresponder.example.net>"])
    return out.getvalue()


def main() -> None:
    ORG_FILE.write_text(json.dumps(build_org(), indent=1, ensure_ascii=False) + "\n", "utf-8")
    OUTCOMES_FILE.write_text(outcomes_csv(), "utf-8")


if __name__ == "__main__":
    main()
