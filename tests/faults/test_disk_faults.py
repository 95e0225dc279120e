"""The fault matrix's disk rows: a full disk (ENOSPC) under each stage's outputs, injected for real.

Each row mounts a size-limited tmpfs under the output folder, makes one good run (the previous
outputs), fills the mount with a filler file until only a few KiB are left, reruns the stage
in-process (``cli.run_main(main, argv)``, exactly what ``python -m`` runs) and checks the promise:
exit 1, one ``error: no space left on device ...`` line naming the path and its free space, no
traceback, the previous outputs byte for byte, no temp leftovers; then frees the space and reruns
to show the recovery the row states.

Where ``mount`` is refused (not root, no CAP_SYS_ADMIN) a row cannot fill a disk for real: it
skips naming the refusal, and CI (``CI`` / ``FMOPS_TEST_FAULTS_STRICT``) turns that skip into a
failure (tests/faults/conftest.py). Failing the write calls themselves is no fallback here:
pyarrow, MLflow's copies and Python's buffered files write below ``os.write``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from financemath_mlops.cli import run_main
from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROWS = 60  # sample rows: enough for monitoring.min_rows (30) on both sides of a drift report
FILLER = "filler"


# --- a full disk, for real ----------------------------------------------------------------------


class Mounts:
    """Size-limited tmpfs mounts, each unmounted by :meth:`unmount_all` (when its ``with``
    block, a fixture's, ends)."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []

    def __enter__(self) -> Mounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount_all()

    def mount(self, folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"mount -t tmpfs refused ({done.stderr.strip()}): no real full disk")
        self.mounted.append(folder)
        return folder

    def unmount_all(self) -> None:
        for folder in reversed(self.mounted):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        self.mounted.clear()


def fill(mount: Path, leave: int) -> Path:
    """Write a filler file until at most ``leave`` bytes are free on ``mount``."""
    filler = mount / FILLER
    chunk = b"\0" * (1 << 20)
    with filler.open("ab") as handle:
        while (free := _free(mount)) > leave:
            try:
                handle.write(chunk[: min(len(chunk), free - leave)] or b"\0")
                handle.flush()
            except OSError:
                break
    assert _free(mount) <= leave + 4096, f"{mount} still has {_free(mount)} bytes free"
    return filler


def _free(mount: Path) -> int:
    stats = os.statvfs(mount)
    return stats.f_bavail * stats.f_frsize


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (but the filler): a file's sha256, a link's target, a dir."""
    seen: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if rel == FILLER:
                continue
            if path.is_symlink():
                seen[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                seen[rel] = "dir"
            else:
                seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def leftovers(folder: Path) -> list[str]:
    """Temp files and staging folders a writer left (``.tmp``, ``.new-``, ``.old-``)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.name.endswith(".tmp") or ".new-" in p.name or ".old-" in p.name
    )


# --- the stages, in-process, on one small chain ---------------------------------------------------


@dataclass
class Chain:
    """One small pipeline in a temp folder: records, a feature table, v1 trained into mlruns/."""

    workdir: Path
    config: Path
    records: Path
    features: Path
    mlruns: Path  # a tmpfs: the SQLite store and the artefacts, as in the default layout
    model_name: str


def write_config(workdir: Path, **paths: Path) -> Path:
    """A config file with every path under ``workdir`` (``paths`` override some)."""
    body = {
        "paths": {
            "raw_dir": str(workdir / "data" / "raw"),
            "interim_dir": str(workdir / "data" / "interim"),
            "processed_dir": str(workdir / "data" / "processed"),
            "predictions_dir": str(workdir / "data" / "predictions"),
            "reports_dir": str(workdir / "reports"),
            "serving_model_dir": str(workdir / "models" / "serving"),
            "cache_dir": str(REPO_ROOT / ".cache"),  # content-keyed ONNX export and embeddings
            "hf_cache_dir": str(REPO_ROOT / ".cache" / "hf"),
            **{k: str(v) for k, v in paths.items()},
        },
        "ingestion": {"source": "sample", "rows": ROWS, "seed": 7},
        "mlflow": {
            "tracking_uri": f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
            "artifact_root": str(workdir / "mlruns" / "artifacts"),
        },
        "training": {"cv_folds": 3},
    }
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(body), encoding="utf-8")
    return config


Stage = Callable[[list[str] | None], int]  # a stage's main, as `python -m` calls it


