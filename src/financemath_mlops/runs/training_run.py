"""Log a training run, and read its data back (evaluation, promotion, monitoring).

A training run holds everything needed to reproduce, evaluate and serve its model: params, tags,
CV metrics, the feature manifest, the split ids, the training feature table (monitoring's
reference), the raw holdout records (so evaluation scores exactly the rows this model never saw)
and the raw-record pyfunc, registered under the model name. The artefact names are
:mod:`.contract`'s; callers hand over content and get it back, never paths.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops.config import MLflowSettings
from financemath_mlops.runs.contract import (
    FEATURE_MANIFEST,
    HOLDOUT_IDS,
    HOLDOUT_RECORDS,
    MODEL_IN_RUN,
    REBUILD_RECIPE,
    TRAIN_IDS,
    TRAINING_FEATURES,
    version_uri,
)
from financemath_mlops.runs.store import (
    REGISTRATION_COMPLETE,
    REGISTRATION_PENDING,
    REGISTRATION_TAG,
    client,
    download,
    ensure_experiment,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingRunContent:
    """What the training stage produced, to be logged as one run."""

    params: dict[str, Any]
    tags: dict[str, str]
    metrics: dict[str, float]
    manifest: dict[str, Any]  # the features manifest: columns, embedding, data lineage
    train_frame: Any  # the training rows' feature table (pandas)
    features_source: Path  # where that table was read from (the MLflow dataset's source)
    target_column: str
    train_ids: list[str]
    holdout_ids: list[str]
    holdout_records: list[dict[str, Any]]  # raw ingested records of the holdout ids
    booster: Any
    target_transform: str
    embedding_bundle: Path  # the ONNX bundle the features were embedded with, served beside it
    # what `registry reproduce` rebuilds from (data, embedding, LightGBM, code, packages), typed
    recipe: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedModel:
    experiment_id: str
    run_id: str
    name: str
    version: str

    @property
    def uri(self) -> str:
        return version_uri(self.name, self.version)


def log_training_run(
    store: MLflowSettings, model_name: str, content: TrainingRunContent
) -> LoggedModel:
    """One run in mlflow.experiment_name with the content, the pyfunc registered as model_name.

    The store must be configured (:func:`.store.configure`).
    """
    import mlflow

    from financemath_mlops.atomic import write_json, write_jsonl
    from financemath_mlops.model.packaging import log_pyfunc

    experiment_id = ensure_experiment(store)
    with (
        tempfile.TemporaryDirectory(prefix="fmops-train-") as tmp_name,
        mlflow.start_run(experiment_id=experiment_id) as run,
    ):
        tmp = Path(tmp_name)
        mlflow.set_tags(content.tags)
        mlflow.log_params(content.params)
        with warnings.catch_warnings():  # MLflow warns that a local path has two readers
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                content.train_frame,
                source=str(Path(content.features_source).resolve()),
                name="finance_math_features",
                targets=content.target_column,
            )
        mlflow.log_input(dataset, context="training")
        mlflow.log_metrics(content.metrics)
        files = {
            FEATURE_MANIFEST: lambda p: write_json(p, content.manifest),
            TRAIN_IDS: lambda p: write_json(p, content.train_ids),
            HOLDOUT_IDS: lambda p: write_json(p, content.holdout_ids),
            TRAINING_FEATURES: lambda p: content.train_frame.to_parquet(p, index=False),
            HOLDOUT_RECORDS: lambda p: write_jsonl(p, content.holdout_records),
        }
        if content.recipe:
            files[REBUILD_RECIPE] = lambda p: write_json(p, content.recipe)
        for artefact, write in files.items():
            folder = artefact.rpartition("/")[0]
            path = tmp / "artefacts" / artefact
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
            mlflow.log_artifact(str(path), folder or None)
        info = log_pyfunc(
            booster=content.booster,
            manifest=content.manifest,
            target_transform=content.target_transform,
            bundle=content.embedding_bundle,
            work_dir=tmp / "model",
            example=content.holdout_records[:2],
            name=MODEL_IN_RUN,
        )
        # Registered once the artefacts are uploaded whole (log_pyfunc raised otherwise), tagged
        # pending in the same request: until the alias moves (mark_registered), a store failure
        # leaves a version nobody serves (store.REGISTRATION_TAG).
        registered = mlflow.register_model(
            info.model_uri,  # models:/<logged model id>, as log_model itself registers it
            model_name,
            tags={REGISTRATION_TAG: REGISTRATION_PENDING},
        )
        return LoggedModel(experiment_id, run.info.run_id, model_name, str(registered.version))


def mark_registered(name: str, version: str) -> None:
    """Training moved @challenger to ``version``: its registration is complete. Best effort: the
    alias is what serves it, so a store failing now only leaves the tag saying pending (a
    warning), never a failed training."""
    try:
        client().set_model_version_tag(name, version, REGISTRATION_TAG, REGISTRATION_COMPLETE)
    except Exception as exc:  # the alias moved: the model is served; say what is stale
        log.warning(
            "%s version %s is @challenger but its tag %s could not be set to %s (%s); "
            "harmless: a version with an alias is served",
            name, version, REGISTRATION_TAG, REGISTRATION_COMPLETE, exc,
        )  # fmt: skip


@dataclass
class RunData:
    """What a model's run recorded about its data: training rows and raw holdout records."""

    holdout: list[dict[str, Any]]
    train_topics: list[str]
    train_targets: np.ndarray
    train_ids: list[str]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_holdout_records(run_id: str, work: Path) -> list[dict[str, Any]]:
    """The raw records the run's model never trained on (as ingested)."""
    return _read_jsonl(download(run_id, HOLDOUT_RECORDS, work))


