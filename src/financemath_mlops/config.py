"""One typed settings object for every stage.

Precedence, highest first: CLI flags (passed as ``overrides``) > ``FMOPS_`` environment variables
(nested with ``__``, e.g. ``FMOPS_INGESTION__SOURCE``) > well-known third-party variables
(``MLFLOW_TRACKING_URI``, ``HF_TOKEN``) > the YAML file (``configs/default.yaml`` or ``--config``)
> built-in defaults. Loading validates everything and names the bad key and the source that set it
(the variable, the file and line, or the flag) on error: an ``FMOPS_`` variable that names no
setting, a key written twice in the file, an empty value and an unknown key all stop the run.
Importing this module has no side effects.

``python -m financemath_mlops.config show`` prints every effective value and where it came from;
``check`` only validates.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from financemath_mlops.config_sources import (
    ConfigError,
    Layers,
    Origin,
    annotation_has,
    describe,
    effective_values,
    env_name,
    environment_entries,
    expand_path_text,
    read_yaml,
    schema_of,
)

__all__ = ["ConfigError", "Settings", "env_name", "load_settings"]

DEFAULT_CONFIG = Path("configs/default.yaml")
CONFIG_ENV = "FMOPS_CONFIG"
SAMPLE_MODEL_SUFFIX = "-sample"
# FMOPS_ names the repo uses that are not settings: the config file and log level the CLIs read,
# the actor the audit trail records, and docker compose's ports, image tag and buckets. Any other
# FMOPS_ name must be a setting or start with TEST_ENV_PREFIX (switches read by tests and scripts
# only); anything else stops the run. tests/unit/test_env_names.py greps the repo to keep this
# list complete.
ENV_NOT_SETTINGS = frozenset(
    {
        CONFIG_ENV,
        "FMOPS_LOG_LEVEL",
        "FMOPS_IMAGE_TAG",
        "FMOPS_BIND_ADDRESS",
        "FMOPS_API_PORT",
        "FMOPS_API_REGISTRY_PORT",
        "FMOPS_MLFLOW_PORT",
        "FMOPS_PROMETHEUS_PORT",
        "FMOPS_PREFECT_PORT",
        "FMOPS_GRAFANA_PORT",
        "FMOPS_ALERTMANAGER_PORT",
        "FMOPS_MINIO_PORT",
        "FMOPS_MINIO_CONSOLE_PORT",
        "FMOPS_MLFLOW_BUCKET",
        "FMOPS_DVC_BUCKET",
        "FMOPS_ACTOR",  # who moves an alias, in the audit trail (runs/audit.py)
    }
)
TEST_ENV_PREFIX = "FMOPS_TEST_"

log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _expand_paths(cls, value: Any, info: ValidationInfo) -> Any:
        # `~` and `$HOME` in a path setting would otherwise become literal ./~ and ./$HOME folders.
        field = cls.model_fields.get(info.field_name or "")
        is_path = field is not None and annotation_has(field.annotation, Path)
        return expand_path_text(str(value)) if is_path and isinstance(value, str | Path) else value


class PathsSettings(_Section):
    raw_dir: Path = Path("data/raw")
    interim_dir: Path = Path("data/interim")
    processed_dir: Path = Path("data/processed")
    predictions_dir: Path = Path("data/predictions")
    reports_dir: Path = Path("reports")
    cache_dir: Path = Path(".cache")
    hf_cache_dir: Path = Path(".cache/hf")
    onnx_cache_dir: Path | None = Field(
        default=None,
        description="ONNX embedding bundles, exported once and shared by this user's clones; "
        "default ${XDG_CACHE_HOME:-~/.cache}/financemath-mlops/onnx (.cache/onnx: per clone)",
    )
    serving_model_dir: Path = Field(
        default=Path("models/serving"),
        description="`make run` exports the model to serve here (an MLflow model folder)",
    )


class IngestionSettings(_Section):
    source: Literal["hf", "local", "sample"] = "hf"
    dataset_id: str = "yale-nlp/FinanceMath"
    split: str = "validation"
    revision: str | None = None
    path: Path | None = Field(default=None, description="Input file for source=local")
    rows: int = Field(default=1000, ge=1, le=10_000_000, description="Rows for source=sample")
    seed: int = 42
    output: Path | None = Field(
        default=None, description="Default: <interim_dir>/financemath.jsonl"
    )
    hf_token: SecretStr | None = Field(
        default=None,
        description="Token for the gated dataset; never logged. Also HF_TOKEN or `hf auth login`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_token_name(cls, data: Any) -> Any:
        # `use_auth_token` is the older name; a value under the new name (from any source) wins.
        if isinstance(data, dict) and "use_auth_token" in data:
            data = dict(data)
            legacy = data.pop("use_auth_token")
            data.setdefault("hf_token", legacy)
        return data


class EmbeddingSettings(_Section):
    model_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    revision: str | None = None
    local_path: Path | None = None
    backend: Literal["onnx", "sentence-transformers"] = "onnx"
    batch_size: int = Field(default=32, ge=1, le=4096)
    threads: int | None = Field(default=None, ge=1, description="Default: all cores")
    max_length: int = Field(default=256, ge=8, le=512)
    precision: Literal["fp32", "int8"] = Field(
        default="fp32",
        description="ONNX bundle: fp32, or int8 (quantized once at export; 1.5-2x the requests/s, "
        "not the default: the model card's churn rule is not met on every CPU); "
        "sentence-transformers computes fp32 only",
    )

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> EmbeddingSettings:
        # Refused at load (exit 2) rather than after ingestion, when the embedder is built.
        if self.backend == "sentence-transformers" and self.precision == "int8":
            raise ValueError(
                "precision int8 is an ONNX bundle: with backend sentence-transformers set "
                "features.embedding.precision: fp32 (--precision fp32, "
                "FMOPS_FEATURES__EMBEDDING__PRECISION=fp32)"
            )
        return self


class ExecutorSettings(_Section):
    """Where partitions run (executors.py); the features stage and batch prediction each set it."""

    executor: Literal["local", "dask"] = Field(
        default="local", description="local: in this process; dask: on the cluster at dask_address"
    )
    dask_address: str = Field(
        default="local-cluster",
        description="'local-cluster' or a scheduler address tcp://host:port",
    )
    dask_workers: int = Field(default=2, ge=1, description="worker processes for local-cluster")


class FeatureSettings(ExecutorSettings):
    input: Path | None = Field(default=None, description="Default: <interim_dir>/financemath.jsonl")
    output: Path | None = Field(
        default=None, description="Default: <processed_dir>/finance_math_features.parquet"
    )
    embedding: EmbeddingSettings = EmbeddingSettings()
    partition_rows: int = Field(default=2000, ge=1)


class PredictSettings(ExecutorSettings):
    """Batch prediction (`python -m financemath_mlops.predict`)."""

    model_uri: str | None = Field(
        default=None, description="Default: the served model (serving.model_uri or name + alias)"
    )
    batch_rows: int = Field(default=2000, ge=1, description="rows per batch / Dask partition")
    threads: int | None = Field(
        default=None, ge=1, description="embedding threads; default: all cores, 1 per Dask worker"
    )


class TrainingSettings(_Section):
    features: Path | None = Field(default=None, description="Default: the features output")
    target_transform: Literal["signed_log1p", "none"] = "signed_log1p"
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.9)
    seed: int = 42
    cv_folds: int = Field(default=5, ge=2, le=20)
    threads: int = Field(
        default=1,
        ge=1,
        description="LightGBM threads; 1 is fastest on a few hundred rows (OpenMP spin-waits)",
    )
    lightgbm: dict[str, Any] = Field(
        # Kept by the nested CV of the evaluation report (docs/model-card.md): no other setting
        # or embedding form beat it beyond noise. L1 on the signed-log1p target fits log-MAE.
        default_factory=lambda: {
            "objective": "l1",
            "n_estimators": 200,
            "learning_rate": 0.05,
            "num_leaves": 7,
            "min_child_samples": 10,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.5,
            "reg_lambda": 1.0,
        }
    )


class MLflowSettings(_Section):
    tracking_uri: str = Field(
        default="sqlite:///mlruns/mlflow.db",
        description="Also MLFLOW_TRACKING_URI; file:./mlruns only as an explicit choice",
    )
    artifact_root: str = Field(default="mlruns/artifacts", description="For new experiments")
    experiment_name: str = "financemath"
    model_name: str = "financemath-regressor"

    @field_validator("tracking_uri")
    @classmethod
    def _expand_sqlite_path(cls, uri: str) -> str:
        # The file of a sqlite:/// store or a file: store is a path like any other: `~` and
        # `$VAR` expand (never a literal ./~ folder). A URL with a host (http, file://host) is kept.
        for prefix in ("sqlite:///", "file:"):
            if uri.startswith(prefix) and not uri.startswith("file://"):
                return prefix + expand_path_text(uri[len(prefix) :])
        return expand_path_text(uri) if ":" not in uri else uri

    @field_validator("artifact_root")
    @classmethod
    def _expand_local_root(cls, root: str) -> str:
        # A local folder expands like a path setting; a URI (s3://, mlflow-artifacts:) is kept.
        return expand_path_text(root) if ":" not in root else root


class EvaluationSettings(_Section):
    model_uri: str | None = Field(
        default=None,
        description="Default: the model training registered from training.features "
        "(<features>.trained.json beside it)",
    )
    output: Path | None = Field(default=None, description="Default: <processed_dir>/metrics.json")
    promote: bool = True
    promotion_metric: Literal["log_mae", "mae", "rmse", "median_ae"] = "log_mae"
    min_promotion_rows: int = Field(
        default=10,
        ge=10,
        description="rows unseen by both models needed to promote; below 10 no interval means much",
    )
    promotion_margin: float = Field(
        default=0.0,
        ge=0.0,
        description="the paired 95 % interval of challenger minus champion must lie below -margin",
    )
    promotion_bootstrap: int = Field(
        default=2000, ge=200, le=100_000, description="bootstrap resamples for that interval"
    )


class ServingSettings(_Section):
    model_uri: str | None = Field(default=None, description="Overrides model_name + alias")
    model_name: str = "financemath-regressor"
    alias: str = "champion"
    api_key: SecretStr | None = Field(
        default=None,
        description="callers send it as 'Authorization: Bearer <key>' or 'X-API-Key'; set it "
        "with FMOPS_SERVING__API_KEY, never in a committed file",
    )
    allow_anonymous: bool = Field(
        default=False,
        description="serve without an API key on a non-loopback address (the service refuses "
        "to start there without a key unless this is true)",
    )
    published_address: str | None = Field(
        default=None,
        description="the address clients reach the service on when it is not --host: a "
        "container listens on 0.0.0.0 but compose publishes its port on FMOPS_BIND_ADDRESS "
        "(127.0.0.1 by default) and passes it here; the rule for serving without a key "
        "(loopback or allow_anonymous) then judges this address",
    )
    reload_interval_s: float = Field(default=0.0, ge=0.0, description="0 disables")
    max_question_chars: int = Field(default=8000, ge=1)
    max_tables: int = Field(default=10, ge=0)
    max_table_chars: int = Field(default=20000, ge=1)
    max_batch: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # Connection and request limits (issue 12): `python -m financemath_mlops.serving` applies them.
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="request line and headers must arrive within this"
    )
    keep_alive_s: float = Field(default=5.0, gt=0, description="idle keep-alive connections close")
    body_timeout_s: float = Field(
        default=15.0, gt=0, description="the whole request body must arrive within this (408)"
    )
    max_drain_bytes: int = Field(
        default=10_000_000,
        ge=0,
        description="an oversized body up to this size is read and dropped before the 413",
    )
    max_connections: int = Field(
        default=2048, ge=1, description="per worker; beyond it requests get 503 at once"
    )
    max_error_details: int = Field(
        default=20, ge=1, description="problems listed in one error body; the rest are counted"
    )
    refusal_pace: float = Field(
        default=3.0,
        ge=0,
        description="a 4xx answer waits this many times what its request took (0: at once), so a "
        "client that only sends refused requests gets at most 1/(1 + this) of the event loop",
    )
    refusal_pace_max_s: float = Field(
        default=1.0, ge=0, description="the longest wait of a 4xx answer (refusal_pace)"
    )
    inference_threads: int | None = Field(default=None, ge=1)
    load_retry_max_s: float = Field(
        default=60.0, ge=1.0, description="longest wait between background model-load attempts"
    )
    mlflow_timeout_s: int = Field(
        default=10, ge=1, description="timeout of one MLflow HTTP request made by the service"
    )
    mlflow_retries: int = Field(
        default=2, ge=0, description="retries of one MLflow HTTP request made by the service"
    )

    @field_validator("api_key")
    @classmethod
    def _no_blank_api_key(cls, api_key: SecretStr | None) -> SecretStr | None:
        # An empty key would make every protected endpoint answer 401: refuse to start instead.
        if api_key is None:
            return api_key
        key = api_key.get_secret_value()
        if not key.strip():
            raise ValueError(
                "serving.api_key (FMOPS_SERVING__API_KEY) is set but empty: set a real key, "
                "or unset it to serve without one"
            )
        if key != key.strip():
            # A key read from a file often ends in a newline: accepted, it would match no client.
            raise ValueError(
                "serving.api_key (FMOPS_SERVING__API_KEY) starts or ends with whitespace (a "
                "newline from a file?): strip it, e.g. FMOPS_SERVING__API_KEY=$(tr -d '[:space:]' < FILE)"
            )
        return api_key


class MonitoringSettings(_Section):
    prediction_log: bool = Field(
        default=True, description="record every prediction the service makes"
    )
    log_features: Literal["all", "hand", "none"] = Field(
        default="all",
        description="feature columns kept per prediction: all (drift incl. embeddings), "
        "hand (table + metadata features only), none",
    )
    log_queue_size: int = Field(default=10_000, ge=1, description="entries waiting to be written")
    log_rotate_rows: int = Field(default=1_000, ge=1, description="rows per Parquet part file")
    log_rotate_seconds: float = Field(default=60.0, gt=0, description="max age of unwritten rows")
    log_flush_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="a kill -9 loses at most this window of logged predictions (0: no journal)",
    )
    drift_share_threshold: float = Field(
        default=0.3, gt=0, le=1, description="dataset drift when this share of columns drifts"
    )
    embedding_components: int = Field(
        default=5, ge=1, le=64, description="principal components tested for embedding drift"
    )
    experiment_name: str = Field(
        default="financemath-monitoring", description="MLflow experiment for report numbers"
    )
    schedule_hours: float = Field(
        default=6, gt=0, le=168, description="the monitoring deployment runs every this many hours"
    )
    window_hours: float = Field(
        default=24, gt=0, description="a scheduled drift report covers this many hours of the log"
    )
    performance_data: Path | None = Field(
        default=None,
        description="labelled FinanceMath file a scheduled performance report scores "
        "(none: the performance report is skipped, and the run says so)",
    )
    min_rows: int = Field(
        default=30, ge=1, description="fewer rows than this in a report is no evidence either way"
    )
    degraded_log_mae_ratio: float = Field(
        default=1.25, gt=1, description="degraded when log-MAE exceeds this times training's"
    )
    retrain_on_evidence: bool = Field(
        default=True,
        description="drift or degraded performance emits the Prefect event that starts retraining",
    )


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`: ``Settings()`` alone is the
    built-in defaults (it reads no file and no variable)."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    paths: PathsSettings = PathsSettings()
    ingestion: IngestionSettings = IngestionSettings()
    features: FeatureSettings = FeatureSettings()
    training: TrainingSettings = TrainingSettings()
    mlflow: MLflowSettings = MLflowSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    serving: ServingSettings = ServingSettings()
    predict: PredictSettings = PredictSettings()
    monitoring: MonitoringSettings = MonitoringSettings()

    # Derived paths: one place that knows the defaults.
    @property
    def ingestion_output(self) -> Path:
        return self.ingestion.output or self.paths.interim_dir / "financemath.jsonl"

    @property
    def features_input(self) -> Path:
        return self.features.input or self.ingestion_output

    @property
    def features_output(self) -> Path:
        return self.features.output or self.paths.processed_dir / "finance_math_features.parquet"

    @property
    def training_features(self) -> Path:
        return self.training.features or self.features_output

    @property
    def metrics_output(self) -> Path:
        return self.evaluation.output or self.paths.processed_dir / "metrics.json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges the file, the environment and the flags itself (config_sources:
        # one merge rule, and every value remembers where it came from).
        return (init_settings,)


# A YAML key the model still accepts under its old name -> the setting it feeds.
_ALIASES = {"ingestion.use_auth_token": "ingestion.hf_token"}
SCHEMA = schema_of(Settings, _ALIASES)
_PROJECT_NAME = re.compile(r'^name\s*=\s*"financemath-mlops"', re.MULTILINE)
_logged: set[str] = set()


@dataclass(frozen=True)
class LoadedSettings:
    """Settings with the file they were read from and the origin of every value."""

    settings: Settings
    layers: Layers
    path: Path | None

    def rows(self) -> list[tuple[str, str, str]]:
        """(key, value, origin) of every setting, secrets masked (``config show``)."""
        return effective_values(self.settings.model_dump(), self.layers)


def resolve_config_path(config: Path | str | None) -> Path | None:
    """The YAML file to read: --config, else $FMOPS_CONFIG, else configs/default.yaml if present.

    Without either, a working directory inside the project but below its root is refused (the
    same command from the root would read configs/default.yaml: the run would silently differ).
    """
    if config is not None:
        source = "--config"
    elif CONFIG_ENV in os.environ:
        config, source = os.environ[CONFIG_ENV], f"env {CONFIG_ENV}"
        if not config.strip():
            raise ConfigError(f"{CONFIG_ENV} is set but empty: unset it, or name a YAML file")
    else:
        if DEFAULT_CONFIG.is_file():
            return DEFAULT_CONFIG
        root = _project_root_above(Path.cwd())
        if root is not None:
            raise ConfigError(
                f"no {DEFAULT_CONFIG} in {Path.cwd()}; this is inside the project at {root}: "
                f"run from there, or pass --config {root / DEFAULT_CONFIG}"
            )
        return None
    try:
        path = Path(expand_path_text(str(config)))
    except ValueError as exc:
        raise ConfigError(f"config file {config} (from {source}): {exc}") from None
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (from {source})")
    return path


def _project_root_above(folder: Path) -> Path | None:
    for parent in folder.resolve().parents:
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file() and (parent / DEFAULT_CONFIG).is_file():
            try:
                if _PROJECT_NAME.search(pyproject.read_text(encoding="utf-8")):
                    return parent
            except (OSError, UnicodeDecodeError):
                continue
    return None


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info(message)


def load_with_origins(
    config: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> LoadedSettings:
    """:func:`load_settings`, keeping the file used and where every value came from."""
    # The environment is checked first: its mistakes (a typo in a name) are the silent ones.
    environment = environment_entries(
        os.environ, SCHEMA, not_settings=ENV_NOT_SETTINGS, test_prefix=TEST_ENV_PREFIX
    )
    path = resolve_config_path(config)
    layers = Layers(SCHEMA)
    if path is not None:
        data, lines = read_yaml(path)
        layers.put_all(data, lambda key: Origin("file", str(path), lines.get(key)))
        _log_once(f"config file: {path.resolve()}")
    else:
        _log_once(
            f"no config file (no --config, no {CONFIG_ENV}, no {DEFAULT_CONFIG} in "
            f"{Path.cwd()}): built-in defaults apply"
        )
    for dotted, value, origin in environment:
        layers.put(dotted, value, lambda _key, origin=origin: origin)
    names = flags or {}
    layers.put_all(_drop_none(overrides or {}), lambda key: Origin("flag", names.get(key, "")))
    try:
        settings = Settings(**layers.values)
    except ValidationError as exc:
        raise ConfigError(describe(exc, layers)) from None
    return LoadedSettings(settings, layers, path)


def load_settings(
    config: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> Settings:
    """Load and validate settings; ``overrides`` are CLI values as a nested dict (None = unset)
    and ``flags`` name the flag of each dotted key, so an error can say which flag is at fault.
    Raises :class:`ConfigError` naming the bad key and its source."""
    return load_with_origins(config, overrides, flags).settings


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m financemath_mlops.config show|check [--config PATH]``: exit 2 on a bad config,
    with the message every stage gives."""
    parser = argparse.ArgumentParser(
        prog="python -m financemath_mlops.config",
        description="Validate the configuration (check), or print every effective value and "
        "where it came from: default, file:PATH:LINE, env VAR or flag (show). Secrets masked.",
    )
    parser.add_argument("command", choices=["show", "check"])
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"YAML config (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
    )
    args = parser.parse_args(argv)
    try:
        loaded = load_with_origins(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = str(loaded.path.resolve()) if loaded.path else "none (built-in defaults)"
    rows = loaded.rows()
    if args.command == "check":
        changed = sum(1 for _, _, origin in rows if origin != "default")
        print(f"configuration valid; config file: {where}; {changed} values not default")
        return 0
    print(f"config file: {where}")
    key_width = max(len(key) for key, _, _ in rows)
    value_width = min(48, max(len(value) for _, value, _ in rows))
    for key, value, origin in rows:
        print(f"{key:<{key_width}}  {value:<{value_width}}  {origin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
