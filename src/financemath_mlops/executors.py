"""Where partitions run: in this process (``local``) or on a Dask cluster (``dask``).

The features stage and batch prediction both hand :func:`map_in_order` a task, a stream of
partitions and the object the task needs (an embedder, a model). Locally the task gets that object
as it is. On Dask it gets a :class:`WorkerCached` recipe instead, which each worker process builds
once and keeps for every partition it runs. Either way the results come back in input order, with
at most ``IN_FLIGHT_PER_THREAD`` partitions per worker thread submitted or waiting for their turn,
so neither the client nor the scheduler ever holds the whole input.

Dask is called with plain functions (``client.submit``), never through Prefect's Dask task runner:
that runner makes every worker process start its own temporary Prefect server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from financemath_mlops.config import ExecutorSettings
from financemath_mlops.errors import StageError

log = logging.getLogger(__name__)

LOCAL_CLUSTER = "local-cluster"
IN_FLIGHT_PER_THREAD = 2
CONNECT_TIMEOUT_S = 20

# Per worker process: key -> object built once (see WorkerCached).
_CACHED: dict[str, Any] = {}
_CACHED_LOCK = threading.Lock()


class ExecutorError(StageError):
    """The Dask cluster cannot be used (bad address, scheduler unreachable); nothing is written."""


class ClusterLostError(ExecutorError):
    """The Dask cluster lost a partition (its workers died more often than Dask retries, the
    scheduler went away): exit 1, the command was right; rerun it once the cluster is healthy."""

    exit_code = 1


def check_executor_flags(
    executor: ExecutorSettings, given: dict[str, object], section: str
) -> None:
    """Refuse a Dask flag the chosen executor would ignore, naming it and what reads it.

    ``executor`` is the stage's settings section (``features``, ``predict``) after flags, env and
    YAML; ``given`` the parsed command line (``vars(args)``, keys ``<section>.dask_address`` and
    ``<section>.dask_workers``, None when the flag was not given). Both stages call this one rule,
    so a flag is refused (ExecutorError, exit 2) the same way everywhere, never silently dropped.
    """
    address = given.get(f"{section}.dask_address")
    workers = given.get(f"{section}.dask_workers")
    if executor.executor != "dask":
        flag, value = ("--dask-address", address) if address is not None else ("--workers", workers)
        if value is not None:
            raise ExecutorError(
                f"{flag} {value} does not apply to the {executor.executor} executor "
                f"({section}.executor): it is read by --executor dask only; add --executor dask, "
                f"or drop {flag}"
            )
    elif workers is not None and executor.dask_address != LOCAL_CLUSTER:
        raise ExecutorError(
            f"--workers {workers} does not apply to the scheduler at {executor.dask_address}: it "
            f"sizes --dask-address {LOCAL_CLUSTER} only (a running cluster has the workers it was "
            "given); drop --workers"
        )


@dataclass(frozen=True)
class WorkerCached:
    """A picklable recipe for an object each Dask worker process builds once and reuses.

    Dask runs many tasks in one worker process: keeping the loaded model here is what makes each
    worker load it once instead of once per partition. ``key`` names what ``build`` makes.
    """

    key: str
    build: Callable[[], Any]

    def get(self) -> tuple[Any, bool]:
        """(the object, whether this call built it)."""
        with _CACHED_LOCK:
            if self.key in _CACHED:
                return _CACHED[self.key], False
            _CACHED[self.key] = self.build()
            return _CACHED[self.key], True


@dataclass
class Partition:
    """One task's result and where it ran."""

    index: int
    value: Any
    worker: str
    built: bool  # the worker built its WorkerCached object for this partition
    seconds: float


def map_in_order(
    cfg: ExecutorSettings,
    task: Callable[[Any, Any], Any],
    partitions: Iterable[Any],
    shared: Any,
    stats: dict[str, Any] | None = None,
) -> Iterator[Partition]:
    """``task(partition, shared_object)`` for every partition, results in input order.

    ``shared`` is the object itself for ``local``, and must be a :class:`WorkerCached` for
    ``dask``. ``stats`` receives the cluster's ``workers`` and ``ready_at`` (perf_counter).
    """
    if cfg.executor != "dask":
        for index, partition in enumerate(partitions):
            yield _run(task, index, partition, shared)
        return
    if not isinstance(shared, WorkerCached):
        raise TypeError("the dask executor needs a WorkerCached recipe, not the object itself")
    with dask_client(cfg.dask_address, cfg.dask_workers) as client:
        stats = {} if stats is None else stats
        stats["ready_at"] = time.perf_counter()
        yield from _in_order(client, task, partitions, shared)
        stats["workers"] = len(client.scheduler_info().get("workers", {}))


