"""`python -m financemath_mlops.registry` on a real (SQLite) registry: aliases shown, an unknown
name refused with the real ones, and an export that never deletes a folder it did not write.

The registry here holds a stand-in model folder (an `MLmodel` file and a weights file), not a
trained model: listing and exporting only move folders and read the registry, so nothing trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from financemath_mlops import runs
from financemath_mlops.cli import run_main
from financemath_mlops.config import load_settings
from financemath_mlops.registry.__main__ import main as registry_main
from financemath_mlops.runs import store
from tests.helpers import seeded_store

pytestmark = pytest.mark.integration

NAME = "financemath-regressor-sample"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite registry: NAME with versions 1-3 (champion 2, challenger 3, previous-champion 1)
    and two other models; returns the tracking URI. One per module (creating the tables takes
    seconds); no test changes it."""
    import mlflow

    tracking, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    tmp_path = tmp_path_factory.mktemp("registry")
    uri = seeded_store(tmp_path / "mlflow.db")
    runs.configure(load_settings(overrides={"mlflow": {"tracking_uri": uri}}).mlflow)
    client = runs.client()
    source = tmp_path / "model-source"
    source.mkdir()
    (source / "MLmodel").write_text("flavors: {}\n")
    (source / "weights.bin").write_bytes(b"weights")
    for name in (NAME, "financemath-regressor"):
        client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(NAME, str(source))
    runs.set_alias(NAME, runs.PREVIOUS_CHAMPION, 1)
    runs.set_alias(NAME, runs.CHAMPION, 2)
    runs.set_challenger(NAME, 3)
    client.create_registered_model("other-model")
    yield uri
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry_uri)


def registry_cli(uri: str, *args: str) -> int:
    return run_main(registry_main, ["--tracking-uri", uri, "--name", NAME, *args])


def test_list_shows_each_versions_aliases(registry: str, capsys):
    assert registry_cli(registry, "list") == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines == {"1": "previous-champion", "2": "champion", "3": "challenger"}


def test_an_unknown_name_lists_the_registered_ones_closest_first(registry: str, capsys):
    args = ["--tracking-uri", registry, "--name", "financemath-regresor-sample", "list"]
    assert run_main(registry_main, args) == 2
    err = capsys.readouterr().err
    assert "no model named 'financemath-regresor-sample' is registered" in err
    assert f"closest first: {NAME}, financemath-regressor, other-model" in err
    assert "--name" in err
    reason = ["--reason", "a test"]
    for command in (["rollback", *reason], ["promote", "1", *reason], ["export", "--to", "x"]):
        assert run_main(registry_main, args[:-1] + command) == 2
        assert "closest first" in capsys.readouterr().err


def test_export_refuses_a_folder_holding_other_files_and_keeps_them(
    registry: str, tmp_path: Path, capsys
):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert registry_cli(registry, "export", "--to", str(folder)) == 2
    err = capsys.readouterr().err
    assert "will not export to" in err and "notes.txt" in err and "--force" in err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left

    a_file = tmp_path / "model.txt"
    a_file.write_text("not a folder")
    assert registry_cli(registry, "export", "--to", str(a_file)) == 2
    assert a_file.read_text() == "not a folder"

    assert registry_cli(registry, "export", "--to", str(folder), "--force") == 0
    assert (folder / "MLmodel").is_file() and not (folder / "notes.txt").exists()
    assert registry_cli(registry, "export", "--to", str(a_file), "--force") == 0
    assert (a_file / "MLmodel").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nor old copies


def test_export_replaces_its_own_earlier_export_whole(registry: str, tmp_path: Path, capsys):
    folder = tmp_path / "models" / "serving"
    assert registry_cli(registry, "export", "--to", str(folder), "--version", "1") == 0
    assert runs.resolve(str(folder)).version == "1"
    assert registry_cli(registry, "export", "--to", str(folder)) == 0  # the champion: 2
    assert "(version 2)" in capsys.readouterr().out
    assert runs.resolve(str(folder)).version == "2"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["MLmodel", "weights.bin", runs.REGISTERED_META, store.EXPORT_RECORD]
    )
    assert [p.name for p in folder.parent.iterdir()] == ["serving"]  # no staging or old copy
    empty = tmp_path / "empty"
    empty.mkdir()
    assert registry_cli(registry, "export", "--to", str(empty)) == 0


def test_export_refuses_files_added_to_an_earlier_export(registry: str, tmp_path: Path, capsys):
    """MLmodel + registered_model_meta are in any model download: only the record says ours."""
    folder = tmp_path / "serving"
    assert registry_cli(registry, "export", "--to", str(folder), "--version", "1") == 0
    capsys.readouterr()
    (folder / "notes.txt").write_text("mine")
    (folder / "weights.bin").with_name("extra").mkdir()
    assert registry_cli(registry, "export", "--to", str(folder)) == 2
    err = capsys.readouterr().err
    assert "will not export to" in err and "an earlier export holding 2 entries" in err
    assert "extra, notes.txt" in err and "registry export --force" in err
    assert (folder / "notes.txt").read_text() == "mine"
    assert runs.resolve(str(folder)).version == "1"

    # An export from before the record (or a model download a user keeps notes in): replaced
    # only when it holds nothing the new export does not write.
    kept = tmp_path / "kept"
    assert registry_cli(registry, "export", "--to", str(kept), "--version", "1") == 0
    (kept / store.EXPORT_RECORD).unlink()
    (kept / "notes.txt").write_text("mine")
    assert registry_cli(registry, "export", "--to", str(kept)) == 2
    assert "an earlier export holding 1 entry (notes.txt)" in capsys.readouterr().err
    assert (kept / "notes.txt").exists() and runs.resolve(str(kept)).version == "1"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging
    (kept / "notes.txt").unlink()
    assert registry_cli(registry, "export", "--to", str(kept)) == 0
    assert (kept / store.EXPORT_RECORD).is_file() and runs.resolve(str(kept)).version == "2"

    assert registry_cli(registry, "export", "--to", str(folder), "--force") == 0
    assert not (folder / "notes.txt").exists() and runs.resolve(str(folder)).version == "2"
    assert registry_cli(registry, "export", "--to", str(folder), "--version", "1") == 0  # clean