@dataclass
class FullDisk:
    """A row's full disks: tmpfs mounts under the row's own folder (unmounted after the row),
    the stages run as `python -m` runs them with their stderr read back, and the checks every
    disk row makes."""

    folder: Path
    mounts: Mounts
    capsys: pytest.CaptureFixture[str]

    def mount(self, name: str, size: str) -> Path:
        return self.mounts.mount(self.folder / name, size)

    def stage(self, main: Stage, argv: list[str]) -> tuple[int, str]:
        """Run a stage as `python -m` does; returns (exit code, what it printed on stderr)."""
        self.capsys.readouterr()
        code = run_main(main, argv)
        return code, self.capsys.readouterr().err

    def rerun_full(
        self, main: Stage, argv: list[str], mount: Path, leave: int, rerun: list[str] | None = None
    ) -> tuple[int, str, dict[str, str]]:
        """The fault: one good run (the previous outputs), ``mount`` filled until ``leave`` bytes
        are free, the command again (``rerun``: other arguments); its exit code, its stderr and
        ``mount`` as the good run left it (:func:`snapshot`)."""
        assert self.stage(main, argv)[0] == 0
        before = snapshot(mount)
        fill(mount, leave=leave)
        code, err = self.stage(main, rerun or argv)
        return code, err, before

    def assert_clean(self, code: int, err: str, path: Path | str, kept: str) -> None:
        """The promise every disk row makes about what the user sees."""
        assert code == 1, err
        assert "Traceback" not in err, err
        line = next((x for x in err.splitlines() if x.startswith("error: ")), "")
        with self.capsys.disabled():  # shown with -s: the row's `sees`, as measured
            print(f"\n  exit {code}: {line}")
        assert line.startswith("error: no space left on device"), err
        assert str(path) in line and " free of " in line, line
        assert kept in line, line
        assert "rerun" in line and "df -h" in line, line

    def assert_kept_then_recovers(
        self, main: Stage, argv: list[str], mount: Path, before: dict[str, str]
    ) -> None:
        """What a full disk leaves and how it recovers: ``mount`` byte for byte as ``before``,
        no temp leftovers; with the filler gone, the same command exits 0 and leaves none."""
        assert snapshot(mount) == before
        assert leftovers(mount) == []
        (mount / FILLER).unlink()
        assert self.stage(main, argv)[0] == 0
        assert leftovers(mount) == []


@pytest.fixture(scope="module")
def mounts() -> Iterator[Mounts]:
    with Mounts() as held:
        yield held


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, mounts: Mounts) -> Iterator[Chain]:
    """Ingest, features, and train v1 (@challenger) into an mlruns/ on a 200 MiB tmpfs."""
    import mlflow

    from financemath_mlops.features.__main__ import main as features_main
    from financemath_mlops.ingestion.__main__ import main as ingestion_main
    from financemath_mlops.training.__main__ import main as training_main

    workdir = tmp_path_factory.mktemp("disk-chain")
    mlruns = mounts.mount(workdir / "mlruns", "200m")  # the model's ONNX bundle is about 90 MB
    config = write_config(workdir)
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("FMOPS_", "MLFLOW_")) or name == "PREFECT_API_URL":
                patch.delenv(name)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        for main in (ingestion_main, features_main, training_main):
            assert run_main(main, ["--config", str(config), "--log-level", "WARNING"]) == 0
        yield Chain(
            workdir=workdir,
            config=config,
            records=workdir / "data" / "interim" / "financemath.jsonl",
            features=workdir / "data" / "processed" / "finance_math_features.parquet",
            mlruns=mlruns,
            model_name="financemath-regressor-sample",
        )
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


@pytest.fixture()
def full_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[FullDisk]:
    with Mounts() as held:
        yield FullDisk(tmp_path, held, capsys)


# --- the rows -------------------------------------------------------------------------------------


@pytest.mark.fault_row("ingestion-enospc")
def test_ingestion_on_a_full_disk_keeps_the_previous_set(full_disk: FullDisk) -> None:
    from financemath_mlops.ingestion.__main__ import main

    interim = full_disk.mount("data/interim", "2m")
    config = write_config(full_disk.folder)
    argv = ["--config", str(config), "--log-level", "WARNING"]
    more = [*argv, "--rows", "400", "--seed", "8"]

    code, err, before = full_disk.rerun_full(main, argv, interim, 4096, rerun=more)

    full_disk.assert_clean(code, err, interim / "financemath.jsonl", "the previous set")
    # byte for byte, and no generation folder left behind; then the bigger set, once freed
    full_disk.assert_kept_then_recovers(main, more, interim, before)
    assert len((interim / "financemath.jsonl").read_text().splitlines()) == 400
    assert len(list((interim / ".financemath.jsonl.set").glob("g-*"))) == 1  # the old one went


@pytest.mark.fault_row("features-enospc")
def test_features_on_a_full_disk_keep_the_previous_table(chain: Chain, full_disk: FullDisk) -> None:
    from financemath_mlops.features.__main__ import main

    processed = full_disk.mount("processed", "1m")
    table = processed / "finance_math_features.parquet"
    argv = ["--config", str(chain.config), "--log-level", "WARNING"]
    argv += ["--input", str(chain.records), "--output", str(table)]

    code, err, before = full_disk.rerun_full(main, argv, processed, 16 * 1024)

    full_disk.assert_clean(code, err, table, "the previous finance_math_features.parquet")
    full_disk.assert_kept_then_recovers(main, argv, processed, before)


