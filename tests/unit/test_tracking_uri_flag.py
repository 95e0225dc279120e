"""`--tracking-uri` on every command that talks to the store, with one precedence everywhere:
the flag wins over FMOPS_MLFLOW__TRACKING_URI, MLFLOW_TRACKING_URI and the YAML; a mistyped flag
exits 2 naming the closest real one (issue 34).

The flag names an http store nothing listens on and every other source names a local SQLite
file: the command stops at its start-of-stage probe naming the flag's address (no Prefect server,
no model, about a second each), which only happens when the flag won. Serving starts the service
for real (it retries a store that is down instead of exiting) and reads the reason from /ready.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from financemath_mlops.cli import run_main
from financemath_mlops.flows.__main__ import main as flows_main
from financemath_mlops.flows.monitoring import main as monitoring_flow_main
from financemath_mlops.predict.__main__ import main as predict_main
from financemath_mlops.promotion.__main__ import main as promotion_main
from tests.helpers import cli_env, free_port, running, wait_for

MLFLOW_HTTP = ("TIMEOUT", "MAX_RETRIES", "BACKOFF_FACTOR", "BACKOFF_JITTER")


@pytest.fixture()
def other_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FMOPS_ env, MLFLOW_TRACKING_URI and a YAML each name a different SQLite store; returns
    the YAML. The probe's MLflow HTTP bounds land in os.environ: undone after the test."""
    for name in MLFLOW_HTTP:
        monkeypatch.setenv(f"MLFLOW_HTTP_REQUEST_{name}", "1")
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}")
    monkeypatch.setenv("FMOPS_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow-env.db'}")
    config = tmp_path / "config.yaml"
    config.write_text(f"mlflow:\n  tracking_uri: sqlite:///{tmp_path / 'yaml.db'}\n")
    return config


def predict_args(tmp_path: Path) -> list[str]:
    records = tmp_path / "in.json"
    records.write_text('[{"question_id": "q1", "question": "What is 2+2?", "tables": []}]')
    return ["--input", str(records), "--output", str(tmp_path / "out.parquet")]


COMMANDS: dict[str, tuple[Callable[[list[str] | None], int], Callable[[Path], list[str]]]] = {
    "predict": (predict_main, predict_args),
    "promotion": (promotion_main, lambda _: []),
    "flows": (flows_main, lambda _: ["run"]),
    "flows.monitoring": (monitoring_flow_main, lambda _: ["--no-retrain"]),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_flag_wins_over_env_mlflow_env_and_yaml(
    command: str, tmp_path: Path, other_sources: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main, extra = COMMANDS[command]
    uri = f"http://127.0.0.1:{free_port()}"
    argv = ["--config", str(other_sources), "--tracking-uri", uri, *extra(tmp_path)]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the MLflow tracking server {uri}" in err, err
    assert not list(tmp_path.glob("*.db"))  # no other source's store was opened


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_mistyped_flag_exits_2_naming_the_closest(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main, extra = COMMANDS[command]
    with pytest.raises(SystemExit) as exit_:
        main(["--traking-uri=sqlite:///x.db", *extra(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --traking-uri" in err
    assert "closest: --traking-uri -> --tracking-uri" in err


def test_serving_resolves_its_model_in_the_flags_store(tmp_path: Path) -> None:
    """A real service: /ready's reason names the flag's store, not the env's or the YAML's."""
    config = tmp_path / "config.yaml"
    config.write_text(f"mlflow:\n  tracking_uri: sqlite:///{tmp_path / 'yaml.db'}\n")
    env = cli_env(
        FMOPS_MLFLOW__TRACKING_URI=f"sqlite:///{tmp_path / 'env.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow-env.db'}",
        FMOPS_PATHS__REPORTS_DIR=str(tmp_path / "reports"),
        FMOPS_MONITORING__PREDICTION_LOG="false",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    store, port = f"http://127.0.0.1:{free_port()}", free_port()
    command = [sys.executable, "-m", "financemath_mlops.serving", "--config", str(config),
               "--port", str(port), "--model-uri", "models:/financemath-regressor@champion",
               "--tracking-uri", store]  # fmt: skip
    log = tmp_path / "service.log"
    ready = f"http://127.0.0.1:{port}/ready"

    def reason_names_a_store() -> bool:
        response = httpx.get(ready, timeout=5)
        return response.status_code == 503 and "127.0.0.1" in response.text

    with running(command, env, tmp_path, log) as process:
        wait_for(reason_names_a_store, 90, "/ready naming the store", process, log)
        body = httpx.get(ready, timeout=5).text
    assert store.removeprefix("http://") in body, body
    assert not list(tmp_path.glob("*.db"))


def test_serving_refuses_a_mistyped_flag_with_the_closest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from financemath_mlops.serving.__main__ import main as serving_main

    with pytest.raises(SystemExit) as exit_:
        serving_main(["--tracking-ur1=sqlite:///x.db"])
    assert exit_.value.code == 2
    assert "closest: --tracking-ur1 -> --tracking-uri" in capsys.readouterr().err
