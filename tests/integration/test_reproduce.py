"""`registry reproduce`: the session's trained version (the `trained_model` fixture: the sample,
ingest -> features -> train -> evaluate) rebuilt from its run's record comes out bit for bit the
same and leaves the tracking store as it was; a changed data file is refused with both checksums;
a checkout that is not the run's is refused unless --allow-drift.

The rebuilds here pass --allow-drift (see :func:`only_code_drift`) and take their vectors from
the embedding cache (`--reuse-embeddings`) to stay inside `make test`'s budget; recomputing every
vector is the default and is what `make test-team-stores` runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from financemath_mlops import provenance, runs
from financemath_mlops.cli import run_main
from financemath_mlops.errors import StageError
from financemath_mlops.ingestion import ingest
from financemath_mlops.registry import rebuild
from financemath_mlops.registry.__main__ import main as registry_main
from financemath_mlops.runs.training_run import load_rebuild_recipe
from financemath_mlops.synthetic.sample import generate_sample
from tests.conftest import TrainedModel, pipeline_settings
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture()
def repo_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's content-keyed caches (ONNX export, embeddings), as the fixture used."""
    monkeypatch.setenv("FMOPS_PATHS__CACHE_DIR", str(REPO_ROOT / ".cache"))
    monkeypatch.setenv("FMOPS_PATHS__HF_CACHE_DIR", str(REPO_ROOT / ".cache" / "hf"))


def reproduce_cli(model: TrainedModel, *args: str) -> int:
    base = ["--tracking-uri", model.tracking_uri, "--name", model.model_name, "reproduce"]
    return run_main(registry_main, [*base, *args])


def only_code_drift(out: str) -> bool:
    """--allow-drift in the rebuild tests: in a working tree others edit while the session runs
    (after the fixture trained) the commit or the uncommitted changes may move on; the lock and
    the packages never do (one venv). On a fresh clone (CI) there is no drift line at all; the
    refusal itself is the dirty-checkout test's."""
    drift = [line.split()[1] for line in out.splitlines() if line.strip().startswith("drift ")]
    return set(drift) <= {"commit:", "tree:"}


def store_state(model: TrainedModel) -> tuple[int, list[tuple[str, tuple[str, ...]]]]:
    """(runs in every experiment, each version with its aliases): what a rebuild must not move."""
    client = runs.client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    count = len(client.search_runs(experiments, max_results=10_000))
    versions = sorted((str(v.version), tuple(sorted(v.aliases))) for v in runs.list_versions(model.model_name))  # fmt: skip
    return count, versions


def test_the_trained_version_rebuilds_bit_identically_and_moves_nothing(
    trained_model: TrainedModel, repo_caches: None, restore_mlflow_uris: None, capsys
):
    runs.configure(trained_model.settings.mlflow)
    before = store_state(trained_model)
    args = (trained_model.version, "--reuse-embeddings", "--allow-drift")
    code = reproduce_cli(trained_model, *args)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert only_code_drift(out)
    assert "records, sha256" in out and "= the run's" in out  # the sample regenerated exactly
    assert "split" in out and "as the run's" in out
    assert "features" in out and ": identical" in out
    assert "model text identical" in out
    assert "holdout (" in out and "training (" in out and "max |diff| 0 " in out
    assert out.rstrip().splitlines()[-1].startswith("identical")
    assert store_state(trained_model) == before  # no run, no version, no alias moved


def test_from_features_retrains_the_same_booster_from_the_stored_table(
    trained_model: TrainedModel, repo_caches: None, restore_mlflow_uris: None, capsys
):
    args = ("--run-id", trained_model.run_id, "--from-features", "--allow-drift")
    code = reproduce_cli(trained_model, *args)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert only_code_drift(out)
    assert "not fetched (--from-features" in out and "model text identical" in out


