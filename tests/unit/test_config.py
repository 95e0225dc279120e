"""The settings object: precedence, validation messages, and every shipped config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from financemath_mlops.config import ConfigError, env_name, load_settings
from tests.helpers import REPO_ROOT


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_config_file(isolated_env: Path) -> None:
    settings = load_settings()
    assert settings.ingestion.source == "hf"
    assert settings.ingestion_output == Path("data/interim/financemath.jsonl")
    assert settings.features_output == Path("data/processed/finance_math_features.parquet")
    assert settings.paths.hf_cache_dir == Path(".cache/hf")
    assert settings.features.embedding.backend == "onnx"
    assert settings.mlflow.tracking_uri == "sqlite:///mlruns/mlflow.db"


def test_precedence_cli_over_env_over_third_party_over_yaml(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_yaml(
        isolated_env / "c.yaml",
        "mlflow:\n  tracking_uri: sqlite:///from-yaml.db\ningestion:\n  rows: 7\n",
    )
    assert load_settings(cfg).mlflow.tracking_uri == "sqlite:///from-yaml.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://third-party:5000")
    assert load_settings(cfg).mlflow.tracking_uri == "http://third-party:5000"
    monkeypatch.setenv("FMOPS_MLFLOW__TRACKING_URI", "http://fmops:5000")
    assert load_settings(cfg).mlflow.tracking_uri == "http://fmops:5000"
    cli = load_settings(cfg, {"mlflow": {"tracking_uri": "http://cli:5000"}})
    assert cli.mlflow.tracking_uri == "http://cli:5000"
    # Untouched keys still come from the YAML: sources merge, they do not replace sections.
    assert cli.ingestion.rows == 7


def test_cli_none_values_do_not_override(isolated_env: Path) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  source: local\n")
    settings = load_settings(cfg, {"ingestion": {"source": None, "rows": None}})
    assert settings.ingestion.source == "local"
    assert settings.ingestion.rows == 1000


def test_hf_token_from_env_and_legacy_alias(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  use_auth_token: legacy-token\n")
    settings = load_settings(cfg)
    assert settings.ingestion.hf_token is not None
    assert settings.ingestion.hf_token.get_secret_value() == "legacy-token"
    assert "legacy-token" not in repr(settings)
    monkeypatch.setenv("HF_TOKEN", "env-token")
    assert load_settings(cfg).ingestion.hf_token.get_secret_value() == "env-token"


def test_unknown_key_is_named(isolated_env: Path) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  sauce: hf\n")
    with pytest.raises(ConfigError, match=r"ingestion\.sauce: unknown setting"):
        load_settings(cfg)


def test_bad_env_value_names_key_and_variable(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FMOPS_INGESTION__SOURCE", "ftp")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "ingestion.source" in str(info.value)
    assert "FMOPS_INGESTION__SOURCE" in str(info.value)


def test_missing_config_file_is_an_error(isolated_env: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(isolated_env / "nope.yaml")


def test_broken_yaml_is_an_error(isolated_env: Path) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_settings(cfg)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=str)
def test_every_shipped_config_validates(path: Path, isolated_env: Path) -> None:
    load_settings(path)


def test_env_name_matches_nested_delimiter() -> None:
    assert env_name("ingestion.source") == "FMOPS_INGESTION__SOURCE"
    assert env_name("features.embedding.backend") == "FMOPS_FEATURES__EMBEDDING__BACKEND"


def test_importing_the_package_has_no_side_effects(tmp_path: Path) -> None:
    # Prefect configures its own logging when `prefect` is imported, so the logging check covers
    # every module except flows/ (nothing imports flows; it is an entry point).
    code = (
        "import pkgutil, importlib, financemath_mlops, logging\n"
        "mods = [m.name for m in pkgutil.walk_packages(financemath_mlops.__path__,"
        " 'financemath_mlops.') if not m.name.endswith('__main__')]\n"
        "for name in [m for m in mods if '.flows' not in m]:\n"
        "    importlib.import_module(name)\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "for name in [m for m in mods if '.flows' in m]:\n"
        "    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=300)
    assert list(tmp_path.iterdir()) == []


def test_batch_prediction_has_its_own_section_with_env_overrides(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "predict:\n  batch_rows: 64\n")
    monkeypatch.setenv("FMOPS_PREDICT__EXECUTOR", "dask")
    monkeypatch.setenv("FMOPS_PREDICT__DASK_ADDRESS", "tcp://scheduler:8786")
    settings = load_settings(cfg)
    assert (settings.predict.executor, settings.predict.batch_rows) == ("dask", 64)
    assert settings.predict.dask_address == "tcp://scheduler:8786"
    # The features stage keeps its own executor: the two sections no longer share one.
    assert (settings.features.executor, settings.features.dask_address) == (
        "local",
        "local-cluster",
    )
    with pytest.raises(ConfigError, match=r"predict\.batch_rows.*FMOPS_PREDICT__BATCH_ROWS"):
        load_settings(cfg, {"predict": {"batch_rows": 0}})
