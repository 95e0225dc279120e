"""`python -m financemath_mlops.training`: features -> LightGBM in MLflow, registered @challenger."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, run_main, settings_from_args, setup_logging

EPILOG = """\
examples:
  python -m financemath_mlops.training
  python -m financemath_mlops.training --tracking-uri http://127.0.0.1:5000 --model-name my-model
  python -m financemath_mlops.training --target-transform none --cv-folds 10

Tracking defaults to sqlite:///mlruns/mlflow.db (browse with `mlflow ui --backend-store-uri
sqlite:///mlruns/mlflow.db`); MLFLOW_TRACKING_URI or FMOPS_MLFLOW__TRACKING_URI override it.
Runs on the synthetic sample register as <model-name>-sample.
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.training", __doc__ or "")
    parser.epilog = EPILOG
    parser.add_argument("--features", type=Path, help="feature Parquet (default: features output)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI")
    parser.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument("--model-name", help="registered model name")
    parser.add_argument("--target-transform", choices=["signed_log1p", "none"])
    parser.add_argument("--cv-folds", type=int)
    parser.add_argument("--seed", type=int, help="split and model seed")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_from_args(
        args,
        {
            "training": {
                "features": args.features,
                "target_transform": args.target_transform,
                "cv_folds": args.cv_folds,
                "seed": args.seed,
            },
            "mlflow": {
                "tracking_uri": args.tracking_uri,
                "experiment_name": args.experiment,
                "model_name": args.model_name,
            },
        },
    )
    from financemath_mlops.training.train import train

    print(train(settings).table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
