"""`python -m financemath_mlops.evaluation`: holdout metrics + baselines, then promotion."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, run_main, settings_from_args, setup_logging

EPILOG = """\
examples:
  python -m financemath_mlops.evaluation                         # the challenger just trained
  python -m financemath_mlops.evaluation --model-uri models:/financemath-regressor@champion
  python -m financemath_mlops.evaluation --model-uri runs:/<run_id>/model --no-promote

Scores only the holdout rows recorded in the model's own run; writes data/processed/metrics.json.
Promotion: the challenger becomes champion only if it beats the champion on the promotion metric
over rows neither model trained on.
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.evaluation", __doc__ or "")
    parser.epilog = EPILOG
    parser.add_argument(
        "--model-uri", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model"
    )
    parser.add_argument(
        "--output", type=Path, help="metrics JSON (default data/processed/metrics.json)"
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI")
    parser.add_argument("--no-promote", action="store_true", help="only evaluate")
    parser.add_argument("--promotion-metric", choices=["log_mae", "mae", "rmse", "median_ae"])
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_from_args(
        args,
        {
            "evaluation": {
                "model_uri": args.model_uri,
                "output": args.output,
                "promote": False if args.no_promote else None,
                "promotion_metric": args.promotion_metric,
            },
            "mlflow": {"tracking_uri": args.tracking_uri},
        },
    )
    from financemath_mlops import tracking
    from financemath_mlops.evaluation.evaluate import evaluate, report_table
    from financemath_mlops.evaluation.promotion import promote_if_better

    report = evaluate(settings)
    print(report_table(report))
    if settings.evaluation.promote:
        ref = tracking.resolve(report["model"]["uri"])
        if ref.name is None:
            print("promotion: skipped (the model URI is not a registered model)")
        else:
            print(promote_if_better(settings, ref).line())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
