"""Batch prediction: a FinanceMath file in, one prediction per valid record out.

The input (JSON array, JSONL or Parquet) is validated by ingestion's own rules; a bad row goes to
``<output stem>.rejects.jsonl`` with its reason, never silently dropped. The model is the MLflow
pyfunc training registered, by URI (default ``models:/<serving.model_name>@<serving.alias>``),
pinned to one version before any work starts. Rows are predicted in batches of
``features.partition_rows`` and written as they come, so memory stays flat however large the file:
JSONL and Parquet inputs are streamed (a JSON array is one document and is read whole).

Executors (``features.executor``): ``local`` predicts in this process; ``dask`` sends the batches
to a Dask cluster (see :mod:`financemath_mlops.features.distributed`) where each worker loads the
pyfunc once. Both call :func:`predict_rows`, so they give the same predictions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from financemath_mlops import runs
from financemath_mlops.atomic import atomic_path, atomic_writer
from financemath_mlops.config import Settings
from financemath_mlops.errors import StageError
from financemath_mlops.features.rows import TOPICS, RecordInput
from financemath_mlops.ingestion.sources import LOCAL_SUFFIXES

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".parquet", ".jsonl")
STREAMED_SUFFIXES = (".jsonl", ".parquet")


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
    serving = settings.serving
    return serving.model_uri or f"models:/{serving.model_name}@{serving.alias}"


def rejects_path_for(output: Path) -> Path:
    """`predictions.parquet` -> `predictions.rejects.jsonl`, beside it."""
    return output.with_name(f"{output.stem}.rejects.jsonl")


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


# --- reading and validating the input --------------------------------------------------------


def read_input_batches(path: Path, batch_rows: int) -> Iterator[list[Any]]:
    """Raw rows in batches: JSONL and Parquet streamed, a JSON array read whole.

    Missing files, unsupported types and JSON arrays go through ingestion's
    :func:`read_local_file`, so the error messages are the same as ingestion's.
    """
    from financemath_mlops.ingestion.sources import check_shape, read_local_file

    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in STREAMED_SUFFIXES:
        rows = read_local_file(path)
        for start in range(0, len(rows), batch_rows):
            yield rows[start : start + batch_rows]
        return
    from financemath_mlops.ingestion.sources import SourceError

    reader = _jsonl_batches if path.suffix.lower() == ".jsonl" else _parquet_batches
    first = True
    try:
        for batch in reader(path, batch_rows):
            if first:
                check_shape(batch, str(path))
                first = False
            yield batch
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    if first:
        raise SourceError(f"{path} holds no rows: nothing to predict")


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[list[Any]]:
    """Ingestion's reader: a bad line becomes a marker row that validation rejects."""
    from financemath_mlops.ingestion.jsonl import iter_jsonl

    batch: list[Any] = []
    for row in iter_jsonl(path):
        batch.append(row)
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[list[Any]]:
    from financemath_mlops.ingestion.sources import SourceError

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise SourceError(f"{path} is not a readable Parquet file: {exc}") from None
    for batch in parquet.iter_batches(batch_size=batch_rows):
        yield batch.to_pylist()


@dataclass
class _Validator:
    """ingestion's validate_rows over a stream: global row numbers, duplicates across batches."""

    source: Path
    offset: int = 0
    first_seen: dict[str, int] = field(default_factory=dict)

    def __call__(self, rows: list[Any]) -> tuple[list[dict[str, Any]], list[Any]]:
        from financemath_mlops.ingestion.validate import Reject, validate_rows

        result = validate_rows(rows, meta={"source": "predict", "dataset_id": str(self.source)})
        rejected = {reject.row for reject in result.rejects}
        for reject in result.rejects:
            reject.row += self.offset
        kept_rows = [i for i in range(len(rows)) if i not in rejected]
        records: list[dict[str, Any]] = []
        rejects = list(result.rejects)
        for index, record in zip(kept_rows, result.records, strict=True):
            number = index + self.offset
            first = self.first_seen.setdefault(record.question_id, number)
            if first != number:
                reason = f"duplicate question_id (first seen at row {first})"
                rejects.append(Reject(number, record.question_id, reason, [], rows[index]))
                log.warning("rejected row %d (%s): %s", number, record.question_id, reason)
                continue
            records.append(
                {
                    "question_id": record.question_id,
                    "question": record.question,
                    "tables": list(record.tables),
                    "topic": record.topic,
                }
            )
        for reject in result.rejects:  # validate_rows numbered the first one within the batch
            if reject.reason.startswith("duplicate question_id") and reject.question_id:
                first = self.first_seen[reject.question_id]
                reject.reason = f"duplicate question_id (first seen at row {first})"
        self.offset += len(rows)
        return records, sorted(rejects, key=lambda r: r.row)


