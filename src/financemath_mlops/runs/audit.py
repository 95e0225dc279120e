"""The audit trail of alias moves: who moved which alias of which model, when, from and to which
version, and why; kept in the tracking store itself and chained by hashes.

Where it lives, and why there: one MLflow run per alias move, in the experiment
:data:`AUDIT_EXPERIMENT` of the same tracking store, the entry's fields as the run's tags
(``audit.*``). Runs and their tags are rows of the store's database (``runs`` and ``tags``
tables), so the trail works the same on SQLite and PostgreSQL, through a ``mlflow server`` or
directly, and a database backup (``pg_dump``, a copy of ``mlflow.db``) carries it with the models
it explains; no artefact store is involved. The alternative, tags on the registered model, was
rejected: they vanish with the model when it is deleted (the trail must outlive what it
explains), every listing of registered models would carry the whole history, and they cannot be
searched by field. An entry is created in one request with all its tags (MLflow's ``create_run``
inserts the run and its tags in one transaction), so a crash never leaves half an entry; the
MLflow UI shows the experiment like any other (filter ``tags.`audit.model` = '...'``).

Why a hash chain: anyone with write access to the store can edit a tag or delete a run. Each
entry stores the SHA-256 of its own fields and of the previous entry of the same model
(:func:`entry_hash`), and the registered model keeps the last entry's number and hash in its tag
:data:`HEAD_TAG`, so an edited entry, a deleted one (the middle or the last) and an entry
deleted from the UI (kept by MLflow as ``deleted``) are each named by :func:`verify`. A chain is
evidence, not a signature: whoever can rewrite every entry and the head consistently can forge
it (keep a copy of ``registry history --json`` elsewhere to anchor it).

Who ("actor"): ``FMOPS_ACTOR`` when set (a CI job, a named person), else the Prefect flow-run id
when the move happens inside a flow run (scheduled or by hand) with the OS user and host, else
the OS user and host. Appending is serialised by the caller (:mod:`.aliases` holds the model's
lock), so numbers and the chain never fork.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from financemath_mlops.runs.store import client

AUDIT_EXPERIMENT = "fmops-alias-audit"
HEAD_TAG = "fmops.audit.head"  # on the registered model: {"seq": n, "hash": "..."} of the last
PREFIX = "audit."
ACTOR_ENV = "FMOPS_ACTOR"
MAX_REASON = 6000  # MLflow keeps 8000 characters of a run tag; the rest of an entry fits beside
GENESIS = "0" * 64  # the "previous hash" of a model's first entry
PAGE = 1000

# The fields an entry's hash covers, in the order history prints them.
FIELDS = (
    "seq", "model", "alias", "from_version", "to_version", "to_run_id", "time", "actor",
    "action", "reason", "prev_hash",
)  # fmt: skip


@dataclass(frozen=True)
class Move:
    """One alias changed: ``from_version`` None when the alias did not exist before."""

    alias: str
    from_version: str | None
    to_version: str
    to_run_id: str | None = None


@dataclass(frozen=True)
class Entry:
    seq: int
    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    to_run_id: str | None
    time: str  # ISO 8601, UTC, milliseconds
    actor: str
    action: str  # training | promotion | registry promote | registry rollback | set
    reason: str
    prev_hash: str
    hash: str
    run_id: str | None = None  # the MLflow run that holds the entry
    deleted: bool = False  # the run was deleted (MLflow keeps it as `deleted` until gc)

    def body(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def when(self) -> datetime:
        return parse_time(self.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Check:
    """What :func:`verify` found: problems with the chain, and aliases no entry explains."""

    problems: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unexplained


def entry_hash(body: dict[str, Any]) -> str:
    """SHA-256 of the fields in :data:`FIELDS`, as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(
        {k: body[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def current_actor() -> str:
    """FMOPS_ACTOR, else the Prefect flow run (with the OS user), else the OS user, at host."""
    named = os.environ.get(ACTOR_ENV, "").strip()
    if named:
        return named
    user = f"{_os_user()}@{socket.gethostname()}"
    flow_run = _prefect_flow_run_id()
    return f"prefect flow-run {flow_run} ({user})" if flow_run else user


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        return f"uid {os.getuid()}"


def _prefect_flow_run_id() -> str | None:
    """The flow run this process is in: Prefect's context when Prefect is loaded (a flow running
    here), else the id a Prefect worker puts in the environment of the process it starts."""
    if "prefect.context" in sys.modules:
        from prefect.runtime import flow_run

        found = flow_run.get_id()
        if found:
            return str(found)
    return os.environ.get("PREFECT__FLOW_RUN_ID") or None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without a zone is UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _experiment_id(create: bool) -> str | None:
    from mlflow.exceptions import MlflowException

    found = client().get_experiment_by_name(AUDIT_EXPERIMENT)
    if found is not None:
        return str(found.experiment_id)
    if not create:
        return None
    try:
        return str(client().create_experiment(AUDIT_EXPERIMENT))
    except MlflowException as exc:  # another process created it in between
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return str(client().get_experiment_by_name(AUDIT_EXPERIMENT).experiment_id)


def _head(model: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    try:
        tags = client().get_registered_model(model).tags or {}
    except MlflowException:
        return None
    if HEAD_TAG not in tags:
        return None
    try:
        head = json.loads(tags[HEAD_TAG])
        return {"seq": int(head["seq"]), "hash": str(head["hash"])}
    except (ValueError, TypeError, KeyError):
        return {"seq": -1, "hash": "unreadable"}


def read_entries(model: str) -> list[Entry]:
    """Every entry of ``model`` (deleted ones too, marked), by number; [] when none exist."""
    from mlflow.entities import ViewType

    experiment = _experiment_id(create=False)
    if experiment is None:
        return []
    entries: list[Entry] = []
    token = None
    quoted = model.replace("'", "\\'")
    while True:
        page = client().search_runs(
            [experiment],
            filter_string=f"tags.`{PREFIX}model` = '{quoted}'",
            run_view_type=ViewType.ALL,
            max_results=PAGE,
            page_token=token,
        )
        for run in page:
            entry = _from_run(run)
            if entry is not None:
                entries.append(entry)
        token = page.token
        if not token:
            return sorted(entries, key=lambda e: (e.seq, e.time))


def _from_run(run: Any) -> Entry | None:
    tags = run.data.tags

    def tag(name: str) -> str | None:
        value = tags.get(PREFIX + name)
        return None if value in (None, "") else value

    try:
        seq = int(tags.get(PREFIX + "seq", ""))
    except ValueError:
        seq = -1  # an edited number: verify names it
    return Entry(
        seq=seq,
        model=tags.get(PREFIX + "model", ""),
        alias=tags.get(PREFIX + "alias", ""),
        from_version=tag("from_version"),
        to_version=tag("to_version"),
        to_run_id=tag("to_run_id"),
        time=tags.get(PREFIX + "time", ""),
        actor=tags.get(PREFIX + "actor", ""),
        action=tags.get(PREFIX + "action", ""),
        reason=tags.get(PREFIX + "reason", ""),
        prev_hash=tags.get(PREFIX + "prev_hash", ""),
        hash=tags.get(PREFIX + "hash", ""),
        run_id=run.info.run_id,
        deleted=run.info.lifecycle_stage == "deleted",
    )


def append(model: str, moves: Iterable[Move], action: str, reason: str) -> list[Entry]:
    """Record ``moves`` (already made) as entries chained after the model's last one, then move
    the model's head tag to the last. The caller holds the model's alias lock."""
    moves = list(moves)
    if not moves:
        return []
    experiment = _experiment_id(create=True)
    assert experiment is not None
    seq, prev = _last(model, experiment)
    actor = current_actor()
    text = reason.strip()
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 20] + " [... cut: too long]"
    written: list[Entry] = []
    for move in moves:
        seq += 1
        body = {
            "seq": seq, "model": model, "alias": move.alias, "from_version": move.from_version,
            "to_version": move.to_version, "to_run_id": move.to_run_id, "time": utc_now(),
            "actor": actor, "action": action, "reason": text, "prev_hash": prev,
        }  # fmt: skip
        digest = entry_hash(body)
        tags = {PREFIX + k: "" if v is None else str(v) for k, v in body.items()}
        tags[PREFIX + "hash"] = digest
        frm = move.from_version or "-"
        run = client().create_run(
            experiment,
            start_time=int(parse_time(body["time"]).timestamp() * 1000),
            tags=tags,
            run_name=f"{model} {move.alias} {frm} -> {move.to_version}",
        )
        client().set_terminated(run.info.run_id)
        written.append(Entry(**body, hash=digest, run_id=run.info.run_id))
        prev = digest
    client().set_registered_model_tag(
        model, HEAD_TAG, json.dumps({"seq": seq, "hash": prev, "run_id": written[-1].run_id})
    )
    return written


def _last(model: str, experiment: str) -> tuple[int, str]:
    """(number, hash) to chain the next entry after: the head tag's, read in one request (the
    trail is not read whole on every move), unless an entry past it exists (a move whose head
    update was lost) or there is no head: then the last of every entry, or of the head when
    that is further (the last entries were deleted: chaining after them keeps the gap visible)."""
    from mlflow.entities import ViewType

    head = _head(model)
    if head is not None and head["seq"] >= 1:
        quoted = model.replace("'", "\\'")
        past = client().search_runs(
            [experiment],
            filter_string=f"tags.`{PREFIX}model` = '{quoted}' and "
            f"tags.`{PREFIX}seq` = '{head['seq'] + 1}'",
            run_view_type=ViewType.ALL,
            max_results=1,
        )
        if not past:
            return head["seq"], head["hash"]
    existing = read_entries(model)
    seq, prev = (existing[-1].seq, existing[-1].hash) if existing else (0, GENESIS)
    if head is not None and head["seq"] > seq:
        seq, prev = head["seq"], head["hash"]
    return seq, prev


def verify(model: str, entries: list[Entry], aliases: dict[str, str]) -> Check:
    """Check the chain of ``entries`` (from :func:`read_entries`) and that every current alias
    (alias -> version) is where the last entry for it says."""
    check = Check()
    by_seq: dict[int, Entry] = {}
    for entry in entries:
        label = f"entry #{entry.seq} (run {entry.run_id})"
        if entry.seq in by_seq:
            check.problems.append(f"{label}: a second entry numbered {entry.seq}")
            continue
        by_seq[entry.seq] = entry
        if entry.seq < 1:
            check.problems.append(f"{label}: its number was edited (not a positive integer)")
            continue
        if entry_hash(entry.body()) != entry.hash:
            check.problems.append(f"{label}: edited after it was written (its hash does not match)")
        if entry.deleted:
            check.problems.append(f"{label}: deleted in MLflow (restore it from the experiment's "
                                  f"deleted runs: {AUDIT_EXPERIMENT})")  # fmt: skip
    numbers = sorted(n for n in by_seq if n >= 1)
    head = _head(model)
    last = max([*numbers, int(head["seq"]) if head else 0])
    for n in range(1, last + 1):
        entry = by_seq.get(n)
        if entry is None:
            check.problems.append(f"entry #{n}: missing (deleted from the store)")
            continue
        before = by_seq.get(n - 1)
        expected = GENESIS if n == 1 else (entry_hash(before.body()) if before else None)
        if expected is not None and entry.prev_hash != expected:
            check.problems.append(
                f"entry #{n} (run {entry.run_id}): does not follow entry #{n - 1} (the previous "
                "hash it records differs: one of them was edited or replaced)"
            )
    if head is not None and int(head.get("seq", -1)) < 0:
        check.problems.append(f"the registered model's {HEAD_TAG} tag is unreadable (edited)")
    if numbers and head is None:
        check.problems.append(f"the registered model {model} has no {HEAD_TAG} tag (removed, "
                              "or the model was deleted and registered again)")  # fmt: skip
    elif (
        head is not None
        and numbers
        and numbers[-1] == int(head["seq"])
        and by_seq[numbers[-1]].hash != head.get("hash")
    ):
        check.problems.append(f"entry #{numbers[-1]}: not the entry the registered model's "
                              f"{HEAD_TAG} tag records (replaced)")  # fmt: skip
    check.unexplained = unexplained_aliases(entries, aliases)
    return check


def latest_by_alias(entries: list[Entry], until: datetime | None = None) -> dict[str, Entry]:
    """alias -> its last entry (before ``until`` when given)."""
    latest: dict[str, Entry] = {}
    for entry in entries:
        if entry.seq < 1 or (until is not None and entry.when() >= until):
            continue
        latest[entry.alias] = entry
    return latest


def unexplained_aliases(entries: list[Entry], aliases: dict[str, str]) -> list[str]:
    """Aliases whose current version no entry explains (moved in the MLflow UI, by the API, or
    before the audit trail existed), and recorded aliases that no longer exist."""
    latest = latest_by_alias(entries)
    found = []
    for alias, version in sorted(aliases.items()):
        entry = latest.get(alias)
        if entry is None:
            found.append(f"{alias} -> version {version}: no entry records this alias being set "
                         "(set outside these commands, e.g. in the MLflow UI, or before the audit "
                         "trail existed)")  # fmt: skip
        elif entry.to_version != str(version):
            found.append(f"{alias} -> version {version}: the last entry (#{entry.seq}) moved it "
                         f"to version {entry.to_version}; moved since outside these commands "
                         "(the MLflow UI, the API)")  # fmt: skip
    for alias, entry in sorted(latest.items()):
        if alias not in aliases and entry.to_version is not None:
            found.append(f"{alias}: entry #{entry.seq} set it to version {entry.to_version}, but "
                         "it no longer exists (deleted outside these commands)")  # fmt: skip
    return found
