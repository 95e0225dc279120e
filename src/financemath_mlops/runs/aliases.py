"""Registry aliases: who is challenger, champion and previous champion, and moving them.

Every alias move of the project goes through these functions (training, promotion, `registry`),
so a champion is never replaced without keeping the old one as `previous-champion`. Reading
them back (:func:`list_versions`) refuses a name that is not registered, listing the names that
are, so a misspelt model never looks like an empty one.
"""

from __future__ import annotations

from typing import Any

from financemath_mlops.names import closest_first
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
    """Every registered model name in the store (all pages), sorted."""
    names: list[str] = []
    token = None
    while True:
        page = client().search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page]
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
