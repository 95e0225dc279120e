"""`python -m financemath_mlops.flows`: run the whole pipeline as a Prefect flow (the main job).

Without PREFECT_API_URL, Prefect starts a temporary local server for the run (10-15 s on a 2-core
machine, about 24 s the first time). Point PREFECT_API_URL at a running `prefect server start`
to skip that and to see runs in its UI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from financemath_mlops.cli import base_parser, run_main, setup_logging
from financemath_mlops.errors import StageError

EPILOG = """\
examples:
  python -m financemath_mlops.flows                                  # offline synthetic sample
  python -m financemath_mlops.flows --source local --path validation.json
  python -m financemath_mlops.flows --source hf --split validation   # yale-nlp/FinanceMath
  python -m financemath_mlops.flows --tracking-uri http://127.0.0.1:5000   # another store
  python -m financemath_mlops.flows deploy                           # scheduled retraining
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.flows", __doc__ or "")
    parser.epilog = EPILOG
    parser.add_argument("command", nargs="?", default="run", choices=["run", "deploy"])
    parser.add_argument("--source", choices=["hf", "local", "sample"])
    parser.add_argument("--split")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--path", type=Path)
    parser.add_argument("--model-name")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: mlflow.tracking_uri)")
    parser.add_argument("--executor", choices=["local", "dask"])
    parser.add_argument("--cron", help="deploy: schedule (default: nightly 02:00)")
    parser.add_argument("--work-pool", default="financemath-pool", help="deploy: process pool")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    from financemath_mlops.config import load_settings
    from financemath_mlops.flows.environment import prepare_prefect_env
    from financemath_mlops.ingestion.source_flags import check_source_flags

    # Validate parameters before Prefect spends 10+ s starting a server. As in ingestion:
    # `--path` alone means a local file, and a flag the source would ignore is refused.
    source = args.source or ("local" if args.path is not None else None)
    overrides = {
        "ingestion": {"source": source, "split": args.split, "rows": args.rows,
                      "path": args.path},
        "mlflow": {"model_name": args.model_name, "tracking_uri": args.tracking_uri},
        "features": {"executor": args.executor},
    }  # fmt: skip
    flags = {"ingestion.source": "--source", "ingestion.split": "--split",
             "ingestion.rows": "--rows", "ingestion.path": "--path",
             "mlflow.model_name": "--model-name", "mlflow.tracking_uri": "--tracking-uri",
             "features.executor": "--executor"}  # fmt: skip
    settings = load_settings(args.config, overrides, flags)
    given = {flag: value for flag, value in
             (("--path", args.path), ("--rows", args.rows), ("--split", args.split))
             if value is not None}  # fmt: skip
    how = "--source" if args.source else "--path" if args.path is not None else "the settings"
    check_source_flags(settings.ingestion.source, given, how)
    if args.command == "run":  # a dead tracking server: exit 2 before Prefect starts
        from financemath_mlops import runs
        from financemath_mlops.training.lightgbm_params import check_lightgbm_params

        runs.check_reachable(settings.mlflow)
        # A typo in training.lightgbm: exit 2 now, not after ingestion and minutes of embedding.
        check_lightgbm_params(settings.training.lightgbm, settings.training.seed)
    prepare_prefect_env(settings.paths.cache_dir)
    params = {
        "source": source,
        "split": args.split,
        "rows": args.rows,
        "path": str(args.path) if args.path else None,
        "model_name": args.model_name,
        "tracking_uri": args.tracking_uri,
        "executor": args.executor,
        "config": str(args.config) if args.config else None,
    }
    if args.command == "deploy":
        from financemath_mlops.flows.deployment import deploy

        print(deploy(params, cron=args.cron, work_pool=args.work_pool))
        return 0
    from financemath_mlops.flows.environment import (
        prepare_embedding_bundle,
        start_temporary_server,
    )
    from financemath_mlops.flows.pipeline import financemath_pipeline

    started = time.perf_counter()
    try:
        # Prefect's temporary server takes 10-15 s to start: the embedding bundle meanwhile.
        server = start_temporary_server()
        prepare_embedding_bundle(settings)  # never raises: a failure is the features task's
        if server is not None:
            server.wait()
        summary = financemath_pipeline(**params)
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        raise StageError(
            "Prefect's temporary server did not start (PREFECT_HOME="
            f"{os.environ.get('PREFECT_HOME')}). Start one yourself and point the run at it: "
            "`prefect server start --host 127.0.0.1 &` then "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`. Prefect said: "
            f"{str(exc)[:500]}"
        ) from None
    print(summary_text(summary, time.perf_counter() - started))
    return 0


def summary_text(summary: dict, seconds: float) -> str:
    t = summary["training"]
    h = summary["holdout"]
    served = summary["served"]
    db = t["tracking_uri"]
    return "\n".join(
        [
            f"pipeline finished in {seconds:.0f}s",
            f"  ingested:  {summary['ingestion']['written']} rows -> "
            f"{summary['ingestion']['output']} ({summary['ingestion']['rejected']} rejected)",
            f"  features:  {summary['features']['rows']} rows -> {summary['features']['output']}",
            f"  MLflow:    run {t['run_id']}, model {t['model_uri']} ({db})",
            f"             browse: mlflow ui --backend-store-uri {db}",
            f"  holdout:   n={h['n']} log-MAE {h['log_mae']:.3f} MAE {h['mae']:.4g} "
            f"accuracy {h['accuracy']:.1%}",
            f"  metrics:   {summary['metrics_file']}",
            f"  promotion: {summary['promotion']['reason']}",
            f"  exported:  {served['folder']} <- {served['note']}",
            f"  serve it:  {python_command()} -m financemath_mlops.serving "
            f"--model-uri {served['folder']}",
        ]
    )


def python_command() -> str:
    """How the user calls this interpreter: `.venv/bin/python` when it is the project's venv."""
    executable = Path(sys.executable)
    try:
        relative = executable.relative_to(Path.cwd())
    except ValueError:
        return "python"
    return str(relative)


if __name__ == "__main__":
    sys.exit(run_main(main))
