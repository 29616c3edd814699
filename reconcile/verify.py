"""``reconcile verify``: recompute every hash, check every link in the archive."""

from __future__ import annotations

import re
from pathlib import Path

from reconcile import archive as ar
from reconcile import plan as plan_doc
from reconcile.approval import check_bound_to_journal, check_files, check_signature
from reconcile.config import Config
from reconcile.errors import IntegrityError, ReconcileError
from reconcile.fsutil import read_bytes, refuse_links
from reconcile.journal import check_chain, read_events


def verify_archive(arch: ar.Archive, plan_dirs: list[Path], config: Config | None = None) -> list[str]:
    config = config or Config()
    checked: list[str] = []
    problems: list[str] = []
    for plan_dir in plan_dirs:
        try:
            checked.extend(_verify_one(arch, plan_dir, config))
        except ReconcileError as exc:
            problems.append(str(exc))
    if problems:
        raise IntegrityError(f"verify failed ({len(problems)} problem(s)): " + " | ".join(problems))
    return checked


def _verify_one(arch: ar.Archive, plan_dir: Path, config: Config) -> list[str]:
    refuse_links(plan_dir)
    plan_path = plan_dir / ar.PLAN
    doc = plan_doc.load_plan(plan_path)  # recomputes plan_id from the content
    raw = read_bytes(plan_path)
    if plan_doc.canonical_bytes(doc) != raw:
        raise IntegrityError(f"{plan_path}: not in canonical form; the file was edited")
    plan_doc.check_schema(doc, plan_path)   # everything again: verify is the thorough check
    if doc["plan_id"] != plan_dir.name:
        raise IntegrityError(f"{plan_path}: plan id {doc['plan_id'][:12]} does not match its folder")
    plan_sha = ar.sha256_hex(raw)
    change_ids = {c["change_id"] for c in doc.get("changes", [])}
    out = [f"{plan_path}: plan id ok"]

    approval_path = plan_dir / ar.APPROVAL
    if approval_path.is_file():
        approval = ar.read_json(approval_path)
        ar.check_seal(approval_path, approval)
        _canonical(approval_path, approval)
        _points_at(approval_path, approval, doc["plan_id"], plan_sha)
        check_files(plan_dir, approval)
        signer = check_signature(plan_dir, config)
        signed = f", signed by {signer}" if signer else ""
        if signer is None and (plan_dir / ar.APPROVAL_SIG).is_file():
            signed = ", signature not checked: no [approval] allowed_signers"
        out.append(f"{approval_path}: approval ok ({approval.get('approved_by')}{signed}; "
                   f"{len(approval['files'])} file(s) as approved)")
    else:
        unexpected = sorted(set(ar.AFTER_APPROVAL) - {ar.APPROVAL} & {p.name for p in plan_dir.iterdir()})
        if unexpected:
            raise IntegrityError(f"{plan_dir}: has {', '.join(unexpected)} but no approval.json")

    journal_path = plan_dir / ar.JOURNAL
    result_path = plan_dir / ar.RESULT
    if (journal_path.is_file() or result_path.is_file()) and not approval_path.is_file():
        raise IntegrityError(f"{plan_dir}: has an apply journal or result but no approval.json")
    if journal_path.is_file():
        events, _torn = read_events(journal_path)  # a torn line from a killed apply is expected
        for number, event in enumerate(events, 1):
            for cid in event.get("change_ids", []) or []:
                if cid not in change_ids:
                    raise IntegrityError(f"{journal_path}: event {number} names change {cid!r}, "
                                         f"which plan {doc['plan_id'][:12]} does not have")
        broken = check_chain(journal_path)
        if broken:
            raise IntegrityError(f"{journal_path}: {broken}")
        check_bound_to_journal(plan_dir)
        if any(e.get("event") == "finish" for e in events) and not result_path.is_file():
            raise IntegrityError(f"{result_path}: missing, but the journal says the apply finished; "
                                 f"restore it from a backup (or run `reconcile apply {plan_dir.name[:12]}` "
                                 "if that apply was killed while writing it)")
        out.append(f"{journal_path}: journal ok")
    if result_path.is_file():
        result = ar.read_json(result_path)
        ar.check_seal(result_path, result)
        _canonical(result_path, result)
        _points_at(result_path, result, doc["plan_id"], plan_sha)
        pinned = result.get("journal_sha256")
        if pinned and (not journal_path.is_file() or ar.sha256_hex(read_bytes(journal_path)) != pinned):
            raise IntegrityError(f"{journal_path}: differs from the journal {result_path.name} was written from")
        for item in result.get("results", []):
            if item.get("change_id") not in change_ids:
                raise IntegrityError(f"{result_path}: result for change {item.get('change_id')!r}, which the plan does not have")
        out.append(f"{result_path}: result ok ({result.get('status')})")

    if doc.get("kind") == "rollback":
        parent_id = doc.get("parent_plan_id") or ""
        parent_dir = arch.plan_dir(parent_id)
        if not (parent_dir / ar.PLAN).is_file():
            raise IntegrityError(f"{plan_path}: rollback of plan {parent_id[:12]}, which is not in {arch.root}")
        parent_result_path = parent_dir / ar.RESULT
        if not parent_result_path.is_file():
            raise IntegrityError(f"{plan_path}: rollback of plan {parent_id[:12]}, which has no apply result")
        parent_result = ar.read_json(parent_result_path)
        touched = {r.get("record_id") for r in parent_result.get("results", []) if r.get("status") == "applied"}
        for change in doc.get("changes", []):
            if change.get("record_id") not in touched:
                raise IntegrityError(f"{plan_path}: change {change['change_id']} undoes record "
                                     f"{change.get('record_id')}, which plan {parent_id[:12]}'s apply did not touch")
        # inputs: the parent's apply.json, then (for what an earlier rollback left) the
        # apply.json of each earlier rollback of the same parent
        for number, inp in enumerate(doc.get("inputs", [])):
            source_id = str(inp.get("name") or "").split("/")[0] if number else parent_id
            if number and not re.fullmatch(r"[0-9a-f]{64}", source_id):
                raise IntegrityError(f"{plan_path}: input {inp.get('name')!r} names no plan")
            source = arch.plan_dir(source_id) if source_id else parent_dir
            if number and (not (source / ar.PLAN).is_file()
                           or ar.read_json(source / ar.PLAN).get("parent_plan_id") != parent_id):
                raise IntegrityError(f"{plan_path}: input {inp.get('name')!r} is not a rollback of plan {parent_id[:12]}")
            source_result = source / ar.RESULT
            if not source_result.is_file() or inp.get("sha256") != ar.sha256_hex(read_bytes(source_result)):
                raise IntegrityError(f"{plan_path}: built from a different {source_result} than the one archived")
        out.append(f"{plan_path}: rollback of {parent_id[:12]} ok")
    return out


def _canonical(path: Path, record: dict) -> None:
    """Every byte counts: a record that parses to the same content but is not written
    exactly as reconcile writes it (whitespace, key order, escapes) was edited."""
    if ar.record_bytes(record) != read_bytes(path):
        raise IntegrityError(f"{path}: not in canonical form; the file was edited after it was written")


def _points_at(path: Path, record: dict, plan_id: str, plan_sha: str) -> None:
    if record.get("plan_id") != plan_id:
        raise IntegrityError(f"{path}: points at plan {str(record.get('plan_id'))[:12]}, not {plan_id[:12]}")
    if record.get("plan_sha256") != plan_sha:
        raise IntegrityError(f"{path}: made for plan bytes {str(record.get('plan_sha256'))[:12]}, "
                             f"but plan.json hashes to {plan_sha[:12]}")
