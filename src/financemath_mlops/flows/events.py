"""The Prefect event that connects monitoring to retraining: its name, resource and trigger.

One place for the contract both sides share: the monitoring flow emits the event
(:mod:`.monitoring`), the retraining deployment's trigger expects it (:mod:`.deployment` and
``prefect.yaml``). Promotion still decides on evidence whether the retrained model is served.
"""

from __future__ import annotations

from typing import Any

RETRAIN_REQUESTED = "financemath.monitoring.retrain-requested"
RESOURCE_PREFIX = "financemath.model"
TRIGGER_NAME = "financemath-retrain-on-evidence"


def model_resource(model: dict[str, Any] | None) -> dict[str, str]:
    """The event's resource: the served model (``financemath.model.<registered name>``)."""
    name = str((model or {}).get("name") or "unknown")
    resource = {"prefect.resource.id": f"{RESOURCE_PREFIX}.{name}", "prefect.resource.name": name}
    if (model or {}).get("version"):
        resource["financemath.model.version"] = str(model["version"])  # type: ignore[index]
    return resource


def trigger_spec() -> dict[str, Any]:
    """The retraining deployment's trigger, as ``prefect.yaml`` spells it."""
    return {
        "type": "event",
        "name": TRIGGER_NAME,
        "description": "Retrain when a monitoring run finds drift or degraded performance",
        "enabled": True,
        "match": {"prefect.resource.id": f"{RESOURCE_PREFIX}.*"},
        "expect": [RETRAIN_REQUESTED],
        "posture": "Reactive",
        "threshold": 1,
        "within": 0,
    }


def retrain_trigger() -> Any:
    """The same trigger as a Prefect object, for ``flow.deploy(triggers=[...])``."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(**{k: v for k, v in trigger_spec().items() if k != "type"})
