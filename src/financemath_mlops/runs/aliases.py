"""Registry aliases: who is challenger, champion and previous champion, and moving them.

Every alias move of the project goes through these functions (training, promotion, `registry`),
so a champion is never replaced without keeping the old one as `previous-champion`, and every
move that changes an alias is appended to the audit trail (:mod:`.audit`: who, when, from and to
which version, why). Reading them back (:func:`list_versions`) refuses a name that is not
registered, listing the names that are, so a misspelt model never looks like an empty one.

Moves are serialised per model by a lock kept in the registry itself: a registered model named
``<name>.alias-lock`` exists while a move is under way. Creating a registered model is the one
compare-and-set MLflow offers on every store (the name is the table's key: a second create fails
with ``RESOURCE_ALREADY_EXISTS`` on SQLite, PostgreSQL and through a server alike), so two
promotions at once run one after the other: both are recorded, and `champion` /
`previous-champion` end as the second move left them, never a mix of the two. A lock left by a
process that died mid-move is taken over at once when that process ran on this host and is gone,
else after :data:`LOCK_STALE_S`; a waiter gives up after :data:`LOCK_WAIT_S` naming the holder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from financemath_mlops.names import closest_first
from financemath_mlops.runs import audit
from financemath_mlops.runs.contract import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from financemath_mlops.runs.store import (
    REGISTRATION_COMPLETE,
    REGISTRATION_PENDING,
    REGISTRATION_TAG,
    TrackingError,
    client,
    store_failure,
)

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".alias-lock"
LOCK_WAIT_S = 60.0  # a move takes well under a second; a queue of them, a few
LOCK_STALE_S = 300.0  # older than this, the holder is taken to be dead


@contextmanager
def alias_lock(name: str) -> Iterator[None]:
    """Hold the lock of ``name``'s aliases (see the module docstring) for the block."""
    from mlflow.exceptions import MlflowException

    lock = name + LOCK_SUFFIX
    token = secrets.token_hex(8)
    holder = json.dumps(
        {"token": token, "actor": audit.current_actor(), "pid": os.getpid(),
         "host": socket.gethostname(), "since": audit.utc_now()}
    )  # fmt: skip
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            client().create_registered_model(lock, description=holder)
            break
        except MlflowException as exc:
            held = exc.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")
            if not held and "locked" not in str(exc):  # SQLite busy: wait as for the lock
                mine = _lock_holder(lock)  # a create that went through, its answer lost
                if mine is not None and mine[0].get("token") == token:
                    _release(lock, token, quiet=True)
                raise _lock_failure(lock, exc) from None
        found = _lock_holder(lock)
        if found is not None and found[0].get("token") == token:
            break  # our create went through and its answer was lost
        if found is not None and (found[1] > LOCK_STALE_S or _holder_is_gone(found[0])):
            log.warning("taking over the alias lock %s, held %.0f s by %s (a move that died)",
                        lock, found[1], found[0])  # fmt: skip
            _take_over(lock, found[0].get("token"))
            continue
        if time.monotonic() > deadline:
            who = found[0] if found else "another move"
            raise TrackingError(
                f"another alias move of {name} holds the lock {lock} ({who}); nothing was moved. "
                f"Try again; if that process is gone, delete the registered model {lock} (it is "
                f"taken over after {LOCK_STALE_S:.0f} s)"
            )
        time.sleep(random.uniform(0.05, 0.25))
    try:
        yield
    finally:
        _release(lock, token, quiet=True)


def _lock_failure(lock: str, exc: Exception) -> TrackingError:
    """Why the lock could not be taken, with the exit code the matrix's rule gives it.

    A tracking server that failed mid-command (unreachable, 5xx: its database restarting) is
    the machine's fault, not the user's: :class:`StoreFailedError`, exit 1, naming the server
    (docs/reliability.md#tracking-postgres-restart-before-alias). Anything else the store
    refused stays a :class:`TrackingError` (exit 2)."""
    import mlflow

    failed = store_failure(
        exc, mlflow.get_tracking_uri(), f"taking the alias lock {lock}",
        "Nothing was moved: every alias and the audit trail are as they were.",
    )  # fmt: skip
    return failed or TrackingError(f"cannot take the alias lock {lock}: {exc}")


