"""`python -m financemath_mlops.predict`: predict every record of a FinanceMath file in batches."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, run_main, settings_from_args, setup_logging

EPILOG = """\
examples:
  python -m financemath_mlops.predict --input validation.json --output predictions.parquet
  python -m financemath_mlops.predict --input test.jsonl --output predictions.jsonl \\
      --model-uri models:/financemath-regressor/3
  python -m financemath_mlops.predict --input big.parquet --output predictions.parquet \\
      --executor dask --dask-address local-cluster --workers 2

The input is a FinanceMath JSON array, JSONL or Parquet file; invalid rows go to
<output stem>.rejects.jsonl with their reasons. The output (Parquet or JSONL, by extension) has
question_id, prediction, model_name, model_version and warnings per record. The model defaults to
models:/<serving.model_name>@<serving.alias> in the configured MLflow store.
Environment: FMOPS_MLFLOW__TRACKING_URI, FMOPS_FEATURES__EXECUTOR, ...
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.predict", __doc__ or "")
    parser.epilog = EPILOG
    parser.add_argument(
        "--input", type=Path, required=True, help="FinanceMath .json/.jsonl/.parquet"
    )
    parser.add_argument("--output", type=Path, required=True, help="predictions .parquet or .jsonl")
    parser.add_argument(
        "--model-uri", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model"
    )
    parser.add_argument("--executor", choices=["local", "dask"])
    parser.add_argument("--dask-address", help="'local-cluster' or tcp://scheduler:8786")
    parser.add_argument("--workers", type=int, help="worker processes for local-cluster")
    parser.add_argument("--batch-rows", type=int, help="rows per batch / Dask partition")
    parser.add_argument(
        "--threads", type=int, help="embedding threads (default: all cores; 1 per Dask worker)"
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_from_args(
        args,
        {
            "features": {
                "executor": args.executor,
                "dask_address": args.dask_address,
                "dask_workers": args.workers,
                "partition_rows": args.batch_rows,
                "embedding": {"threads": args.threads},
            }
        },
    )
    from financemath_mlops.predict.batch import predict_file

    print(predict_file(settings, args.input, args.output, args.model_uri).table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
