"""The monitoring knobs, read from ``FMOPS_MONITORING__*`` environment variables.

They live here, not in :mod:`financemath_mlops.config`, so that the service can read them without
a ``monitoring:`` section in the YAML; :func:`monitoring_settings` prefers ``settings.monitoring``
if the main settings object ever grows one, so moving them there later changes no caller.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

LoggedFeatures = Literal["all", "hand", "none"]


class MonitoringSettings(BaseSettings):
    """Prediction log and report settings (env: ``FMOPS_MONITORING__<NAME>``)."""

    model_config = SettingsConfigDict(
        env_prefix="FMOPS_MONITORING__", extra="forbid", validate_default=True
    )

    prediction_log: bool = Field(default=True, description="record every prediction")
    log_features: LoggedFeatures = Field(
        default="all",
        description="feature columns kept per prediction: all (drift incl. embeddings), "
        "hand (table + metadata features only), none",
    )
    log_queue_size: int = Field(default=10_000, ge=1, description="entries waiting to be written")
    log_rotate_rows: int = Field(default=1_000, ge=1, description="rows per Parquet part file")
    log_rotate_seconds: float = Field(default=60.0, gt=0, description="max age of unwritten rows")
    drift_share_threshold: float = Field(
        default=0.3, gt=0, le=1, description="dataset drift when this share of columns drifts"
    )
    embedding_components: int = Field(default=5, ge=1, le=64)
    experiment_name: str = "financemath-monitoring"


def monitoring_settings(settings: Any = None) -> MonitoringSettings:
    """``settings.monitoring`` when the main settings have such a section, else the environment."""
    from financemath_mlops.config import ConfigError

    section = getattr(settings, "monitoring", None)
    try:
        if section is not None:
            return MonitoringSettings.model_validate(section.model_dump())
        return MonitoringSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FMOPS_MONITORING__{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid monitoring settings: {problems}") from None