def _run(task: Callable[[Any, Any], Any], index: int, partition: Any, shared: Any) -> Partition:
    started = time.perf_counter()
    obj, built = shared.get() if isinstance(shared, WorkerCached) else (shared, False)
    value = task(partition, obj)
    return Partition(index, value, worker_name(), built, time.perf_counter() - started)


def _in_order(
    client: Any, task: Callable[[Any, Any], Any], partitions: Iterable[Any], shared: WorkerCached
) -> Iterator[Partition]:
    """Submit with a bounded window; hold results that finish early until their turn."""
    from distributed import as_completed

    window = IN_FLIGHT_PER_THREAD * total_threads(client)
    token = uuid.uuid4().hex[:12]
    source = enumerate(partitions)
    running = as_completed()
    done: dict[int, Partition] = {}
    submitted = next_index = 0

    def submit_more() -> None:
        nonlocal submitted
        while submitted - next_index < window:  # in flight + waiting for their turn
            item = next(source, None)
            if item is None:
                return
            index, partition = item
            key = f"partition-{token}-{index}"
            running.add(client.submit(_run, task, index, partition, shared, key=key, pure=False))
            submitted += 1

    submit_more()
    try:
        for future in running:
            try:
                result = future.result()
            except dask_failures() as exc:  # the cluster's fault, not the task's own error
                raise ClusterLostError(cluster_failure(client, future.key, exc)) from None
            done[result.index] = result
            while next_index in done:
                yield done.pop(next_index)
                next_index += 1
            submit_more()
    except BaseException:
        running.clear()
        raise
    if done:  # cannot happen unless a partition went missing: refuse to leave a gap
        raise ExecutorError(f"partitions {sorted(done)} finished but earlier ones did not")


def dask_failures() -> tuple[type[BaseException], ...]:
    """What Dask raises for a partition when the cluster, not the task, failed: a worker killed
    more often than ``distributed.scheduler.allowed-failures`` (a single death is rescheduled by
    the scheduler and never reaches us), a lost scheduler connection, a cancelled future."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return (KilledWorker, FutureCancelledError, CommClosedError)


def cluster_failure(client: Any, key: Any, exc: BaseException) -> str:
    """The message for a partition the Dask cluster lost: Dask, its scheduler address, what to do."""
    address = getattr(getattr(client, "scheduler", None), "address", None) or "unknown"
    return (
        f"the Dask cluster (scheduler {address}) lost partition {str(key).rpartition('-')[2]}: "
        f"{type(exc).__name__}: {exc}. Nothing was written (the previous output is kept); check "
        f"the workers' memory and logs, then rerun (or use --executor local)"
    )


@contextlib.contextmanager
def dask_client(address: str, workers: int) -> Iterator[Any]:
    """A Dask client: on a fresh LocalCluster (closed afterwards) or on a running scheduler.

    ``local-cluster`` starts ``workers`` worker processes with one thread each on 127.0.0.1 and
    no dashboard; any ``scheme://host:port`` address connects to that scheduler instead.
    """
    with quiet_dask_logs():
        yield from _client(address, workers)


@contextlib.contextmanager
def quiet_dask_logs() -> Iterator[None]:
    """Dask's INFO chatter (connections, nannies) would drown the stage's story; DEBUG keeps it."""
    import distributed  # its import sets the level we override (from Dask's logging config)

    logger = logging.getLogger(distributed.__name__)
    previous = logger.level
    if not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _client(address: str, workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if address == LOCAL_CLUSTER:
        started = time.perf_counter()
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            log.info(
                "Dask LocalCluster up in %.1fs: %d worker processes x 1 thread (scheduler %s)",
                time.perf_counter() - started,
                workers,
                cluster.scheduler_address,
            )
            yield client
        return
    if "://" not in address:
        raise ExecutorError(
            f"dask_address {address!r} is neither 'local-cluster' nor a scheduler "
            "address like tcp://host:8786"
        )
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(
            f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}); start "
            "one (`dask scheduler` and `dask worker <address>`) or use --dask-address local-cluster"
        ) from None
    with client:
        log.info("connected to the Dask scheduler %s (%d threads)", address, total_threads(client))
        yield client


def total_threads(client: Any) -> int:
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not on a Dask worker (called in-process)
        return f"pid-{os.getpid()}"


def model_loads(results: Iterable[Partition]) -> dict[str, int]:
    """Worker -> how many times it built its shared object (1 each is the goal)."""
    loads: dict[str, int] = {}
    for result in results:
        loads[result.worker] = loads.get(result.worker, 0) + int(result.built)
    return loads
