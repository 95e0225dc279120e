"""The training stage: features -> holdout split -> CV -> final fit -> MLflow run + registry.

Everything needed to reproduce, evaluate and serve the model goes into the run: params, lineage,
CV metrics, the split ids, the training feature table (monitoring's reference), the raw holdout
records (so evaluation scores exactly the rows this model never saw), and a raw-record pyfunc.
This stage decides what; :func:`financemath_mlops.runs.log_training_run` decides where.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops import provenance, runs
from financemath_mlops.atomic import file_sha256
from financemath_mlops.config import (
    FeatureSettings,
    MLflowSettings,
    PathsSettings,
    TrainingSettings,
)
from financemath_mlops.errors import StageError
from financemath_mlops.features.build import (
    ID_COLUMN,
    TARGET_COLUMN,
    TOPIC_COLUMN,
    bundle_for,
    feature_values,
    read_features,
)
from financemath_mlops.features.rows import FEATURE_VERSION
from financemath_mlops.training.fit import cross_validate, fit_booster, regressor_params
from financemath_mlops.training.lightgbm_params import check_lightgbm_params, lightgbm_refusal
from financemath_mlops.training.servable import check_servable
from financemath_mlops.training.split import holdout_split

log = logging.getLogger(__name__)

MIN_LABELLED_ROWS = 20


@dataclass
class TrainingSummary:
    run_id: str
    experiment_id: str
    model_name: str
    version: str
    model_uri: str
    n_train: int
    n_holdout: int
    skipped_unlabelled: int
    cv: dict[str, float]
    seconds: float
    tracking_uri: str
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return "\n".join(
            [
                f"training: {self.n_train} train rows, {self.n_holdout} holdout rows "
                f"({self.skipped_unlabelled} unlabelled skipped) in {self.seconds:.1f}s",
                f"  CV ({int(self.cv['folds'])} folds): log-MAE {self.cv['log_mae_mean']:.3f} "
                f"± {self.cv['log_mae_std']:.3f}, MAE {self.cv['mae_mean']:.4g} "
                f"± {self.cv['mae_std']:.3g}, accuracy {self.cv['accuracy_mean']:.1%}",
                f"  CV global-median baseline: log-MAE {self.cv['global_median_log_mae_mean']:.3f}"
                f" ± {self.cv['global_median_log_mae_std']:.3f}",
                f"  MLflow run: {self.run_id} ({self.tracking_uri})",
                f"  registered: {self.model_name} version {self.version} @{runs.CHALLENGER}",
            ]
        )


def data_version(data: dict[str, Any]) -> str | None:
    """One searchable name for the exact input: the DVC hash of a DVC-tracked local file
    (`dvc:<md5>...`), the hub commit of the `hf` source, the generator seed of the sample."""
    if data.get("source") == "sample":
        return f"sample:{data.get('split')}"
    return data.get("revision")


def git_commit() -> str:
    return provenance.git_commit()


def sample_rows(records_path: Path, data: dict[str, Any]) -> int | None:
    """How many rows the generator made for the sample the records came from (its seed alone does
    not say): the `read` count of the ingestion manifest that lists these records' sha256."""
    if data.get("source") != "sample":
        return None
    from financemath_mlops.records import manifest_path_for

    try:
        body = json.loads(manifest_path_for(records_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = body.get("files") if isinstance(body, dict) else None
    listed = {f.get("sha256") for f in (files or {}).values() if isinstance(f, dict)}
    if data.get("input_sha256") not in listed:
        return None  # another set was published since: the count would be its own
    return body.get("counts", {}).get("read")


def first_ingested_at(records: list[dict[str, Any]]) -> str | None:
    """Ingestion stamps every record of one set with one time; a rebuild restamps with it so the
    records' bytes (and sha256) can be compared with the run's."""
    for record in records:
        stamp = (record.get("meta") or {}).get("ingested_at")
        if stamp:
            return str(stamp)
    return None


def rebuild_recipe(
    cfg: TrainingSettings,
    features: FeatureSettings,
    manifest: dict[str, Any],
    records_path: Path,
    holdout_records: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything `registry reproduce` needs to rebuild this run, typed (params are strings):
    the data and how to get it again, the embedding and LightGBM settings, the code and packages."""
    embedding = features.embedding
    data = manifest.get("data", {})
    code = provenance.checkout()
    env = provenance.environment()
    return {
        "data": {
            **{k: data.get(k) for k in ("source", "dataset_id", "split", "revision")},
            "version": data_version(data),
            "sample_rows": sample_rows(records_path, data),
            "records_sha256": data.get("input_sha256"),
            "ingested_at": first_ingested_at(holdout_records),
            "rows": manifest.get("rows"),
        },
        "embedding": {
            **{k: manifest["embedding"].get(k) for k in ("model_id", "revision", "source")},
            **{k: manifest["embedding"].get(k) for k in ("backend", "max_length", "precision")},
            "weights_sha256": manifest["embedding"].get("weights_sha256"),
            "batch_size": embedding.batch_size,
            "threads": embedding.threads,
            "partition_rows": features.partition_rows,
        },
        "training": {
            "lightgbm": dict(cfg.lightgbm),
            "seed": cfg.seed,
            "threads": cfg.threads,
            "target_transform": cfg.target_transform,
            "holdout_fraction": cfg.holdout_fraction,
            "booster_params": regressor_params(cfg.lightgbm, cfg.seed, cfg.threads),
        },
        "code": {"commit": code.commit, "dirty": code.dirty, "diff_sha256": code.diff_sha256},
        "environment": {
            "lock": env.lock_name,
            "lock_sha256": env.lock_sha256,
            "packages_sha256": env.packages_sha256,
            "packages": list(env.packages),
        },
    }


def load_raw_records(path: Path, ids: set[str]) -> list[dict[str, Any]]:
    """The ingested records with the given ids, in file order."""
    if not path.is_file():
        raise StageError(f"ingested records not found: {path} (needed to log the holdout rows)")
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if row.get(ID_COLUMN) in ids:
                    out.append(row)
    missing = ids - {r[ID_COLUMN] for r in out}
    if missing:
        raise StageError(
            f"{len(missing)} holdout ids are not in {path} (e.g. {sorted(missing)[:3]}): the "
            "features were built from another input; re-run features"
        )
    return out


def records_behind(configured: Path, table: Path, manifest: dict[str, Any]) -> Path:
    """The ingested records the feature table was built from. Its manifest names them with their
    sha256: that file, or ``configured`` (features.input) when it is the same file moved (tables
    from before the manifest named them: ``configured``). Different records are refused, never
    silently used."""
    data = manifest.get("data", {})
    named = Path(data["input"]) if data.get("input") else None
    configured = Path(configured)
    expected = data.get("input_sha256")
    if not expected:
        return named or configured
    candidates = [path for path in dict.fromkeys([named, configured]) if path is not None]
    present = [path for path in candidates if path.is_file()]
    for path in present:
        if file_sha256(path) == expected:
            return path
    if not present:
        return named or configured  # load_raw_records says it is missing
    raise StageError(
        f"{' and '.join(map(str, present))} changed since {table} was built "
        f"from {named or configured} (sha256 {expected[:12]}...): re-run features on the records "
        "you have, or train on features built from them"
    )


def train(
    cfg: TrainingSettings,
    store: MLflowSettings,
    features: FeatureSettings,
    paths: PathsSettings,
    table: Path,
    records: Path,
) -> TrainingSummary:
    """Train on the feature table ``table`` and register the model in ``store``'s registry
    as the challenger. ``records``: the ingested records the table was built from when its
    manifest does not name them (features.input); ``features`` and ``paths``: how its embedding
    model is found again for the ONNX bundle logged with the model. The caller slices the
    settings: ``train(s.training, s.mlflow, s.features, s.paths, s.training_features,
    s.features_input)``."""
    started = time.perf_counter()
    runs.check_reachable(store)  # a dead tracking server: exit 2 before CV, not after
    threads = cfg.threads
    checked = check_lightgbm_params(cfg.lightgbm, cfg.seed, threads)  # before any work
    log.info(
        "training.lightgbm checked by LightGBM's parser (objective %s) in %.0f ms",
        checked.objective, checked.seconds * 1000,
    )  # fmt: skip
    frame, manifest = read_features(table)
    features_sha256 = file_sha256(table)
    records_path = records_behind(records, table, manifest)  # before the work: refuse early
    labelled = frame[frame[TARGET_COLUMN].notna()].reset_index(drop=True)
    skipped = len(frame) - len(labelled)
    if skipped:
        log.info("skipping %d rows without a target (unlabelled)", skipped)
    if len(labelled) < MIN_LABELLED_ROWS:
        raise StageError(
            f"only {len(labelled)} labelled rows in {table}; "
            f"training needs at least {MIN_LABELLED_ROWS}"
        )
    train_ids, holdout_ids = holdout_split(
        labelled[ID_COLUMN].tolist(),
        labelled[TOPIC_COLUMN].tolist(),
        cfg.holdout_fraction,
        cfg.seed,
    )
    train_frame = labelled[labelled[ID_COLUMN].isin(set(train_ids))].reset_index(drop=True)
    x_train = feature_values(train_frame)
    y_train = train_frame[TARGET_COLUMN].to_numpy(dtype=np.float64)
    log.info("cross-validating (%d folds) on %d training rows", cfg.cv_folds, len(y_train))
    import lightgbm

    try:
        cv = cross_validate(
            x_train, y_train, cfg.lightgbm, cfg.target_transform, cfg.cv_folds, cfg.seed, threads,
            topics=train_frame[TOPIC_COLUMN].astype(str).to_numpy(),
        )  # fmt: skip
        log.info("fitting the final model on all %d training rows", len(y_train))
        booster = fit_booster(
            x_train, y_train, cfg.lightgbm, cfg.target_transform, cfg.seed, threads
        )
    except lightgbm.basic.LightGBMError as exc:  # the parameters passed; the data did not
        raise StageError(
            f"LightGBM refused to train on {table} with training.lightgbm "
            f"(objective {checked.objective}, target_transform {cfg.target_transform}): "
            f"{lightgbm_refusal(exc)}. Nothing was logged or registered."
        ) from None
    bundle = bundle_for(features.embedding, paths, manifest["embedding"])
    # Servable or not registered: before the MLflow run is opened (a refusal leaves nothing).
    servable = check_servable(booster, x_train, manifest, cfg.target_transform, bundle)
    log.info(
        "the served model scores the %d training rows as trained (max |diff| %.1e), checked in "
        "%.0f ms", servable.rows, servable.max_abs_diff, servable.seconds * 1000,
    )  # fmt: skip
    holdout_records = load_raw_records(records_path, set(holdout_ids))
    recipe = rebuild_recipe(cfg, features, manifest, records_path, holdout_records)

    tracking_uri = runs.configure(store)
    data_meta = manifest.get("data", {})
    model_name = runs.model_name_for(store, data_meta.get("source"))
    content = runs.TrainingRunContent(
        params=_params(cfg, features, records, manifest, recipe),
        tags=_tags(manifest, recipe),
        metrics={
            **{f"cv_{k}": v for k, v in cv.items()},
            "n_train": len(train_ids),
            "n_holdout": len(holdout_ids),
            "n_unlabelled": skipped,
        },
        manifest=manifest,
        train_frame=train_frame,
        features_source=Path(table),
        target_column=TARGET_COLUMN,
        train_ids=train_ids,
        holdout_ids=holdout_ids,
        holdout_records=holdout_records,
        booster=booster,
        target_transform=cfg.target_transform,
        embedding_bundle=bundle,
        recipe=recipe,
    )
    logged = runs.log_training_run(store, model_name, content)
    runs.set_challenger(model_name, logged.version)
    runs.mark_registered(model_name, logged.version)  # after the alias: see store.REGISTRATION_TAG
    pointer = runs.TrainedPointer(
        run_id=logged.run_id,
        model_uri=logged.uri,
        model_name=model_name,
        version=logged.version,
        features=str(table),
        features_sha256=features_sha256,
        tracking_uri=runs.store_identity(tracking_uri),
    )
    runs.write_trained_pointer(table, pointer)
    summary = TrainingSummary(
        run_id=logged.run_id,
        experiment_id=logged.experiment_id,
        model_name=model_name,
        version=logged.version,
        model_uri=logged.uri,
        n_train=len(train_ids),
        n_holdout=len(holdout_ids),
        skipped_unlabelled=skipped,
        cv=cv,
        seconds=time.perf_counter() - started,
        tracking_uri=tracking_uri,
        extra={
            "params_check_seconds": checked.seconds,
            "servable_check_seconds": servable.seconds,
        },
    )
    log.info("registered %s version %s as @%s", model_name, logged.version, runs.CHALLENGER)
    return summary


def _params(
    cfg: TrainingSettings,
    features: FeatureSettings,
    records: Path,
    manifest: dict[str, Any],
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if recipe is None:  # what train() passes; built here for a caller that only wants the params
        named = Path(manifest.get("data", {}).get("input") or records)
        recipe = rebuild_recipe(cfg, features, manifest, named, [])
    embedding = manifest["embedding"]
    data = manifest.get("data", {})
    params: dict[str, Any] = {
        "feature_version": manifest.get("feature_version", FEATURE_VERSION),
        "embedding.model_id": embedding["model_id"],
        "embedding.revision": embedding["revision"],
        "embedding.source": embedding["source"],
        "embedding.backend": embedding["backend"],
        "embedding.max_length": embedding["max_length"],
        "embedding.precision": embedding.get("precision", "fp32"),
        "target_transform": cfg.target_transform,
        "holdout_fraction": cfg.holdout_fraction,
        "split_seed": cfg.seed,
        "cv_folds": cfg.cv_folds,
        "data.source": data.get("source"),
        "data.dataset_id": data.get("dataset_id"),
        "data.split": data.get("split"),
        "data.revision": data.get("revision"),
        "data.version": data_version(data),
        "data.validated": data.get("validated"),  # by ingestion, or elsewhere (the user said so)
        "data.rows": manifest.get("rows"),
        "data.sample_rows": recipe["data"]["sample_rows"],  # beside the seed in data.split
        "data.records_sha256": data.get("input_sha256"),
        "training.threads": cfg.threads,
        "lock.name": recipe["environment"]["lock"],
        "lock.sha256": recipe["environment"]["lock_sha256"],
    }
    # every parameter the booster was built with: training.lightgbm and the pipeline's own
    # (seed, threads, verbosity, determinism)
    booster = recipe["training"]["booster_params"]
    params.update({f"lightgbm.{k}": v for k, v in booster.items()})
    return params


def _tags(manifest: dict[str, Any], recipe: dict[str, Any]) -> dict[str, str]:
    code = recipe["code"]
    commit = code["commit"]
    data = manifest.get("data", {})
    return {
        "git_commit": commit,
        "git_dirty": code["dirty"],
        "git_diff_sha256": code["diff_sha256"],
        "lock.name": recipe["environment"]["lock"],
        "lock.sha256": recipe["environment"]["lock_sha256"],
        "packages_sha256": recipe["environment"]["packages_sha256"],
        "mlflow.source.git.commit": commit,
        "stage": "training",
        "data.source": str(data.get("source")),
        "data.version": str(data_version(data)),
    }
