"""`python -m financemath_mlops.ingestion`: FinanceMath rows -> validated JSONL + rejects."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, run_main, settings_from_args, setup_logging

EPILOG = """\
examples:
  python -m financemath_mlops.ingestion --source sample --rows 1000      # offline synthetic data
  python -m financemath_mlops.ingestion --source local --path validation.json
  python -m financemath_mlops.ingestion --source hf --split validation   # yale-nlp/FinanceMath

Every input row ends up in the output or in <output>.rejects.jsonl with its reason.
Environment: FMOPS_INGESTION__SOURCE, FMOPS_INGESTION__PATH, ... ; HF_TOKEN for the gated dataset.
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.ingestion", __doc__ or "")
    parser.epilog = EPILOG
    parser.add_argument("--source", choices=["hf", "local", "sample"], help="where rows come from")
    parser.add_argument("--split", help="dataset split for --source hf (default: validation)")
    parser.add_argument("--revision", help="dataset revision (branch, tag or commit) for hf")
    parser.add_argument(
        "--path", type=Path, help="input file for --source local (.json/.jsonl/.parquet)"
    )
    parser.add_argument("--rows", type=int, help="rows to generate for --source sample")
    parser.add_argument("--seed", type=int, help="seed for --source sample")
    parser.add_argument(
        "--output", type=Path, help="output JSONL (default data/interim/financemath.jsonl)"
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = settings_from_args(
        args,
        {
            "ingestion": {
                "source": args.source,
                "split": args.split,
                "revision": args.revision,
                "path": args.path,
                "rows": args.rows,
                "seed": args.seed,
                "output": args.output,
            }
        },
    )
    from financemath_mlops.ingestion import ingest

    summary = ingest(settings)
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
