"""The apply journal (replay, torn lines) and the durable-write helpers."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from reconcile.fsutil import append_line, write_atomic
from reconcile.journal import Journal, read_events, replay
from reconcile.model import ChangeStatus


def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.jsonl", now=lambda: "2024-05-02T10:00:00Z")


def test_replay_folds_results_into_per_change_state(tmp_path):
    j = journal(tmp_path)
    j.append("start", run=1, plan_id="p", warnings=[])
    j.append("drift", checked=["Contact:003a", "Contact:003b"],
             current={"Contact:003a": {"Title": "Eng"}, "Contact:003b": {"Title": "Eng"}},
             drifted=[], skipped=[], final=False)
    j.append("send", request=1, action="create", sobject="Account", change_ids=["Account:acme"],
             payload=[{"Name": "Acme"}])
    j.append("result", request=1, results=[{"change_id": "Account:acme", "status": "applied",
                                            "id": "001x", "ref": "Account:acme"}])
    j.append("send", request=2, action="update", sobject="Contact", change_ids=["Contact:003a", "Contact:003b"],
             payload=[{"Id": "003a", "Title": "CTO"}, {"Id": "003b", "Title": "CTO"}])
    j.append("result", request=2, results=[
        {"change_id": "Contact:003a", "status": "applied", "id": "003a"},
        {"change_id": "Contact:003b", "status": "failed", "error_code": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
         "message": "Title is locked"}])
    j.calls = 3
    j.append("send", request=3, action="update", sobject="Lead", change_ids=["Lead:00Qa"],
             payload=[{"Id": "00Qa", "Status": "Inactive"}])

    state = replay(tmp_path / "journal.jsonl")
    assert state.runs == 1 and state.requests == 3 and state.calls == 3
    assert state.created == {"Account:acme": "001x"}
    assert state.status_of("Contact:003a") is ChangeStatus.APPLIED
    assert state.replaced["Contact:003a"] == {"Title": "Eng"}
    assert state.errors["Contact:003b"] == ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Title is locked")
    assert state.status_of("Lead:00Qa") is ChangeStatus.PENDING
    assert list(state.unsettled) == [3]
    assert state.sends == {"Account:acme": 1, "Contact:003a": 1, "Contact:003b": 1, "Lead:00Qa": 1}


def test_api_calls_add_up_across_runs(tmp_path):
    j = journal(tmp_path)
    j.append("start", run=1, plan_id="p", warnings=[])
    j.calls = 4
    j.append("stop", reason="limit")
    j.calls = 0
    j.append("start", run=2, plan_id="p", warnings=["an earlier apply (pid 7) of plan p did not finish; resuming"])
    j.calls = 2
    j.append("finish", status="applied", counts={})
    state = replay(tmp_path / "journal.jsonl")
    assert state.runs == 2 and state.calls == 6 and state.finished
    assert state.warnings == ["an earlier apply (pid 7) of plan p did not finish; resuming"]


def test_torn_last_line_is_ignored_and_the_next_event_starts_on_a_fresh_line(tmp_path):
    j = journal(tmp_path)
    j.append("start", run=1, plan_id="p", warnings=[])
    with open(j.path, "ab") as fh:
        fh.write(b'{"event":"send","request":1,"action":"upd')          # killed mid-write
    state = replay(j.path)
    assert state.torn_lines == 1 and state.requests == 0 and not state.unsettled

    j.append("stop", reason="x")
    events, torn = read_events(j.path)
    assert [e["event"] for e in events] == ["start", "stop"] and torn == 1


def test_a_complete_json_line_without_its_newline_counts_as_torn(tmp_path):
    # The newline is the last byte written; without it the fsync never returned,
    # so apply never sent the request.
    path = tmp_path / "journal.jsonl"
    Journal(path, now=lambda: "t").append("start", run=1)   # chained, as apply writes it
    with path.open("a") as fh:
        fh.write(json.dumps({"event": "send", "request": 1, "action": "update", "sobject": "Lead",
                             "change_ids": ["Lead:1"], "payload": []}))
    state = replay(path)
    assert state.torn_lines == 1 and not state.unsettled


def test_drift_refusal_does_not_finalise_but_skip_drifted_does(tmp_path):
    j = journal(tmp_path)
    item = {"change_id": "Contact:1", "message": "changed", "fields": {"Title": {"planned": "a", "current": "b"}}}
    j.append("drift", checked=["Contact:1"], current={}, drifted=[item], skipped=[], final=False)
    state = replay(j.path)
    assert state.status_of("Contact:1") is ChangeStatus.PENDING
    assert state.drift["Contact:1"] == item["fields"]
    j.append("drift", checked=["Contact:1"], current={}, drifted=[item], skipped=[], final=True)
    assert replay(j.path).status_of("Contact:1") is ChangeStatus.DRIFTED


def test_journal_file_is_private_and_one_json_object_a_line(tmp_path):
    j = journal(tmp_path)
    j.append("start", run=1, plan_id="p", warnings=[])
    j.append("send", request=1, action="update", sobject="Contact", change_ids=["c"],
             payload=[{"Id": "003", "Title": "Zoë\nnewline"}])
    assert stat.S_IMODE(j.path.stat().st_mode) == 0o600
    lines = j.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["payload"][0]["Title"] == "Zoë\nnewline"


# -- fsutil ------------------------------------------------------------------------------------

def test_write_atomic_writes_0600_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "sub" / "apply.json"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_atomic(target, b"two")
    assert target.read_bytes() == b"one"
    write_atomic(target, b"three", overwrite=True)
    assert target.read_bytes() == b"three"
    assert sorted(p.name for p in target.parent.iterdir()) == ["apply.json"]   # no temp files left


def test_write_atomic_honours_mode(tmp_path):
    target = tmp_path / "plan.html"
    write_atomic(target, b"<html>", mode=0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_append_line_rejects_embedded_newlines(tmp_path):
    with pytest.raises(ValueError):
        append_line(tmp_path / "j", "a\nb")
    append_line(tmp_path / "j", "a")
    append_line(tmp_path / "j", "b")
    assert (tmp_path / "j").read_text() == "a\nb\n"


def test_verify_catches_an_edited_or_removed_journal_line(tmp_path):
    from reconcile.journal import Journal, check_chain
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, now=lambda: "2026-11-25T09:00:00Z")
    for n in range(4):
        journal.append("send", request=n, change_ids=[f"Contact:{n}"])
    assert check_chain(path) is None
    lines = path.read_bytes().split(b"\n")
    edited = b"\n".join([lines[0], lines[1].replace(b"Contact:1", b"Contact:9"), *lines[2:]])
    path.write_bytes(edited)
    assert "event 3" in check_chain(path)
    path.write_bytes(b"\n".join([lines[0], *lines[2:]]))
    assert "event 2" in check_chain(path)


def test_a_torn_line_does_not_break_the_chain(tmp_path):
    from reconcile.journal import Journal, check_chain
    path = tmp_path / "journal.jsonl"
    Journal(path, now=lambda: "t").append("start", run=1)
    with path.open("ab") as fh:
        fh.write(b'{"event":"send","requ')  # killed mid-write
    Journal(path, now=lambda: "t").append("start", run=2)
    assert check_chain(path) is None