def load_training_features(run_id: str, work: Path) -> Any:
    """The run's training feature table (pandas): monitoring's reference."""
    import pandas as pd

    return pd.read_parquet(download(run_id, TRAINING_FEATURES, work))


def load_feature_manifest(run_id: str, work: Path) -> dict[str, Any]:
    """The features manifest the run's model was trained with (columns, embedding, data)."""
    return json.loads(download(run_id, FEATURE_MANIFEST, work).read_text(encoding="utf-8"))


def load_rebuild_recipe(run_id: str, work: Path) -> dict[str, Any] | None:
    """What the run recorded for a rebuild (`registry reproduce`); None for runs logged before."""
    folder, _, name = REBUILD_RECIPE.rpartition("/")
    listed = {Path(a.path).name for a in client().list_artifacts(run_id, folder)}
    if name not in listed:
        return None
    return json.loads(download(run_id, REBUILD_RECIPE, work).read_text(encoding="utf-8"))


def load_split_ids(run_id: str, work: Path) -> tuple[list[str], list[str]]:
    """(train ids, holdout ids) of the run's split."""
    train = json.loads(download(run_id, TRAIN_IDS, work).read_text(encoding="utf-8"))
    holdout = json.loads(download(run_id, HOLDOUT_IDS, work).read_text(encoding="utf-8"))
    return train, holdout


def load_run_data(run_id: str, work: Path) -> RunData:
    from financemath_mlops.features.build import TARGET_COLUMN, TOPIC_COLUMN

    train = load_training_features(run_id, work)
    return RunData(
        holdout=load_holdout_records(run_id, work),
        train_topics=train[TOPIC_COLUMN].astype(str).tolist(),
        train_targets=train[TARGET_COLUMN].to_numpy(dtype=np.float64),
        train_ids=json.loads(download(run_id, TRAIN_IDS, work).read_text(encoding="utf-8")),
    )


def load_run_data_in_tmp(run_id: str) -> RunData:
    """:func:`load_run_data` into a temporary folder that is gone when it returns."""
    with tempfile.TemporaryDirectory(prefix="fmops-run-") as tmp:
        return load_run_data(run_id, Path(tmp))
