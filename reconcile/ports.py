"""What the layers above the adapter need from an org: ``OrgReader`` (planning,
rollback, apply's checks) and ``OrgWriter`` (apply). ``salesforce.Salesforce``
and the sandbox org's connection satisfy them; tests may pass smaller fakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from reconcile.model import OrgInfo, SaveResult

__all__ = ["OrgReader", "OrgWriter", "OrgConnection", "BulkIngest"]


class OrgReader(Protocol):
    """Reads. ``retrieve`` answers in ``ids`` order (None for a record that is deleted or
    not visible to this user);
    ``calls``: the requests this connection has sent."""

    @property
    def calls(self) -> int: ...

    def org_info(self) -> OrgInfo: ...

    def org_and_describe(self, sobjects: Sequence[str], *,
                         count_field: str | None = None) -> tuple[OrgInfo, dict[str, dict]]: ...

    # org_and_describe plus the active DuplicateRule rows (None: not readable), one request
    def preflight_read(self, sobjects: Sequence[str], *, count_field: str | None = None,
                       count_sobjects: Sequence[str] = (),
                       ) -> tuple[OrgInfo, dict[str, dict], list[dict] | None]: ...

    def whoami(self) -> dict[str, Any]: ...

    def retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict | None]: ...

    def query_in(self, sobject: str, field: str, values: Iterable[str],
                 fields: Sequence[str]) -> list[dict]: ...

    def count_contacts_by_account(self, account_ids: Iterable[str]) -> dict[str, int]: ...


class OrgWriter(OrgReader, Protocol):
    """Reads and sObject Collections writes (one request each, results in request order).
    A connection may also count its requests (``calls``) and know the org's daily API
    usage (``usage``); apply reads both when they are there."""

    # allow_duplicates: send Sforce-Duplicate-Rule-Header allowSave=true (rollback's restores)
    def create(self, sobject: str, records: list[dict], *,
               allow_duplicates: bool = False) -> list[SaveResult]: ...

    def update(self, sobject: str, records: list[dict], *,
               allow_duplicates: bool = False) -> list[SaveResult]: ...

    def delete(self, ids: list[str]) -> list[SaveResult]: ...


class OrgConnection(OrgWriter, Protocol):
    """What ``workflow.Context.salesforce()`` returns: a writer that hands out a
    read-only view of itself (planning and rollback only read)."""

    def reader(self) -> OrgReader: ...


@runtime_checkable
class BulkIngest(Protocol):
    """A connection that can run a Bulk API 2.0 ingest job (``salesforce.BulkOutcome``)."""

    def bulk_ingest(self, action: str, sobject: str, records: Sequence[Mapping[str, Any]]) -> Any: ...
