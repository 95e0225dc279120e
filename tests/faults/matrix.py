"""The fault matrix: every row of docs/reliability.md, in the doc's order, declared once here.

A row is one test in tests/faults/ that names it by id: ``@pytest.mark.fault_row("<id>")``. The
plugin (tests/faults/conftest.py) looks the row up here at collection and writes it, with its run's
outcome and seconds, to the JSON scripts/gen_reliability_doc.py renders; a test naming an id not
here, two tests naming one row, or a row no test names stops the session, naming it. The id is the
anchor ``docs/reliability.md#<id>`` that alert rules' runbook_url point to. Plain data (no pytest,
no project import): tests/unit reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FaultRow:
    """What a row promises: where the fault strikes, the fault, what the user sees, what is kept,
    how to recover, the time bound, the retry policy and a runbook line."""

    id: str
    where: str
    fault: str
    sees: str
    kept: str
    recover: str
    bound: str
    retry: str
    runbook: str


ROWS: tuple[FaultRow, ...] = (
    # -- store (test_store_faults.py): the tracking server, its PostgreSQL, the S3 API ----------
    FaultRow(
        id="tracking-postgres-restart-during-logging",
        where="training (logging its run)",
        fault="PostgreSQL behind `mlflow server` restarts while the run logs (down about 3 s)",
        sees="exit 1: `error: the MLflow tracking server <address> failed while training logged its "
        "run: ... 503 ... Nothing of this attempt is served ...`",
        kept="the run, marked FAILED (its end is an idempotent write, retried past the restart); "
        "@challenger and @champion unchanged; no model version",
        recover="rerun training once PostgreSQL is back (the test does: it registers a new version "
        "and moves @challenger)",
        bound="the failed write answers at once (503); the run's end waits for PostgreSQL at most "
        "the read bound (default 128.5 s)",
        retry="the failed log write: none (not idempotent); the run's end: bounded, back-off",
        runbook="pg_isready -h <db host>; the mlflow server log; rerun training",
    ),
    FaultRow(
        id="tracking-hang-at-start",
        where="training, evaluation, promotion, registry, flow, predict, monitoring (start of stage)",
        fault="the tracking server accepts connections and never answers",
        sees="exit 2 within 15 s: `error: cannot reach the MLflow tracking server <address>: no "
        "answer to GET <address>/health within 8 s ...; nothing was done`",
        kept="everything: the stage stops before its work (no run, no version, no alias move)",
        recover="fix or restart the tracking server (or point FMOPS_MLFLOW__TRACKING_URI at a "
        "running one), then rerun the same command",
        bound="8 s probe (runs/store.py PROBE_SECONDS) + start-up: 15 s",
        retry="none: one bounded probe (resolve, connect, GET /health share the 8 s)",
        runbook="curl -m 5 <address>/health; check the server's process and its database; rerun",
    ),
    FaultRow(
        id="tracking-hang-mid-run",
        where="training (any stage past its start-of-stage probe; the service: serving.mlflow_timeout_s)",
        fault="the tracking server stops answering while the run logs (after the probe passed)",
        sees="exit 1: `error: the MLflow tracking server <address> failed while training logged its "
        "run: ... Read timed out ... Nothing of this attempt is served ...`",
        kept="@challenger and @champion unchanged; no model version; the run stays RUNNING in the "
        "store when the server never heard its end (MLflow shows it; harmless)",
        recover="restart the tracking server, rerun training",
        bound="per MLflow call: (1 + MLFLOW_HTTP_REQUEST_MAX_RETRIES) x MLFLOW_HTTP_REQUEST_TIMEOUT "
        "+ back-off; defaults 4 x 30 s + 8.5 s = 128.5 s for a read or idempotent write, 30 s for "
        "any other write (this row: 3 s, 1 retry)",
        retry="reads and idempotent writes (tags, aliases, run status): bounded, back-off 1, 2, 4 s "
        "+ jitter; creating writes (runs, versions, metrics): never sent twice",
        runbook="the server's log and `curl -m 5 <address>/health`; restart it; rerun training",
    ),
    FaultRow(
        id="tracking-postgres-restart-before-alias",
        where="training (between registering the model version and moving @challenger; the alias "
        "move takes the audit lock, moves, appends the audit entry)",
        fault="PostgreSQL behind `mlflow server` stops after the version is registered, before the "
        "alias move",
        sees="exit 1: `error: the MLflow tracking server <address> failed while taking the alias "
        "lock <model>.alias-lock: API request to <address>/api/2.0/mlflow/registered-models/create "
        "failed ... 503 .... Nothing was moved ...`; no traceback (before: exit 2, `cannot take the "
        "alias lock ...`, as if the command were wrong)",
        kept="the new version's artefacts, whole, tagged fmops.registration=pending-alias and "
        "without an alias: resolving it by number is refused (never served); @challenger, "
        "@champion and the audit trail unchanged",
        recover="rerun training once PostgreSQL is back: it registers a new version and moves "
        "@challenger (the half-registered one stays tagged, harmless)",
        bound="at once (503 on a creating write)",
        retry="none for the lock (a create); the registry reads before it: bounded, back-off",
        runbook="pg_isready; `python -m financemath_mlops.registry list` shows the version without "
        "alias; rerun training",
    ),
    FaultRow(
        id="s3-refuses",
        where="training (artefact upload through `mlflow server --serve-artifacts`)",
        fault="the S3 API refuses connections",
        sees="exit 1: `error: the MLflow tracking server <address> failed while training logged its "
        "run: ... 500 ... Nothing of this attempt is served ...` (the server's log names the S3 "
        "endpoint)",
        kept="the run, marked FAILED; no model version; @challenger and @champion unchanged",
        recover="bring S3 (MinIO) back, rerun training",
        bound="the server's S3 client retries (boto3: 5 attempts, back-off) per upload, then the "
        "client's bounded retries of the idempotent PUT",
        retry="artefact PUT: idempotent, retried (client: bounded, back-off; server: boto3's)",
        runbook="curl <s3 endpoint>/minio/health/live; the mlflow server log; rerun training",
    ),
    FaultRow(
        id="s3-cut-mid-upload",
        where="training (`log_model`: the model's files, the ONNX bundle the largest)",
        fault="S3 closes every connection after 1 MB of an upload: the small files land, the "
        "model bundle never does",
        sees="exit 1: `error: the MLflow tracking server <address> failed while training logged its "
        "run: ... Nothing of this attempt is served ...`",
        kept="the run's small artefacts and a FAILED logged model; no model version (registration "
        "comes after the upload); @challenger and @champion unchanged and loadable",
        recover="fix the S3 path (proxy, disk, MinIO), rerun training",
        bound="the uploads' retries (server boto3, client PUT), then at once",
        retry="artefact PUT: idempotent, retried (bounded, back-off); registration: not reached",
        runbook="the mlflow server log (the S3 error); `mc admin info`; rerun training",
    ),
    FaultRow(
        id="s3-slow",
        where="training (every artefact upload)",
        fault="the S3 API takes 0.5 s per request",
        sees="nothing but time: training succeeds, slower (this row: under 2 minutes)",
        kept="the new version, registered after its artefacts landed whole, then @challenger moved",
        recover="nothing to do; if uploads pass MLFLOW_HTTP_REQUEST_TIMEOUT (30 s each), the "
        "client retries the PUT (idempotent) and then fails as s3-refuses",
        bound="per upload: MLFLOW_HTTP_REQUEST_TIMEOUT (default 30 s) x 4 attempts",
        retry="artefact PUT: idempotent, retried (bounded, back-off)",
        runbook="the S3 latency (`mc admin trace`); raise MLFLOW_HTTP_REQUEST_TIMEOUT for big models",
    ),
    # -- disk (test_disk_faults.py): a full disk under each stage ------------------------------
    FaultRow(
        id="ingestion-enospc",
        where="ingestion stage",
        fault="disk full (ENOSPC) under data/interim (a 2 MiB tmpfs filled to 4 KiB)",
        sees="exit 1: `error: no space left on device writing data/interim/financemath.jsonl "
        "(N KiB free of M on ...); the previous set (financemath.jsonl, ...) is unchanged. Free "
        "space there (`df -h data/interim`) ..., then rerun the same command`; no traceback",
        kept="the previous complete set (records, rejects, manifest) byte for byte; the unfinished "
        "generation folder removed at once",
        recover="free space, rerun the same command",
        bound="immediate (the first write that fails)",
        retry="none (a full disk does not empty itself)",
        runbook="df -h data/interim; free space; rerun `python -m financemath_mlops.ingestion`",
    ),
    FaultRow(
        id="features-enospc",
        where="features stage",
        fault="disk full (ENOSPC) under data/processed (a 1 MiB tmpfs filled to 16 KiB)",
        sees="exit 1: `error: no space left on device writing "
        "data/processed/finance_math_features.parquet (N KiB free of M on ...); the previous "
        "finance_math_features.parquet is unchanged. Free space there ...`; no traceback "
        "(before: a raw `OSError: [Errno 28]` traceback, exit 1)",
        kept="the previous complete table (its manifest inside it) byte for byte; the temp file "
        "removed at once",
        recover="free space, rerun the same command",
        bound="immediate",
        retry="none",
        runbook="df -h data/processed; free space; rerun `python -m financemath_mlops.features`",
    ),
    FaultRow(
        id="embedding-cache-enospc",
        where="features stage (its embedding cache)",
        fault="disk full (ENOSPC) under .cache/embeddings (a 256 KiB tmpfs, filled)",
        sees="exit 0 and one WARNING: `embedding cache not saved (no space left on device under "
        ".cache/embeddings: N KiB free of M on ...); the features are built all the same, and these "
        "texts are embedded again next time`",
        kept="the previous cache; the new table is written (a cache costs reuse, never the output)",
        recover="nothing to do; free space to get the reuse back",
        bound="immediate",
        retry="none (the texts are embedded again on the next run)",
        runbook="df -h .cache; free space (or point paths.cache_dir elsewhere)",
    ),
    FaultRow(
        id="mlruns-enospc",
        where="training stage (MLflow artefacts)",
        fault="disk full (ENOSPC) under mlruns/ (SQLite store and artefact root on one 200 MiB "
        "tmpfs, filled to 1 MiB: the run's small files fit, the model's 90 MB do not)",
        sees="exit 1: `error: no space left on device logging the run's artefacts to "
        "mlruns/artifacts (N KiB free of M on ...; /tmp: ...); no model version was registered "
        "and no alias moved; the run was cut short ...`; no traceback (MLflow's logged SQL "
        "traceback cut to its line)",
        kept="every registered version and its artefacts byte for byte; @challenger where it was; "
        "the cut-short run with its partial artefacts (RUNNING: the store on the full disk could not "
        "mark it FAILED)",
        recover="free space, rerun training (a new version); delete the cut-short run",
        bound="immediate",
        retry="none",
        runbook="df -h mlruns; free space; rerun `python -m financemath_mlops.training`",
    ),
    FaultRow(
        id="reports-enospc",
        where="monitoring reports (drift, performance)",
        fault="disk full (ENOSPC) under reports/ (a 16 MiB tmpfs filled to 64 KiB)",
        sees="exit 1: `error: no space left on device writing reports/<timestamp> (N KiB free of M "
        "on ...); no partial <timestamp> was left behind. Free space there ...`; no traceback",
        kept="the previous reports: every folder, index.jsonl and latest.json (what /metrics shows) "
        "byte for byte; no half-written folder, no torn index line",
        recover="free space; the next scheduled run (6 h) or a rerun writes the next report",
        bound="immediate",
        retry="none (the scheduled flow runs again at its next slot)",
        runbook="df -h reports; free space; rerun `python -m financemath_mlops.monitoring drift`",
    ),
    FaultRow(
        id="export-enospc",
        where="registry export (models/serving)",
        fault="disk full (ENOSPC) under models/ (a 200 MiB tmpfs holding one 90 MB export, the "
        "rest filled to 1 MiB)",
        sees="exit 1: `error: no space left on device writing models/serving (N KiB free of M on "
        "...); the previous export in models/serving is unchanged; the partial download was "
        "removed. Free space there ...`; no traceback (before: exit 2 `cannot export ...: [Errno 28]"
        " No space left on device`, as if the model were at fault)",
        kept="the previous export byte for byte (what compose mounts and the service serves)",
        recover="free space, rerun the export",
        bound="immediate",
        retry="none",
        runbook="df -h models; free space; rerun `python -m financemath_mlops.registry export`",
    ),
    # -- process (test_process_faults.py): Dask workers, the Prefect server and worker, training
    FaultRow(
        id="features-dask-worker-killed",
        where="features stage, Dask executor",
        fault="a Dask worker process SIGKILLed while it runs a partition",
        sees="nothing: the scheduler reschedules the lost partition on a live worker (the nanny "
        "restarts the killed one); the stage exits 0",
        kept="the table equals the one built without the fault (same rows, order and values)",
        recover="nothing to do",
        bound="the partition's own time again, plus a worker restart (seconds)",
        retry="Dask's: a lost partition is rerun up to distributed.scheduler.allowed-failures (3) "
        "times (a partition is pure: idempotent)",
        runbook="none needed; if workers keep dying, check their memory (`dmesg`, the nanny's log)",
    ),
    FaultRow(
        id="features-dask-worker-killed-repeatedly",
        where="features stage, Dask executor",
        fault="a partition's worker killed more often than distributed.scheduler.allowed-failures",
        sees="exit 1: `error: the Dask cluster (scheduler tcp://HOST:PORT) lost partition N: "
        "KilledWorker: ...; nothing was written (the previous output is kept) ...`",
        kept="the previous complete table",
        recover="find why workers die (memory), rerun",
        bound="immediate once Dask gives up on the partition",
        retry="Dask's (allowed-failures), then none",
        runbook="check the workers' memory and logs (`dmesg`); rerun `python -m "
        "financemath_mlops.features --executor dask`, or `--executor local`",
    ),
    FaultRow(
        id="predict-dask-worker-killed",
        where="batch prediction, Dask executor",
        fault="a Dask worker process SIGKILLed while it predicts a batch",
        sees="nothing: the lost batch is rescheduled (the restarted worker loads the model again); "
        "the summary still reads `read N = predicted P + rejected R`; exit 0",
        kept="every valid row predicted exactly once, as without the fault; every bad row in "
        "<output stem>.rejects.jsonl with its reason",
        recover="nothing to do",
        bound="the batch's own time again, plus a worker restart and a model load (seconds)",
        retry="Dask's: up to distributed.scheduler.allowed-failures (3) (a batch is pure: "
        "idempotent); more deaths end the stage as features-dask-worker-killed-repeatedly",
        runbook="none needed; if workers keep dying, check their memory (`dmesg`)",
    ),
    FaultRow(
        id="training-sigkill-sweep",
        where="training stage (`python -m financemath_mlops.training`, SQLite store)",
        fault="SIGKILL at 6 points spread over the run (a sweep): 0.5 s (imports), the final fit, "
        "the MLflow run logging its artefacts, the model's upload under way, the version registered, @challenger "
        "moved (pointer not yet written)",
        sees="the process is gone (exit -9), no message. Left behind: an MLflow run marked RUNNING "
        "(killed while it was open), a logged model without a version (killed mid-upload), a "
        "complete version no alias points at (killed before the alias move), and after a kill "
        "inside an alias move the alias lock `<model>.alias-lock`",
        kept="every alias points at a complete version (model folder and run artefacts): training "
        "registers a version only after its files are uploaded (tagged fmops.registration="
        "pending-alias in the same request), moves the alias, then tags it complete; a version "
        "killed before its alias move stays pending and is refused by number (never served); "
        "the previous @challenger stays until a run registers its own; the trained pointer names the "
        "last run that finished",
        recover="rerun training: a new version, @challenger moved to it. A lock left by a kill "
        "inside an alias move is taken over at once by the next move (its holder ran on this host "
        "and is gone; a holder on another host is taken over after 300 s)",
        bound="immediate (a lock held from another host: 300 s takeover)",
        retry="none (a rerun is a new run and a new version)",
        runbook="rerun `python -m financemath_mlops.training`; `python -m financemath_mlops.registry "
        "list` shows the aliases; a version without an alias is never served (serving, export and "
        "promotion follow aliases)",
    ),
    FaultRow(
        id="prefect-server-restarted-mid-flow",
        where="the pipeline flow (`python -m financemath_mlops.flows`, PREFECT_API_URL set)",
        fault="the Prefect server stopped and started again while the training task runs",
        sees="nothing: the stages run in the flow's own process and Prefect's client retries, "
        "silently, the state calls it makes meanwhile (a refused connection after a first success: "
        "PREFECT_CLIENT_MAX_RETRIES=5, back-off 2-32 s, about 60 s in all); the run ends Completed, "
        "exit 0 (measured: the server down 26-29 s during training). A server down longer than the "
        "retries fails the flow with Prefect's own connection error (not injected here)",
        kept="the server's database (flow and task runs); every stage output the run wrote",
        recover="nothing when the server is back within the retries; else rerun the flow (every "
        "stage runs again: tasks are not cached; the ONNX export and the embedding cache are reused)",
        bound="the server's restart (seconds) within about 60 s of client retries",
        retry="Prefect's client: 5 retries with back-off on a refused connection (state calls are "
        "idempotent on the server)",
        runbook="`curl $PREFECT_API_URL/health`; restart `prefect server start`; rerun "
        "`python -m financemath_mlops.flows` if the run failed",
    ),
    FaultRow(
        id="prefect-worker-killed-mid-run",
        where="scheduled retraining (a process work pool, `prefect worker start`)",
        fault="the worker process SIGKILLed while its scheduled flow run is running",
        sees="the flow run is marked Crashed within seconds (its process, orphaned, dies at its next "
        "write to the dead worker's output pipe, and the run's engine reports the crash); the "
        "deployment's later runs wait (Scheduled, then Late) until a worker polls the pool again",
        kept="what the crashed run's finished stages wrote (each stage's outputs are its old or new "
        "complete set); the registry's aliases (a crash mid-training is the training-sigkill-sweep row)",
        recover="start the worker again; the next scheduled run (or `prefect deployment run "
        "financemath-pipeline/nightly-retrain`) completes",
        bound="Crashed within 60 s of the kill (about 10 s measured)",
        retry="none (the crashed run is not retried; the next run starts from the beginning)",
        runbook="`prefect flow-run ls --state Crashed`; start `prefect worker start --pool "
        "financemath-pool`; `prefect deployment run financemath-pipeline/nightly-retrain`",
    ),
    # -- serving (test_serving_faults.py): the service and its prediction log -----------------
    FaultRow(
        id="serving-store-hangs",
        where="prediction service, reloading from the tracking store",
        fault="the MLflow tracking server accepts connections and never answers (SIGSTOP)",
        sees='/ready 200 with `down: ["tracking_store"]` and dependencies.tracking_store.error '
        '(`... Read timed out`, the store\'s address); fmops_dependency_up{name="tracking_store"} 0; '
        "alert FinanceMathDependencyDown after 5 min",
        kept="the model in service: /predict answers 200 throughout",
        recover="nothing to do: the next reload after the store answers sets it back to 1",
        bound="serving.reload_interval_s + serving.mlflow_timeout_s x (1 + serving.mlflow_retries) "
        "+ back-off per store call (defaults 10 s x 3: about 33 s; here 1 s x 1: seen in ~2 s)",
        retry="MLflow's HTTP retries (serving.mlflow_retries, a read of the registry: idempotent), "
        "then the periodic reload",
        runbook="curl <tracking>/health; check the MLflow server's process and its database; the "
        "service needs no action",
    ),
    FaultRow(
        id="serving-store-down",
        where="prediction service, reloading from the tracking store",
        fault="the MLflow tracking server killed (SIGKILL: connections refused), then restarted",
        sees='/ready 200 with `down: ["tracking_store"]` and the refusal in '
        'dependencies.tracking_store.error; fmops_dependency_up{name="tracking_store"} 0; alert '
        "FinanceMathDependencyDown after 5 min",
        kept="the model in service: /predict answers 200 throughout",
        recover="nothing to do once the store is back: the next reload sets the gauge to 1",
        bound="serving.reload_interval_s + back-off of serving.mlflow_retries (a refusal is "
        "immediate; seen here within ~1 s)",
        retry="MLflow's HTTP retries, then the periodic reload",
        runbook="restart the MLflow server (compose: `podman compose up -d mlflow`); the service "
        "needs no action",
    ),
    FaultRow(
        id="prediction-log-enospc",
        where="prediction service, its prediction log",
        fault="disk full (ENOSPC) under paths.predictions_dir (a 4 MB tmpfs filled to the last byte)",
        sees="predictions answered 200; within one flush interval fmops_prediction_log_durable 0, "
        "fmops_prediction_log_write_errors_total counting (a try every flush interval), /ready 200 "
        "with dependencies.prediction_log down (`No space left on device`), one WARNING a minute; "
        "alerts FinanceMathPredictionLogNotDurable (1 min), FinanceMathPredictionLogDiskFilling "
        "(before: under 10 % free or full within 6 h), FinanceMathPredictionLogDropping if rows "
        "overflow the memory bound",
        kept="every answered prediction: held in memory (at most monitoring.log_queue_size rows, "
        "beyond that dropped and counted as write_error); on SIGTERM a complete journal stays for "
        "the next start; a kill -9 while not durable loses the rows held (the gauge said so)",
        recover="free space: the held rows are written within one flush interval, the gauge back to 1",
        bound="detected within one flush interval (monitoring.log_flush_interval_s, 1 s; 0.5 s "
        "here); written within one flush interval of the space coming back",
        retry="the log's writer, every flush interval, while it holds rows (a part file is written "
        "whole under a temp name and renamed: idempotent)",
        runbook="df -h <paths.predictions_dir>; move old predictions-*.parquet elsewhere or grow the "
        "volume; watch fmops_prediction_log_durable return to 1",
    ),
    FaultRow(
        id="serving-postgres-restart",
        where="prediction service, reloading from `mlflow server` on PostgreSQL",
        fault="PostgreSQL behind the tracking server stopped (`pg_ctl stop -m fast`) and started again "
        "while the service reloads every second",
        sees='/ready 200 with `down: ["tracking_store"]` and `the tracking store at <address> '
        "answered HTTP 500 to every try (each call bounded by ...); the model in service keeps "
        'answering`; fmops_dependency_up{name="tracking_store"} 0; FinanceMathDependencyDown after '
        "5 min if it lasts",
        kept="the model in service: /predict answers 200 throughout; the registry as it was",
        recover="nothing to do once PostgreSQL is back: the next reload sets the gauge to 1",
        bound="serving.reload_interval_s + one store call (a 5xx answers at once; MLflow retries "
        "5xx serving.mlflow_retries times with back-off)",
        retry="MLflow's HTTP retries on 5xx (a registry read: idempotent), then the periodic reload",
        runbook="pg_isready -h <db host>; the mlflow server log; the service needs no action",
    ),
)

BY_ID: dict[str, FaultRow] = {row.id: row for row in ROWS}
