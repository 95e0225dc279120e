"""Request, response and error bodies of the API, with the examples shown in the OpenAPI schema.

Size limits (question length, number and size of tables, batch size) are settings, so the models
only carry the fixed rules; :func:`check_record_limits` applies the configured ones and
:func:`apply_limits_to_openapi` writes them into the published schema, so clients (and the fuzzer)
see the real contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from financemath_mlops.config import ServingSettings
from financemath_mlops.features.rows import TOPICS

MAX_TOPIC_CHARS = 200

EXAMPLE_RECORD: dict[str, Any] = {
    "question": (
        "A bond with a face value of $1,000 pays an annual coupon of 5% and matures in 3 years. "
        "If the yield to maturity is 6%, what is the bond's price? Answer to two decimal places."
    ),
    "tables": ["| Year | Cash flow |\n|---|---:|\n| 1 | 50 |\n| 2 | 50 |\n| 3 | 1,050 |"],
    "topic": "Quantitative Analysis & Valuation",
}
EXAMPLE_MODEL: dict[str, Any] = {
    "name": "financemath-regressor",
    "version": "3",
    "alias": "champion",
    "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}


def _usable_text(value: str, what: str) -> str:
    # Lone surrogates pass JSON parsing but cannot be encoded, so the tokenizer would fail later.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} contains invalid Unicode (a lone surrogate)") from None
    return value


class PredictRequest(BaseModel):
    """One FinanceMath question with its markdown tables."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_RECORD]})

    question: str = Field(
        min_length=1,
        description="The question text (not empty; at most serving.max_question_chars characters)",
    )
    tables: list[str] = Field(
        default_factory=list,
        description=(
            "Markdown tables, one string each (at most serving.max_tables, each at most "
            "serving.max_table_chars characters). Unparseable tables are accepted and reported "
            "in `warnings`."
        ),
    )
    topic: str | None = Field(
        default=None,
        max_length=MAX_TOPIC_CHARS,
        description=f"One of FinanceMath's topics {list(TOPICS)}; other values count as 'other'",
    )

    @field_validator("question")
    @classmethod
    def _question_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is blank")
        return _usable_text(value, "question")

    @field_validator("tables")
    @classmethod
    def _tables_are_text(cls, value: list[str]) -> list[str]:
        return [_usable_text(table, f"table {i}") for i, table in enumerate(value)]

    @field_validator("topic")
    @classmethod
    def _topic_is_text(cls, value: str | None) -> str | None:
        return None if value is None else _usable_text(value, "topic")


class BatchRequest(BaseModel):
    """Several questions scored in one call (at most serving.max_batch)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"items": [EXAMPLE_RECORD]}]}
    )

    items: list[PredictRequest] = Field(
        min_length=1, description="The questions (at least one, at most serving.max_batch)"
    )


class ModelIdentity(BaseModel):
    """Which registered model version answered."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [EXAMPLE_MODEL]}, protected_namespaces=()
    )

    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None


class ItemPrediction(BaseModel):
    prediction: float | None = Field(
        description="The predicted numeric answer (null only if the model produced a non-finite value)"
    )
    warnings: list[str] = Field(
        default_factory=list, description="Table parse problems and other notes about this input"
    )


class PredictResponse(ItemPrediction):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "prediction": 973.27,
                    "model": EXAMPLE_MODEL,
                    "latency_ms": 7.4,
                    "request_id": "5c0b6e0f2a3d4e1f9b8a7c6d5e4f3a2b",
                    "warnings": [],
                }
            ]
        },
    )

    model: ModelIdentity
    latency_ms: float = Field(description="Time spent in the service for this request")
    request_id: str = Field(
        description="The service's id of this request (also the X-Request-ID header); a caller's "
        "X-Request-ID comes back as X-Client-Request-ID"
    )


class BatchResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    predictions: list[ItemPrediction]
    model: ModelIdentity
    latency_ms: float
    request_id: str


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class DependencyState(BaseModel):
    up: bool | None = Field(description="The last call answered (null: not called yet)")
    address: str = Field(description="Where it is (no credentials, no paths)")
    checked_at: str | None = Field(default=None, description="When (UTC, ISO 8601)")
    error: str | None = Field(default=None, description="Why it is down (details: the log)")


class ReadyResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: str = Field(examples=["ready"])
    model: ModelIdentity
    dependencies: dict[str, DependencyState] = Field(
        default_factory=dict,
        description="What the service needs beside its model (tracking_store when it serves "
        "from the registry, prediction_log) and whether each answered its last call; a "
        "dependency that is down leaves the answer 200: the model in service keeps serving",
    )
    down: list[str] = Field(
        default_factory=list, description="The dependencies whose last call failed"
    )


class EmbeddingInfo(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    backend: str | None = Field(default=None, description="The backend serving uses (onnx)")
    trained_backend: str | None = Field(default=None, description="The backend features used")
    model_id: str | None = None
    revision: str | None = None
    source: str | None = None
    max_length: int | None = None
    dim: int | None = None


class ModelInfoResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelIdentity
    uri: str = Field(description="The pinned URI that was loaded (models:/NAME/VERSION)")
    source_uri: str = Field(description="What the service was asked to serve (alias or URI)")
    loaded_at: str = Field(description="When this worker loaded the model (UTC, ISO 8601)")
    training_metrics: dict[str, float]
    feature_version: int | None
    target_transform: str | None
    feature_columns: list[str]
    embedding: EmbeddingInfo


class ReloadResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    changed: bool = Field(description="True when a different model version is now served")
    model: ModelIdentity
    previous: ModelIdentity | None


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. validation_error")
    message: str = Field(description="What went wrong and what to do, for people")
    details: Any = Field(default=None, description="Structured context (e.g. invalid fields)")


class ErrorResponse(BaseModel):
    """The one shape of every 4xx and 5xx answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "model_unavailable",
                        "message": "no model is loaded: ...",
                        "details": None,
                    }
                }
            ]
        }
    )

    error: ErrorBody


def check_record_limits(
    record: PredictRequest, limits: ServingSettings, where: tuple[str | int, ...] = ("body",)
) -> list[dict[str, Any]]:
    """Problems with the configured size limits, in the shape of validation error details."""
    problems = []
    if len(record.question) > limits.max_question_chars:
        problems.append(
            _problem(
                (*where, "question"),
                f"question has {len(record.question)} characters; the limit is "
                f"{limits.max_question_chars}",
                "string_too_long",
            )
        )
    if len(record.tables) > limits.max_tables:
        problems.append(
            _problem(
                (*where, "tables"),
                f"{len(record.tables)} tables; the limit is {limits.max_tables}",
                "too_long",
            )
        )
    for i, table in enumerate(record.tables):
        if len(table) > limits.max_table_chars:
            problems.append(
                _problem(
                    (*where, "tables", i),
                    f"table {i} has {len(table)} characters; the limit is {limits.max_table_chars}",
                    "string_too_long",
                )
            )
    return problems


def check_batch_limits(batch: BatchRequest, limits: ServingSettings) -> list[dict[str, Any]]:
    if len(batch.items) > limits.max_batch:
        return [
            _problem(
                ("body", "items"),
                f"{len(batch.items)} items; the limit is {limits.max_batch}",
                "too_long",
            )
        ]
    problems = []
    for i, item in enumerate(batch.items):
        problems.extend(check_record_limits(item, limits, ("body", "items", i)))
    return problems


def _problem(loc: tuple[str | int, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def apply_limits_to_openapi(schema: dict[str, Any], limits: ServingSettings) -> dict[str, Any]:
    """Write the configured limits into the generated schema (in place; returns it)."""
    components = schema.get("components", {}).get("schemas", {})
    record = components.get("PredictRequest", {}).get("properties", {})
    if "question" in record:
        record["question"]["maxLength"] = limits.max_question_chars
    if "tables" in record:
        record["tables"]["maxItems"] = limits.max_tables
        record["tables"].setdefault("items", {})["maxLength"] = limits.max_table_chars
    batch = components.get("BatchRequest", {}).get("properties", {})
    if "items" in batch:
        batch["items"]["maxItems"] = limits.max_batch
    return schema