def test_a_dirty_checkout_is_refused_naming_the_file_unless_drift_is_allowed(
    trained_model: TrainedModel,
    repo_caches: None,
    restore_mlflow_uris: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
):
    """A clone of the repository with README.md edited stands for the checkout (git reads
    GIT_DIR/GIT_WORK_TREE): its tree is not the run's."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--shared", str(REPO_ROOT), str(clone)], check=True)
    with (clone / "README.md").open("a", encoding="utf-8") as handle:
        handle.write("\nan uncommitted line\n")
    monkeypatch.setenv("GIT_DIR", str(clone / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(clone))
    assert reproduce_cli(trained_model, trained_model.version, "--from-features") == 2
    err = capsys.readouterr().err
    assert "tree: the run's" in err and "this checkout uncommitted changes" in err
    assert "README.md" in err and "--allow-drift" in err
    args = (trained_model.version, "--from-features", "--allow-drift")
    assert reproduce_cli(trained_model, *args) == 0
    out = capsys.readouterr().out
    assert "drift" in out and "README.md" in out and "model text identical" in out


def test_lock_and_package_drift_are_named(
    trained_model: TrainedModel, restore_mlflow_uris: None, tmp_path: Path
):
    runs.configure(trained_model.settings.mlflow)
    recipe = load_rebuild_recipe(trained_model.run_id, tmp_path)
    assert recipe is not None
    env = recipe["environment"]
    assert env["lock"] == "requirements/dev.txt"  # the set `make test` installs
    lock = (REPO_ROOT / env["lock"]).read_bytes()
    assert env["lock_sha256"] == hashlib.sha256(lock).hexdigest()
    assert "lock" not in " ".join(rebuild.drift(recipe))
    env["lock_sha256"] = "0" * 64
    env["packages"] = [
        "lightgbm==0.1" if p.startswith("lightgbm==") else p for p in env["packages"]
    ]
    env["packages_sha256"] = "changed"
    found = " ".join(rebuild.drift(recipe))
    assert "lock: the run's requirements/dev.txt (sha256 000000000000)" in found
    assert "lightgbm: 0.1 -> " in found


def test_a_set_installed_since_the_run_is_not_drift(
    trained_model: TrainedModel, restore_mlflow_uris: None, tmp_path: Path
):
    """`make run` records the pipeline lock; `make test` then adds the dev set beside it. The
    rebuild runs the same pins, so reproduce must not refuse (a changed pin still is drift)."""
    runs.configure(trained_model.settings.mlflow)
    recipe = load_rebuild_recipe(trained_model.run_id, tmp_path)
    assert recipe is not None
    env = recipe["environment"]
    pipeline = REPO_ROOT / "requirements" / "pipeline.txt"
    pins = provenance.lock_pins(pipeline)
    env["lock"] = "requirements/pipeline.txt"
    env["lock_sha256"] = hashlib.sha256(pipeline.read_bytes()).hexdigest()
    env["packages"] = [p for p in env["packages"] if p.split("==", 1)[0] in pins]
    env["packages_sha256"] = "the pipeline set only"
    found = " ".join(rebuild.drift(recipe))
    assert "lock" not in found and "packages" not in found, found
    env["lock_sha256"] = "0" * 64  # the run's lock is not this checkout's file
    assert "lock: the run's requirements/pipeline.txt" in " ".join(rebuild.drift(recipe))


def local_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """A DVC-tracked local file (a `.dvc` pointer and a DVC root, as `dvc add` leaves them) and
    the recipe's data section a run trained on it would record."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    data = repo / "data" / "raw" / "questions.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text(
        "".join(json.dumps(row) + "\n" for row in generate_sample(rows=30, seed=3)),
        encoding="utf-8",
    )
    md5 = hashlib.md5(data.read_bytes()).hexdigest()
    data.with_name(data.name + ".dvc").write_text(
        f"outs:\n- md5: {md5}\n  path: {data.name}\n", encoding="utf-8"
    )
    settings = pipeline_settings(tmp_path, ingestion={"source": "local", "path": data})
    summary = ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)
    meta = json.loads(summary.output.read_text(encoding="utf-8").splitlines()[0])["meta"]
    assert meta["revision"] == f"dvc:{md5}"
    recipe = {
        "data": {
            "source": "local",
            "dataset_id": str(data),
            "split": None,
            "revision": f"dvc:{md5}",
            "version": f"dvc:{md5}",
            "records_sha256": hashlib.sha256(summary.output.read_bytes()).hexdigest(),
        }
    }
    monkeypatch.setenv("PATH", str(tmp_path / "no-dvc-here"))  # `dvc` is not installed
    return data, {"recipe": recipe, "meta": meta, "settings": settings}