def _lock_holder(lock: str) -> tuple[dict[str, Any], float] | None:
    """(who holds ``lock``, its age in seconds), or None when it is gone."""
    from mlflow.exceptions import MlflowException

    try:
        model = client().get_registered_model(lock)
    except MlflowException:
        return None
    try:
        who = json.loads(model.description or "{}")
    except ValueError:
        who = {"description": model.description}
    return who, time.time() - (model.creation_timestamp or 0) / 1000


def _holder_is_gone(who: dict[str, Any]) -> bool:
    """True when the lock's holder ran on this host and its process no longer exists (a move
    killed mid-way: SIGKILL, OOM): its lock is taken over at once instead of after
    :data:`LOCK_STALE_S`. A holder on another host is judged by age only."""
    pid = who.get("pid")
    if who.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False  # this process: a lock of ours that a lost answer hid, judged by token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _take_over(lock: str, token: str | None) -> None:
    """Remove a dead holder's lock so that exactly one waiter may take it: the lock is first
    renamed to a name of its own (a rename, like a create, succeeds once), then deleted. A waiter
    that lost the rename finds the lock gone or taken, and waits as before."""
    from mlflow.exceptions import MlflowException

    found = _lock_holder(lock)
    if found is None or found[0].get("token") != token:
        return  # taken over (or released) by someone else meanwhile
    stale = f"{lock}.stale-{token or secrets.token_hex(4)}"
    try:
        client().rename_registered_model(lock, stale)
    except MlflowException:
        return  # another waiter renamed it first
    try:
        client().delete_registered_model(stale)
    except MlflowException as exc:
        log.warning("could not delete the stale alias lock %s: %s", stale, exc)


def _release(lock: str, token: str, quiet: bool = False) -> None:
    """Delete our ``lock`` (the one holding ``token``: never a lock another mover took over after
    ours went stale). ``quiet``: a failure is a warning, not an error over a move that is made
    (the lock then goes stale and is taken over)."""
    from mlflow.exceptions import MlflowException

    try:
        found = _lock_holder(lock)
        if found is None or found[0].get("token") != token:
            return
        client().delete_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        if not quiet:
            raise TrackingError(f"cannot release the alias lock {lock}: {exc}") from None
        log.warning("could not release the alias lock %s (%s): the next move takes it over "
                    "once it is stale (%.0f s)", lock, exc, LOCK_STALE_S)  # fmt: skip
    except Exception as exc:  # the move itself is done: never mask its outcome
        if not quiet:
            raise
        log.warning("could not release the alias lock %s: %s", lock, exc)


def _move(name: str, alias: str, version: str | int) -> audit.Move | None:
    """Point ``alias`` at ``version``; the move made, or None when it already pointed there."""
    current = alias_version(name, alias)
    before = str(current.version) if current is not None else None
    if before == str(version):
        return None
    target = client().get_model_version(name, str(version))  # read first: a failure moves nothing
    client().set_registered_model_alias(name, alias, str(version))
    if (target.tags or {}).get(REGISTRATION_TAG) == REGISTRATION_PENDING:
        # an alias on it makes it a served version: complete, whoever moved the alias (training,
        # a promotion by hand), so it is never refused by number once the alias moves on
        client().set_model_version_tag(name, str(version), REGISTRATION_TAG, REGISTRATION_COMPLETE)
    return audit.Move(alias, before, str(version), target.run_id)


def _record(name: str, moves: list[audit.Move | None], action: str, reason: str) -> None:
    made = [m for m in moves if m is not None]
    try:
        audit.append(name, made, action, reason)
    except Exception as exc:  # the move is made; say what is not recorded
        what = ", ".join(f"{m.alias} -> version {m.to_version}" for m in made)
        raise TrackingError(
            f"{name}: moved {what}, but the audit entry could not be written ({exc}); "
            "`registry history` will flag the move as unexplained"
        ) from None


def set_alias(
    name: str, alias: str, version: str | int, reason: str = "", action: str = "set"
) -> None:
    """Point ``alias`` at ``version`` and record the move (nothing when it already points there)."""
    with alias_lock(name):
        _record(name, [_move(name, alias, version)], action, reason)


