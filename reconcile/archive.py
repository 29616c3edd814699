"""The audit archive: ``plans/<plan id>/`` and what each plan's state is.

Layout of one plan's folder (every file written atomically, mode 0600, never
rewritten):

    plan.json      the plan, canonical JSON; its plan_id is the SHA-256 of its content
    plan.html      the same plan for a reviewer
    review.csv     the human-review digest
    changes.csv    every field change, one a row (for spreadsheets and auditors)
    output_document_inactive_people.csv, output_document_email_update_requests.csv
                   hand-off files for Marketing (Multipub people)
    approval.json  who approved which bytes, when: the SHA-256 of plan.json and a
                   manifest (``files``) of every other file ``plan`` wrote here
    approval.sig   optional: the approver's SSH signature of approval.json
    journal.jsonl  the apply's append-only journal; each run's ``start`` names the
                   SHA-256 of the approval it ran under
    apply.json     the apply's result, once nothing is left pending; it pins the
                   journal's SHA-256 (so: result -> journal -> approval -> every file)

A plan's state is derived from which of these exist, never stored twice.

The archive's root holds ``.archive-id`` (``fsutil.archive_id``): a random id made with the archive. An
approval records where its plan folder lives (``folder_identity``: that id, the
folder's real path, device and inode), every apply run's journal ``start`` line
does too, and ``apply`` refuses a folder that is not that one (``check_not_copied``):
two copies of one archive must not both write the same plan. So an archive lives in
one shared place; renaming or moving it within its file system keeps its inode,
copying it (or moving it to another disk) does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconcile.canonical import canonical_bytes, canonical_chunks
from reconcile.errors import IntegrityError, PlanNotFound
from reconcile.fsutil import folder_identity, read_bytes, write_atomic
from reconcile.journal import has_sends, read_events
from reconcile.model import PlanState

PLAN = "plan.json"
HTML = "plan.html"
REVIEW = "review.csv"
CHANGES = "changes.csv"
APPROVAL = "approval.json"
JOURNAL = "journal.jsonl"
RESULT = "apply.json"

APPROVAL_SIG = "approval.sig"

#: Files written at or after approval, so not in the approval's manifest. Every other
#: file in a plan folder is one ``plan`` wrote, and is bound by the approval.
AFTER_APPROVAL = (APPROVAL, APPROVAL_SIG, JOURNAL, RESULT)

RECORD_FORMAT_VERSION = 1


def is_temporary(name: str) -> bool:
    """A ``write_atomic`` temporary (``.<name>.<random>.tmp``) left by a killed process."""
    return name.startswith(".") and name.endswith(".tmp")


def manifest(plan_dir: Path) -> dict[str, str]:
    """SHA-256 of every file ``plan`` wrote into ``plan_dir`` (all but ``AFTER_APPROVAL``)."""
    return {p.name: sha256_hex(read_bytes(p)) for p in sorted(plan_dir.iterdir())
            if p.name not in AFTER_APPROVAL and not is_temporary(p.name) and not p.is_dir()}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_bytes(record: dict[str, Any]) -> bytes:
    """Canonical bytes of an approval or result record."""
    return canonical_bytes(record)


def sealed_chunks(record: Mapping[str, Any], key: str, items: Callable[[], Iterable[Any]]) -> Iterator[bytes]:
    """``record_bytes(seal({**record, key: list(items())}))`` in pieces: ``items()`` is
    called twice (once for the digest, once to write), so a large list of results is
    never held as dicts nor as text."""
    if key in record or "sha256" in record:
        raise ValueError(f"sealed_chunks: {key!r} and 'sha256' are written by it")
    digest = hashlib.sha256()
    for chunk in canonical_chunks(record, items=(key, items())):
        digest.update(chunk)
    yield from canonical_chunks({**record, "sha256": digest.hexdigest()}, items=(key, items()))


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """Add ``sha256``: the digest of the record's canonical form without it."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return {**body, "sha256": sha256_hex(record_bytes(body))}


def check_seal(path: Path, record: dict[str, Any]) -> None:
    if "sha256" not in record or seal(record)["sha256"] != record["sha256"]:
        raise IntegrityError(f"{path}: content does not match its sha256; the file was changed after it was written")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_bytes(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path}: unreadable ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{path}: expected a JSON object")
    return data


