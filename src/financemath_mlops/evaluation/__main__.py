"""`python -m financemath_mlops.evaluation`: holdout metrics + baselines of one model.

Promotion is a stage of its own (`python -m financemath_mlops.promotion`); the flow runs it after
this one when `evaluation.promote` is true.

`python -m financemath_mlops.evaluation report --input FILE`: the model card's figures (repeated
nested CV with paired intervals against baselines) from a labelled FinanceMath file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags

EPILOG = """\
examples:
  python -m financemath_mlops.evaluation                         # what training made of the features
  python -m financemath_mlops.evaluation --features scratch/features.parquet   # ... of that table
  python -m financemath_mlops.evaluation --model-uri models:/financemath-regressor@champion
  python -m financemath_mlops.evaluation --model-uri runs:/<run_id>/model

  python -m financemath_mlops.evaluation report --input validation.json   # docs/model-card.md

Scores only the holdout rows recorded in the model's own run; writes data/processed/metrics.json.
--features picks the model training registered from that table, in the store the pointer
(<features>.trained.json) names: another --tracking-uri is refused (exit 2), and so is
--features beside --model-uri (a model is never scored on a table it may have trained on).
Promotion (python -m financemath_mlops.promotion): the challenger becomes champion only if it
beats the champion on the promotion metric over rows neither model trained on.
"""


REPORT_EPILOG = """\
Repeated topic-stratified nested CV over the file's labelled rows (about 5 minutes on 2 cores with
the defaults), and the int8 rule's churn over those and the --unlabelled questions; writes the
card, its plot and the results JSON. Nothing is tracked in MLflow.
"""


def report_main(argv: list[str]) -> int:
    parser = base_parser(
        "python -m financemath_mlops.evaluation report", __doc__ or "", REPORT_EPILOG
    )
    parser.add_argument("--input", type=Path, required=True, help="labelled FinanceMath file")
    parser.add_argument(
        "--unlabelled", type=Path,
        help="FinanceMath file whose questions widen the int8 rule's churn (answers never read; "
        "default: test.json beside --input, if it is there)",
    )  # fmt: skip
    parser.add_argument("--card", type=Path, default=Path("docs/model-card.md"))
    parser.add_argument("--plot", type=Path, help="default: <card stem>-errors.png beside it")
    parser.add_argument("--results", type=Path, help="default: <card stem>.json beside it")
    parser.add_argument("--folds", type=int, default=5, choices=range(2, 21), metavar="2..20")
    parser.add_argument("--seeds", type=int, default=5, choices=range(1, 51), metavar="1..50")
    parser.add_argument("--inner-folds", type=int, default=3, choices=range(2, 11), metavar="2..10")
    parser.add_argument("--bootstrap", type=int, default=2000, choices=range(200, 100_001),
                        metavar="200..100000")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, choices=range(1, 65), metavar="1..64")
    args, settings = parse_stage_args(parser, argv)
    from financemath_mlops.errors import StageError
    from financemath_mlops.evaluation.card import precision_evidence, publish_card
    from financemath_mlops.evaluation.report import ReportOptions, build_report

    opts = ReportOptions(args.folds, args.seeds, args.inner_folds, args.bootstrap, args.jobs)
    unlabelled = args.unlabelled or args.input.with_name("test.json")
    if args.unlabelled is not None and not unlabelled.is_file():
        raise StageError(f"--unlabelled file not found: {unlabelled}")
    report = build_report(settings, args.input, opts, unlabelled)
    report["embedding_precision"] = precision_evidence(Path("benchmarks/results"))
    plot = args.plot or args.card.with_name(f"{args.card.stem}-errors.png")
    results = args.results or args.card.with_suffix(".json")
    publish_card(report, args.card, plot, results)
    print(f"card: {args.card}\nplot: {plot}\nresults: {results} ({report['seconds']} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    parser = base_parser("python -m financemath_mlops.evaluation", __doc__ or "", EPILOG)
    evaluation = setting_flags(parser, "evaluation")
    evaluation("--model-uri", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model")
    evaluation("--output", type=Path, help="metrics JSON (default data/processed/metrics.json)")
    setting_flags(parser, "mlflow")("--tracking-uri", help="MLflow tracking URI")
    setting_flags(parser, "training")(
        "--features", type=Path,
        help="evaluate the model training registered from this table (default: features "
        "output); not with --model-uri",
    )  # fmt: skip
    args, settings = parse_stage_args(parser, argv)
    from financemath_mlops import runs
    from financemath_mlops.evaluation.evaluate import evaluate, report_table

    runs.refuse_ignored_features(getattr(args, "training.features"), settings, "evaluation")
    # A dead tracking server: exit 2 in seconds, before the work.
    runs.check_reachable(settings.mlflow)

    runs.configure(settings.mlflow)
    ref = runs.resolve_challenger(settings)
    report = evaluate(ref, settings.metrics_output, uri=settings.evaluation.model_uri or ref.uri)
    print(report_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