def test_a_changed_data_file_is_refused_with_both_md5s_and_dvc_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data, run = local_data(tmp_path, monkeypatch)
    original = data.read_bytes()
    work = tmp_path / "work"
    records, line = rebuild.fetch_records(run["settings"], run["recipe"], run["meta"], work / "1")
    assert "= the run's" in line  # unchanged: the same records, byte for byte
    data.write_text(data.read_text(encoding="utf-8").replace('"topic"', '"topic" ', 1))
    changed = hashlib.md5(data.read_bytes()).hexdigest()
    md5 = run["recipe"]["data"]["revision"][4:]
    with pytest.raises(StageError) as refused:
        rebuild.fetch_records(run["settings"], run["recipe"], run["meta"], work / "2")
    message = str(refused.value)
    assert f"dvc:{md5}" in message and f"md5 {changed}" in message
    assert "`dvc`" in message and "not installed" in message
    # the recorded bytes in the DVC cache: fetched from there, the records are the run's again
    cached = data.parents[2] / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(original)
    _, line = rebuild.fetch_records(run["settings"], run["recipe"], run["meta"], work / "3")
    assert "= the run's" in line


def test_a_changed_untracked_file_is_refused_with_both_sha256s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data, run = local_data(tmp_path, monkeypatch)
    recipe = run["recipe"]
    recipe["data"]["revision"] = recipe["data"]["version"] = None  # not DVC-tracked
    want = recipe["data"]["records_sha256"]
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    rows[0]["ground_truth"] = 12345.0
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(StageError) as refused:
        rebuild.fetch_records(run["settings"], recipe, run["meta"], tmp_path / "work")
    message = str(refused.value)
    assert f"the run trained on sha256 {want}" in message
    assert "ingests to records with sha256" in message and "Nothing was rebuilt" in message


def test_a_changed_embedding_shows_as_the_largest_feature_difference_and_exits_1(
    trained_model: TrainedModel,
    restore_mlflow_uris: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
):
    """Vectors off by 1e-3 in one dimension (what another CPU's kernels could do) in a copy of
    the embedding cache: the rebuild says which column and question differ most, and exits 1."""
    import numpy as np

    cache = tmp_path / "cache"
    (cache / "embeddings").mkdir(parents=True)
    for store in (REPO_ROOT / ".cache" / "embeddings").glob("*.npz"):
        with np.load(store) as data:
            hashes, vectors = data["hashes"], data["vectors"].copy()
        vectors[:, 0] += np.float32(1e-3)
        np.savez(cache / "embeddings" / store.name, hashes=hashes, vectors=vectors)
        shutil.copyfile(store.with_suffix(".json"), cache / "embeddings" / f"{store.stem}.json")
    monkeypatch.setenv("FMOPS_PATHS__CACHE_DIR", str(cache))
    monkeypatch.setenv("FMOPS_PATHS__HF_CACHE_DIR", str(REPO_ROOT / ".cache" / "hf"))
    args = (trained_model.version, "--reuse-embeddings", "--allow-drift")
    assert reproduce_cli(trained_model, *args) == 1
    out = capsys.readouterr().out
    features = next(line for line in out.splitlines() if line.strip().startswith("features"))
    assert "columns differ; largest |diff| 0.001 in emb_000 of " in features
    assert out.rstrip().splitlines()[-1].startswith("DIFFERS")


def test_the_lock_is_the_largest_whose_every_pin_is_installed(tmp_path: Path):
    """Found by content: a dev lock pinning a version that is not installed does not match, the
    pipeline lock whose pins all are does; with none matching, `none`."""
    from financemath_mlops import provenance

    installed = dict(line.split("==", 1) for line in provenance.installed_packages())
    locks = tmp_path / "requirements"
    locks.mkdir()
    numpy = f"numpy=={installed['numpy']} \\\n    --hash=sha256:{'0' * 64}\n"
    (locks / "pipeline.txt").write_text(numpy, encoding="utf-8")
    (locks / "dev.txt").write_text(numpy + "lightgbm==0.0.1\n", encoding="utf-8")
    env = provenance.environment(tmp_path)
    assert env.lock_name == "requirements/pipeline.txt"
    assert env.lock_sha256 == hashlib.sha256((locks / "pipeline.txt").read_bytes()).hexdigest()
    (locks / "pipeline.txt").write_text("numpy==0.0.1\n", encoding="utf-8")
    assert provenance.environment(tmp_path).lock_name == "none"
