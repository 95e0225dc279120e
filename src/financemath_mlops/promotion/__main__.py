"""`python -m financemath_mlops.promotion`: promote the challenger if it beats the champion.

Beats means: the paired bootstrap 95 % interval of its loss minus the champion's, on holdout rows
unseen by both, lies entirely below -margin (the first version: below the global median's).
"""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags

EPILOG = """\
examples:
  python -m financemath_mlops.promotion                       # what training made of the features
  python -m financemath_mlops.promotion --features scratch/features.parquet
  python -m financemath_mlops.promotion --model-uri models:/financemath-regressor/7

--features picks the model training registered from that table, in the store the pointer
(<features>.trained.json) names: another --tracking-uri is refused (exit 2), and so is
--features beside --model-uri (the challenger is judged on its own run's holdout rows).
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.promotion", __doc__ or "", EPILOG)
    evaluation = setting_flags(parser, "evaluation")
    evaluation("--model-uri", help="the challenger (default: what training made of --features)")
    setting_flags(parser, "training")(
        "--features", type=Path,
        help="judge the model training registered from this table (default: features "
        "output); not with --model-uri",
    )  # fmt: skip
    setting_flags(parser, "mlflow")("--tracking-uri", help="MLflow tracking URI")
    evaluation("--metric", key="promotion_metric", choices=["log_mae", "mae", "rmse", "median_ae"])
    evaluation("--min-rows", key="min_promotion_rows", type=int,
               help="minimum rows unseen by both models (10 or more)")  # fmt: skip
    evaluation("--margin", key="promotion_margin", type=float,
               help="how far below 0 the interval must lie (default 0)")  # fmt: skip
    args, settings = parse_stage_args(parser, argv)
    from financemath_mlops import runs
    from financemath_mlops.promotion.decision import promote_if_better

    runs.refuse_ignored_features(getattr(args, "training.features"), settings, "promotion")
    # A dead tracking server: exit 2 in seconds, before the work.
    runs.check_reachable(settings.mlflow)
    runs.configure(settings.mlflow)
    ref = runs.resolve_challenger(settings)
    if ref.name is None:
        raise runs.TrackingError(f"{ref.uri} is not a registered model version")
    decision = promote_if_better(settings.evaluation, ref, seed=settings.training.seed)
    print(decision.line())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