# --- the model and the one prediction function -----------------------------------------------


class BatchModel:
    """The registered pyfunc; for our own models also its Predictor, for per-row warnings."""

    def __init__(self, pyfunc: Any, threads: int | None = None) -> None:
        self.pyfunc = pyfunc
        self.predictor = None
        try:
            inner = pyfunc.unwrap_python_model()
        except Exception:  # a pyfunc of another flavour: predict through MLflow only
            inner = None
        predictor = getattr(inner, "predictor", None)
        if predictor is not None and threads is not None:
            from financemath_mlops.model.predictor import with_threads

            predictor = with_threads(predictor, threads)
        self.predictor = predictor

    def predict(self, records: list[dict[str, Any]]) -> tuple[list[float], list[list[str]]]:
        if self.predictor is not None:
            inputs = [
                RecordInput(question=r["question"], tables=tuple(r["tables"]), topic=r["topic"])
                for r in records
            ]
            prediction = self.predictor.predict(inputs)
            return [float(v) for v in prediction.values], [list(w) for w in prediction.warnings]
        from financemath_mlops.model.packaging import input_example

        frame = self.pyfunc.predict(input_example(records))
        return [float(v) for v in frame["prediction"]], [[] for _ in records]


def load_batch_model(settings: Settings, uri: str, threads: int | None) -> BatchModel:
    runs.configure(settings)
    return BatchModel(runs.load_pyfunc(uri), threads)


def predict_rows(
    model: BatchModel, records: list[dict[str, Any]], name: str, version: str
) -> pa.Table:
    """Predictions for validated records, as output rows (used by both executors)."""
    values, warnings = model.predict(records) if records else ([], [])
    predictions: list[float | None] = []
    for value, record, notes in zip(values, records, warnings, strict=True):
        if math.isfinite(value):
            predictions.append(value)
        else:
            predictions.append(None)
            notes.append("the model produced a non-finite value")
        if record["topic"] not in TOPICS:
            notes.append(f"unknown topic {record['topic'][:40]!r}; scored as 'other'")
    return pa.table(
        {
            "question_id": [r["question_id"] for r in records],
            "prediction": predictions,
            "model_name": [name] * len(records),
            "model_version": [version] * len(records),
            "warnings": warnings,
        },
        schema=output_schema(),
    )


def predict_partition(
    index: int,
    records: list[dict[str, Any]],
    settings: Settings,
    uri: str,
    name: str,
    version: str,
    threads: int | None,
) -> dict[str, Any]:
    """Dask task: predict one partition with the worker's model (loaded once per worker)."""
    from financemath_mlops.features.distributed import worker_cached, worker_name

    started = time.perf_counter()
    key = f"pyfunc-{settings.mlflow.tracking_uri}-{uri}-{threads}"
    model, built = worker_cached(key, lambda: load_batch_model(settings, uri, threads))
    return {
        "index": index,
        "table": predict_rows(model, records, name, version),
        "worker": worker_name(),
        "model_loaded": built,
        "seconds": time.perf_counter() - started,
    }


# --- writing ----------------------------------------------------------------------------------


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
        for row in table.to_pylist():
            self._jsonl.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")

    def __exit__(self, *exc: Any) -> bool | None:
        return self._stack.__exit__(*exc)


# --- the stage --------------------------------------------------------------------------------


