"""The sandbox org's duplicate management: duplicate rules, as Salesforce sets
them up in a new org, queryable as ``DuplicateRule`` rows, and the
``DUPLICATES_DETECTED`` item error an API save gets from them.

What Salesforce documents, and the sandbox follows:

* the standard rules, active in an org created since Summer '17, each with a
  cross-object matching rule: the Standard Contact Duplicate Rule matches
  Contacts that duplicate Contacts and Leads that duplicate Contacts; the
  Standard Lead Duplicate Rule matches Leads that duplicate Leads and Contacts
  that duplicate Leads. Default action on create: Allow with an alert; on
  edit: Allow, report only (no alert). Alert text "Use one of these records?"
  (https://help.salesforce.com/s/articleView?id=sales.duplicate_rules_standard_lead_rule.htm,
  https://help.salesforce.com/apex/HTViewHelpDoc?id=sales.duplicate_rules_standard_contact_rule.htm);
* an API save that a rule with an alert matches fails with
  ``DUPLICATES_DETECTED`` unless the request says ``allowSave=true``
  (``Sforce-Duplicate-Rule-Header``); a Block action refuses it whatever the
  header says
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm,
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_header_duplicateruleheader.htm);
* the error carries a ``duplicateResult`` (DuplicateError/DuplicateResult/
  MatchResult/MatchRecord: the rule's developer name, its object, allowSave,
  and one match result per matched object naming the matching records)
  (https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-duplicateerror.html,
  https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-duplicateresult.html,
  https://developer.salesforce.com/docs/platform/api/guide/sforce-api-objects-matchresult.html);
* ``DuplicateRule`` is read-only through the API, with DeveloperName,
  MasterLabel, SobjectType, IsActive, ...
  (https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-duplicaterule.html).

On edit, a rule runs only when the value of a field its matching rule uses
changes (https://help.salesforce.com/s/articleView?id=005237351&type=1).

Simplified (README, known limits): the matching rules compare the e-mail
only (exact, case-insensitively), where Salesforce's standard matching rules
also weigh names, company, phone and fuzzy matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

ALLOW, ALERT, BLOCK = "allow", "alert", "block"   # what a rule does on create / on edit
ACTIONS = (ALLOW, ALERT, BLOCK)
ALERT_TEXT = "Use one of these records?"
BLOCK_TEXT = "You're creating a duplicate record. We recommend you use an existing record instead."
MATCH_RULES = {"Contact": "Standard_Contact_Match_Rule_v1_1", "Lead": "Standard_Lead_Match_Rule_v1_0"}
URL_VERSION = "64.0"        # the API version in a match record's url when the request's is not known
RULES_CREATED = "2017-06-09T00:00:00.000+0000"   # the standard rules come with the org


@dataclass(frozen=True)
class Rule:
    developer_name: str
    label: str
    sobject: str                      # the object whose saves it checks
    matches: tuple[str, ...]          # the objects its matching rules look in
    on_create: str = ALERT            # allow (report only) | alert | block
    on_edit: str = ALLOW
    active: bool = True
    alert_text: str = ALERT_TEXT

    def action(self, creating: bool) -> str:
        return self.on_create if creating else self.on_edit


def standard_rules() -> list[Rule]:
    """The two standard rules of an org created since Summer '17, as shipped."""
    return [
        Rule("Standard_Contact_Duplicate_Rule", "Standard Contact Duplicate Rule", "Contact",
             ("Contact", "Lead")),
        Rule("Standard_Lead_Duplicate_Rule", "Standard Lead Duplicate Rule", "Lead",
             ("Lead", "Contact")),
    ]


def rules_from_state(data: Iterable[dict] | None) -> list[Rule]:
    if data is None:
        return standard_rules()
    return [Rule(**{**item, "matches": tuple(item["matches"])}) for item in data]


def rules_to_state(rules: Iterable[Rule]) -> list[dict]:
    return [{**asdict(r), "matches": list(r.matches)} for r in rules]


def configure(rules: list[Rule], name: str, *, active: bool | None = None,
              on_create: str | None = None, on_edit: str | None = None) -> list[Rule]:
    """The rules with one of them (developer name or label) changed, as an admin
    would in Setup."""
    for action in (on_create, on_edit):
        if action is not None and action not in ACTIONS:
            raise ValueError(f"duplicate rule action {action!r}: use one of {', '.join(ACTIONS)}")
    out, found = [], False
    for rule in rules:
        if name in (rule.developer_name, rule.label):
            found = True
            changes: dict[str, Any] = {}
            if active is not None:
                changes["active"] = bool(active)
            if on_create is not None:
                changes["on_create"] = on_create
            if on_edit is not None:
                changes["on_edit"] = on_edit
            rule = replace(rule, **changes)
        out.append(rule)
    if not found:
        raise KeyError(f"no duplicate rule {name!r}")
    return out


def rule_rows(rules: Iterable[Rule], make_id: Callable[[int], str], stamp: str) -> list[dict]:
    """The rules as ``DuplicateRule`` records (every field the sandbox describes)."""
    return [{"Id": make_id(n), "DeveloperName": r.developer_name, "MasterLabel": r.label,
             "SobjectType": r.sobject, "SobjectSubtype": "None", "IsActive": r.active,
             "IsDeleted": False, "Language": "en_US", "NamespacePrefix": None,
             "CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp}
            for n, r in enumerate(rules, start=1)]


def check(rules: Iterable[Rule], sobject: str, email: str | None, *, creating: bool,
          allow_save: bool, holders: Callable[[str, str], list[str]], version: str,
          record_id: str | None = None) -> dict | None:
    """The DUPLICATES_DETECTED item error for saving a ``sobject`` record with this
    e-mail, or None when it may be saved. ``holders(sobject, email)``: ids of the
    live records of that type holding the address."""
    if not email:
        return None
    for rule in rules:
        if not rule.active or rule.sobject != sobject:
            continue
        action = rule.action(creating)
        if action == ALLOW or (action == ALERT and allow_save):
            continue
        results = []
        for target in rule.matches:
            ids = [i for i in holders(target, email) if i != record_id]
            if ids:
                results.append(_match_result(target, ids, version))
        if results:
            message = BLOCK_TEXT if action == BLOCK else rule.alert_text
            return {"statusCode": "DUPLICATES_DETECTED", "message": message, "fields": [],
                    "duplicateResult": {
                        "allowSave": action != BLOCK, "duplicateRule": rule.developer_name,
                        "duplicateRuleEntityType": rule.sobject, "errorMessage": message,
                        "matchResults": results}}
    return None


def _match_result(sobject: str, ids: list[str], version: str) -> dict:
    return {"entityType": sobject, "errors": [], "matchEngine": "ExactMatchEngine",
            "matchRecords": [{"additionalInformation": [], "fieldDiffs": [], "matchConfidence": 100.0,
                              "record": {"attributes": {"type": sobject,
                                                        "url": f"/services/data/v{version}/sobjects/{sobject}/{i}"},
                                         "Id": i}}
                             for i in ids],
            "rule": MATCH_RULES.get(sobject, f"Standard_{sobject}_Match_Rule"), "size": len(ids),
            "success": True}
