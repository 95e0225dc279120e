"""`python -m financemath_mlops.monitoring`: drift and performance reports (Evidently)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags

EPILOG = """\
examples:
  # live traffic of the last day vs the served model's training data
  python -m financemath_mlops.monitoring drift --current data/predictions --since 24h
  # the real test split vs the validation split, failing a CI gate on drift
  python -m financemath_mlops.monitoring drift --reference validation.json --current test.json \\
      --fail-on-drift
  # the served model on its own holdout rows, or on a newly labelled batch
  python -m financemath_mlops.monitoring performance
  python -m financemath_mlops.monitoring performance --data labelled.jsonl \\
      --model-uri models:/financemath-regressor@champion

  # every report so far (reports/index.jsonl), newest last
  python -m financemath_mlops.monitoring history --kind drift --limit 20

Reports go to reports/<UTC timestamp>/ (drift.html + drift.json, performance.html +
performance.json); their numbers to reports/latest.json (shown by the service's /metrics), to
the history reports/index.jsonl and to the MLflow experiment financemath-monitoring. Scheduled
runs, and retraining when they find evidence: python -m financemath_mlops.flows.monitoring.
Every report needs monitoring.min_rows rows (30) in each input (reference and current, or the
labelled rows): fewer are no evidence either way, so the command refuses them (exit 2) rather
than pass a gate. Exit codes: 0 done, 1 dataset drift with --fail-on-drift, 2 bad input
(fewer rows than the minimum included) or configuration.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-uri",
        help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model "
        "(default: the served model, serving.model_name @ serving.alias)",
    )
    parser.add_argument("--output", type=Path, help="report folder (default reports/<timestamp>/)")
    setting_flags(parser, "mlflow")("--tracking-uri", help="MLflow tracking URI")
    setting_flags(parser, "monitoring")(
        "--min-rows",
        type=int,
        help="refuse (exit 2) a report with fewer rows than this on any side "
        "(monitoring.min_rows, 30)",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the numbers to MLflow")
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="do not update reports/latest.json (what the service's /metrics shows)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("python -m financemath_mlops.monitoring", __doc__ or "", EPILOG)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{drift,performance,history}"
    )
    drift = commands.add_parser(
        "drift",
        help="data drift: current inputs vs the model's training data (or any reference)",
        description="Per-column drift of the table/metadata features and embedding components.",
    )
    drift.add_argument(
        "--reference",
        type=Path,
        help="feature Parquet or FinanceMath file (default: the model's training features)",
    )
    drift.add_argument(
        "--current",
        type=Path,
        help="feature Parquet, FinanceMath file or prediction log directory "
        "(default: paths.predictions_dir)",
    )
    drift.add_argument("--since", help="prediction log window start: ISO time or 24h, 7d, ...")
    drift.add_argument("--until", help="prediction log window end (exclusive)")
    drift.add_argument(
        "--drift-share", type=float, help="share of drifted columns that counts as drift (0.3)"
    )
    drift.add_argument("--components", type=int, help="embedding principal components (5)")
    drift.add_argument("--top", type=int, default=10, help="columns listed in the summary")
    drift.add_argument(
        "--fail-on-drift", action="store_true", help="exit 1 when the dataset drifted"
    )
    _common(drift)
    performance = commands.add_parser(
        "performance",
        help="model quality on labelled data vs the training-time metrics",
        description="Evidently's regression report plus our metrics, next to the run's.",
    )
    performance.add_argument(
        "--data", type=Path, help="labelled FinanceMath file (default: the run's holdout rows)"
    )
    _common(performance)
    history = commands.add_parser(
        "history",
        help="the reports so far (reports/index.jsonl), newest last",
        description="Headline numbers and folder of every drift and performance report.",
    )
    history.add_argument("--kind", choices=["drift", "performance"])
    history.add_argument("--limit", type=int, default=20, help="entries shown (20)")
    history.add_argument(
        "--index",
        type=Path,
        help="an index file to read instead of paths.reports_dir/index.jsonl "
        "(e.g. docs/examples/monitoring-history.jsonl)",
    )
    history.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="also draw drift and log-MAE over time (the entries shown) into this PNG",
    )
    return parser


def needs_store(args: argparse.Namespace) -> bool:
    """Logging the numbers, or reading the model's run (every report but drift with
    --reference and no --model-uri) needs the tracking store."""
    reads_model = args.command == "performance" or args.reference is None or args.model_uri
    return not args.no_mlflow or bool(reads_model)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_stage_args(build_parser(), argv)
    if args.command == "history":
        from financemath_mlops.monitoring import history

        if args.index is not None and not args.index.is_file():
            from financemath_mlops.monitoring.inputs import MonitoringError

            raise MonitoringError(
                f"--index {args.index}: no such file; the index of this checkout's reports is "
                f"{Path(settings.paths.reports_dir) / history.INDEX_FILE}, the example "
                f"{history.EXAMPLE_INDEX}"
            )
        if args.plot is not None and args.plot.suffix.lower() != ".png":
            from financemath_mlops.monitoring.inputs import MonitoringError

            raise MonitoringError(f"--plot {args.plot}: the picture is a PNG; end it in .png")
        limit = max(1, args.limit)
        entries = (
            history.read_index(args.index, args.kind, limit)
            if args.index is not None
            else history.read_history(settings.paths.reports_dir, args.kind, limit)
        )
        print(history.history_table(entries))
        if args.plot is not None:
            print(f"wrote {history.plot_history(entries, args.plot)}")
        return 0
    from financemath_mlops import runs
    from financemath_mlops.monitoring import jobs

    # What a report reads: its section, the store, the folders, the model in service
    where = {"store": settings.mlflow, "paths": settings.paths,
             "served_uri": runs.served_uri(settings.serving)}  # fmt: skip
    if needs_store(args):  # a dead tracking server: exit 2 in seconds, before the reports
        runs.check_reachable(
            settings.mlflow, "or pass --no-mlflow (with --reference) to report without it"
        )
    if args.command == "drift":
        from financemath_mlops.monitoring.inputs import MonitoringError, parse_time

        if args.drift_share is not None and not 0 < args.drift_share <= 1:
            raise MonitoringError(f"--drift-share must be in (0, 1], got {args.drift_share}")
        done = jobs.run_drift(
            settings.monitoring,
            jobs.DriftJob(
                reference=args.reference,
                current=args.current,
                since=parse_time(args.since),
                until=parse_time(args.until),
                output=args.output,
                model_uri=args.model_uri,
                drift_share=args.drift_share,
                components=args.components,
                mlflow=not args.no_mlflow,
                publish=not args.no_publish,
            ),
            features=settings.features,
            **where,
        )
        print(done.outcome.console(args.top))
        print(f"  reports: {done.files['html']}  {done.files['json']}")
        return 1 if args.fail_on_drift and done.outcome.dataset_drift else 0
    done = jobs.run_performance(
        settings.monitoring,
        jobs.PerformanceJob(
            model_uri=args.model_uri,
            data=args.data,
            output=args.output,
            mlflow=not args.no_mlflow,
            publish=not args.no_publish,
        ),
        **where,
    )
    print(done.outcome.console())
    print(f"  reports: {done.files['html']}  {done.files['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
