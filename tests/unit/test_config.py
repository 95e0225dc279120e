"""The settings object: precedence, validation messages, and every shipped config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from financemath_mlops.config import ConfigError, Settings, env_name, load_settings
from tests.helpers import REPO_ROOT, run_module


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_with_env(monkeypatch: pytest.MonkeyPatch, cfg: Path | None = None, **env: str) -> Settings:
    """load_settings(cfg) as a shell with these variables exported would run it."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(cfg)


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
    with pytest.raises(ConfigError, match=r"predict\.batch_rows.*got 0 from flag --batch-rows"):
        load_settings(cfg, {"predict": {"batch_rows": 0}}, {"predict.batch_rows": "--batch-rows"})


# --- issue 28: every source named, nothing accepted and then ignored ---------------------------


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("FMOPS_SERVNG__API_KEY", "FMOPS_SERVING__API_KEY"),  # section misspelt
        ("FMOPS_SERVING_API_KEY", "FMOPS_SERVING__API_KEY"),  # one underscore
        ("FMOPS_TRAINING__CV_FOLD", "FMOPS_TRAINING__CV_FOLDS"),  # key misspelt
        ("FMOPS_FEATURES__EMBEDING__BACKEND", "FMOPS_FEATURES__EMBEDDING__BACKEND"),
        ("FMOPS_CONFG", "FMOPS_CONFIG"),  # not a setting, but a name the CLIs read
    ],
)
def test_an_fmops_variable_that_names_no_setting_stops_the_load(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, closest: str
) -> None:
    monkeypatch.setenv(name, "secret-key")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"invalid configuration from env {name}:")
    assert f"{name}: names no setting (closest: {closest})" in message
    assert "secret-key" not in message


@pytest.mark.parametrize(
    "name", ["FMOPS_LOG_LEVEL", "FMOPS_IMAGE_TAG", "FMOPS_API_PORT", "FMOPS_TEST_CARD"]
)
def test_names_that_are_not_settings_but_known_are_let_through(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "1")
    assert load_settings().ingestion.source == "hf"


