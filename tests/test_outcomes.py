"""The outcome table (reconcile/outcomes.py) is the one place an outcome's meaning
lives: input columns, required values, fields written, the CUPOLA gate, hand-off."""

from __future__ import annotations

import copy

import pytest

from reconcile.config import Config
from reconcile.errors import PreflightError
from reconcile.model import Outcome, OutcomeKind, SObject
from reconcile.outcomes import COLUMNS, OUTCOMES, fields_read, needed_by, written_fields
from reconcile.sandbox import describe
from reconcile.snapshot import preflight


def test_every_outcome_has_exactly_one_entry():
    assert list(OUTCOMES) == list(OutcomeKind)
    assert all(OUTCOMES[k].kind is k for k in OutcomeKind)


def test_input_columns_are_spec_1s_in_its_order():
    assert COLUMNS == ("email", "outcome", "new_email", "new_title", "first_name", "last_name",
                       "organization", "title", "multipub_id", "cupola_status", "observed_at", "source_id")


def test_required_columns_come_from_the_table():
    assert needed_by() == {"new_email": ("email_change",), "new_title": ("title_change",),
                           "last_name": ("new_contact",), "organization": ("new_contact",)}


def test_only_field_updates_are_behind_the_cupola_gate():
    gated = {k.value for k, t in OUTCOMES.items() if t.gated}
    assert gated == {"email_change", "title_change", "replacement"}
    assert all(t.writes for t in OUTCOMES.values() if t.gated)


def test_status_outcomes_write_each_objects_own_field_and_value():
    """SPEC §2: Contact status lives in a custom picklist, Lead status in Status."""
    config = Config(contact_status_field="Status__c", lead_inactive="Dead")
    inactive = OUTCOMES[OutcomeKind.INACTIVE].writes
    person = Outcome(email="a@x.com", kind=OutcomeKind.INACTIVE)
    assert [(w.field(config), w.value(person, config)) for w in inactive[SObject.CONTACT]] == [("Status__c", "Inactive")]
    assert [(w.field(config), w.value(person, config)) for w in inactive[SObject.LEAD]] == [("Status", "Dead")]


def test_a_renamed_written_field_is_read_and_checked():
    """A field an outcome writes is read with the record (the "already so" check needs
    its value) and preflight checks it is updateable, whatever it is called."""
    config = Config(email_field="Work_Email__c")
    assert written_fields(config, SObject.CONTACT) == ("Contact_Status__c", "Work_Email__c", "Title")
    assert written_fields(config, SObject.LEAD) == ("Status", "Work_Email__c", "Title")
    assert "Work_Email__c" not in config.contact_fields()
    assert fields_read(config, "Contact") == (*config.contact_fields(), "Work_Email__c")
    assert fields_read(Config(), "Lead") == Config().lead_fields()  # nothing added by default
    describes = {s: describe.describe_sobject(s, "61.0") for s in ("Contact", "Lead")}
    with pytest.raises(PreflightError, match="Contact.Work_Email__c does not exist"):
        preflight(copy.deepcopy(describes), config, allow_create=False)
