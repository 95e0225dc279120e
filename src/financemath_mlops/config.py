"""One typed settings object for every stage.

Precedence, highest first: CLI flags (passed as ``overrides``) > ``FMOPS_`` environment variables
(nested with ``__``, e.g. ``FMOPS_INGESTION__SOURCE``) > well-known third-party variables
(``MLFLOW_TRACKING_URI``, ``HF_TOKEN``) > the YAML file (``configs/default.yaml`` or ``--config``)
> built-in defaults. Loading validates everything and names the bad key on error. Importing this
module has no side effects.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG = Path("configs/default.yaml")
CONFIG_ENV = "FMOPS_CONFIG"
SAMPLE_MODEL_SUFFIX = "-sample"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsSettings(_Section):
    raw_dir: Path = Path("data/raw")
    interim_dir: Path = Path("data/interim")
    processed_dir: Path = Path("data/processed")
    predictions_dir: Path = Path("data/predictions")
    reports_dir: Path = Path("reports")
    cache_dir: Path = Path(".cache")
    hf_cache_dir: Path = Path(".cache/hf")
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
        default="fp32", description="ONNX bundle: fp32, or int8 (quantized once at export)"
    )


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

    @model_validator(mode="after")
    def _no_empty_api_key(self) -> ServingSettings:
        # An empty key would make every protected endpoint answer 401: refuse to start instead.
        if self.api_key is None:
            return self
        key = self.api_key.get_secret_value()
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
        return self


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
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="FMOPS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

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
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _ThirdPartyEnvSource(settings_cls),
        ]
        yaml_file = getattr(_loading, "yaml_file", None)
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


class _ThirdPartyEnvSource(PydanticBaseSettingsSource):
    """Variables other tools already use, so a user's existing setup just works."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if uri := os.environ.get("MLFLOW_TRACKING_URI"):
            values["mlflow"] = {"tracking_uri": uri}
        if token := os.environ.get("HF_TOKEN"):
            values["ingestion"] = {"hf_token": token}
        return values


class ConfigError(ValueError):
    """A configuration problem, with a message that names the bad key."""


_loading = threading.local()
_lock = threading.Lock()


def resolve_config_path(config: Path | str | None) -> Path | None:
    """The YAML file to read: --config, else $FMOPS_CONFIG, else configs/default.yaml if present."""
    if config is None:
        config = os.environ.get(CONFIG_ENV)
    if config is None:
        return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path


def load_settings(
    config: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Load and validate settings; ``overrides`` are CLI values as a nested dict (None = unset)."""
    path = resolve_config_path(config)
    clean = _drop_none(overrides or {})
    with _lock:
        _loading.yaml_file = path
        try:
            return Settings(**clean)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, path)) from None
        except Exception as exc:  # YAML syntax errors and friends
            raise ConfigError(f"could not read config {path}: {exc}") from None
        finally:
            _loading.yaml_file = None


def env_name(dotted: str) -> str:
    """The environment variable for a settings path, e.g. 'ingestion.source' -> FMOPS_INGESTION__SOURCE."""
    return "FMOPS_" + "__".join(part.upper() for part in dotted.split("."))


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


def _describe(exc: ValidationError, path: Path | None) -> str:
    lines = [f"invalid configuration ({'file ' + str(path) if path else 'no config file'}):"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown setting")
        else:
            got = err.get("input")
            secret = any(word in key for word in ("token", "key", "password"))
            shown = "" if secret or isinstance(got, dict | list) else f"got {got!r}; "
            lines.append(f"  {key}: {err['msg']} ({shown}env {env_name(key)})")
    return "\n".join(lines)
