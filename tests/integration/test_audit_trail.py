"""The audit trail of alias moves on a real (SQLite) registry: who moved which alias, when, from
and to which version and why; a tampered trail and an alias moved behind its back are named; two
promotions at once leave both entries and consistent aliases; and what served on a given date.

The registry holds stand-in model folders, not trained models: moving aliases and reading the
trail never load a model. The store is created once per module and copied per test (creating
MLflow's tables takes seconds; copying the file, milliseconds). The flow's own moves (actor: the
Prefect flow run) are checked where the real flow runs, tests/integration/test_flow.py.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from financemath_mlops import runs
from financemath_mlops.cli import run_main
from financemath_mlops.config import load_settings
from financemath_mlops.registry.__main__ import main as registry_main
from financemath_mlops.runs import audit
from tests.helpers import REPO_ROOT, seeded_store

pytestmark = pytest.mark.integration

NAME = "financemath-regressor-sample"
VERSIONS = 6


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store holding NAME with versions 1-6 and no alias yet."""
    import mlflow

    tracking, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    folder = tmp_path_factory.mktemp("audit-template")
    db = folder / "mlflow.db"
    runs.configure(load_settings(overrides={"mlflow": {"tracking_uri": seeded_store(db)}}).mlflow)
    source = folder / "model-source"
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n")
    runs.client().create_registered_model(NAME)
    for _ in range(VERSIONS):
        runs.client().create_model_version(NAME, str(source))
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry_uri)
    return db


@pytest.fixture()
def store(template: Path, tmp_path: Path, restore_mlflow_uris: None, monkeypatch) -> str:
    """A fresh copy of the template store, configured; returns its tracking URI."""
    db = tmp_path / "mlflow.db"
    shutil.copy(template, db)
    uri = f"sqlite:///{db}"
    runs.configure(load_settings(overrides={"mlflow": {"tracking_uri": uri}}).mlflow)
    monkeypatch.delenv(audit.ACTOR_ENV, raising=False)
    return uri


def registry(uri: str, *args: str) -> int:
    return run_main(registry_main, ["--tracking-uri", uri, "--name", NAME, *args])


