"""One function per command, callable from Python as well as from the CLI: the Python API.

Each takes a ``Context`` and plain arguments, does the work through the layers
below, and returns data; the CLI only parses and prints. Errors are
``reconcile.errors.ReconcileError`` subclasses with a one-line message.

    ctx = Context(Config())
    planned = plan(ctx, [Path("outcomes.csv")])        # PlanResult
    approve(ctx, planned.doc["plan_id"], by="Jane Admin")
    report = apply(ctx, planned.doc["plan_id"])        # ApplyReport
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconcile import __version__
from reconcile import archive as ar
from reconcile import plan as plan_doc
from reconcile.approval import approve as _approve
from reconcile.approval import check_approval
from reconcile.clock import Clock, utc_now
from reconcile.config import Config
from reconcile.errors import IntegrityError, ReconcileError, StateError, UsageError
from reconcile.fsutil import refuse_links
from reconcile.model import PlanKind, PlanState
from reconcile.ports import OrgConnection

if TYPE_CHECKING:
    from reconcile.apply import ApplyReport


@dataclass
class Context:
    """What every command needs: configuration, the environment, a clock, a connector."""
    config: Config
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    now: Clock = utc_now
    connect: Callable[[Config, Mapping[str, str]], OrgConnection] | None = None
    target_org: str | None = None     # --target-org: a Salesforce CLI alias
    say: Callable[[str], None] = lambda _msg: None

    @property
    def archive(self) -> ar.Archive:
        return ar.Archive(Path(self.config.archive_dir))

    def salesforce(self) -> OrgConnection:
        """A connection to the org: ``connect`` when given (tests, the sandbox), else the
        adapter's sign-in (``salesforce.connect``)."""
        if self.connect is not None:
            return self.connect(self.config, self.env)
        from reconcile.salesforce import connect
        return connect(self.config, env=self.env, target_org=self.target_org)


@dataclass(frozen=True)
class Loaded:
    """A plan read from the archive and checked (version, schema, id): its folder, its
    document and its state (planned, approved, applying, applied …)."""
    plan_dir: Path
    doc: dict[str, Any]
    state: PlanState


def load(ctx: Context, ref: str) -> Loaded:
    """The plan ``ref`` names (a plan id, a unique prefix of one, or its folder's path)."""
    plan_dir = ctx.archive.resolve(ref)
    refuse_links(plan_dir)   # the archive never follows a symbolic link
    doc = plan_doc.load_plan(plan_dir / ar.PLAN)
    if doc["plan_id"] != plan_dir.name:
        raise IntegrityError(f"{plan_dir / ar.PLAN}: plan id {doc['plan_id'][:12]} does not match "
                             f"its folder {plan_dir.name[:12]}")
    return Loaded(plan_dir, doc, ctx.archive.state(plan_dir))


# Top-level lists and maps that hold one entry per change, record or row: left out of the
# quick check of a plan's head (the whole plan is checked when written and before apply).
_BULKY: dict[str, Any] = {"changes": [], "duplicates": [], "skipped": [], "review": [], "unchanged": [],
          "handoff": [], "prior_state": {}}


def check_head(loaded: Loaded) -> None:
    """The plan's shape without its per-record parts (milliseconds at 100,000 changes):
    what approve and show read of it besides the changes."""
    problem = plan_doc.schema_problem({**loaded.doc, **_BULKY})
    if problem is not None:
        raise IntegrityError(f"{loaded.plan_dir / ar.PLAN}: not a valid plan: {problem}")


@contextmanager
def plan_shape(loaded: Loaded) -> Iterator[None]:
    """Reading a plan trusts its shape (checked when it was written; apply checks it again).
    A plan crafted with a recomputed id whose shape is wrong ends in a one-line error naming
    the first problem, not a traceback."""
    try:
        yield
    except ReconcileError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        problem = plan_doc.schema_problem(loaded.doc)
        if problem is None:
            raise
        raise IntegrityError(f"{loaded.plan_dir / ar.PLAN}: not a valid plan: {problem}") from None


# -- plan -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanResult:
    """A plan just made and archived: its folder, its document, the API calls it took."""
    plan_dir: Path
    doc: dict[str, Any]
    api_calls: int


def plan(ctx: Context, outcome_files: Sequence[Path], *, allow_create: bool = False) -> PlanResult:
    """Validate the outcome files, snapshot the org, plan, and archive the plan."""
    if not outcome_files:
        raise UsageError("plan: give at least one outcome file (CSV or JSON Lines)")
    doc, api_calls = _make_plan(ctx, outcome_files, allow_create=allow_create)
    # The outcomes, the snapshot and the planner's records are gone by now: at 100,000
    # outcomes they are hundreds of MB that writing the page and the plan does not need.
    ctx.say("writing the plan, its HTML page and the hand-off files")
    plan_dir = save_plan(ctx, doc)
    return PlanResult(plan_dir, doc, api_calls)


