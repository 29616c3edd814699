"""Configuration: SPEC defaults, reconcile.toml, the environment, and one-line errors."""

import dataclasses
from pathlib import Path

import pytest

from reconcile.config import Config, load_config
from reconcile.errors import ConfigError


def test_defaults_are_the_specs():
    c = load_config(env={})
    assert (c.contact_status_field, c.contact_active, c.contact_inactive) == ("Contact_Status__c", "Active", "Inactive")
    assert (c.lead_status_field, c.lead_inactive, c.lead_reactivate) == ("Status", "Inactive", "Open - Not Contacted")
    assert c.archive_dir == Path("plans")


def test_toml_environment_and_options_override_in_that_order(tmp_path):
    path = tmp_path / "reconcile.toml"
    path.write_text('[fields]\ncontact_status = "Status__c"\n[values]\nlead_inactive_statuses = ["Dead"]\n'
                    '[apply]\napi_share = 0.5\n[archive]\ndir = "audit"\n', encoding="utf-8")
    c = load_config(path, env={"SALESFORCE_API_VERSION": "v60.0"})
    assert c.contact_status_field == "Status__c" and c.lead_inactive_statuses == ("Dead",)
    assert c.api_share == 0.5 and c.api_version == "60.0" and c.archive_dir == Path("audit")
    assert load_config(path, env={"RECONCILE_ARCHIVE": "elsewhere"}).archive_dir == Path("elsewhere")
    assert load_config(path, env={"RECONCILE_ARCHIVE": "x"}, archive=Path("y")).archive_dir == Path("y")


@pytest.mark.parametrize("text, message", [
    ("[feilds]\n", "unknown section [feilds]"),
    ("[fields]\ncontact_stat = 'X'\n", "unknown key fields.contact_stat"),
    ("[apply]\napi_share = 'lots'\n", "apply.api_share must be float"),
    ("[apply]\napi_share = 1.5\n", "api_share must be between 0 and 1"),
    ("[apply]\ncollection_size = 500\n", "collection_size must be 1..200"),
    ("[fields\n", "not valid TOML"),
])
def test_bad_configuration_is_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "reconcile.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value).strip()


def test_config_named_but_missing(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().api_share = 0.1  # type: ignore[misc]
