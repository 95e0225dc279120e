"""executors.map_in_order on a real Dask cluster: input order kept, the shared object built once
per worker, a failing partition stops the run with its own error."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from financemath_mlops.config import ExecutorSettings
from financemath_mlops.executors import ExecutorError, WorkerCached, map_in_order, model_loads

pytestmark = pytest.mark.integration


def scaled(partition: dict[str, Any], factor: int) -> list[int]:
    time.sleep(partition["sleep"])  # later partitions finish first
    if partition.get("fail"):
        raise ValueError(f"partition {partition['values']} is bad")
    return [v * factor for v in partition["values"]]


def build_factor(value: int) -> int:
    return value


def partitions(n: int, fail_at: int | None = None) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"values": [i, i + 100], "sleep": 0.05 * (n - i), "fail": i == fail_at}


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def test_results_come_back_in_input_order_with_one_build_per_worker(scheduler: str) -> None:
    cfg = ExecutorSettings(executor="dask", dask_address=scheduler)
    shared = WorkerCached(f"factor-3-{uuid.uuid4()}", functools.partial(build_factor, 3))
    stats: dict[str, Any] = {}
    results = list(map_in_order(cfg, scaled, partitions(9), shared, stats))
    assert [r.index for r in results] == list(range(9))
    assert [r.value for r in results] == [[3 * i, 3 * (i + 100)] for i in range(9)]
    assert stats["workers"] == 2
    assert sum(model_loads(results).values()) == 1  # in-process workers share one cache
    local = list(map_in_order(ExecutorSettings(), scaled, partitions(9), 3))
    assert [r.value for r in local] == [r.value for r in results]


def test_a_failing_partition_raises_its_error(scheduler: str) -> None:
    cfg = ExecutorSettings(executor="dask", dask_address=scheduler)
    shared = WorkerCached("factor-1", functools.partial(build_factor, 1))
    with pytest.raises(ValueError, match=r"partition \[4, 104\] is bad"):
        list(map_in_order(cfg, scaled, partitions(8, fail_at=4), shared))


def test_the_dask_executor_needs_a_recipe_and_a_real_address() -> None:
    cfg = ExecutorSettings(executor="dask", dask_address="my-cluster")
    with pytest.raises(TypeError, match="WorkerCached"):
        list(map_in_order(cfg, scaled, partitions(1), 3))
    with pytest.raises(ExecutorError, match="neither 'local-cluster' nor a scheduler address"):
        list(map_in_order(cfg, scaled, partitions(1), WorkerCached("k", int)))
