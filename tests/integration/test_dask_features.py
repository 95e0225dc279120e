"""The Dask executor of the features stage on a real LocalCluster gives the local executor's table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from financemath_mlops import executors
from financemath_mlops.config import Settings
from financemath_mlops.features.build import FeatureError, read_feature_manifest
from financemath_mlops.flows.stages import features_stage, ingest_stage
from tests.conftest import pipeline_settings
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration

ROWS = 200
PARTITION_ROWS = 64


def fresh_cache(root: Path) -> Path:
    """A cache folder with no embeddings (so the run really embeds) sharing the ONNX export."""
    shared_onnx = REPO_ROOT / ".cache" / "onnx"
    shared_onnx.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True)
    (root / "onnx").symlink_to(shared_onnx, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("dask-features")
    ingest_stage(pipeline_settings(workdir, rows=ROWS, seed=5))
    return workdir


def settings_for(
    workdir: Path,
    name: str,
    *,
    rows: int = ROWS,
    seed: int = 5,
    partition_rows: int = PARTITION_ROWS,
    **features: Any,
) -> Settings:
    """Features of ``workdir``'s records (ingested with ``rows``, ``seed``) into
    ``workdir/name``, embedded afresh: a cache of its own (also the fault tests' Dask runs)."""
    return pipeline_settings(
        workdir,
        rows=rows,
        seed=seed,
        paths={"cache_dir": fresh_cache(workdir / f"cache-{name}")},
        features={
            "partition_rows": partition_rows,
            "output": workdir / name / "features.parquet",
            **features,
        },
    )


def test_dask_features_equal_local_features_in_order_and_value(workdir: Path) -> None:
    given = settings_for(workdir, "local")
    local = features_stage(given)
    given = settings_for(workdir, "dask", executor="dask", dask_workers=2, embedding={"threads": 1})
    dask = features_stage(given)

    expected, got = pd.read_parquet(local.output), pd.read_parquet(dask.output)
    assert got["question_id"].tolist() == expected["question_id"].tolist()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-6)
    assert dask.manifest == local.manifest == read_feature_manifest(dask.output)
    assert (dask.rows, dask.labelled) == (local.rows, local.labelled) == (ROWS, ROWS)

    # The workers did the embedding (fresh cache), on both worker processes, in 4 partitions,
    # and each worker built the model once however many partitions it ran.
    assert dask.cache_hits + dask.cache_misses == ROWS
    assert dask.cache_misses >= ROWS - local.cache_hits - 5  # a few repeats across partitions
    assert dask.extra["partitions"] == -(-ROWS // PARTITION_ROWS)
    assert dask.extra["workers"] == 2
    assert all(loads == 1 for loads in dask.extra["model_loads"].values())
    # Partition files are cleaned up; only the table remains (its manifest is inside it).
    assert sorted(p.name for p in dask.output.parent.iterdir()) == ["features.parquet"]


def test_unreachable_scheduler_is_a_clear_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1)
    settings = settings_for(workdir, "nowhere", executor="dask", dask_address="tcp://127.0.0.1:9")
    with pytest.raises(
        FeatureError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        features_stage(settings)
    assert not settings.features_output.exists()


def test_address_that_is_not_a_scheduler_is_refused(workdir: Path) -> None:
    settings = settings_for(workdir, "bad", executor="dask", dask_address="my-cluster")
    with pytest.raises(FeatureError, match="neither 'local-cluster' nor a scheduler address"):
        features_stage(settings)
    assert not any(settings.features_output.parent.glob("*.parquet*"))
