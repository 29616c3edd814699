"""Read-only: the org → a Snapshot for the planner, and the preflight check.

Only a reader is used here (``Salesforce.reader()``); nothing in this module
can write to the org.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reconcile.config import Config
from reconcile.errors import PreflightError
from reconcile.model import AccountInfo, Cupola, OrgInfo, OrgRecord, OutcomeSet, Snapshot, SObject
from reconcile.outcomes import OUTCOMES, fields_read, written_fields
from reconcile.ports import OrgReader
from reconcile.rules import norm_name

PREFLIGHT_OBJECTS = ("Contact", "Lead")


def objects_to_describe(allow_create: bool) -> tuple[str, ...]:
    """Contact and Lead; the Account too when the plan may create Accounts."""
    return PREFLIGHT_OBJECTS + (("Account",) if allow_create else ())


def preflight(describes: Mapping[str, dict], config: Config, *, allow_create: bool,
              duplicate_rules: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Check the org's describe metadata as the source document's review checklist
    asks (SPEC §2.7). Pure. Every problem is collected; one PreflightError names them all.

    Returns what the plan records of it: the org's active duplicate rules (None when
    the user may not read them) and, with ``allow_create``, the Account fields a
    create writes and those the org requires on create (one the plan would not set
    is a problem here, not a refusal at apply)."""
    problems: list[str] = []
    contact = _fields_by_name(describes["Contact"])
    lead = _fields_by_name(describes["Lead"])

    _check_picklist(problems, "Contact", contact, config.contact_status_field,
                    [config.contact_active, config.contact_inactive])
    _check_picklist(problems, "Lead", lead, config.lead_status_field,
                    [config.lead_inactive, config.lead_reactivate])
    status = {SObject.CONTACT: config.contact_status_field, SObject.LEAD: config.lead_status_field}
    for sobject, fields in ((SObject.CONTACT, contact), (SObject.LEAD, lead)):
        for name in written_fields(config, sobject):
            if name != status[sobject]:  # checked above, with its picklist values
                _check_field(problems, sobject, fields, name, "updateable")
    if allow_create:
        for name in (config.email_field, "FirstName", "LastName", config.title_field,
                     "AccountId", config.contact_status_field):
            _check_field(problems, "Contact", contact, name, "createable")
    account_fields = None
    if allow_create and "Account" in describes:
        account = _fields_by_name(describes["Account"])
        written = [config.account_name_field]
        _check_field(problems, "Account", account, config.account_name_field, "createable")
        required = sorted(name for name, f in account.items()
                          if f.get("createable") and not f.get("nillable", True)
                          and not f.get("defaultedOnCreate", False))
        for name in required:
            if name not in written:
                problems.append(f"Account.{name} is required on create and a new Account would not "
                                "have it")
        account_fields = {"written": written, "required": required}
    if problems:
        raise PreflightError(
            "preflight failed: " + "; ".join(problems)
            + " (fix the org, or set the field names and values in reconcile.toml)")
    rules = None
    if duplicate_rules is not None:
        rules = [{"name": str(r.get("DeveloperName") or ""), "label": str(r.get("MasterLabel") or ""),
                  "sobject": str(r.get("SobjectType") or "")} for r in duplicate_rules]
        rules.sort(key=lambda r: (r["sobject"], r["name"]))
    return {"duplicate_rules": rules, "account_fields": account_fields}


def _fields_by_name(describe: dict) -> dict[str, dict]:
    return {f["name"]: f for f in describe.get("fields", [])}


def _check_field(problems: list[str], sobject: str, fields: dict, name: str, ability: str) -> bool:
    field = fields.get(name)
    if field is None:
        problems.append(f"{sobject}.{name} does not exist")
        return False
    if not field.get(ability, False):
        problems.append(f"{sobject}.{name} is not {ability} for this user")
        return False
    return True


def _check_picklist(problems: list[str], sobject: str, fields: dict, name: str,
                    values: list[str]) -> None:
    if not _check_field(problems, sobject, fields, name, "updateable"):
        return
    field = fields[name]
    if field.get("type") != "picklist":
        problems.append(f"{sobject}.{name} is a {field.get('type')} field, not a picklist")
        return
    offered = {p["value"] for p in field.get("picklistValues", []) if p.get("active", True)}
    for value in values:
        if value not in offered:
            problems.append(f"{sobject}.{name} has no active picklist value {value!r}")


def addresses_to_read(outcome_set: OutcomeSet) -> list[str]:
    """Every input address (those with contradictory outcomes too: the review item names
    their records), plus every new address that may be written (EMAIL_TAKEN
    needs its holders). A new address behind the active-only gate (CUPOLA row not
    active) is never written, so it costs no query: on 1,000 outcomes every address
    is a share of the few requests a plan may spend."""
    wanted = {o.email for o in outcome_set.outcomes} | {c.email for c in outcome_set.conflicts}
    wanted.update(o.new_email for o in outcome_set.outcomes
                  if o.new_email and OUTCOMES[o.kind].moves_email
                  and (o.cupola_status is Cupola.ACTIVE or not OUTCOMES[o.kind].gated))
    return sorted(wanted)


def take_snapshot(reader: OrgReader, outcome_set: OutcomeSet, config: Config, *,
                  allow_create: bool, org: OrgInfo | None = None,
                  progress: Callable[[str], None] | None = None) -> Snapshot:
    """Batched reads only: never a request per person."""
    say = progress or (lambda _msg: None)
    org = org or reader.org_info()
    emails = addresses_to_read(outcome_set)
    records: list[OrgRecord] = []
    for sobject in (SObject.CONTACT, SObject.LEAD):
        say(f"reading {sobject}s for {len(emails)} addresses")
        for row in reader.query_in(sobject.value, config.email_field, emails,
                                   fields_read(config, sobject.value)):
            records.append(OrgRecord(sobject=sobject, id=row["Id"], fields=row))

    accounts: list[AccountInfo] = []
    # The planner matches names with inner spaces collapsed (rules.norm_name), so ask for
    # both spellings: "Acme  Corp" in the input must find the org's "Acme Corp" too.
    names = sorted({name for o in outcome_set.outcomes if OUTCOMES[o.kind].creates_contact
                    for name in (o.organization.strip(), " ".join(o.organization.split())) if name})
    if allow_create and names:
        say(f"reading Accounts for {len(names)} organizations")
        rows = reader.query_in("Account", config.account_name_field, names,
                               fields_read(config, "Account"))
        # Contacts are counted only where several Accounts share a name (the count
        # decides between them); an unambiguous name costs no extra request.
        by_name: dict[str, list[str]] = {}
        for r in rows:
            by_name.setdefault(norm_name(r.get("Name")), []).append(r["Id"])
        ambiguous = sorted(i for ids in by_name.values() if len(ids) > 1 for i in ids)
        counts = reader.count_contacts_by_account(ambiguous) if ambiguous else {}
        accounts = [AccountInfo(id=r["Id"], name=r.get("Name") or "",
                                contact_count=counts.get(r["Id"]),  # type: ignore[arg-type]
                                last_modified=r.get("LastModifiedDate") or "",
                                system_modstamp=r.get("SystemModstamp") or "")
                    for r in rows]
    records.sort(key=lambda r: (r.sobject, r.id))
    accounts.sort(key=lambda a: a.id)
    return Snapshot(org=org, records=tuple(records), accounts=tuple(accounts))