@pytest.mark.fault_row("embedding-cache-enospc")
def test_features_on_a_full_embedding_cache_still_build_the_table(full_disk: FullDisk) -> None:
    from financemath_mlops.features.__main__ import main as features_main
    from financemath_mlops.ingestion.__main__ import main as ingestion_main

    cache = full_disk.mount("cache", "256k")
    (cache / "embeddings").mkdir()
    fill(cache, leave=0)
    config = write_config(full_disk.folder, cache_dir=cache)
    records, table = full_disk.folder / "records.jsonl", full_disk.folder / "table.parquet"
    argv = ["--config", str(config), "--log-level", "WARNING"]
    assert (
        full_disk.stage(ingestion_main, [*argv, "--seed", "99", "--output", str(records)])[0] == 0
    )
    before = snapshot(cache)

    code, err = full_disk.stage(
        features_main, [*argv, "--input", str(records), "--output", str(table)]
    )

    assert code == 0, err
    assert "embedding cache not saved (no space left on device under" in err, err
    assert "Traceback" not in err, err
    assert table.is_file() and snapshot(cache) == before and leftovers(cache) == []


@pytest.mark.fault_row("mlruns-enospc")
def test_training_on_a_full_mlruns_registers_nothing_and_moves_no_alias(
    chain: Chain, full_disk: FullDisk
) -> None:
    from mlflow import MlflowClient

    from financemath_mlops.training.__main__ import main

    client = MlflowClient(f"sqlite:///{chain.mlruns / 'mlflow.db'}")
    versions = sorted(
        str(v.version) for v in client.search_model_versions(f"name='{chain.model_name}'")
    )
    challenger = client.get_model_version_by_alias(chain.model_name, "challenger").version
    artefacts = chain.mlruns / "artifacts"
    before = snapshot(artefacts)
    experiments = [e.experiment_id for e in client.search_experiments()]
    earlier = {r.info.run_id for r in client.search_runs(experiments)}
    filler = fill(chain.mlruns, leave=1 << 20)
    try:
        code, err = full_disk.stage(main, ["--config", str(chain.config), "--log-level", "WARNING"])
    finally:
        filler.unlink()

    full_disk.assert_clean(code, err, artefacts, "no model version was registered")
    after = sorted(
        str(v.version) for v in client.search_model_versions(f"name='{chain.model_name}'")
    )
    assert after == versions == ["1"]
    assert client.get_model_version_by_alias(chain.model_name, "challenger").version == challenger
    now = snapshot(artefacts)
    assert {k: now.get(k) for k in before} == before  # what v1 and its run hold, byte for byte
    cut_short = [r for r in client.search_runs(experiments) if r.info.run_id not in earlier]
    # FAILED where the store could say so; here it shares the full disk, so it stays RUNNING
    assert [r.info.status for r in cut_short] in (["FAILED"], ["RUNNING"])


@pytest.mark.fault_row("reports-enospc")
def test_a_drift_report_on_a_full_disk_publishes_nothing(chain: Chain, full_disk: FullDisk) -> None:
    from financemath_mlops.monitoring.__main__ import main

    reports = full_disk.mount("reports", "16m")
    config = write_config(full_disk.folder, reports_dir=reports)
    argv = ["--config", str(config), "--log-level", "WARNING", "drift", "--no-mlflow"]
    argv += ["--reference", str(chain.features), "--current", str(chain.records)]

    code, err, before = full_disk.rerun_full(main, argv, reports, 64 * 1024)

    assert len(before) == 5, before  # one folder (drift.html, drift.json), index, latest
    full_disk.assert_clean(code, err, reports, "no partial")
    assert snapshot(reports) == before
    assert leftovers(reports) == []
    # The index's writer alone, on the same full disk: its line is cut back, not left torn.
    from financemath_mlops.errors import OutOfSpaceError
    from financemath_mlops.monitoring.history import record_report

    with pytest.raises(OutOfSpaceError, match="index.jsonl is as it was"):
        record_report(reports, "drift", {"note": "x" * (256 * 1024)})
    assert snapshot(reports) == before
    # No rerun here (a drift report costs 5-30 s on 2 shared cores): the first run above is
    # the recovery, in the same folder; tests/unit/test_atomic_outputs.py pins the index line.


@pytest.mark.fault_row("export-enospc")
def test_an_export_on_a_full_disk_keeps_the_served_folder(
    chain: Chain, full_disk: FullDisk
) -> None:
    from financemath_mlops.registry.__main__ import main

    models = full_disk.mount("models", "200m")
    serving = models / "serving"
    argv = ["--config", str(chain.config), "--log-level", "WARNING"]
    argv += ["--name", chain.model_name, "export", "--version", "1", "--to", str(serving)]

    code, err, before = full_disk.rerun_full(main, argv, models, 1 << 20)

    full_disk.assert_clean(code, err, serving, "the previous export")
    full_disk.assert_kept_then_recovers(main, argv, models, before)
