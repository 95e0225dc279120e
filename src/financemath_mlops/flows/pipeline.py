"""The Prefect flow: each task runs one stage (:mod:`.stages`) and adds only logging and the
dict it returns."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from financemath_mlops import runs
from financemath_mlops.config import Settings, load_settings
from financemath_mlops.flows import stages
from financemath_mlops.training.lightgbm_params import check_lightgbm_params


def _network_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Retry ingestion only when the hub was unreachable, not on bad data or a bad path."""
    from financemath_mlops.ingestion.sources import SourceUnreachableError

    try:
        state.result()
    except (SourceUnreachableError, ConnectionError, TimeoutError):
        return True
    except Exception:
        return False
    return False


@task(
    name="ingest",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=_network_failure,
    cache_policy=NO_CACHE,
)
def ingest_task(settings: Settings) -> dict[str, Any]:
    summary = stages.ingest_stage(settings)
    get_run_logger().info(summary.table())
    return {"output": str(summary.output), "written": summary.written, "rejected": summary.rejected}


@task(name="build-features", cache_policy=NO_CACHE)
def features_task(settings: Settings) -> dict[str, Any]:
    summary = stages.features_stage(settings)
    get_run_logger().info(summary.table())
    return {"output": str(summary.output), "rows": summary.rows, "seconds": summary.seconds}


@task(name="train-lightgbm", cache_policy=NO_CACHE)
def train_task(settings: Settings) -> dict[str, Any]:
    summary = stages.train_stage(settings)
    get_run_logger().info(summary.table())
    return {
        "run_id": summary.run_id,
        "model_name": summary.model_name,
        "version": summary.version,
        "model_uri": summary.model_uri,
        "cv_log_mae": summary.cv["log_mae_mean"],
        "tracking_uri": summary.tracking_uri,
    }


@task(name="evaluate-holdout", cache_policy=NO_CACHE)
def evaluate_task(settings: Settings, model_uri: str) -> dict[str, Any]:
    from financemath_mlops.evaluation.evaluate import report_table

    report = stages.evaluate_stage(settings, model_uri)
    get_run_logger().info(report_table(report))
    return report


@task(name="promote-if-better", cache_policy=NO_CACHE)
def promote_task(settings: Settings, model_uri: str) -> dict[str, Any]:
    decision = stages.promote_stage(settings, model_uri)
    get_run_logger().info(decision.line())
    return {"promoted": decision.promoted, "reason": decision.reason}


@task(name="export-served-model", cache_policy=NO_CACHE)
def export_task(settings: Settings, model_name: str, trained_uri: str) -> dict[str, Any]:
    from financemath_mlops.runs.export import export_served_model

    exported = export_served_model(settings, model_name, trained_uri)
    get_run_logger().info(exported["note"])
    return exported


def flow_settings(
    source: str | None,
    split: str | None,
    rows: int | None,
    path: str | None,
    model_name: str | None,
    executor: str | None,
    config: str | None,
    tracking_uri: str | None = None,
) -> Settings:
    """Flow parameters mirror the config; the same settings object validates them."""  # fmt: skip
    return load_settings(
        config,
        {
            "ingestion": {"source": source, "split": split, "rows": rows, "path": path},
            "mlflow": {"model_name": model_name, "tracking_uri": tracking_uri},
            "features": {"executor": executor},
        },
    )


@flow(name="financemath-pipeline", log_prints=True)
def financemath_pipeline(
    source: str | None = None,
    split: str | None = None,
    rows: int | None = None,
    path: str | None = None,
    model_name: str | None = None,
    executor: str | None = None,
    config: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Ingestion -> features -> training -> evaluation -> promotion; returns a run summary."""
    settings = flow_settings(source, split, rows, path, model_name, executor, config, tracking_uri)
    runs.check_reachable(settings.mlflow)  # a deployment's run starts here: fail before ingestion
    check_lightgbm_params(settings.training.lightgbm, settings.training.seed)  # and before features
    ingested = ingest_task(settings)
    features = features_task(settings)
    trained = train_task(settings)
    report = evaluate_task(settings, trained["model_uri"])
    promotion = (
        promote_task(settings, trained["model_uri"])
        if settings.evaluation.promote
        else {"promoted": False, "reason": "promotion disabled"}
    )
    served = export_task(settings, trained["model_name"], trained["model_uri"])
    summary = {
        "served": served,
        "ingestion": ingested,
        "features": features,
        "training": trained,
        "holdout": {k: report["holdout"][k] for k in ("n", "mae", "rmse", "log_mae", "accuracy")},
        "metrics_file": report["output"],
        "promotion": promotion,
    }
    create_markdown_artifact(
        key="financemath-run",
        markdown=(
            f"# FinanceMath run\n\n- MLflow run `{trained['run_id']}` "
            f"({trained['tracking_uri']})\n- model `{trained['model_uri']}`\n"
            f"- holdout log-MAE {report['holdout']['log_mae']:.3f}, MAE "
            f"{report['holdout']['mae']:.4g}, accuracy {report['holdout']['accuracy']:.1%}\n"
            f"- promotion: {promotion['reason']}\n"
            f"- served model folder: `{served['folder']}` ({served['note']})\n"
        ),
        description="Where this run's outputs went",
    )
    return summary
