"""`python -m financemath_mlops.ingestion`: FinanceMath rows -> validated JSONL + rejects."""

from __future__ import annotations

import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags

EPILOG = """\
examples:
  python -m financemath_mlops.ingestion --source sample --rows 1000      # offline synthetic data
  python -m financemath_mlops.ingestion --source local --path validation.json
  python -m financemath_mlops.ingestion --source hf --split validation   # yale-nlp/FinanceMath

Every input row ends up in the output or in <output>.rejects.jsonl with its reason.
Environment: FMOPS_INGESTION__SOURCE, FMOPS_INGESTION__PATH, ... ; HF_TOKEN for the gated dataset.
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.ingestion", __doc__ or "", EPILOG)
    ingestion = setting_flags(parser, "ingestion")
    ingestion("--source", choices=["hf", "local", "sample"], help="where rows come from")
    ingestion("--split", help="dataset split for --source hf (default: validation)")
    ingestion("--revision", help="dataset revision (branch, tag or commit) for hf")
    ingestion("--path", type=Path, help="input file for --source local (.json/.jsonl/.parquet)")
    ingestion("--rows", type=int, help="rows to generate for --source sample")
    ingestion("--seed", type=int, help="seed for --source sample")
    ingestion("--output", type=Path, help="output JSONL (default data/interim/financemath.jsonl)")
    _, settings = parse_stage_args(parser, argv)
    from financemath_mlops.ingestion import ingest

    summary = ingest(settings)
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
