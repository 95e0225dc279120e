"""The model to serve, exported from the registry as a folder: what the flow's last step and
`python -m financemath_mlops.registry export` both do.

Why here, beside the run contract: it follows the aliases (`@champion`, else the challenger) and
writes the folder the service loads, so it belongs with the other MLflow-facing pieces of `runs/`,
not with the registry's command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_served_model(settings: Any, model_name: str, fallback_uri: str) -> dict[str, Any]:
    """Export the champion of `model_name` to paths.serving_model_dir; with no champion yet (the
    evidence did not promote anything), export `fallback_uri` (the challenger) and say so."""
    from financemath_mlops import runs

    runs.configure(settings.mlflow)
    champion = runs.alias_version(model_name, runs.CHAMPION)
    if champion is not None:
        uri, role = runs.alias_uri(model_name, runs.CHAMPION), "the champion"
    else:
        uri, role = fallback_uri, "the challenger (nothing is promoted yet)"
    folder = Path(settings.paths.serving_model_dir)
    ref = runs.export_model(uri, folder)
    return {
        "folder": str(folder),
        "model_uri": uri,
        "name": ref.name,
        "version": ref.version,
        "note": f"{role}: {ref.name} version {ref.version}",
    }
