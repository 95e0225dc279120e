"""`python -m financemath_mlops.promotion`: promote the challenger if it beats the champion.

Beats means: the paired bootstrap 95 % interval of its loss minus the champion's, on holdout rows
unseen by both, lies entirely below -margin (the first version: below the global median's).
"""

from __future__ import annotations

import sys

from financemath_mlops.cli import base_parser, run_main, settings_from_args, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.promotion", __doc__ or "")
    parser.add_argument(
        "--model-uri", help="the challenger (default: models:/<name>@challenger of the last run)"
    )
    parser.add_argument("--metric", choices=["log_mae", "mae", "rmse", "median_ae"])
    parser.add_argument(
        "--min-rows", type=int, help="minimum rows unseen by both models (10 or more)"
    )
    parser.add_argument(
        "--margin", type=float, help="how far below 0 the interval must lie (default 0)"
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_from_args(
        args,
        {
            "evaluation": {
                "model_uri": args.model_uri,
                "promotion_metric": args.metric,
                "min_promotion_rows": args.min_rows,
                "promotion_margin": args.margin,
            }
        },
    )
    from financemath_mlops import runs
    from financemath_mlops.evaluation.evaluate import default_model_name
    from financemath_mlops.evaluation.promotion import promote_if_better

    runs.configure(settings)
    uri = settings.evaluation.model_uri
    uri = uri or f"models:/{default_model_name(settings)}@{runs.CHALLENGER}"
    ref = runs.resolve(uri)
    if ref.name is None:
        raise runs.TrackingError(f"{uri} is not a registered model version")
    decision = promote_if_better(settings, ref)
    print(decision.line())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