def _make_plan(ctx: Context, outcome_files: Sequence[Path], *, allow_create: bool) -> tuple[dict[str, Any], int]:
    from reconcile.inputs import read_outcomes
    from reconcile.planner import build_plan
    from reconcile.snapshot import PREFLIGHT_OBJECTS, objects_to_describe, preflight, take_snapshot

    ctx.say(f"validating {len(outcome_files)} outcome file(s)")
    outcome_set = read_outcomes([Path(p) for p in outcome_files])  # before any API call
    ctx.say("connecting to Salesforce")
    sf = ctx.salesforce()
    reader = sf.reader()
    ctx.say("checking the org's fields and picklist values (preflight)")
    # one request: the describes, the Organization row, the active duplicate rules and the
    # counts of rows with an e-mail (so each read can choose its path by cost)
    org, describes, rules = reader.preflight_read(objects_to_describe(allow_create),
                                                  count_field=ctx.config.email_field,
                                                  count_sobjects=PREFLIGHT_OBJECTS)
    checked = preflight(describes, ctx.config, allow_create=allow_create, duplicate_rules=rules)
    snapshot = take_snapshot(reader, outcome_set, ctx.config, allow_create=allow_create, org=org,
                             progress=ctx.say)
    ctx.say(f"planning {len(outcome_set.outcomes):,} determinations against {len(snapshot.records):,} records")
    body = build_plan(outcome_set, snapshot, ctx.config, allow_create=allow_create)
    doc = plan_doc.make_document(
        body, org=snapshot.org, inputs=list(outcome_set.inputs),
        options={"allow_create": allow_create}, created_at=ctx.now(),
        tool_version=__version__, config=ctx.config, preflight=checked)
    return doc, reader.calls


def save_plan(ctx: Context, doc: dict[str, Any]) -> Path:
    """Write the plan and everything rendered from it into its archive folder."""
    from reconcile.render.csvs import changes_csv, handoff_csvs, review_csv
    from reconcile.render.html import html_pieces

    arch = ctx.archive
    plan_dir = arch.plan_dir(doc["plan_id"])
    if (plan_dir / ar.PLAN).is_file():
        return plan_dir  # the same content has the same id: already archived
    # The schema is checked once, here, before anything of the plan is written
    # (loading a plan back checks its id, not the schema again).
    plan_doc.check_schema(doc, plan_dir / ar.PLAN)
    # Until plan.json is there the folder is an unfinished save (a crash mid-way): redo it.
    arch.write(plan_dir, ar.HTML, _utf8(html_pieces(doc, ctx.config)), overwrite=True)
    arch.write(plan_dir, ar.REVIEW, review_csv(doc), overwrite=True)
    arch.write(plan_dir, ar.CHANGES, changes_csv(doc), overwrite=True)
    for name, text in handoff_csvs(doc).items():
        arch.write(plan_dir, name, text, overwrite=True)
    # last: its presence marks a whole plan; written in pieces (never the whole text at once)
    arch.write(plan_dir, ar.PLAN, plan_doc.canonical_chunks(doc))
    return plan_dir


def _utf8(pieces: Iterable[str], size: int = 1 << 20) -> Iterator[bytes]:
    """Text pieces as UTF-8 bytes, about ``size`` characters at a time."""
    batch: list[str] = []
    held = 0
    for piece in pieces:
        batch.append(piece)
        held += len(piece)
        if held >= size:
            yield "".join(batch).encode("utf-8")
            batch, held = [], 0
    if batch:
        yield "".join(batch).encode("utf-8")


# -- approve ------------------------------------------------------------------------

def approve(ctx: Context, ref: str, *, by: str, comment: str = "",
            sign: Path | None = None) -> tuple[Loaded, dict[str, Any]]:
    """Approve the plan ``ref`` as ``by``; returns the plan (now approved) and the approval
    record written. ``sign``: the approver's SSH key (else ``[approval] signing_key``, if set)."""
    loaded = load(ctx, ref)
    check_head(loaded)
    record = _approve(ctx.archive, loaded.plan_dir, loaded.doc, by=by, comment=comment, now=ctx.now(),
                      config=ctx.config, sign_with=sign)
    # The plan was read and checked once; only its state changed.
    return replace(loaded, state=ctx.archive.state(loaded.plan_dir)), record