def check_not_copied(plan_dir: Path, approval: dict[str, Any]) -> None:
    """Refuse a plan folder that is not the one it was approved (or first applied) in.

    Compared: the archive id and the inode. Not the device number, which a network file
    system's clients each number their own way, nor the path, which each may mount elsewhere."""
    here = folder_identity(plan_dir)
    recorded: list[tuple[str, Any]] = []
    if isinstance(approval.get("archive"), dict):
        recorded.append(("approved", approval["archive"]))
    journal = plan_dir / JOURNAL
    if journal.is_file():
        for event in read_events(journal)[0]:
            if event.get("event") == "start" and isinstance(event.get("archive"), dict):
                recorded.append(("first applied", event["archive"]))
                break
    for what, there in recorded:
        if there.get("archive_id") == here["archive_id"] and there.get("inode") == here["inode"]:
            continue
        raise IntegrityError(
            f"{plan_dir}: this plan folder is a copy: it was {what} in {there.get('path')} (archive "
            f"{str(there.get('archive_id'))[:8]}, inode {there.get('inode')}), this is archive "
            f"{here['archive_id'][:8]}, inode {here['inode']}; apply it from the archive it was {what} "
            "in (an archive must live in one shared place), or, if that one is gone for good, make "
            "and approve a new plan here")


@dataclass(frozen=True)
class Archive:
    root: Path

    def plan_dir(self, plan_id: str) -> Path:
        return self.root / plan_id

    def plan_dirs(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return iter(())
        return (p for p in sorted(self.root.iterdir()) if p.is_dir() and (p / PLAN).is_file())

    def resolve(self, ref: str) -> Path:
        """A plan id, a unique prefix of one (6+ characters), or a path to a plan folder or plan.json."""
        path = Path(ref)
        if path.name == PLAN and path.is_file():
            return path.parent
        if (path / PLAN).is_file():
            return path
        hexadecimal = bool(ref) and all(c in "0123456789abcdef" for c in ref.lower())
        if hexadecimal and len(ref) < 6:
            raise PlanNotFound(f"plan id prefix {ref!r} is too short: give at least 6 characters of the plan id "
                               "(`reconcile log` lists them)")
        if hexadecimal:
            matches = [p for p in self.plan_dirs() if p.name.startswith(ref.lower())]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise PlanNotFound(f"plan id prefix {ref!r} matches {len(matches)} plans in {self.root}; give more characters")
        raise PlanNotFound(f"no plan {ref!r} in {self.root} (give a plan id, a unique prefix of one, "
                           "or a path; `reconcile log` lists them)")

    def write(self, plan_dir: Path, name: str, data: bytes | str | Iterable[bytes], *,
              overwrite: bool = False) -> Path:
        """Write one archive file atomically (``data`` may come in pieces, written as they
        come); an existing file is never replaced unless ``overwrite`` (only for a plan's
        own renderings before its plan.json exists)."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        plan_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = plan_dir / name
        write_atomic(target, raw, overwrite=overwrite)
        return target

    def children(self, plan_id: str) -> list[Path]:
        """Plans whose parent_plan_id is ``plan_id`` (rollback plans)."""
        out = []
        needle = plan_id.encode("ascii")
        for d in self.plan_dirs():
            try:
                raw = read_bytes(d / PLAN)
                if needle not in raw:   # only a rollback plan names its parent: skip the rest unparsed
                    continue
                doc = json.loads(raw)
            except (OSError, ValueError):
                continue
            if doc.get("parent_plan_id") == plan_id:
                out.append(d)
        return out

    def state(self, plan_dir: Path, children: list[Path] | None = None) -> PlanState:
        """``children``: the plan's rollback plans when the caller already knows them
        (``log`` does), so that the archive is not read once more per plan."""
        if (plan_dir / RESULT).is_file():
            status = read_json(plan_dir / RESULT).get("status")
            # A rollback applied in full rolls the plan back; one applied in part (e.g. a
            # Block duplicate rule refused a restore) leaves it partially rolled back, and
            # `reconcile rollback` plans what is left. One that restored nothing changes nothing.
            rolled = {read_json(child / RESULT).get("status")
                      for child in (self.children(plan_dir.name) if children is None else children)
                      if (child / RESULT).is_file()}
            if PlanState.APPLIED in rolled:
                return PlanState.ROLLED_BACK
            if PlanState.PARTIALLY_APPLIED in rolled:
                return PlanState.PARTIALLY_ROLLED_BACK
            return PlanState(status) if status in set(PlanState) else PlanState.FAILED
        if has_sends(plan_dir / JOURNAL):
            return PlanState.APPLYING
        if self.approval_matches(plan_dir):
            return PlanState.APPROVED
        return PlanState.PLANNED

    def approval_matches(self, plan_dir: Path) -> bool:
        """An approval counts only if it is intact and names this plan's exact bytes."""
        path = plan_dir / APPROVAL
        if not path.is_file():
            return False
        try:
            record = read_json(path)
            check_seal(path, record)
        except IntegrityError:
            return False
        return (record.get("plan_id") == plan_dir.name
                and record.get("plan_sha256") == sha256_hex(read_bytes(plan_dir / PLAN)))

