"""Where raw FinanceMath rows come from: the Hugging Face hub, a local file, or our generator.

Each source returns plain dicts (untrusted; validation happens later) plus provenance. Failures
that a user can fix raise :class:`SourceError` with the fix in the message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from financemath_mlops.config import IngestionSettings
from financemath_mlops.errors import StageError
from financemath_mlops.ingestion.jsonl import (
    ERROR,
    UNPARSEABLE,
    DocumentError,
    iter_jsonl,
    read_json_document,
)
from financemath_mlops.records import REQUIRED_COLUMNS

log = logging.getLogger(__name__)

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
WHOLE_FILE = sys.maxsize  # batch_rows that reads a file as one batch


class SourceError(StageError):
    """The source cannot be read; nothing is written."""


class SourceUnreachableError(SourceError):
    """The remote source could not be reached: worth retrying (the flow does, with back-off)."""


@dataclass(frozen=True)
class Provenance:
    source: str
    dataset_id: str | None = None
    split: str | None = None
    revision: str | None = None


def load_rows(
    cfg: IngestionSettings, hf_cache_dir: Path
) -> tuple[list[dict[str, Any]], Provenance]:
    """Read every raw row of the configured source (the hub's downloads under ``hf_cache_dir``)."""
    if cfg.source == "sample":
        from financemath_mlops.synthetic.sample import generate_sample

        log.info("generating %d synthetic rows (seed %d)", cfg.rows, cfg.seed)
        rows = generate_sample(rows=cfg.rows, seed=cfg.seed)
        return rows, Provenance("sample", "synthetic", f"seed-{cfg.seed}", None)
    if cfg.source == "local":
        if cfg.path is None:
            raise SourceError(
                "source 'local' needs a file: pass --path FILE (.json, .jsonl, .parquet)"
            )
        from financemath_mlops.ingestion.dvc_tracked import dvc_revision

        rows = read_local_file(cfg.path)  # revision: the DVC version when DVC tracks the file
        return rows, Provenance("local", str(cfg.path), None, dvc_revision(cfg.path))
    return read_hf_dataset(cfg, hf_cache_dir)


def read_local_file(path: Path) -> list[dict[str, Any]]:
    """A FinanceMath JSON array, JSONL or Parquet file, chosen by extension, read whole."""
    rows = [row for batch in read_local_batches(path, WHOLE_FILE) for row in batch]
    log.info("read %d rows from %s", len(rows), path)
    return rows


def read_local_batches(path: Path, batch_rows: int) -> Iterator[list[Any]]:
    """The one reader of local files: raw rows in batches of ``batch_rows``, in file order.

    JSONL and Parquet are streamed, so memory stays flat however large the file; a JSON array is
    one document and is read whole. The first batch must look like FinanceMath (all of it when
    the caller reads the file in one batch); a file with no rows, or one that cannot be read, is
    a :class:`SourceError` that names it.
    """
    path = Path(path)
    suffix = check_local_file(path)
    first = True
    try:
        for batch in _batches(path, suffix, batch_rows):
            if first:
                check_shape(batch, str(path))
                first = False
            yield batch
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    if first:
        raise SourceError(f"{path} holds no rows: nothing to read")


def check_local_file(path: Path) -> str:
    """The file's type (its lower-case suffix), or a SourceError saying what to pass instead."""
    if not path.exists():
        raise SourceError(
            f"input file not found: {path}; pass a FinanceMath .json, .jsonl or .parquet"
        )
    if not path.is_file():
        raise SourceError(f"input path is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise SourceError(
            f"unsupported file type {suffix!r} for {path}: use one of {LOCAL_SUFFIXES}"
        )
    return suffix


def _batches(path: Path, suffix: str, batch_rows: int) -> Iterator[list[Any]]:
    if suffix == ".json":
        rows = _read_json_array(path)
        for start in range(0, len(rows), batch_rows):
            yield rows[start : start + batch_rows]
        return
    stream = iter_jsonl(path) if suffix == ".jsonl" else _parquet_rows(path, batch_rows)
    while batch := list(islice(stream, batch_rows)):
        yield batch


def check_shape(rows: list[Any], where: str) -> None:
    """Refuse a file that is not FinanceMath-shaped at all, naming the missing columns."""
    objects = [row for row in rows if isinstance(row, dict) and UNPARSEABLE not in row]
    if rows and not objects:
        first = next((row for row in rows if isinstance(row, dict)), None)
        if first is not None:
            raise SourceError(f"{where} has no readable JSON row (first problem: {first[ERROR]})")
        raise SourceError(f"{where} is not FinanceMath-shaped: rows are not JSON objects")
    seen: set[str] = set()
    for row in objects:
        seen.update(row)
    missing = [column for column in REQUIRED_COLUMNS if column not in seen]
    if objects and missing:
        raise SourceError(
            f"{where} is not FinanceMath-shaped: missing columns {missing} "
            f"(found {sorted(seen)[:10]})"
        )


def _read_json_array(path: Path) -> list[Any]:
    try:
        data = read_json_document(path)
    except DocumentError as exc:
        raise SourceError(str(exc)) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise SourceError(f"{path} is not FinanceMath-shaped: expected a JSON array of records")
    return data


def _parquet_rows(path: Path, batch_rows: int) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:  # pyarrow raises several unrelated types for bad files
        for batch in pq.ParquetFile(path).iter_batches(batch_size=min(batch_rows, 65_536)):
            yield from batch.to_pylist()
    except Exception as exc:
        raise SourceError(f"{path} is not a readable Parquet file: {exc}") from None


def read_hf_dataset(
    cfg: IngestionSettings, hf_cache_dir: Path
) -> tuple[list[dict[str, Any]], Provenance]:
    """Download (or reuse from ./.cache/hf) the dataset snapshot, then load the split from it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub_cache = hf_cache_dir / "hub"
    token = cfg.hf_token.get_secret_value() if cfg.hf_token else None
    log.info(
        "resolving %s (split %s, revision %s) via the hub cache %s",
        cfg.dataset_id,
        cfg.split,
        cfg.revision or "main",
        hub_cache,
    )
    try:
        local_dir = Path(
            snapshot_download(
                cfg.dataset_id,
                repo_type="dataset",
                revision=cfg.revision,
                cache_dir=hub_cache,
                token=token,
                etag_timeout=10,
            )
        )
    except GatedRepoError:
        raise SourceError(
            f"{cfg.dataset_id} is gated and this account has no access: accept its terms on "
            f"https://huggingface.co/datasets/{cfg.dataset_id}, then set HF_TOKEN (or "
            "FMOPS_INGESTION__HF_TOKEN) or run `hf auth login`"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"revision {cfg.revision!r} not found in {cfg.dataset_id}") from None
    except RepositoryNotFoundError:
        raise SourceError(
            f"dataset {cfg.dataset_id} not found or not accessible with the current token; for a "
            "gated dataset set HF_TOKEN or run `hf auth login`"
        ) from None
    except LocalEntryNotFoundError:
        raise SourceUnreachableError(
            f"the Hugging Face hub is unreachable and {cfg.dataset_id} is not cached under "
            f"{hub_cache}; use --source sample (offline synthetic data) or --source local --path FILE"
        ) from None
    revision = local_dir.name if local_dir.parent.name == "snapshots" else cfg.revision
    rows = load_split(local_dir, cfg.split, hf_cache_dir / "datasets")
    check_shape(rows, f"{cfg.dataset_id} split {cfg.split}")
    log.info(
        "loaded %d rows of %s/%s at revision %s", len(rows), cfg.dataset_id, cfg.split, revision
    )
    return rows, Provenance("hf", cfg.dataset_id, cfg.split, revision)


def load_split(snapshot: Path, split: str, datasets_cache: Path) -> list[dict[str, Any]]:
    """Load one split from a dataset snapshot with `datasets` (JSON-by-split or Parquet layout)."""
    import datasets

    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset(str(snapshot), split=split, cache_dir=str(datasets_cache))
    except ValueError as exc:  # unknown split: datasets lists the ones it found
        raise SourceError(f"split {split!r} not found in {snapshot}: {exc}") from None
    except FileNotFoundError as exc:
        raise SourceError(f"no data files for split {split!r} in {snapshot}: {exc}") from None
    return dataset.to_list()
