"""Registry aliases: who is challenger, champion and previous champion, and moving them.

Every alias move of the project goes through these functions (training, promotion, `registry`),
so a champion is never replaced without keeping the old one as `previous-champion`.
"""

from __future__ import annotations

from typing import Any

from financemath_mlops.runs.contract import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from financemath_mlops.runs.store import TrackingError, client


def set_alias(name: str, alias: str, version: str | int) -> None:
    client().set_registered_model_alias(name, alias, str(version))


def alias_version(name: str, alias: str) -> Any | None:
    """The ModelVersion behind an alias, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def list_versions(name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        versions = client().search_model_versions(f"name='{name}'")
    except MlflowException as exc:
        raise TrackingError(f"cannot list versions of {name}: {exc}") from None
    return sorted(versions, key=lambda v: int(v.version))


def set_challenger(name: str, version: str | int) -> None:
    set_alias(name, CHALLENGER, version)


def move_champion(name: str, version: str | int) -> None:
    """Point `champion` at version, keeping the current one as `previous-champion`."""
    current = alias_version(name, CHAMPION)
    if current is not None and str(current.version) != str(version):
        set_alias(name, PREVIOUS_CHAMPION, current.version)
    set_alias(name, CHAMPION, version)


def rollback_champion(name: str) -> tuple[str, str | None]:
    """Return `champion` to `previous-champion`; the replaced champion becomes the previous one
    (so a second rollback undoes the first). Returns (new champion version, old one or None)."""
    previous = alias_version(name, PREVIOUS_CHAMPION)
    if previous is None:
        raise TrackingError(f"{name} has no previous champion to roll back to")
    current = alias_version(name, CHAMPION)
    set_alias(name, CHAMPION, previous.version)
    if current is not None:
        set_alias(name, PREVIOUS_CHAMPION, current.version)
    return str(previous.version), (str(current.version) if current is not None else None)