# -- apply --------------------------------------------------------------------------

def apply(ctx: Context, ref: str, *, skip_drifted: bool = False,
          progress: Callable[[int, int], None] | None = None) -> ApplyReport:
    """Apply (or resume applying) the approved plan ``ref`` after checking its approval and
    that the connection is to the plan's org; see ``reconcile.apply``. A plan already
    applied is reported again, nothing sent. ``progress(done, total)`` is called as
    changes settle."""
    from reconcile.apply import apply_plan, report_from_result

    loaded = load(ctx, ref)
    if loaded.state in (PlanState.APPLIED, PlanState.PARTIALLY_APPLIED, PlanState.FAILED,
                        PlanState.ROLLED_BACK, PlanState.PARTIALLY_ROLLED_BACK):
        # A plan is applied once: a finished one is consumed, nothing is left to resume.
        # Its result is reported again (no connection, no write); the exit code follows it.
        result_path = loaded.plan_dir / ar.RESULT
        result = ar.read_json(result_path)
        ar.check_seal(result_path, result)
        report = report_from_result(result)
        note = (f"plan {loaded.doc['plan_id'][:12]} was already applied (finished "
                f"{result.get('finished_at')}; now {loaded.state}); nothing was left to resume, "
                "nothing was sent — for what failed or drifted, make a new plan")
        return replace(report, warnings=(*report.warnings, note))
    # Loading trusts bytes that hash to their id; a plan crafted with a recomputed id is
    # refused here, before any connection or write, by the compiled schema validator.
    plan_doc.check_schema(loaded.doc, loaded.plan_dir / ar.PLAN)
    approval = check_approval(loaded.plan_dir, loaded.doc, ctx.config)
    sf = ctx.salesforce()
    org = sf.org_info()
    planned_org = loaded.doc["org"]["org_id"]
    if org.org_id != planned_org:
        raise IntegrityError(f"plan {loaded.doc['plan_id'][:12]} was made for org {planned_org}, "
                             f"but the connection is to org {org.org_id}; refusing to apply")
    report = apply_plan(loaded.doc, loaded.plan_dir, sf, ctx.config, skip_drifted=skip_drifted,
                        calls_before=0,  # this connection was opened for this apply: its org check counts
                        progress=progress, now=ctx.now, plan_sha256=approval["plan_sha256"])
    if loaded.doc.get("kind") == PlanKind.ROLLBACK.value and report.finished:
        from reconcile.rollback import outcome_line
        report = replace(report, warnings=(*report.warnings, outcome_line(loaded.doc, report)))
    return report


# -- rollback -----------------------------------------------------------------------