def alias_version(name: str, alias: str) -> Any | None:
    """The ModelVersion behind an alias, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


SHOWN_NAMES = 10  # registered names an unknown-name error lists


class UnknownModelError(TrackingError):
    """No registered model has this name; the message lists those that exist, closest first."""

    def __init__(self, name: str, registered: list[str]) -> None:
        self.name, self.registered = name, registered
        shown = ", ".join(registered[:SHOWN_NAMES])
        more = (
            f" (and {len(registered) - SHOWN_NAMES} more)" if len(registered) > SHOWN_NAMES else ""
        )
        where = f"the registry {_registry_uri()}"
        super().__init__(
            f"no model named {name!r} is registered in {where}; registered, closest first: "
            f"{shown}{more}"
            if registered
            else f"no model named {name!r} is registered in {where}, and no other model is: "
            "train one first, or point the tracking URI at the store that holds it"
        )


def _registry_uri() -> str:
    import mlflow

    from financemath_mlops.config_sources import mask_url_password

    return mask_url_password(mlflow.get_registry_uri())


def registered_names() -> list[str]:
    """Every registered model name in the store (all pages), sorted; alias locks left out."""
    names: list[str] = []
    token = None
    while True:
        page = client().search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page if LOCK_SUFFIX not in m.name]
        token = page.token
        if not token:
            return sorted(names)


def registered_aliases(name: str) -> dict[str, list[str]]:
    """Version -> its aliases, for the registered model ``name``; :class:`UnknownModelError` when
    no model has that name (instead of the empty list a search gives for a misspelt name).

    Read from the registered model, not the versions: MLflow's ``search_model_versions`` returns
    versions without their aliases (MLflow 3.x, at least the SQL store), which made ``registry
    list`` show ``-`` for every version.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UnknownModelError(name, closest_first(name, registered_names())) from None
        raise TrackingError(f"cannot read the registered model {name}: {exc.message}") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted((model.aliases or {}).items()):
        by_version.setdefault(str(version), []).append(alias)
    return by_version


def list_versions(name: str) -> list[Any]:
    """The versions of ``name``, oldest first, each with its aliases; :class:`UnknownModelError`
    when no model has that name (a registered model without versions gives [])."""
    from mlflow.exceptions import MlflowException

    aliases = registered_aliases(name)
    try:
        versions = client().search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        raise TrackingError(f"cannot list versions of {name}: {exc}") from None
    for version in versions:
        version.aliases = aliases.get(str(version.version), [])
    return sorted(versions, key=lambda v: int(v.version))


def set_challenger(
    name: str, version: str | int, reason: str = "training registered a new version"
) -> None:
    set_alias(name, CHALLENGER, version, reason, action="training")


def move_champion(
    name: str, version: str | int, reason: str = "", action: str = "promotion"
) -> bool:
    """Point `champion` at version, keeping the current one as `previous-champion`; both moves
    recorded with ``reason``. False when version already is the champion (nothing moved)."""
    with alias_lock(name):
        current = alias_version(name, CHAMPION)
        if current is not None and str(current.version) == str(version):
            return False
        moves = []
        if current is not None:
            moves.append(_move(name, PREVIOUS_CHAMPION, current.version))
        moves.append(_move(name, CHAMPION, version))
        _record(name, moves, action, reason)
        return True


def rollback_champion(
    name: str, reason: str = "", action: str = "registry rollback"
) -> tuple[str, str | None]:
    """Return `champion` to `previous-champion`; the replaced champion becomes the previous one
    (so a second rollback undoes the first); both moves recorded with ``reason``. Returns (new
    champion version, old one or None)."""
    with alias_lock(name):
        previous = alias_version(name, PREVIOUS_CHAMPION)
        if previous is None:
            raise TrackingError(f"{name} has no previous champion to roll back to")
        current = alias_version(name, CHAMPION)
        moves = [_move(name, CHAMPION, previous.version)]
        if current is not None:
            moves.append(_move(name, PREVIOUS_CHAMPION, current.version))
        _record(name, moves, action, reason)
    return str(previous.version), (str(current.version) if current is not None else None)
