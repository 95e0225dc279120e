"""Shared command-line plumbing: --config, logging, and turning errors into clear exits.

Every `python -m financemath_mlops.<stage>` uses these, so flags and messages look the same
everywhere. Logging is configured here (at run time), never at import.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from financemath_mlops import errors
from financemath_mlops.config import ConfigError, Settings, load_settings


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="YAML config (default: $FMOPS_CONFIG or configs/default.yaml)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("FMOPS_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (default: INFO or $FMOPS_LOG_LEVEL)",
    )
    return parser


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # Third-party chatter that drowns the story at INFO.
    for noisy in ("httpx", "urllib3", "alembic", "filelock", "fsspec", "datasets", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def settings_from_args(args: argparse.Namespace, overrides: dict[str, Any]) -> Settings:
    return load_settings(args.config, overrides)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a stage's main; expected errors print one clear line and exit non-zero (no traceback)."""
    try:
        return main(argv)
    except (ConfigError, errors.StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
