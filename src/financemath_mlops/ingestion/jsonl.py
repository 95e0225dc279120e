"""The one reader of untrusted JSON input files (ingestion and batch prediction share it).

A bad line never stops a JSONL file: it becomes a marker row that validation rejects with the
reason (not UTF-8, not JSON, nested too deeply, too long). A UTF-8 byte-order mark is accepted.
Lines are read in bounded pieces, so one huge line costs at most ``MAX_LINE_BYTES`` of memory.
A JSON array is one document: a problem in it is a file-level error for the caller to raise.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64  # FinanceMath rows are 3 levels deep; more is an attack or a mistake
UNPARSEABLE = "__unparseable_line__"
ERROR = "__error__"
_KEEP_CHARS = 1000  # how much of a bad line the reject keeps


class DocumentError(ValueError):
    """A whole JSON document cannot be read; the message says why."""


def keep_constant(name: str) -> float:
    # NaN / Infinity in a JSON file: keep the value so validation can reject the row with a reason.
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def unparseable(raw: bytes, reason: str) -> dict[str, str]:
    """The marker row for a line that is not a JSON value (validation rejects it with ``reason``)."""
    text = raw[: _KEEP_CHARS * 4].decode("utf-8", "backslashreplace").rstrip("\r\n")
    return {UNPARSEABLE: text[:_KEEP_CHARS], ERROR: reason}


def parse_line(raw: bytes) -> Any:
    """One JSONL line (bytes, without its BOM) -> its value, or the marker row with the reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return unparseable(raw, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        return json.loads(text, parse_constant=keep_constant)
    except json.JSONDecodeError as exc:
        return unparseable(raw, f"not valid JSON: {exc}")
    except RecursionError:
        return unparseable(raw, f"nested deeper than {MAX_DEPTH} levels")


def iter_jsonl(path: Path) -> Iterator[Any]:
    """Every non-blank line of a JSONL file as a value or a marker row; OSError propagates."""
    with Path(path).open("rb") as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the line in bounded pieces
                log.warning("line %d of %s is longer than %d bytes", number, path, MAX_LINE_BYTES)
                yield unparseable(raw, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            if not raw.strip():
                continue
            value = parse_line(raw)
            if isinstance(value, dict) and UNPARSEABLE in value:
                log.warning("line %d of %s: %s", number, path, value[ERROR])
            yield value


def read_json_document(path: Path) -> Any:
    """A whole JSON file (BOM accepted); raises DocumentError with the reason, OSError as is."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        return json.loads(text, parse_constant=keep_constant)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise DocumentError(f"{path} is nested too deeply to be a FinanceMath file") from None
