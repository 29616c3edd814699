"""Approval: a person and a time bound to the exact bytes of a plan.

``approval.json`` holds the plan's id and the SHA-256 of ``plan.json`` as it
was approved; ``apply`` refuses the plan if one byte differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconcile import archive as ar
from reconcile.errors import IntegrityError, StateError, UsageError
from reconcile.fsutil import read_bytes
from reconcile.model import PlanState


def approve(arch: ar.Archive, plan_dir: Path, doc: dict[str, Any], *, by: str, comment: str,
            now: str) -> dict[str, Any]:
    by = by.strip()
    if not by:
        raise UsageError("approve: --by must name the person approving (e.g. --by 'Jane Admin')")
    state = arch.state(plan_dir)
    if state is not PlanState.PLANNED:
        raise StateError(f"plan {plan_dir.name[:12]} is {state}; only a plan in state planned can be approved")
    record = ar.seal({
        "format_version": ar.RECORD_FORMAT_VERSION,
        "kind": "approval",
        "plan_id": doc["plan_id"],
        "plan_sha256": ar.sha256_hex(read_bytes(plan_dir / ar.PLAN)),
        "approved_by": by,
        "approved_at": now,
        "comment": comment,
    })
    arch.write(plan_dir, ar.APPROVAL, ar.record_bytes(record))
    return record


def check_approval(plan_dir: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The approval that lets ``apply`` run this plan's exact bytes, or an error saying why not."""
    path = plan_dir / ar.APPROVAL
    if not path.is_file():
        raise StateError(f"plan {doc['plan_id'][:12]} is not approved; run `reconcile approve {doc['plan_id'][:12]} --by NAME` after reviewing it")
    record = ar.read_json(path)
    ar.check_seal(path, record)
    if record.get("plan_id") != doc["plan_id"]:
        raise IntegrityError(f"{path}: this approval is for plan {str(record.get('plan_id'))[:12]}, not {doc['plan_id'][:12]}; approve this plan itself")
    actual = ar.sha256_hex(read_bytes(plan_dir / ar.PLAN))
    if record.get("plan_sha256") != actual:
        raise IntegrityError(f"{plan_dir / ar.PLAN}: changed after approval (sha256 {actual[:12]}, approved {str(record.get('plan_sha256'))[:12]}); make and approve a new plan")
    return record
