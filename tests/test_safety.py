"""An archive apply cannot be fooled by: files changed after approval, a deleted result,
a re-sealed approval, an edited journal, signatures that do not verify, symbolic links.

Each case runs against the bundled sandbox org (end to end through the CLI, or
through ``apply_plan`` where a run must be stopped midway)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from hashlib import sha256
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconcile.apply import apply_plan
from reconcile.archive import record_bytes, seal
from reconcile.cli import app
from reconcile.config import Config
from reconcile.errors import ApiLimitExceeded, IntegrityError
from reconcile.fsutil import append_line, read_bytes
from reconcile.journal import Journal
from reconcile.salesforce import connect
from reconcile.sandbox import SandboxServer

pytestmark = pytest.mark.e2e

HEADER = "email,outcome,new_email,new_title,first_name,last_name,organization,title,multipub_id,cupola_status\n"
ROWS = ("alice.archer@example.com,inactive,,,,,,,,active\n"
        "bob.baker@example.com,title_change,,Head of Sales,,,,,,active\n")


@pytest.fixture()
def run(org, tmp_path):
    """``run(*args, config=None)``: the CLI against the demo org with a private archive."""
    runner = CliRunner()
    env = {**org.env, "RECONCILE_NOW": "2026-11-25T09:00:00.000Z", "RECONCILE_ARCHIVE": str(tmp_path / "plans")}

    def invoke(*args: str, config: Path | None = None):
        head = ["--config", str(config)] if config else []
        return runner.invoke(app, [*head, *args], env=env, catch_exceptions=False)

    invoke.archive = tmp_path / "plans"
    return invoke


def planned(run, tmp_path: Path) -> tuple[str, Path]:
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text(HEADER + ROWS, encoding="utf-8")
    result = run("plan", str(outcomes), "--json")
    assert result.exit_code == 0, result.output
    pid = json.loads(result.stdout)["plan_id"]
    return pid, run.archive / pid


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- the approval binds every file the approver may have read -------------------------------

@pytest.mark.parametrize("name", ["plan.html", "review.csv", "output_document_inactive_people.csv"])
def test_a_file_replaced_after_approval_stops_apply_and_fails_verify(run, org, tmp_path, name):
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    (folder / name).chmod(0o600)
    (folder / name).write_text("<p>nothing to see here</p>", encoding="utf-8")
    org.stats.reset()
    refused = run("apply", pid)
    assert refused.exit_code == 1 and f"{name} changed after approval" in one_line(refused)
    assert org.stats.write_requests == 0
    verify = run("verify", pid)
    assert verify.exit_code == 1 and f"{name} changed after approval" in one_line(verify)


def test_a_missing_or_an_unexpected_file_fails_verify(run, tmp_path):
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    (folder / "notes.html").write_text("read me instead", encoding="utf-8")
    result = run("verify", pid)
    assert result.exit_code == 1 and "notes.html is not a file the approval names" in one_line(result)
    (folder / "notes.html").unlink()
    (folder / "review.csv").unlink()
    result = run("verify", pid)
    assert result.exit_code == 1 and "review.csv is missing" in one_line(result)


def test_the_manifest_names_every_file_plan_wrote(run, tmp_path):
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    approval = json.loads((folder / "approval.json").read_text())
    written = {p.name for p in folder.iterdir()} - {"approval.json"}
    assert set(approval["files"]) == written
    assert approval["files"]["plan.html"] == sha256((folder / "plan.html").read_bytes()).hexdigest()
    assert run("verify", pid).exit_code == 0


def test_deleting_apply_json_after_an_apply_fails_verify(run, tmp_path):
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    assert run("apply", pid).exit_code == 0
    assert run("verify", pid).exit_code == 0
    (folder / "apply.json").unlink()
    result = run("verify", pid)
    assert result.exit_code == 1 and "apply.json: missing, but the journal says the apply finished" in one_line(result)


def test_an_approval_edited_and_resealed_after_apply_fails_verify(run, tmp_path):
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    assert run("apply", pid).exit_code == 0
    path = folder / "approval.json"
    record = json.loads(path.read_text())
    record["approved_by"] = "Somebody Else"
    path.chmod(0o600)
    path.write_bytes(record_bytes(seal(record)))       # whole, canonical, sealed: but not what apply ran under
    result = run("verify", pid)
    assert result.exit_code == 1 and "is not the approval apply ran under" in one_line(result)


def test_an_approval_resealed_between_two_apply_runs_is_refused(sb_plan):
    sb, sf, doc, plan_dir = sb_plan
    with pytest.raises(ApiLimitExceeded):
        stopped_run(sb, sf, doc, plan_dir)
    path = plan_dir / "approval.json"
    record = json.loads(path.read_text())
    record["comment"] = "edited"
    path.write_bytes(record_bytes(seal(record)))
    from reconcile.approval import check_approval
    with pytest.raises(IntegrityError, match="is not the approval apply ran under"):
        check_approval(plan_dir, doc)


# -- apply verifies the journal chain before trusting it ----------------------------------

CONFIG = replace(Config(), backoff_seconds=0.01)


@pytest.fixture()
def sb_plan(tmp_path):
    """A 600-Contact plan in an archive folder, approved, and the sandbox org it is for."""
    from test_apply_e2e import make_plan, seed_people

    from reconcile.approval import approve
    from reconcile.archive import Archive

    with SandboxServer(seed="empty") as sb:
        contact_ids, _ = seed_people(sb, 600)
        doc = make_plan(sb, [(cid, "Title", "Engineer", "CTO") for cid in contact_ids])
        plan_dir = tmp_path / "plans" / doc["plan_id"]
        plan_dir.mkdir(parents=True)
        (plan_dir / "plan.json").write_bytes(json.dumps(doc).encode())
        approve(Archive(tmp_path / "plans"), plan_dir, doc, by="Jane", comment="", now="t")
        yield sb, connect(CONFIG, env=sb.env), doc, plan_dir


def stopped_run(sb, sf, doc, plan_dir):
    """Apply until 400 are written, then every request answers REQUEST_LIMIT_EXCEEDED."""
    def limit(done, total):
        if done >= 400:
            sb.faults.limit_after(0)
    try:
        return apply_plan(doc, plan_dir, sf, CONFIG, sleep=lambda s: None, now=lambda: "t", progress=limit)
    finally:
        sb.faults.clear()


def test_an_edited_journal_is_refused_before_anything_is_sent(sb_plan):
    sb, sf, doc, plan_dir = sb_plan
    with pytest.raises(ApiLimitExceeded):
        stopped_run(sb, sf, doc, plan_dir)
    journal = plan_dir / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")
    pending = next(i for i, line in enumerate(lines) if b'"result"' in line and b'"pending"' in line)
    lines[pending] = lines[pending].replace(b'"status":"pending"', b'"status":"applied"')
    journal.write_bytes(b"\n".join(lines))
    sb.stats.reset()
    with pytest.raises(IntegrityError) as caught:
        apply_plan(doc, plan_dir, sf, CONFIG, sleep=lambda s: None, now=lambda: "t")
    message = str(caught.value)
    # The edited line still names its predecessor; the line after it no longer chains to it.
    assert re.search(rf"^journal.jsonl line {pending + 2} \(event \d+, \w+\) does not chain to "
                     rf"line {pending + 1} \(that line, or this one, was edited", message)
    assert "reconcile verify" in message and "\n" not in message
    assert sb.stats.write_requests == 0
    written = sum(1 for r in sb.store.records("Contact") if r.get("Title") == "CTO")
    assert written == 400


# -- signed approvals -----------------------------------------------------------------------

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                      reason="OpenSSH's ssh-keygen is not installed (apt-get install openssh-client)")


def keypair(tmp_path: Path, name: str, principal: str) -> tuple[Path, str]:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(key)],
                   check=True, capture_output=True)
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    return key, f"{principal} {public}\n"


def signing_config(tmp_path: Path, allowed: str, *, required: bool) -> Path:
    (tmp_path / "allowed_signers").write_text(allowed, encoding="utf-8")
    toml = tmp_path / "reconcile.toml"
    toml.write_text('[approval]\nallowed_signers = "allowed_signers"\n'
                    f"require_signature = {'true' if required else 'false'}\n", encoding="utf-8")
    return toml


@needs_ssh_keygen
def test_a_signed_approval_verifies_and_names_the_signer(run, org, tmp_path):
    key, line = keypair(tmp_path, "jane", "jane@example.com")
    config = signing_config(tmp_path, line, required=True)
    pid, folder = planned(run, tmp_path)
    approved = run("approve", pid, "--by", "Jane Admin", "--sign", str(key), config=config)
    assert approved.exit_code == 0, approved.output
    assert (folder / "approval.sig").read_bytes().startswith(b"-----BEGIN SSH SIGNATURE-----")
    verify = run("verify", pid, config=config)
    assert verify.exit_code == 0 and "signed by jane@example.com" in verify.stdout
    applied = run("apply", pid, config=config)
    assert applied.exit_code == 0, applied.output
    assert run("verify", config=config).exit_code == 0


@needs_ssh_keygen
def test_apply_requiring_signatures_refuses_an_unsigned_approval(run, org, tmp_path):
    _key, line = keypair(tmp_path, "jane", "jane@example.com")
    config = signing_config(tmp_path, line, required=True)
    pid, _folder = planned(run, tmp_path)
    refused = run("approve", pid, "--by", "Jane", config=config)
    assert refused.exit_code == 1 and "give --sign KEYFILE" in one_line(refused)
    assert run("approve", pid, "--by", "Jane").exit_code == 0           # made without the requirement
    org.stats.reset()
    result = run("apply", pid, config=config)
    assert result.exit_code == 1 and "not signed" in one_line(result)
    assert org.stats.write_requests == 0


@needs_ssh_keygen
def test_a_key_the_allowed_signers_file_does_not_name_is_refused(run, org, tmp_path):
    _jane, line = keypair(tmp_path, "jane", "jane@example.com")
    mallory, _ = keypair(tmp_path, "mallory", "mallory@example.com")
    config = signing_config(tmp_path, line, required=True)
    pid, folder = planned(run, tmp_path)
    refused = run("approve", pid, "--by", "Jane", "--sign", str(mallory), config=config)
    assert refused.exit_code == 1 and "does not allow" in one_line(refused)
    assert not (folder / "approval.json").exists() and not (folder / "approval.sig").exists()
    # Signed with the right key elsewhere and copied in: apply still checks it.
    (tmp_path / "lenient").mkdir()
    lenient = signing_config(tmp_path / "lenient", line, required=False)   # signs without checking
    lenient.write_text("", encoding="utf-8")
    assert run("approve", pid, "--by", "Jane", "--sign", str(mallory), config=lenient).exit_code == 0
    org.stats.reset()
    result = run("apply", pid, config=config)
    assert result.exit_code == 1 and "does not allow" in one_line(result)
    assert org.stats.write_requests == 0


@needs_ssh_keygen
def test_a_signed_approval_edited_and_resealed_is_refused(run, org, tmp_path):
    key, line = keypair(tmp_path, "jane", "jane@example.com")
    config = signing_config(tmp_path, line, required=True)
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane", "--sign", str(key), config=config).exit_code == 0
    path = folder / "approval.json"
    record = json.loads(path.read_text())
    record["files"]["plan.html"] = sha256(b"forged page").hexdigest()
    (folder / "plan.html").chmod(0o600)
    (folder / "plan.html").write_bytes(b"forged page")
    path.chmod(0o600)
    path.write_bytes(record_bytes(seal(record)))
    org.stats.reset()
    result = run("apply", pid, config=config)
    assert result.exit_code == 1 and "does not verify against approval.json" in one_line(result)
    assert org.stats.write_requests == 0
    assert run("verify", pid, config=config).exit_code == 1


# -- the archive never follows a symbolic link ---------------------------------------------

def test_a_symlink_at_journal_jsonl_is_refused_and_its_target_untouched(run, org, tmp_path):
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"precious\n")
    (folder / "journal.jsonl").symlink_to(target)
    org.stats.reset()
    result = run("apply", pid)
    assert result.exit_code == 1
    assert "journal.jsonl: is a symbolic link; the archive never follows links" in one_line(result)
    assert target.read_bytes() == b"precious\n"
    assert org.stats.requests == 0
    verify = run("verify", pid)
    assert verify.exit_code == 1 and "journal.jsonl: is a symbolic link" in one_line(verify)


def test_the_journal_and_reads_refuse_a_symlink_themselves(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"x\n")
    link = tmp_path / "journal.jsonl"
    link.symlink_to(target)
    with pytest.raises(IntegrityError, match="is a symbolic link"):
        Journal(link, now=lambda: "t").append("start", run=1)
    with pytest.raises(IntegrityError, match="is a symbolic link"):
        append_line(link, "y")
    with pytest.raises(IntegrityError, match="is a symbolic link"):
        read_bytes(link)
    assert target.read_bytes() == b"x\n"


def test_a_plan_folder_that_is_a_symlink_is_refused(run, tmp_path):
    pid, folder = planned(run, tmp_path)
    moved = tmp_path / "moved"
    folder.rename(moved)
    folder.symlink_to(moved, target_is_directory=True)
    result = run("show", pid)
    assert result.exit_code == 1 and "is a symbolic link" in one_line(result)


# -- one archive: a copied plan folder cannot apply ----------------------------------------------

def test_a_copied_archive_is_refused_and_the_original_applies(run, org, tmp_path):
    """Two copies of one archive must not both write the same plan: the approval records
    which folder it was made in (archive id and inode), and a copy is refused before any
    request is sent."""
    pid, folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    copy = tmp_path / "copy-of-plans"
    shutil.copytree(run.archive, copy)
    org.stats.reset()
    refused = run("--archive", str(copy), "apply", pid)
    line = one_line(refused)
    assert refused.exit_code == 1 and "this plan folder is a copy" in line
    assert f"it was approved in {folder.resolve()}" in line and "one shared place" in line
    assert org.stats.requests == 0                       # nothing sent, not even a sign-in check
    assert run("apply", pid).exit_code == 0              # the original is the one that writes
    assert org.stats.write_requests > 0


def test_a_copy_made_after_an_apply_started_is_refused_by_the_journal(tmp_path):
    """An approval from before archive identities (no ``archive`` in it) is still covered
    once an apply ran: every run's journal start line records the folder it wrote from."""
    from reconcile.archive import check_not_copied
    original = tmp_path / "plans" / "a"
    original.mkdir(parents=True)
    Journal(original / "journal.jsonl", now=lambda: "t").append("start", run=1)
    check_not_copied(original, {})                       # the same folder: fine
    copy = tmp_path / "elsewhere" / "a"
    shutil.copytree(original.parent, copy.parent)
    with pytest.raises(IntegrityError, match=r"is a copy: it was first applied in .*plans/a"):
        check_not_copied(copy, {})


def test_an_archive_renamed_in_place_still_applies(run, org, tmp_path):
    """Renaming (moving within one file system) keeps the folder's inode: not a copy."""
    pid, _folder = planned(run, tmp_path)
    assert run("approve", pid, "--by", "Jane").exit_code == 0
    renamed = tmp_path / "renamed-plans"
    run.archive.rename(renamed)
    assert run("--archive", str(renamed), "apply", pid).exit_code == 0
