"""`python -m financemath_mlops.predict`: predict every record of a FinanceMath file in batches."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags
from financemath_mlops.executors import check_executor_flags

EPILOG = """\
examples:
  python -m financemath_mlops.predict --input validation.json --output predictions.parquet
  python -m financemath_mlops.predict --input test.jsonl --output predictions.jsonl \\
      --model-uri models:/financemath-regressor/3
  python -m financemath_mlops.predict --input big.parquet --output predictions.parquet \\
      --executor dask --dask-address local-cluster --workers 2

The input is a FinanceMath JSON array, JSONL or Parquet file; only what a prediction reads
(question_id, question, tables, topic) is checked, and invalid rows go to
<output stem>.rejects.jsonl with their reasons. An input with no valid row exits 2 and leaves an
earlier output and rejects file as they were. --dask-address and --workers apply to the dask
executor only (--workers to its local-cluster only): elsewhere they are refused, not ignored.
The output (Parquet or JSONL, by extension) has question_id, prediction, model_name,
model_version and warnings per record. The model defaults to predict.model_uri, else the served
model (serving.model_uri or models:/<serving.model_name>@<serving.alias>) in the configured
MLflow store. Settings: the `predict` section.
The store: --tracking-uri, else FMOPS_MLFLOW__TRACKING_URI, else MLFLOW_TRACKING_URI, else
mlflow.tracking_uri in the YAML.
Environment: FMOPS_MLFLOW__TRACKING_URI, FMOPS_PREDICT__EXECUTOR, FMOPS_PREDICT__BATCH_ROWS, ...
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.predict", __doc__ or "", EPILOG)
    parser.add_argument(
        "--input", type=Path, required=True, help="FinanceMath .json/.jsonl/.parquet"
    )
    parser.add_argument("--output", type=Path, required=True, help="predictions .parquet or .jsonl")
    predict = setting_flags(parser, "predict")
    predict("--model-uri", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")
    predict("--executor", choices=["local", "dask"])
    predict("--dask-address", help="'local-cluster' or tcp://scheduler:8786")
    predict("--workers", key="dask_workers", type=int, help="worker processes for local-cluster")
    predict("--batch-rows", type=int, help="rows per batch / Dask partition")
    predict("--threads", type=int, help="embedding threads (default: all cores; 1 per Dask worker)")
    setting_flags(parser, "mlflow")("--tracking-uri", help="MLflow tracking URI")
    args, settings = parse_stage_args(parser, argv)
    check_executor_flags(settings.predict, vars(args), "predict")
    from financemath_mlops import runs
    from financemath_mlops.predict.batch import default_model_uri, predict_file

    model_uri = default_model_uri(settings)
    if runs.is_tracked_uri(model_uri):  # a model folder needs no store
        runs.check_reachable(settings.mlflow)

    summary = predict_file(settings.predict, settings.mlflow, args.input, args.output, model_uri)
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