def rollback(ctx: Context, ref: str) -> PlanResult:
    """Make (and archive) the rollback plan of the applied plan ``ref``: it undoes what
    the apply wrote, where the records still hold what it wrote (after earlier rollbacks
    that finished in part: what they left). Approve and apply it like any plan."""
    from reconcile.rollback import build_rollback, records_to_read, restored_records

    parent = load(ctx, ref)
    if parent.state in (PlanState.PLANNED, PlanState.APPROVED):
        raise StateError(f"plan {parent.doc['plan_id'][:12]} is {parent.state}: it was never applied, "
                         "so there is nothing to roll back")
    if parent.state is PlanState.APPLYING:
        raise StateError(f"plan {parent.doc['plan_id'][:12]} has an unfinished apply; "
                         f"run `reconcile apply {parent.doc['plan_id'][:12]}` to finish it first")
    if parent.state is PlanState.ROLLED_BACK:
        raise StateError(f"plan {parent.doc['plan_id'][:12]} is already rolled back")
    # Earlier rollbacks that finished (in part, or restoring nothing) leave the rest to do;
    # one not yet applied is the one to approve and apply.
    earlier: list[tuple[Path, dict[str, Any]]] = []
    for child in ctx.archive.children(parent.doc["plan_id"]):
        child_result = child / ar.RESULT
        if not child_result.is_file():
            raise StateError(f"plan {parent.doc['plan_id'][:12]} already has a rollback plan {child.name[:12]} "
                             f"({ctx.archive.state(child)}); approve and apply that one")
        record = ar.read_json(child_result)
        ar.check_seal(child_result, record)
        earlier.append((child, record))
    result_path = parent.plan_dir / ar.RESULT
    result = ar.read_json(result_path)
    ar.check_seal(result_path, result)
    done = restored_records([record for _child, record in earlier])

    sf = ctx.salesforce()
    reader = sf.reader()
    org = reader.org_info()
    if org.org_id != parent.doc["org"]["org_id"]:
        raise IntegrityError(f"plan {parent.doc['plan_id'][:12]} was applied to org "
                             f"{parent.doc['org']['org_id']}, not {org.org_id}")
    current: dict[str, Any] = {}
    for sobject, by_id in records_to_read(result, done).items():
        fields = sorted(set().union(*by_id.values()) | {"Id", "LastModifiedDate", "SystemModstamp"})
        ids = sorted(by_id)
        for rid, rec in zip(ids, reader.retrieve(sobject, ids, fields), strict=True):
            current[rid] = rec
    created_accounts = [r["record_id"] for r in result.get("results", [])
                        if r.get("status") == "applied" and r.get("action") == "create"
                        and r.get("sobject") == "Account" and r.get("record_id")
                        and r["record_id"] not in done]
    counts = reader.count_contacts_by_account(created_accounts) if created_accounts else {}
    body = build_rollback(parent.doc, result, current, counts, done=done,
                          after=[child.name for child, _record in earlier])
    inputs = [{"name": f"{parent.doc['plan_id']}/{ar.RESULT}",
               "sha256": ar.sha256_hex(result_path.read_bytes()),
               "rows": len(result.get("results", []))}]
    # what earlier rollbacks did is an input too: this plan is what they left
    inputs += [{"name": f"{child.name}/{ar.RESULT}", "sha256": ar.sha256_hex((child / ar.RESULT).read_bytes()),
                "rows": len(record.get("results", []))} for child, record in earlier]
    options: dict[str, Any] = {"rollback_of": parent.doc["plan_id"]}
    if earlier:
        options["after_rollbacks"] = [child.name for child, _record in earlier]
    doc = plan_doc.make_document(
        body, org=org, inputs=inputs, options=options,
        created_at=ctx.now(), tool_version=__version__, kind=PlanKind.ROLLBACK.value,
        parent_plan_id=parent.doc["plan_id"], config=ctx.config)
    plan_dir = save_plan(ctx, doc)
    return PlanResult(plan_dir, doc, reader.calls)


# -- log, verify ----------------------------------------------------------------------

def whoami(ctx: Context) -> dict[str, Any]:
    """Sign in and say where: instance, org, user, sandbox or production, API version,
    the daily API requests left."""
    reader = ctx.salesforce().reader()
    info = reader.whoami()
    return {**info, "api_calls": reader.calls}


def log(ctx: Context) -> list[dict[str, Any]]:
    """Every archived plan, oldest first: id, kind, parent, state, summary, approval."""
    entries: list[dict[str, Any]] = []
    arch = ctx.archive
    listed: list[tuple[Path, dict[str, Any]]] = []
    children: dict[str, list[Path]] = {}
    for plan_dir in arch.plan_dirs():   # each plan read once; rollbacks collected on the way
        try:
            doc = ar.read_json(plan_dir / ar.PLAN)
        except IntegrityError as exc:
            entries.append({"plan_id": plan_dir.name, "state": "unreadable", "error": str(exc)})
            continue
        if doc.get("parent_plan_id"):
            children.setdefault(doc["parent_plan_id"], []).append(plan_dir)
        entry: dict[str, Any] = {
            "plan_id": doc.get("plan_id"), "created_at": doc.get("created_at"), "kind": doc.get("kind"),
            "parent_plan_id": doc.get("parent_plan_id"), "summary": doc.get("summary", {})}
        listed.append((plan_dir, entry))
    from reconcile.verify import verify_archive
    for plan_dir, entry in listed:
        approval = ar.read_json(plan_dir / ar.APPROVAL) if (plan_dir / ar.APPROVAL).is_file() else {}
        try:   # every file's hash and link, as `reconcile verify` checks them
            verify_archive(arch, [plan_dir], ctx.config)
            problem = None
        except ReconcileError as exc:
            problem = str(exc)
        entries.append({**entry, "state": str(arch.state(plan_dir, children.get(plan_dir.name, []))),
                        "approved_by": approval.get("approved_by"),
                        "approved_at": approval.get("approved_at"), "path": str(plan_dir),
                        "verified": problem is None, "verify_error": problem})
    entries.sort(key=lambda e: (e.get("created_at") or "", e["plan_id"] or ""))
    return entries


def verify(ctx: Context, ref: str | None = None) -> list[str]:
    """Recompute every hash and check every link; returns what was checked, raises on a mismatch."""
    from reconcile.verify import verify_archive
    arch = ctx.archive
    dirs = [arch.resolve(ref)] if ref else list(arch.plan_dirs())
    return verify_archive(arch, dirs, ctx.config)
