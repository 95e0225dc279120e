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
from typing import Any, NoReturn

from financemath_mlops import errors
from financemath_mlops.atomic import is_out_of_space, out_of_space
from financemath_mlops.config import ConfigError, Settings, load_settings
from financemath_mlops.names import closest


class StageParser(argparse.ArgumentParser):
    """argparse, plus the closest real flag for a mistyped one (`--traking-uri` -> closest:
    --tracking-uri): Python 3.11's argparse only says "unrecognized arguments". Exit 2 as ever."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            flags = [flag for action in self._actions for flag in action.option_strings]
            given = message.split(":", 1)[1].split()
            hints = [
                f"{token.split('=', 1)[0]} -> {match}"
                for token in given
                if token.startswith("--")
                and (match := closest(token.split("=", 1)[0], flags)) is not None
            ]
            if hints:
                message += f" (closest: {', '.join(hints)})"
        super().error(message)


def base_parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = StageParser(
        prog=prog,
        description=description,
        epilog=epilog,
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
    quiet = _FullDiskInOneLine()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    for name in FULL_DISK_LOGGERS:  # they log through handlers of their own
        logging.getLogger(name).addFilter(quiet)


# Loggers that log a caught full disk with its traceback before raising it (MLflow's SQL store:
# "database or disk is full"); the stage's own error line says it once, with the path.
FULL_DISK_LOGGERS = ("mlflow.store.db.utils",)


class _FullDiskInOneLine(logging.Filter):
    """A logged full disk keeps its line and loses its traceback: `error:` tells the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_out_of_space(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def setting_flags(parser: argparse.ArgumentParser, section: str) -> Callable[..., None]:
    """A function that adds flags overriding settings of `section`: the flag and the setting it
    feeds are declared together. `--cv-folds` feeds `<section>.cv_folds` unless `key=` names
    another (dotted for a subsection: `key="embedding.threads"`). Left out, a flag overrides
    nothing (the environment, the YAML or the default stands)."""

    def add(flag: str, *, key: str | None = None, **options: Any) -> None:
        name = flag.lstrip("-").replace("-", "_")
        if "action" not in options and "choices" not in options:
            options.setdefault("metavar", name.upper())
        parser.add_argument(flag, dest=f"{section}.{key or name}", default=None, **options)

    return add


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The nested overrides of every `setting_flags` flag that was given."""
    overrides: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if "." not in dest or value is None:
            continue
        *sections, key = dest.split(".")
        node = overrides
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return overrides


def parse_stage_args(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> tuple[argparse.Namespace, Settings]:
    """Parse the command line, configure logging, and load the settings (YAML, env, then the
    `setting_flags` flags), the same way for every stage."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return args, load_settings(args.config, flag_overrides(args), flag_names(parser))


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Dotted setting -> the `setting_flags` flag that feeds it, so a bad value's error names the
    flag the user typed (`--cv-folds`), not only the setting."""
    return {
        action.dest: action.option_strings[0]
        for action in parser._actions
        if "." in action.dest and action.option_strings
    }


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a stage's main; expected errors print one clear line and exit non-zero (no traceback).

    Exit 2: something the user gave must change (a setting, a flag, an input). Exit 1: the
    machine failed the command (:class:`errors.OutOfSpaceError`, or a full disk a stage did not
    name): free space and rerun it unchanged.
    """
    try:
        return main(argv)
    except (ConfigError, errors.StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except Exception as exc:
        if not is_out_of_space(exc):
            raise
        # a copy's error names source and destination: the destination is what filled up
        where = getattr(exc, "filename2", None) or getattr(exc, "filename", None)
        kept = "the stage's log above says what it kept"
        message = out_of_space(where, kept) if where else _unnamed_full_disk(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _unnamed_full_disk(exc: BaseException) -> str:
    """A full disk raised where no stage named the path (a library's write): say so plainly."""
    return (
        f"no space left on device ({exc}); the path was not reported: `df -h` shows which "
        "file system is full (the outputs, mlruns/ or the temp folder). Free space there and "
        "rerun the same command"
    )
