"""`python -m financemath_mlops.ingestion`: FinanceMath rows -> validated JSONL + rejects."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from financemath_mlops.cli import base_parser, parse_stage_args, run_main, setting_flags
from financemath_mlops.ingestion.source_flags import SOURCE_FLAGS, check_source_flags

EPILOG = """\
examples:
  python -m financemath_mlops.ingestion --source sample --rows 1000      # offline synthetic data
  python -m financemath_mlops.ingestion --path validation.json           # same as --source local
  python -m financemath_mlops.ingestion --source hf --split validation   # yale-nlp/FinanceMath

Each source takes its own flags: --path (local), --rows and --seed (sample), --split and
--revision (hf); a flag of another source is refused (exit 2), never ignored. --path without
--source means --source local. A local file is read whole (to ingest fewer rows, cut the file).
Every input row ends up in the output or in <output>.rejects.jsonl with its reason; an input with
no valid row exits 2 and leaves the previous output, rejects and manifest as they were.
Environment: FMOPS_INGESTION__SOURCE, FMOPS_INGESTION__PATH, ... ; HF_TOKEN for the gated dataset.
"""


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("python -m financemath_mlops.ingestion", __doc__ or "", EPILOG)
    ingestion = setting_flags(parser, "ingestion")
    ingestion("--source", choices=["hf", "local", "sample"], help="where rows come from")
    ingestion("--split", help="dataset split for --source hf (default: validation)")
    ingestion("--revision", help="dataset revision (branch, tag or commit) for --source hf")
    ingestion(
        "--path", type=Path, help="input file (.json/.jsonl/.parquet); alone, means --source local"
    )
    ingestion("--rows", type=int, help="rows to generate for --source sample")
    ingestion("--seed", type=int, help="seed for --source sample")
    ingestion("--output", type=Path, help="output JSONL (default data/interim/financemath.jsonl)")
    first = parser.parse_args(argv)
    given = given_source_flags(first)
    how = "--source" if getattr(first, "ingestion.source") else "the settings"
    if "--path" in given and how == "the settings":
        argv, how = [*(sys.argv[1:] if argv is None else argv), "--source", "local"], "--path"
    _, settings = parse_stage_args(parser, argv)
    check_source_flags(settings.ingestion.source, given, how)
    from financemath_mlops.ingestion import ingest

    summary = ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)
    print(summary.table())
    return 0


def given_source_flags(args: argparse.Namespace) -> dict[str, object]:
    """The source-specific flags on the command line, with their values."""
    flags = {flag for flags in SOURCE_FLAGS.values() for flag in flags}
    return {
        flag: value
        for flag in sorted(flags)
        if (value := getattr(args, f"ingestion.{flag.lstrip('-')}")) is not None
    }


if __name__ == "__main__":
    sys.exit(run_main(main))
