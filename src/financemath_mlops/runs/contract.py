"""The names a run is made of: artefact paths, registry aliases and model URIs.

Training writes these artefacts and every later stage reads them back, so they are spelled once,
here. Stages never build a ``models:/`` URI themselves: they ask for the served model, the
challenger or a pinned version, and get the same string everywhere. Pure: no MLflow import.
"""

from __future__ import annotations

from pathlib import Path

from financemath_mlops.config import SAMPLE_MODEL_SUFFIX, MLflowSettings, ServingSettings

# Registry aliases: training sets `challenger`; promotion moves `champion` and keeps the one it
# replaced as `previous-champion` (what `registry rollback` returns to).
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"

# Artefacts of a training run (paths inside the run).
MODEL_IN_RUN = "model"  # the raw-record pyfunc
FEATURE_MANIFEST = "feature_columns.json"  # the features stage's manifest (columns, embedding)
TRAIN_IDS = "split/train_ids.json"
HOLDOUT_IDS = "split/holdout_ids.json"
TRAINING_FEATURES = "data/training_features.parquet"  # monitoring's reference
HOLDOUT_RECORDS = "data/holdout_records.jsonl"  # raw records the model never saw
REBUILD_RECIPE = "reproduce/recipe.json"  # what `registry reproduce` rebuilds from
EVALUATION_DIR = "evaluation"  # the evaluation stage's metrics file, added later
# Artefacts of a monitoring run (one run per report, in the monitoring experiment).
REPORT_DIR = "report"
# Beside a feature table: what training registered from it (see :mod:`.pointer`).
TRAINED_POINTER_SUFFIX = ".trained.json"


def trained_pointer_path(features_path: Path) -> Path:
    """`features.parquet` -> `features.trained.json`, beside it."""
    return features_path.with_name(features_path.stem + TRAINED_POINTER_SUFFIX)


def is_tracked_uri(uri: str) -> bool:
    """models:/ and runs:/ URIs need the tracking store; anything else is a model folder."""
    return uri.startswith(("models:/", "runs:/"))


def alias_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


def version_uri(name: str, version: str | int) -> str:
    """A pinned version: what an alias resolves to, so a moving alias changes nothing mid-run."""
    return f"models:/{name}/{version}"


def served_uri(serving: ServingSettings) -> str:
    """The model in service: serving.model_uri, else models:/<serving.model_name>@<serving.alias>.

    Serving, batch prediction and monitoring all default to it.
    """
    return serving.model_uri or alias_uri(serving.model_name, serving.alias)


def model_name_for(store: MLflowSettings, data_source: str | None) -> str:
    """Runs on the synthetic sample register under <name>-sample, so demos never touch a champion."""
    name = store.model_name
    if data_source == "sample" and not name.endswith(SAMPLE_MODEL_SUFFIX):
        return name + SAMPLE_MODEL_SUFFIX
    return name