def history_json(uri: str, capsys, *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = registry(uri, "history", "--json", *extra)
    return code, json.loads(capsys.readouterr().out)


def aliases() -> dict[str, str]:
    model = runs.client().get_registered_model(NAME)
    return {alias: str(version) for alias, version in model.aliases.items()}


def moves(entries: list[dict]) -> list[tuple[str, str | None, str]]:
    return [(e["alias"], e["from_version"], e["to_version"]) for e in entries]


def test_a_manual_promote_records_actor_and_reason_and_history_shows_it(
    store: str, capsys, monkeypatch
):
    runs.set_challenger(NAME, 1)
    assert registry(store, "promote", "1", "--reason", "CHG-1: first review") == 0
    monkeypatch.setenv(audit.ACTOR_ENV, "alice (risk)")
    assert registry(store, "promote", "2", "--reason", "CHG-2: v2 wins on the Q4 set") == 0
    assert aliases() == {"challenger": "1", "champion": "2", "previous-champion": "1"}

    code, out = history_json(store, capsys)
    assert code == 0 and out["problems"] == [] and out["unexplained"] == []
    entries = out["entries"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert moves(entries) == [
        ("challenger", None, "1"),
        ("champion", None, "1"),
        ("previous-champion", None, "1"),
        ("champion", "1", "2"),
    ]
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    assert [e["actor"] for e in entries] == [me, me, "alice (risk)", "alice (risk)"]
    assert entries[0]["action"] == "training"
    assert {e["action"] for e in entries[1:]} == {"registry promote"}
    assert entries[3]["reason"] == "CHG-2: v2 wins on the Q4 set"
    assert entries[0]["prev_hash"] == audit.GENESIS
    assert [e["prev_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    for e in entries:  # times are UTC and in order
        assert e["time"].endswith("+00:00")
    assert [e["time"] for e in entries] == sorted(e["time"] for e in entries)

    assert registry(store, "history") == 0
    table = capsys.readouterr().out
    assert "4 alias moves recorded" in table and "chain intact" in table
    row = next(line for line in table.splitlines() if line.split()[:1] == ["4"])
    assert "champion" in row and "alice (risk)" in row and "CHG-2: v2 wins" in row

    # Promoting the champion again moves nothing and records nothing.
    assert registry(store, "promote", "2", "--reason", "again") == 0
    assert "already is the champion; nothing moved" in capsys.readouterr().out
    assert len(history_json(store, capsys)[1]["entries"]) == 4


@pytest.mark.parametrize("command", [["promote", "2"], ["rollback"]])
def test_a_manual_move_without_a_reason_exits_2_naming_reason_and_moves_nothing(
    store: str, capsys, command: list[str]
):
    runs.move_champion(NAME, 1, reason="start")
    runs.move_champion(NAME, 3, reason="start")
    before = aliases()
    for args in (command, [*command, "--reason", "  "]):
        assert registry(store, *args) == 2
        err = capsys.readouterr().err
        assert f"registry {command[0]} needs --reason" in err and "audit trail" in err
    assert aliases() == before
    assert len(audit.read_entries(NAME)) == 3


def test_a_rollback_shows_both_moves(store: str, capsys):
    assert registry(store, "promote", "1", "--reason", "first") == 0
    assert registry(store, "promote", "2", "--reason", "second") == 0
    assert registry(store, "rollback", "--reason", "INC-7: v2 answers in cents") == 0
    assert aliases() == {"champion": "1", "previous-champion": "2"}
    code, out = history_json(store, capsys)
    assert code == 0
    last = out["entries"][-2:]
    assert moves(last) == [("champion", "2", "1"), ("previous-champion", "1", "2")]
    assert {e["action"] for e in last} == {"registry rollback"}
    assert {e["reason"] for e in last} == {"INC-7: v2 answers in cents"}


def _entries_by_seq() -> dict[int, audit.Entry]:
    return {e.seq: e for e in audit.read_entries(NAME)}


def test_an_edited_or_deleted_entry_is_named(store: str, capsys):
    for version in (1, 2, 3):
        runs.move_champion(NAME, version, reason=f"promote {version}")
    assert [e.seq for e in audit.read_entries(NAME)] == [1, 2, 3, 4, 5]
    assert history_json(store, capsys)[0] == 0

    # Someone rewrites a reason through the API (or the UI).
    runs.client().set_tag(_entries_by_seq()[3].run_id, "audit.reason", "approved by the board")
    code, out = history_json(store, capsys)
    assert code == 1
    assert any(p.startswith("entry #3 ") and "edited" in p for p in out["problems"])
    assert any(p.startswith("entry #4 ") and "does not follow entry #3" in p
               for p in out["problems"])  # fmt: skip
    assert registry(store, "history") == 1
    assert "THE TRAIL WAS CHANGED" in capsys.readouterr().out

    # Someone deletes entries in the database itself: one in the middle and the last one.
    by_seq = _entries_by_seq()
    db = store.removeprefix("sqlite:///")
    with sqlite3.connect(db) as connection:
        for seq in (2, 5):
            run_id = by_seq[seq].run_id
            connection.execute("DELETE FROM tags WHERE run_uuid = ?", (run_id,))
            connection.execute("DELETE FROM runs WHERE run_uuid = ?", (run_id,))
    code, out = history_json(store, capsys)
    assert code == 1
    assert "entry #2: missing (deleted from the store)" in out["problems"]
    assert "entry #5: missing (deleted from the store)" in out["problems"]  # the head knows it

    # A deletion in the MLflow UI (a soft delete) is named as such.
    runs.client().delete_run(by_seq[1].run_id)
    code, out = history_json(store, capsys)
    assert any(p.startswith("entry #1 ") and "deleted in MLflow" in p for p in out["problems"])

    # The next move still chains after the head (#6), so the gap stays visible.
    runs.move_champion(NAME, 4, reason="after the tampering")
    assert max(e.seq for e in audit.read_entries(NAME)) == 7


def test_an_alias_moved_outside_these_commands_is_flagged(store: str, capsys):
    runs.move_champion(NAME, 1, reason="first")
    runs.client().set_registered_model_alias(NAME, "champion", "4")  # the MLflow UI, say
    runs.client().set_registered_model_alias(NAME, "shadow", "5")
    code, out = history_json(store, capsys)
    assert code == 1 and out["problems"] == []
    assert any(u.startswith("champion -> version 4: the last entry (#1) moved it to version 1")
               for u in out["unexplained"])  # fmt: skip
    assert any(u.startswith("shadow -> version 5: no entry") for u in out["unexplained"])
    assert registry(store, "history") == 1
    assert "ALIASES NO ENTRY EXPLAINS" in capsys.readouterr().out


def _consistent(entries: list[audit.Entry]) -> None:
    """Replaying the entries gives the aliases the registry holds, and every move starts where
    the one before it left that alias (no move was made from a stale read)."""
    state: dict[str, str] = {}
    for e in entries:
        assert e.from_version == state.get(e.alias), f"entry #{e.seq} moved from a stale version"
        state[e.alias] = e.to_version
    assert state == aliases()


def test_concurrent_promotions_leave_every_entry_and_consistent_aliases(store: str, capsys):
    """Four threads, then two processes, promote different versions at the same moment."""
    runs.move_champion(NAME, 1, reason="start")
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def promote(version: int) -> None:
        try:
            start.wait()
            runs.move_champion(NAME, version, reason=f"thread {version}")
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (2, 3, 4, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    entries = audit.read_entries(NAME)
    assert len(entries) == 1 + 4 * 2  # each promotion: previous-champion and champion
    _consistent(entries)
    assert {e.to_version for e in entries if e.alias == "champion"} == {"1", "2", "3", "4", "5"}

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMOPS_", "MLFLOW_"))}
    go = Path(store.removeprefix("sqlite:///")).with_name("go")
    script = (  # imports first, then wait for the same go signal
        "import sys, time; from pathlib import Path; from financemath_mlops.cli import run_main; "
        "from financemath_mlops.registry.__main__ import main; "
        "Path(sys.argv[2]).touch(); go = Path(sys.argv[3])\n"
        "while not go.exists(): time.sleep(0.01)\n"
        f"sys.exit(run_main(main, ['--tracking-uri', {store!r}, '--name', {NAME!r}, "
        "'promote', sys.argv[1], '--reason', 'process ' + sys.argv[1]]))"
    )
    ready = [go.with_name(f"ready-{v}") for v in ("6", "1")]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, v, str(r), str(go)], env=env,
                         cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for v, r in zip(("6", "1"), ready, strict=True)
    ]  # fmt: skip
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, out + err
    entries = audit.read_entries(NAME)
    assert len(entries) == 9 + 2 * 2
    _consistent(entries)
    assert audit.verify(NAME, entries, aliases()).ok
    assert [n for n in runs.aliases.registered_names() if n.endswith("lock")] == []


def test_at_answers_what_each_alias_pointed_to(store: str, capsys):
    runs.set_challenger(NAME, 1)
    runs.move_champion(NAME, 1, reason="first")
    time.sleep(0.01)
    between = datetime.now(UTC)
    time.sleep(0.01)
    runs.move_champion(NAME, 2, reason="second")

    code, out = history_json(store, capsys, "--at", between.isoformat())
    assert code == 0
    assert out["at"]["aliases"] == {"challenger": "1", "champion": "1"}
    naive = between.replace(tzinfo=None).isoformat()  # no zone given: UTC
    assert history_json(store, capsys, "--at", naive)[1]["at"]["aliases"]["champion"] == "1"

    today = between.strftime("%Y-%m-%d")
    code, out = history_json(store, capsys, "--at", today)
    assert out["at"]["aliases"] == {}  # nothing was set at the start of the day
    assert out["at"]["aliases_at_end"] == {
        "challenger": "1", "champion": "2", "previous-champion": "1",
    }  # fmt: skip
    assert out["at"]["moves"] == [1, 2, 3, 4]
    assert registry(store, "history", "--at", today) == 0
    text = capsys.readouterr().out
    assert f"moves during {today} (UTC): 4" in text and "prediction log" in text
    assert "champion          version 2" in text

    assert registry(store, "history", "--at", "last tuesday") == 2
    assert "--at 'last tuesday' is not a date or time" in capsys.readouterr().err


def test_a_lost_or_stale_head_tag_is_named_and_the_next_move_chains_after_the_last_entry(
    store: str, capsys
):
    runs.move_champion(NAME, 1, reason="first")
    runs.move_champion(NAME, 2, reason="second")  # entries 1-3
    head = runs.client().get_registered_model(NAME).tags[audit.HEAD_TAG]
    runs.client().delete_registered_model_tag(NAME, audit.HEAD_TAG)
    code, out = history_json(store, capsys)
    assert code == 1 and any(audit.HEAD_TAG in p for p in out["problems"])

    # A head left behind (a move whose head update was lost): the next entry still follows #3.
    stale = json.loads(head) | {"seq": 1, "hash": _entries_by_seq()[1].hash}
    runs.client().set_registered_model_tag(NAME, audit.HEAD_TAG, json.dumps(stale))
    runs.move_champion(NAME, 3, reason="third")
    assert [e.seq for e in audit.read_entries(NAME)] == [1, 2, 3, 4, 5]
    code, out = history_json(store, capsys)
    assert (
        code == 0
        and out["problems"] == []
        and out["entries"][3]["prev_hash"] == (out["entries"][2]["hash"])
    )


def test_the_actor_is_fmops_actor_else_the_flow_run_a_worker_started_else_the_os_user(
    monkeypatch,
):
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    monkeypatch.delenv(audit.ACTOR_ENV, raising=False)
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    assert audit.current_actor() == me
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "0f0e-nightly")  # what a Prefect worker sets
    assert audit.current_actor() == f"prefect flow-run 0f0e-nightly ({me})"
    monkeypatch.setenv(audit.ACTOR_ENV, "ci: release job 42")
    assert audit.current_actor() == "ci: release job 42"
    assert load_settings().mlflow  # FMOPS_ACTOR is not refused as an unknown setting


def test_a_lock_left_by_a_dead_move_is_named_then_taken_over(store: str, monkeypatch, caplog):
    from financemath_mlops.runs import aliases as alias_moves

    lock = NAME + alias_moves.LOCK_SUFFIX
    runs.client().create_registered_model(lock, description='{"actor": "a move that died"}')
    monkeypatch.setattr(alias_moves, "LOCK_WAIT_S", 0.3)
    with pytest.raises(runs.TrackingError, match="a move that died") as refused:
        runs.move_champion(NAME, 1, reason="blocked")
    assert f"delete the registered model {lock}" in str(refused.value)
    assert runs.alias_version(NAME, runs.CHAMPION) is None and audit.read_entries(NAME) == []
    monkeypatch.setattr(alias_moves, "LOCK_STALE_S", 0.0)  # as if 5 minutes had passed
    runs.move_champion(NAME, 1, reason="after the dead move")
    assert "taking over the alias lock" in caplog.text
    assert aliases() == {"champion": "1"}
    assert lock not in alias_moves.registered_names() + [
        m.name for m in runs.client().search_registered_models()
    ]


def test_a_lock_whose_holder_died_on_this_host_is_taken_over_at_once(store: str, monkeypatch):
    """A move SIGKILLed inside the lock (the training sweep of the fault matrix) must not block
    the next move for LOCK_STALE_S: its holder ran here and its pid is gone."""
    from financemath_mlops.runs import aliases as alias_moves

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = NAME + alias_moves.LOCK_SUFFIX
    holder = {"token": "dead", "pid": dead.pid, "host": socket.gethostname(), "actor": "killed"}
    runs.client().create_registered_model(lock, description=json.dumps(holder))
    monkeypatch.setattr(alias_moves, "LOCK_WAIT_S", 0.3)  # no wait to hide behind
    runs.move_champion(NAME, 1, reason="after a killed move")
    assert aliases() == {"champion": "1"}
    # a live holder on this host is waited for, as before
    runs.client().create_registered_model(
        lock, description=json.dumps(holder | {"pid": os.getppid()})
    )
    with pytest.raises(runs.TrackingError, match="holds the lock"):
        runs.rollback_champion(NAME, reason="blocked by a live holder")


def test_a_half_registered_version_given_an_alias_by_hand_stays_servable_after_it_moves_on(
    store: str,
):
    """training tags a version pending-alias until @challenger moves to it; any alias move onto a
    pending version completes it, or it would be refused by number once the alias moved on."""
    from financemath_mlops.runs.store import REGISTRATION_PENDING, REGISTRATION_TAG

    runs.client().set_model_version_tag(NAME, "3", REGISTRATION_TAG, REGISTRATION_PENDING)
    with pytest.raises(runs.TrackingError, match="half-registered|not served"):
        runs.resolve(f"models:/{NAME}/3")  # nothing points at it: refused, as designed
    runs.move_champion(NAME, 3, reason="CHG-9: promoted by hand")
    runs.move_champion(NAME, 4, reason="CHG-10: the next one")
    runs.move_champion(NAME, 5, reason="CHG-11: and the next")
    assert "3" not in aliases().values()
    assert runs.client().get_model_version(NAME, "3").tags[REGISTRATION_TAG] == "complete"
    assert runs.resolve(f"models:/{NAME}/3").version == "3"