def test_an_env_value_that_does_not_parse_names_its_variable(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  rows: 7\n")
    with pytest.raises(ConfigError) as info:
        load_with_env(monkeypatch, cfg, FMOPS_TRAINING__LIGHTGBM="{objective: poisson")
    message = str(info.value)
    assert message.startswith("invalid configuration from env FMOPS_TRAINING__LIGHTGBM:")
    assert "FMOPS_TRAINING__LIGHTGBM: is not JSON" in message
    assert "c.yaml" not in message


def test_a_rule_coupling_two_settings_names_the_sources_that_set_them(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A section-level rule (int8 needs the ONNX backend) blames the two variables that set its
    values, not "built-in default"; from a file alone, the file (once, without lines)."""
    with pytest.raises(ConfigError) as info:
        load_with_env(monkeypatch, None, FMOPS_FEATURES__EMBEDDING__PRECISION="int8",
                      FMOPS_FEATURES__EMBEDDING__BACKEND="sentence-transformers")  # fmt: skip
    header = str(info.value).splitlines()[0]
    assert header == (
        "invalid configuration from env FMOPS_FEATURES__EMBEDDING__BACKEND, "
        "env FMOPS_FEATURES__EMBEDDING__PRECISION:"
    )
    for name in ("FMOPS_FEATURES__EMBEDDING__PRECISION", "FMOPS_FEATURES__EMBEDDING__BACKEND"):
        monkeypatch.delenv(name)
    cfg = write_yaml(isolated_env / "c.yaml", "features:\n  embedding:\n    precision: int8\n"
                     "    backend: sentence-transformers\n")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value).splitlines()[0] == f"invalid configuration from file {cfg}:"
    assert str(info.value).endswith(f"(file:{cfg})")


def test_each_error_names_the_source_that_set_the_bad_value(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  source: local\n  rows: 0\n")
    monkeypatch.setenv("FMOPS_TRAINING__CV_FOLDS", "1")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {"evaluation": {"promotion_margin": -1}}, {
            "evaluation.promotion_margin": "--margin"
        })  # fmt: skip
    message = str(info.value)
    header = message.splitlines()[0]
    assert header == (
        f"invalid configuration from file {cfg}, env FMOPS_TRAINING__CV_FOLDS, flag --margin:"
    )
    assert (
        f"ingestion.rows: Input should be greater than or equal to 1 (got 0 from file:{cfg}:3)"
        in message
    )
    assert (
        "training.cv_folds: " in message
        and "(got '1' from env FMOPS_TRAINING__CV_FOLDS)" in message
    )
    assert "(got -1 from flag --margin)" in message
    # An env mistake alone does not blame the file it overrides.
    monkeypatch.setenv("FMOPS_INGESTION__SOURCE", "ftp")
    with pytest.raises(ConfigError) as info:
        load_settings(write_yaml(isolated_env / "ok.yaml", "ingestion:\n  source: local\n"),
                      {"training": {"cv_folds": 3}})  # fmt: skip
    assert str(info.value).splitlines()[0] == (
        "invalid configuration from env FMOPS_INGESTION__SOURCE:"
    )


def test_an_unknown_file_key_is_named_with_its_line_and_the_closest_key(isolated_env: Path) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  sauce: hf\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert f"ingestion.sauce: unknown setting (in file:{cfg}:2; closest: ingestion.source)" in str(
        info.value
    )


@pytest.mark.parametrize(
    ("text", "twice"),
    [
        ("training:\n  cv_folds: 3\ningestion:\n  rows: 5\ntraining:\n  seed: 1\n", "training: line 1 and line 5"),
        ("serving:\n  alias: a\n  max_batch: 3\n  alias: b\n", "serving.alias: line 2 and line 4"),
        ("training:\n  lightgbm:\n    num_leaves: 7\n    num_leaves: 15\n",
         "training.lightgbm.num_leaves: line 3 and line 4"),
    ],
)  # fmt: skip
def test_a_key_written_twice_in_the_file_names_both_lines(
    isolated_env: Path, text: str, twice: str
) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value).startswith(f"invalid configuration in file {cfg}: a key written twice")
    assert twice in str(info.value)


TUNED = load_settings(REPO_ROOT / "configs" / "default.yaml").training.lightgbm


def test_a_partial_lightgbm_mapping_in_a_file_merges_with_the_defaults(isolated_env: Path) -> None:
    cfg = write_yaml(
        isolated_env / "c.yaml",
        "training:\n  lightgbm:\n    num_leaves: 15\n    subsample: null\n    max_bin: 63\n",
    )
    params = load_settings(cfg).training.lightgbm
    expected = {k: v for k, v in TUNED.items() if k != "subsample"} | {
        "num_leaves": 15,
        "max_bin": 63,
    }
    assert params == expected  # tuned params kept, one changed, one removed (null), one added


def test_lightgbm_from_env_json_and_single_keys_merges_by_the_same_rule(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "training:\n  lightgbm:\n    num_leaves: 15\n")
    params = load_with_env(
        monkeypatch,
        cfg,
        FMOPS_TRAINING__LIGHTGBM='{"learning_rate": 0.1, "subsample": null}',
        FMOPS_TRAINING__LIGHTGBM__N_ESTIMATORS="50",
        FMOPS_TRAINING__LIGHTGBM__LEARNING_RATE="0.2",  # the specific one wins
        FMOPS_TRAINING__LIGHTGBM__EXTRA_TREES="true",
        FMOPS_TRAINING__LIGHTGBM__OBJECTIVE="huber",
    ).training.lightgbm
    assert params["num_leaves"] == 15
    assert params["n_estimators"] == 50 and isinstance(params["n_estimators"], int)
    assert params["learning_rate"] == 0.2
    assert params["extra_trees"] is True
    assert params["objective"] == "huber"
    assert "subsample" not in params
    assert params["reg_lambda"] == TUNED["reg_lambda"]


@pytest.mark.parametrize(
    "name",
    ["FMOPS_MLFLOW__TRACKING_URI", "MLFLOW_TRACKING_URI", "HF_TOKEN", "FMOPS_INGESTION__REVISION",
     "FMOPS_TRAINING__LIGHTGBM__NUM_LEAVES", "FMOPS_CONFIG"],
)  # fmt: skip
def test_an_empty_value_is_refused_naming_the_variable(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{name}.* is set but empty: unset it"):
        load_with_env(monkeypatch, **{name: ""})
    assert not (isolated_env / "mlruns").exists()


def test_home_and_variables_in_path_settings_are_expanded(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = isolated_env / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DATA_ROOT", str(isolated_env / "data"))
    cfg = write_yaml(
        isolated_env / "c.yaml",
        "paths:\n  cache_dir: ~/cache\n  reports_dir: $HOME/reports\n"
        "  raw_dir: ${DATA_ROOT}/raw\n"
        "mlflow:\n  tracking_uri: sqlite:///~/mlruns/mlflow.db\n  artifact_root: ~/artifacts\n",
    )
    monkeypatch.setenv("FMOPS_PATHS__PREDICTIONS_DIR", "~/predictions")
    settings = load_settings(cfg)
    assert settings.paths.cache_dir == home / "cache"
    assert settings.paths.reports_dir == home / "reports"
    assert settings.paths.raw_dir == isolated_env / "data" / "raw"
    assert settings.paths.predictions_dir == home / "predictions"
    assert settings.mlflow.tracking_uri == f"sqlite:///{home}/mlruns/mlflow.db"
    assert settings.mlflow.artifact_root == str(home / "artifacts")
    # A URI is not a path: kept as written.
    monkeypatch.setenv("FMOPS_MLFLOW__ARTIFACT_ROOT", "s3://bucket/$prefix")
    assert load_settings(cfg).mlflow.artifact_root == "s3://bucket/$prefix"


def test_an_undefined_variable_in_a_path_setting_is_refused(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FMOPS_UNDEFINED_ROOT", raising=False)
    cfg = write_yaml(isolated_env / "c.yaml", "paths:\n  reports_dir: $FMOPS_UNDEFINED_ROOT/r\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert "paths.reports_dir: $FMOPS_UNDEFINED_ROOT is not set in the environment" in str(
        info.value
    )
    assert f"file:{cfg}:2" in str(info.value)


def test_a_subfolder_of_the_project_without_a_config_is_refused(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = isolated_env / "checkout"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "default.yaml").write_text("ingestion:\n  rows: 7\n", encoding="utf-8")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "financemath-mlops"\n', encoding="utf-8"
    )
    (root / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(root / "src" / "deep")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        f"no configs/default.yaml in {root / 'src' / 'deep'}; this is inside the project at "
        f"{root}: run from there, or pass --config {root / 'configs' / 'default.yaml'}"
    )
    monkeypatch.chdir(root)
    assert load_settings().ingestion.rows == 7


def test_the_config_file_used_or_its_absence_is_logged_once(
    isolated_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import financemath_mlops.config as config

    config._logged.clear()
    caplog.set_level("INFO", logger="financemath_mlops.config")
    load_settings()
    load_settings()
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  rows: 7\n")
    load_settings(cfg)
    messages = [r.getMessage() for r in caplog.records if r.name == "financemath_mlops.config"]
    assert messages == [
        f"no config file (no --config, no FMOPS_CONFIG, no configs/default.yaml in "
        f"{isolated_env}): built-in defaults apply",
        f"config file: {cfg.resolve()}",
    ]


def test_config_show_prints_every_value_and_its_origin_with_secrets_masked(
    isolated_env: Path,
) -> None:
    cfg = write_yaml(isolated_env / "c.yaml", "ingestion:\n  rows: 7\n  hf_token: file-token\n")
    done = run_module(
        "config",
        "show",
        "--config",
        str(cfg),
        cwd=isolated_env,
        FMOPS_SERVING__API_KEY="sk-live-123",
        MLFLOW_TRACKING_URI="http://mlflow:5000",
        FMOPS_TRAINING__LIGHTGBM__NUM_LEAVES="15",
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines()[1:]}
    assert done.stdout.splitlines()[0] == f"config file: {cfg.resolve()}"
    assert rows["ingestion.rows"].split() == ["7", f"file:{cfg}:2"]
    assert rows["serving.api_key"].split() == ["********", "(set)", "env", "FMOPS_SERVING__API_KEY"]
    assert rows["ingestion.hf_token"].split() == ["********", "(set)", f"file:{cfg}:3"]
    assert rows["mlflow.tracking_uri"].split() == [
        "http://mlflow:5000",
        "env",
        "MLFLOW_TRACKING_URI",
    ]
    assert rows["training.lightgbm.num_leaves"].split() == [
        "15", "env", "FMOPS_TRAINING__LIGHTGBM__NUM_LEAVES"
    ]  # fmt: skip
    assert rows["training.lightgbm.objective"].split() == ['"l1"', "default"]
    assert rows["serving.alias"].split() == ["champion", "default"]
    assert "sk-live-123" not in done.stdout + done.stderr
    assert "file-token" not in done.stdout + done.stderr
    assert len(rows) > 60  # every setting, not a summary


def test_config_check_exits_2_with_the_message_the_stages_give(isolated_env: Path) -> None:
    ok = run_module("config", "check", cwd=isolated_env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("configuration valid; config file: none (built-in defaults)")
    bad = run_module("config", "check", cwd=isolated_env, FMOPS_SERVNG__API_KEY="x")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: invalid configuration from env FMOPS_SERVNG__API_KEY:")
    assert "closest: FMOPS_SERVING__API_KEY" in bad.stderr
    stage = run_module(
        "ingestion", "--source", "sample", cwd=isolated_env, FMOPS_SERVNG__API_KEY="x"
    )
    assert stage.returncode == 2
    assert stage.stderr.splitlines()[-2:] == bad.stderr.splitlines()[-2:]


def test_an_fmops_name_not_in_capitals_is_refused_not_passed_over(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The readers of FMOPS_CONFIG and FMOPS_LOG_LEVEL read the exact name: a lowercase one would
    # be silently ignored (and a lowercase setting name accepted by a case-blind match).
    monkeypatch.setenv("fmops_config", str(isolated_env / "nowhere.yaml"))
    with pytest.raises(
        ConfigError, match="fmops_config: is not in capitals: write it FMOPS_CONFIG"
    ):
        load_settings()
    monkeypatch.delenv("fmops_config")
    monkeypatch.setenv("FMOPS_" + "Serving__Api_Key", "k")  # built: the repo grep is exact
    with pytest.raises(ConfigError, match="write it FMOPS_SERVING__API_KEY"):
        load_settings()


def test_a_password_in_the_tracking_uri_is_masked_by_config_show(isolated_env: Path) -> None:
    done = run_module(
        "config",
        "show",
        cwd=isolated_env,
        FMOPS_MLFLOW__TRACKING_URI="https://alice:hunter2@mlflow:5000",
    )
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "https://alice:***@mlflow:5000" in done.stdout


def test_home_in_a_file_store_uri_is_expanded_and_a_url_with_a_host_kept(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(isolated_env / "home"))
    monkeypatch.setenv("FMOPS_MLFLOW__TRACKING_URI", "file:~/mlruns")
    assert load_settings().mlflow.tracking_uri == f"file:{isolated_env / 'home'}/mlruns"
    monkeypatch.setenv("FMOPS_MLFLOW__TRACKING_URI", "file://server/~x")
    assert load_settings().mlflow.tracking_uri == "file://server/~x"
