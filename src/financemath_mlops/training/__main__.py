"""`python -m financemath_mlops.training`: features -> LightGBM in MLflow, registered @challenger."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags

EPILOG = """\
examples:
  python -m financemath_mlops.training
  python -m financemath_mlops.training --tracking-uri http://127.0.0.1:5000 --model-name my-model
  python -m financemath_mlops.training --target-transform none --cv-folds 10

Tracking defaults to sqlite:///mlruns/mlflow.db (browse with `mlflow ui --backend-store-uri
sqlite:///mlruns/mlflow.db`); MLFLOW_TRACKING_URI or FMOPS_MLFLOW__TRACKING_URI override it.
Runs on the synthetic sample register as <model-name>-sample.
"""
# What a store failure mid-run leaves (docs/reliability.md, rows tracking-* and s3-*): the
# model version is registered only after its artefacts are uploaded whole, and @challenger moves
# only after that, so no alias points at an incomplete model.
KEPT = (
    "Nothing of this attempt is served: @challenger and @champion still point where they did "
    "(a model version registered before the failure has complete artefacts and no alias; "
    "`registry list` shows it); the run is marked FAILED where the server allowed it."
)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.training", __doc__ or "", EPILOG)
    training, mlflow = setting_flags(parser, "training"), setting_flags(parser, "mlflow")
    training("--features", type=Path, help="feature Parquet (default: features output)")
    mlflow("--tracking-uri", help="MLflow tracking URI")
    mlflow("--experiment", key="experiment_name", help="MLflow experiment name")
    mlflow("--model-name", help="registered model name")
    training("--target-transform", choices=["signed_log1p", "none"])
    training("--cv-folds", type=int)
    training("--seed", type=int, help="split and model seed")
    _, settings = parse_stage_args(parser, argv)
    from financemath_mlops.atomic import is_out_of_space
    from financemath_mlops.errors import OutOfSpaceError
    from financemath_mlops.runs.store import store_failure, training_out_of_space
    from financemath_mlops.training.train import train

    try:
        summary = train(
            settings.training, settings.mlflow, settings.features, settings.paths,
            settings.training_features, settings.features_input,
        )  # fmt: skip
    except OutOfSpaceError:
        raise
    except Exception as exc:  # MLflow's artefact copy says ENOSPC without the path: name it
        failed = store_failure(exc, settings.mlflow.tracking_uri, "training logged its run", KEPT)
        if failed is not None:  # the tracking server (or its database, its S3) failed mid-run
            raise failed from None
        if not is_out_of_space(exc):
            raise
        raise training_out_of_space(settings.mlflow) from exc
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
