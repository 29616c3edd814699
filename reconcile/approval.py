"""Approval: a person and a time bound to every file the approver may have read.

``approval.json`` holds the plan's id, the SHA-256 of ``plan.json`` as it was
approved, and ``files``: the SHA-256 of every other file ``plan`` wrote into the
folder (``plan.html``, ``review.csv``, the hand-off CSVs, whatever a later
version writes), discovered from the folder at approve time. ``apply`` and
``verify`` refuse the plan if one byte of one of them differs, one is missing,
or a file appeared that the approval does not name.

How far the seal goes
---------------------
The ``sha256`` inside ``approval.json`` proves only that the file is whole: anyone
who can write the plan folder can recompute it after editing the file. Two
things close that gap:

- each apply run's first journal line records the SHA-256 of ``approval.json``
  it ran under, the journal is hash-chained, and ``apply.json`` pins the
  journal's hash; so once a plan was applied, an approval edited and re-sealed
  no longer matches what apply recorded, and ``verify`` says so;
- before apply, only a key the editor does not hold helps: ``approve --sign``
  adds ``approval.sig``, the approver's SSH signature of ``approval.json``'s
  bytes (``reconcile/signing.py``), checked against ``[approval]
  allowed_signers``; with ``require_signature = true`` apply refuses an
  approval that is unsigned or whose signature does not verify.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconcile import archive as ar
from reconcile import signing
from reconcile.config import Config
from reconcile.errors import ConfigError, IntegrityError, StateError, UsageError
from reconcile.fsutil import folder_identity, read_bytes
from reconcile.journal import read_events
from reconcile.model import PlanState


def approve(arch: ar.Archive, plan_dir: Path, doc: dict[str, Any], *, by: str, comment: str,
            now: str, config: Config | None = None, sign_with: Path | None = None) -> dict[str, Any]:
    config = config or Config()
    by = by.strip()
    if not by:
        raise UsageError("approve: --by must name the person approving (e.g. --by 'Jane Admin')")
    state = arch.state(plan_dir)
    if state is not PlanState.PLANNED:
        raise StateError(f"plan {plan_dir.name[:12]} is {state}; only a plan in state planned can be approved")
    if sign_with is None and config.signing_key:
        sign_with = Path(config.signing_key)
    if sign_with is None and config.require_signature:
        raise UsageError("approve: this archive requires signed approvals ([approval] require_signature); "
                         "give --sign KEYFILE (your SSH key)")
    record = ar.seal({
        "format_version": ar.RECORD_FORMAT_VERSION,
        "kind": "approval",
        "plan_id": doc["plan_id"],
        "plan_sha256": ar.sha256_hex(read_bytes(plan_dir / ar.PLAN)),
        "files": ar.manifest(plan_dir),
        "archive": folder_identity(plan_dir),   # apply refuses a copy of this folder
        "approved_by": by,
        "approved_at": now,
        "comment": comment,
    })
    data = ar.record_bytes(record)
    if sign_with is not None:
        signature = signing.sign(data, sign_with)
        # The signature goes first: approval.json's presence is what makes the plan approved.
        arch.write(plan_dir, ar.APPROVAL_SIG, signature, overwrite=True)
        if config.allowed_signers:   # the approver learns now, not at apply, if the key is not allowed
            try:
                signing.verify(data, plan_dir / ar.APPROVAL_SIG, Path(config.allowed_signers))
            except (IntegrityError, ConfigError):
                (plan_dir / ar.APPROVAL_SIG).unlink()
                raise
    arch.write(plan_dir, ar.APPROVAL, data)
    return record


def check_approval(plan_dir: Path, doc: dict[str, Any], config: Config | None = None) -> dict[str, Any]:
    """The approval that lets ``apply`` run this plan, or an error saying why not: the
    record is whole, names this plan's bytes and every file beside it, is signed when
    that is required, and is the one earlier apply runs ran under."""
    config = config or Config()
    path = plan_dir / ar.APPROVAL
    if not path.is_file():
        raise StateError(f"plan {doc['plan_id'][:12]} is not approved; run "
                         f"`reconcile approve {doc['plan_id'][:12]} --by NAME` after reviewing it")
    record = ar.read_json(path)
    ar.check_seal(path, record)
    if record.get("plan_id") != doc["plan_id"]:
        raise IntegrityError(f"{path}: this approval is for plan {str(record.get('plan_id'))[:12]}, "
                             f"not {doc['plan_id'][:12]}; approve this plan itself")
    actual = ar.sha256_hex(read_bytes(plan_dir / ar.PLAN))
    if record.get("plan_sha256") != actual:
        raise IntegrityError(f"{plan_dir / ar.PLAN}: changed after approval (sha256 {actual[:12]}, "
                             f"approved {str(record.get('plan_sha256'))[:12]}); make and approve a new plan")
    check_files(plan_dir, record)
    check_signature(plan_dir, config)
    check_bound_to_journal(plan_dir)
    ar.check_not_copied(plan_dir, record)
    return record


def check_files(plan_dir: Path, record: dict[str, Any]) -> None:
    """Every file the approval names is there with its approved bytes, and no other file is."""
    approved = record.get("files")
    where = plan_dir / ar.APPROVAL
    if not isinstance(approved, dict):
        raise IntegrityError(f"{where}: has no file manifest, so the plan's page and CSVs are not bound "
                             "(made by an older reconcile?); make and approve a new plan")
    present = ar.manifest(plan_dir)
    problems = []
    for name in sorted(set(approved) | set(present)):
        if name not in present:
            problems.append(f"{name} is missing")
        elif name not in approved:
            problems.append(f"{name} is not a file the approval names")
        elif present[name] != approved[name]:
            problems.append(f"{name} changed after approval (sha256 {present[name][:12]}, "
                            f"approved {str(approved[name])[:12]})")
    if problems:
        raise IntegrityError(f"{plan_dir}: {'; '.join(problems)}; restore the plan folder from a backup, "
                             "or make and approve a new plan")


def check_signature(plan_dir: Path, config: Config) -> str | None:
    """The principal who signed the approval, or None when it is unsigned and that is allowed."""
    sig = plan_dir / ar.APPROVAL_SIG
    if not sig.is_file():
        if config.require_signature:
            raise IntegrityError(f"{plan_dir / ar.APPROVAL}: not signed, and [approval] require_signature "
                                 "is set; approve again with `--sign KEYFILE`")
        return None
    if not config.allowed_signers:
        if config.require_signature:
            raise ConfigError("[approval] require_signature is set but [approval] allowed_signers names "
                              "no file to check signatures against")
        return None   # signed, but nothing configured to check it with: like an unsigned approval
    return signing.verify(read_bytes(plan_dir / ar.APPROVAL), sig, Path(config.allowed_signers))


def check_bound_to_journal(plan_dir: Path) -> None:
    """Every apply run recorded the approval it ran under; the approval must still be that one."""
    journal = plan_dir / ar.JOURNAL
    if not journal.is_file():
        return
    actual = ar.sha256_hex(read_bytes(plan_dir / ar.APPROVAL))
    for number, event in enumerate(read_events(journal)[0], 1):
        recorded = event.get("approval_sha256") if event.get("event") == "start" else None
        if recorded is not None and recorded != actual:
            raise IntegrityError(f"{plan_dir / ar.APPROVAL}: is not the approval apply ran under (journal "
                                 f"event {number} recorded sha256 {str(recorded)[:12]}, the file hashes to "
                                 f"{actual[:12]}); it was edited after the apply started")
