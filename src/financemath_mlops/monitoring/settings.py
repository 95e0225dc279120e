"""The monitoring knobs: the `monitoring` section of the one settings object.

Env names as everywhere: ``FMOPS_MONITORING__<NAME>``; kept as a helper so callers that have no
settings object at hand get the same validated values.
"""

from __future__ import annotations

from typing import Any

from financemath_mlops.config import MonitoringSettings, load_settings

__all__ = ["MonitoringSettings", "monitoring_settings"]


def monitoring_settings(settings: Any = None) -> MonitoringSettings:
    """``settings.monitoring``, loading the settings (YAML + env) when none are given."""
    return (settings if settings is not None else load_settings()).monitoring
