"""What a registered version's run recorded for a rebuild, read back in one piece.

`registry reproduce` (:mod:`financemath_mlops.registry.rebuild`) rebuilds a version and compares; this
module is its MLflow side: the version's run, its rebuild recipe (:data:`.contract.REBUILD_RECIPE`,
written by training), split ids, stored training table, raw holdout records and the booster the
served model carries. Nothing here writes to the tracking store: a rebuild opens no run,
registers nothing and moves no alias.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from financemath_mlops.runs.contract import MODEL_IN_RUN
from financemath_mlops.runs.store import TrackingError, client, download
from financemath_mlops.runs.training_run import (
    load_feature_manifest,
    load_holdout_records,
    load_rebuild_recipe,
    load_split_ids,
    load_training_features,
)

# model/predictor.BOOSTER_FILE, under the pyfunc's artifacts: downloaded alone (not the bundle)
BOOSTER_IN_MODEL = f"{MODEL_IN_RUN}/artifacts/booster.txt"


@dataclass
class RecordedRun:
    run_id: str
    recipe: dict[str, Any] | None  # None: logged before runs recorded one
    params: dict[str, str]
    tags: dict[str, str]
    manifest: dict[str, Any]
    train_ids: list[str]
    holdout_ids: list[str]
    train_frame: Any  # pandas: the stored training feature table
    holdout_records: list[dict[str, Any]]
    booster_text: str


def version_run_id(name: str, version: str) -> str:
    """The run that logged `name` version `version` (exit 2 naming the versions there are)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version(name, str(version)).run_id)
    except MlflowException:
        known = sorted(
            (str(v.version) for v in client().search_model_versions(f"name='{name}'")),
            key=lambda v: int(v) if v.isdigit() else 0,
        )
        raise TrackingError(
            f"{name} has no version {version} (versions: {', '.join(known) or 'none'})"
        ) from None


def load_recorded_run(run_id: str, work: Path) -> RecordedRun:
    """Everything the run recorded that a rebuild reads, downloaded under `work`."""
    from mlflow.exceptions import MlflowException

    try:
        run = client().get_run(run_id)
    except MlflowException:
        raise TrackingError(f"no run {run_id} in this tracking store") from None
    train_ids, holdout_ids = load_split_ids(run_id, work)
    booster = download(run_id, BOOSTER_IN_MODEL, work / "model")
    return RecordedRun(
        run_id=run_id,
        recipe=load_rebuild_recipe(run_id, work),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        manifest=load_feature_manifest(run_id, work),
        train_ids=train_ids,
        holdout_ids=holdout_ids,
        train_frame=load_training_features(run_id, work),
        holdout_records=load_holdout_records(run_id, work),
        booster_text=booster.read_text(encoding="utf-8"),
    )