def predict_file(
    settings: Settings, input_path: Path, output_path: Path, model_uri: str | None = None
) -> BatchSummary:
    """Predict every valid record of ``input_path`` into ``output_path`` (see the module doc)."""
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise PredictError(
            f"output {output_path} must end in {' or '.join(OUTPUT_SUFFIXES)} (Parquet or JSONL)"
        )
    if not input_path.is_file():
        raise PredictError(
            f"input file not found: {input_path}; pass a FinanceMath .json, .jsonl or .parquet"
        )
    if input_path.suffix.lower() not in LOCAL_SUFFIXES:
        raise PredictError(
            f"unsupported input type {input_path.suffix!r} for {input_path}: use one of "
            f"{', '.join(LOCAL_SUFFIXES)}"
        )
    started = time.perf_counter()
    uri = model_uri or default_model_uri(settings)
    runs.configure(settings)
    ref = runs.resolve(uri)  # pin the version: an alias moving mid-run changes nothing
    summary = BatchSummary(
        input=input_path,
        output=output_path,
        rejects_path=rejects_path_for(output_path),
        model_uri=ref.uri,
        model_name=ref.name or uri,
        model_version=ref.version or (ref.run_id or "unknown"),
        executor=settings.features.executor,
    )
    log.info(
        "predicting %s with %s version %s (%s) on the %s executor",
        input_path,
        summary.model_name,
        summary.model_version,
        uri,
        summary.executor,
    )
    validate = _Validator(input_path)
    batches = read_input_batches(input_path, settings.features.partition_rows)
    with (
        _OutputWriter(output_path) as writer,
        atomic_writer(summary.rejects_path) as rejects_out,
    ):

        def validated() -> Iterator[list[dict[str, Any]]]:
            for rows in batches:
                records, rejects = validate(rows)
                summary.read += len(rows)
                summary.rejected += len(rejects)
                for reject in rejects:
                    rejects_out.write(json.dumps(reject.to_json(), ensure_ascii=False) + "\n")
                if records:
                    yield records

        def write(table: pa.Table) -> None:
            writer.write(table)
            summary.predicted += table.num_rows
            summary.with_warnings += sum(1 for w in table.column("warnings").to_pylist() if w)

        if settings.features.executor == "dask":
            _predict_dask(settings, summary, validated(), write)
        else:
            _predict_local(settings, summary, validated(), write)
    summary.seconds = time.perf_counter() - started
    log.info(
        "wrote %d predictions to %s and %d rejects to %s",
        summary.predicted,
        output_path,
        summary.rejected,
        summary.rejects_path,
    )
    return summary


def _predict_local(settings: Settings, summary: BatchSummary, batches: Any, write: Any) -> None:
    model = load_batch_model(settings, summary.model_uri, settings.features.embedding.threads)
    for records in batches:
        write(predict_rows(model, records, summary.model_name, summary.model_version))
        log.info("predicted %d rows", summary.predicted)


def _predict_dask(settings: Settings, summary: BatchSummary, batches: Any, write: Any) -> None:
    """Partitions on the cluster, written in input order as soon as their turn comes."""
    from financemath_mlops.features.distributed import dask_client, run_partitions

    cfg = settings.features
    threads = cfg.embedding.threads or 1
    done: dict[int, pa.Table] = {}
    next_index = 0
    loads: dict[str, int] = {}

    def submit(client: Any, index: int, records: list[dict[str, Any]]) -> Any:
        return client.submit(
            predict_partition,
            index,
            records,
            settings,
            summary.model_uri,
            summary.model_name,
            summary.model_version,
            threads,
            pure=False,
        )

    def on_done(result: dict[str, Any]) -> None:
        nonlocal next_index
        done[result["index"]] = result["table"]
        loads[result["worker"]] = loads.get(result["worker"], 0) + int(result["model_loaded"])
        while next_index in done:
            write(done.pop(next_index))
            next_index += 1
        log.info(
            "partition %d: %d rows on %s in %.1fs%s (%d rows written)",
            result["index"],
            result["table"].num_rows,
            result["worker"],
            result["seconds"],
            " (model loaded)" if result["model_loaded"] else "",
            summary.predicted,
        )

    with dask_client(cfg.dask_address, cfg.dask_workers) as client:
        run_partitions(client, enumerate(batches), submit, on_done)
    if done:  # cannot happen unless a partition went missing: refuse to write a gappy file
        raise PredictError(f"partitions {sorted(done)} finished but earlier ones did not")
    summary.extra["model_loads"] = loads
