"""Batch prediction: a FinanceMath file in, one prediction per valid record out.

The input (JSON array, JSONL or Parquet) goes through ingestion's own reader and validator, batch by
batch, in its ``predict`` mode (only the fields a prediction reads are checked: a missing or odd
``ground_truth`` never rejects a row): a bad row goes to ``<output stem>.rejects.jsonl`` with
ingestion's reason, never silently dropped, and a duplicate id is rejected whichever batch it lands
in. An input with no valid row is an error (exit 2) that leaves the previous output and rejects
as they were. The model is the MLflow pyfunc
training registered, by URI (``predict.model_uri``, default the served model), pinned to one
version before any work starts. Rows are predicted in batches of ``predict.batch_rows`` and written
as they come, so memory stays flat however large the file (a JSON array is one document and is read
whole).

Executors (``predict.executor``, see :mod:`financemath_mlops.executors`): ``local`` predicts in
this process; ``dask`` sends the batches to a Dask cluster where each worker loads the pyfunc once.
Both call :func:`predict_rows`, so they give the same predictions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from financemath_mlops import runs
from financemath_mlops.atomic import atomic_path, atomic_writer, dump_jsonl
from financemath_mlops.config import MLflowSettings, PredictSettings, Settings
from financemath_mlops.errors import StageError
from financemath_mlops.executors import Partition, WorkerCached, map_in_order, model_loads
from financemath_mlops.ingestion.sources import check_local_file, read_local_batches
from financemath_mlops.ingestion.validate import (
    RowValidator,
    reason_counts,
    reasons_in_brief,
    rejects_path_for,
    write_rejects,
)
from financemath_mlops.model.postprocess import finish_predictions
from financemath_mlops.records import SCORED_COLUMNS

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".parquet", ".jsonl")


class PredictError(StageError):
    """Batch prediction cannot run; nothing is written."""


@dataclass
class BatchSummary:
    input: Path
    output: Path
    rejects_path: Path
    model_uri: str
    model_name: str
    model_version: str
    executor: str
    read: int = 0
    predicted: int = 0
    rejected: int = 0
    with_warnings: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return "\n".join(
            [
                f"predict: read {self.read} = predicted {self.predicted} + rejected "
                f"{self.rejected} in {self.seconds:.1f}s ({self.executor})",
                f"  model:    {self.model_name} version {self.model_version} ({self.model_uri})",
                f"  output:   {self.output}"
                + (f" ({self.with_warnings} rows with warnings)" if self.with_warnings else ""),
                f"  rejects:  {self.rejects_path}",
            ]
        )


def default_model_uri(settings: Settings) -> str:
    """predict.model_uri, else the served model: what the CLI hands :func:`predict_file`."""
    return settings.predict.model_uri or runs.served_uri(settings.serving)


def output_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("question_id", pa.string()),
            pa.field("prediction", pa.float64()),
            pa.field("model_name", pa.string()),
            pa.field("model_version", pa.string()),
            pa.field("warnings", pa.list_(pa.string())),
        ]
    )


def load_batch_model(store: MLflowSettings, uri: str, threads: int | None) -> runs.RecordModel:
    runs.configure(store)
    return runs.load_model(uri, threads)


def predict_rows(
    records: list[dict[str, Any]], model: runs.RecordModel, *, name: str, version: str
) -> pa.Table:
    """Predictions for validated records, as output rows (the task of both executors)."""
    values, warnings = model.predict(records) if records else ([], [])
    topics = [r["topic"] for r in records]
    predictions, notes = finish_predictions(values, topics, warnings)
    return pa.table(
        {
            "question_id": [r["question_id"] for r in records],
            "prediction": predictions,
            "model_name": [name] * len(records),
            "model_version": [version] * len(records),
            "warnings": notes,
        },
        schema=output_schema(),
    )


def predict_file(
    cfg: PredictSettings,
    store: MLflowSettings,
    input_path: Path,
    output_path: Path,
    model_uri: str,
) -> BatchSummary:
    """Predict every valid record of ``input_path`` into ``output_path`` with ``model_uri`` (in
    the tracking store ``store`` names; see the module doc). The caller picks the model: the CLI
    passes :func:`default_model_uri`."""
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise PredictError(
            f"output {output_path} must end in {' or '.join(OUTPUT_SUFFIXES)} (Parquet or JSONL)"
        )
    check_local_file(input_path)  # before the model loads: ingestion's messages
    started = time.perf_counter()
    uri = model_uri
    runs.configure(store)
    ref = runs.resolve(uri)  # pin the version: an alias moving mid-run changes nothing
    summary = BatchSummary(
        input=input_path,
        output=output_path,
        rejects_path=rejects_path_for(output_path),
        model_uri=ref.uri,
        model_name=ref.name or uri,
        model_version=ref.version or (ref.run_id or "unknown"),
        executor=cfg.executor,
    )
    log.info(
        "predicting %s with %s version %s (%s) on the %s executor",
        input_path,
        summary.model_name,
        summary.model_version,
        uri,
        summary.executor,
    )
    if cfg.executor == "dask":
        threads = cfg.threads or 1
        build = functools.partial(load_batch_model, store, summary.model_uri, threads)
        key = f"pyfunc-{store.tracking_uri}-{summary.model_uri}-{threads}"
        model: Any = WorkerCached(key, build)
    else:
        model = load_batch_model(store, summary.model_uri, cfg.threads)
    task = functools.partial(predict_rows, name=summary.model_name, version=summary.model_version)
    done: list[Partition] = []
    reasons: Counter[str] = Counter()
    with (
        _OutputWriter(output_path) as writer,
        atomic_writer(summary.rejects_path) as rejects_out,
    ):
        batches = _validated(input_path, cfg.batch_rows, summary, rejects_out, reasons)
        with contextlib.closing(map_in_order(cfg, task, batches, model)) as results:
            for result in results:
                table, result.value = result.value, None
                writer.write(table)
                done.append(result)
                summary.predicted += table.num_rows
                summary.with_warnings += sum(1 for w in table.column("warnings").to_pylist() if w)
                log.info(
                    "partition %d: %d rows on %s in %.1fs%s (%d rows written)",
                    result.index,
                    table.num_rows,
                    result.worker,
                    result.seconds,
                    " (model loaded)" if result.built else "",
                    summary.predicted,
                )
        if not summary.predicted:  # raised inside the writers: neither file is replaced
            raise PredictError(
                f"no valid row in {input_path}: all {summary.read} rows rejected "
                f"({reasons_in_brief(reasons)}); nothing written, {output_path} and "
                f"{summary.rejects_path.name} are unchanged"
            )
    summary.extra["model_loads"] = model_loads(done)
    summary.seconds = time.perf_counter() - started
    log.info("wrote %d predictions and %d rejects", summary.predicted, summary.rejected)
    return summary


def _validated(
    path: Path,
    batch_rows: int,
    summary: BatchSummary,
    rejects_out: Any,
    reasons: Counter[str],
) -> Iterator[list[dict[str, Any]]]:
    """Batches of valid records (SCORED_COLUMNS only); rejects written as read, reasons counted."""
    validator = RowValidator({"source": "predict", "dataset_id": str(path)}, mode="predict")
    for rows in read_local_batches(path, batch_rows):
        result = validator.validate(rows)
        summary.read += result.read
        summary.rejected += write_rejects(rejects_out, result.rejects)
        reasons.update(reason_counts(result.rejects))
        if result.records:
            yield [{name: getattr(r, name) for name in SCORED_COLUMNS} for r in result.records]


class _OutputWriter:
    """Parquet or JSONL by extension, written atomically as batches arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = path.suffix.lower()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _OutputWriter:
        if self.kind == ".parquet":
            tmp = self._stack.enter_context(atomic_path(self.path, suffix=".parquet"))
            self._parquet = self._stack.enter_context(pq.ParquetWriter(tmp, output_schema()))
        else:
            self._jsonl = self._stack.enter_context(atomic_writer(self.path))
        return self

    def write(self, table: pa.Table) -> None:
        if self.kind == ".parquet":
            self._parquet.write_table(table)
            return
        dump_jsonl(self._jsonl, table.to_pylist())

    def __exit__(self, *exc: Any) -> bool | None:
        return self._stack.__exit__(*exc)
