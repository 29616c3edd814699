"""The sandbox org's schema: Contact, Lead, Account (and Organization, for
``SELECT Id FROM Organization``), served as Salesforce describe JSON.

Field entries carry the keys a real describe has that a client is likely to
read (name, type, label, length, createable, updateable, nillable,
defaultedOnCreate, picklistValues, restrictedPicklist, referenceTo, ...).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from reconcile.sandbox.ids import KEY_PREFIXES

CONTACT_STATUS_VALUES = ("Active", "Inactive")
LEAD_STATUS_VALUES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
    "Inactive",
    "Disqualified",
)
LEAD_STATUS_DEFAULT = "Open - Not Contacted"

_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "string": "xsd:string",
    "email": "xsd:string",
    "url": "xsd:string",
    "picklist": "xsd:string",
    "boolean": "xsd:boolean",
    "datetime": "xsd:dateTime",
}
STRING_TYPES = frozenset({"string", "email", "url", "picklist", "textarea", "phone"})


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    label: str
    length: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    default: Any = None  # value set on create when the field is not given
    picklist: tuple[str, ...] = ()
    picklist_default: str | None = None
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    relationship: str | None = None
    name_field: bool = False
    custom: bool = False
    defaulted: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def required(self) -> bool:
        """Must have a value on create (what a page layout shows as required)."""
        return not self.nillable and self.createable and not self.defaulted

    def describe(self) -> dict[str, Any]:
        string_like = self.type in STRING_TYPES or self.type in ("id", "reference")
        return {
            "aggregatable": self.type not in ("boolean",),
            "autoNumber": False,
            "byteLength": self.length * 3 if string_like else 0,
            "calculated": False,
            "caseSensitive": False,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default if self.type == "boolean" else None,
            "defaultedOnCreate": self.defaulted,
            "digits": 0,
            "externalId": False,
            "filterable": True,
            "groupable": self.type not in ("datetime",),
            "idLookup": self.name in ("Id", "Email", "Name"),
            "label": self.label,
            "length": self.length if string_like else 0,
            "name": self.name,
            "nameField": self.name_field,
            "nillable": self.nillable,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.picklist_default,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.picklist
            ],
            "precision": 0,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship,
            "restrictedPicklist": self.restricted,
            "scale": 0,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "sortable": True,
            "type": self.type,
            "unique": False,
            "updateable": self.updateable,
        }


def _system_fields() -> list[Field]:
    return [
        Field("CreatedDate", "datetime", "Created Date", createable=False,
              updateable=False, nillable=False, defaulted=True),
        Field("LastModifiedDate", "datetime", "Last Modified Date", createable=False,
              updateable=False, nillable=False, defaulted=True),
        Field("SystemModstamp", "datetime", "System Modstamp", createable=False,
              updateable=False, nillable=False, defaulted=True),
    ]


def _id_fields() -> list[Field]:
    return [
        Field("Id", "id", "Record ID", 18, createable=False, updateable=False,
              nillable=False, defaulted=True),
        Field("IsDeleted", "boolean", "Deleted", createable=False, updateable=False,
              nillable=False, default=False, defaulted=True),
    ]


def _person_fields() -> list[Field]:
    return [
        Field("LastName", "string", "Last Name", 80, nillable=False),
        Field("FirstName", "string", "First Name", 40),
        Field("Name", "string", "Full Name", 121, createable=False, updateable=False,
              nillable=False, name_field=True, defaulted=False),
        Field("Title", "string", "Title", 128),
        Field("Email", "email", "Email", 80),
    ]


SCHEMA: dict[str, list[Field]] = {
    "Contact": _id_fields() + [
        Field("AccountId", "reference", "Account ID", 18, reference_to=("Account",),
              relationship="Account"),
        *_person_fields(),
        Field("Contact_Status__c", "picklist", "Contact Status", 255,
              picklist=CONTACT_STATUS_VALUES, restricted=True, custom=True),
        *_system_fields(),
    ],
    "Lead": _id_fields() + [
        *_person_fields(),
        Field("Company", "string", "Company", 255, nillable=False),
        Field("Status", "picklist", "Status", 255, nillable=False,
              picklist=LEAD_STATUS_VALUES, picklist_default=LEAD_STATUS_DEFAULT,
              default=LEAD_STATUS_DEFAULT, restricted=True, defaulted=True),
        Field("IsConverted", "boolean", "Converted", updateable=False, nillable=False,
              default=False, defaulted=True),
        *_system_fields(),
    ],
    "Account": _id_fields() + [
        Field("Name", "string", "Account Name", 255, nillable=False, name_field=True),
        Field("Website", "url", "Website", 255),
        *_system_fields(),
    ],
    "Organization": [
        Field("Id", "id", "Organization ID", 18, createable=False, updateable=False,
              nillable=False, defaulted=True),
        Field("Name", "string", "Name", 80, createable=False, updateable=False,
              nillable=False, name_field=True),
        Field("IsSandbox", "boolean", "Is Sandbox", createable=False, updateable=False,
              nillable=False, default=False, defaulted=True),
        Field("OrganizationType", "picklist", "Edition", 40, createable=False, updateable=False,
              picklist=("Developer Edition", "Enterprise Edition", "Unlimited Edition",
                        "Professional Edition", "Base Edition")),
    ],
    # read-only through the API (object reference, DuplicateRule): fields as documented
    "DuplicateRule": [
        Field("Id", "id", "Duplicate Rule ID", 18, createable=False, updateable=False,
              nillable=False, defaulted=True),
        Field("DeveloperName", "string", "Object Name", 80, createable=False, updateable=False,
              nillable=False),
        Field("MasterLabel", "string", "Rule Name", 80, createable=False, updateable=False,
              nillable=False, name_field=True),
        Field("SobjectType", "picklist", "Custom Object Definition ID", 40, createable=False,
              updateable=False, nillable=False, picklist=("Account", "Contact", "Lead"), restricted=True),
        Field("SobjectSubtype", "picklist", "Object Subtype", 255, createable=False, updateable=False,
              picklist=("None", "PersonAccount")),
        Field("IsActive", "boolean", "Active", createable=False, updateable=False, nillable=False,
              default=True, defaulted=True),
        Field("Language", "picklist", "Master Language", 40, createable=False, updateable=False,
              picklist=("en_US",), restricted=True),
        Field("NamespacePrefix", "string", "Namespace Prefix", 15, createable=False, updateable=False),
        Field("IsDeleted", "boolean", "Deleted", createable=False, updateable=False, nillable=False,
              default=False, defaulted=True),
        *_system_fields(),
    ],
}
WRITABLE_SOBJECTS = ("Contact", "Lead", "Account")
FIELDS: dict[str, dict[str, Field]] = {
    sobject: {f.name: f for f in fields} for sobject, fields in SCHEMA.items()
}
# lower-case name -> canonical name, per sObject (SOQL and JSON keys are case-insensitive)
CANONICAL: dict[str, dict[str, str]] = {
    sobject: {f.name.lower(): f.name for f in fields} for sobject, fields in SCHEMA.items()
}
SOBJECT_CANONICAL = {name.lower(): name for name in SCHEMA}
_LABELS = {
    "Contact": ("Contact", "Contacts"),
    "Lead": ("Lead", "Leads"),
    "Account": ("Account", "Accounts"),
    "Organization": ("Organization", "Organizations"),
    "DuplicateRule": ("Duplicate Rule", "Duplicate Rules"),
}


def canonical_sobject(name: str) -> str | None:
    return SOBJECT_CANONICAL.get(name.lower())


def _object_info(sobject: str, version: str) -> dict[str, Any]:
    writable = sobject in WRITABLE_SOBJECTS
    label, plural = _LABELS[sobject]
    base = f"/services/data/v{version}/sobjects/{sobject}"
    return {
        "activateable": False,
        "createable": writable,
        "custom": False,
        "customSetting": False,
        "deletable": writable,
        "feedEnabled": False,
        "keyPrefix": KEY_PREFIXES[sobject],
        "label": label,
        "labelPlural": plural,
        "layoutable": writable,
        "mergeable": sobject in ("Contact", "Lead", "Account"),
        "name": sobject,
        "queryable": True,
        "replicateable": True,
        "retrieveable": True,
        "searchable": writable,
        "triggerable": writable,
        "undeletable": writable,
        "updateable": writable,
        "urls": {
            "sobject": base,
            "describe": f"{base}/describe",
            "rowTemplate": f"{base}/{{ID}}",
        },
    }


def describe_sobject(sobject: str, version: str) -> dict[str, Any]:
    """``GET /sobjects/{sobject}/describe`` body."""
    body = _object_info(sobject, version)
    body["fields"] = [f.describe() for f in SCHEMA[sobject]]
    body["childRelationships"] = (
        [{"childSObject": "Contact", "field": "AccountId", "relationshipName": "Contacts",
          "cascadeDelete": False}]
        if sobject == "Account" else []
    )
    body["recordTypeInfos"] = []
    return copy.deepcopy(body)


def describe_basic(sobject: str, version: str) -> dict[str, Any]:
    """``GET /sobjects/{sobject}`` body."""
    return {"objectDescribe": _object_info(sobject, version), "recentItems": []}


def describe_global(version: str) -> dict[str, Any]:
    """``GET /sobjects`` body."""
    return {
        "encoding": "UTF-8",
        "maxBatchSize": 200,
        "sobjects": [_object_info(name, version) for name in sorted(SCHEMA)],
    }
