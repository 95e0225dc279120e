"""Who may be served without an API key, and keys kept out of the logs (issue 28, item 3).

In process: the loopback rule, the entry point's refusal and INFO lines, the app's own WARNING
under a server that cannot tell its address, and the access-log filter. The same behaviours
through real processes: tests/integration/test_serving_bind_guard.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from financemath_mlops.config import ServingSettings, load_settings
from financemath_mlops.errors import StageError
from financemath_mlops.serving.app import ServiceSettings, create_app
from financemath_mlops.serving.security import (
    BIND_CHECKED_ENV,
    RedactQueryString,
    check_bind,
    is_loopback,
)
from tests.helpers import REPO_ROOT

SECURITY_LOGGER = "financemath_mlops.serving.security"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_addresses_are_recognised(host):
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "", "10.0.0.5", "192.168.1.10", "fe80::1", "example.com", "localhost.lan"],
)
def test_every_other_address_is_beyond_loopback(host):
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5"])
def test_no_key_beyond_loopback_is_refused_naming_both_settings(host):
    with pytest.raises(StageError) as refused:
        check_bind(ServingSettings(), host)
    message = str(refused.value)
    assert "\n" not in message  # one line, as run_main prints it
    assert host in message
    for name in (
        "FMOPS_SERVING__API_KEY",
        "FMOPS_SERVING__ALLOW_ANONYMOUS",
        "serving.allow_anonymous",
    ):
        assert name in message


def test_no_key_on_loopback_starts_and_says_so_at_info(caplog):
    with caplog.at_level(logging.INFO, logger=SECURITY_LOGGER):
        check_bind(ServingSettings(), "127.0.0.1")
    (record,) = [r for r in caplog.records if r.name == SECURITY_LOGGER]
    assert record.levelno == logging.INFO
    assert "without an API key" in record.getMessage()
    assert "FMOPS_SERVING__API_KEY" in record.getMessage()  # how to set one


def test_allow_anonymous_beyond_loopback_starts_and_says_it_was_asked_for(caplog):
    with caplog.at_level(logging.INFO, logger=SECURITY_LOGGER):
        check_bind(ServingSettings(allow_anonymous=True), "0.0.0.0")
    (record,) = [r for r in caplog.records if r.name == SECURITY_LOGGER]
    assert record.levelno == logging.INFO
    assert "anonymous access was asked for" in record.getMessage()


def test_the_published_address_is_what_the_keyless_rule_judges(caplog):
    # compose: the container listens on 0.0.0.0; its port is published on FMOPS_BIND_ADDRESS.
    with caplog.at_level(logging.INFO, logger=SECURITY_LOGGER):
        check_bind(ServingSettings(published_address="127.0.0.1"), "0.0.0.0")
    (record,) = [r for r in caplog.records if r.name == SECURITY_LOGGER]
    assert "serving on 0.0.0.0, published on 127.0.0.1 without an API key" in record.getMessage()
    with pytest.raises(StageError, match="refusing to serve on 0.0.0.0 without an API key"):
        check_bind(ServingSettings(published_address="0.0.0.0"), "0.0.0.0")
    with pytest.raises(StageError, match="published on 10.1.2.3"):
        check_bind(ServingSettings(published_address="10.1.2.3"), "127.0.0.1")


def test_a_key_beyond_loopback_starts_quietly(caplog):
    with caplog.at_level(logging.INFO, logger=SECURITY_LOGGER):
        check_bind(ServingSettings(api_key="k-123"), "0.0.0.0")
    assert not [r for r in caplog.records if r.name == SECURITY_LOGGER]


# --- the app alone (plain `uvicorn ...app:app`): it cannot know the address --------------------


def start_app(tmp: Path, **serving: object) -> None:
    settings = load_settings(
        overrides={
            "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
            "paths": {"reports_dir": str(tmp / "reports")},
            "monitoring": {"prediction_log": False},
            "serving": {"model_uri": "nowhere:/model", **serving},
        }
    )
    with TestClient(
        create_app(ServiceSettings.of(settings))
    ) as client:  # runs the lifespan: start, then stop
        assert client.get("/health").status_code == 200


def key_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SECURITY_LOGGER]


def test_the_app_warns_at_start_when_no_key_is_set(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(BIND_CHECKED_ENV, raising=False)
    with caplog.at_level(logging.INFO):
        start_app(tmp_path)
    (record,) = key_records(caplog)
    assert record.levelno == logging.WARNING
    assert "FMOPS_SERVING__API_KEY" in record.getMessage()
    assert "FMOPS_SERVING__ALLOW_ANONYMOUS" in record.getMessage()


def test_the_app_says_info_when_anonymous_access_was_asked_for(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(BIND_CHECKED_ENV, raising=False)
    with caplog.at_level(logging.INFO):
        start_app(tmp_path, allow_anonymous=True)
    (record,) = key_records(caplog)
    assert record.levelno == logging.INFO
    assert "anonymous access was asked for" in record.getMessage()


def test_the_app_is_quiet_with_a_key(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(BIND_CHECKED_ENV, raising=False)
    with caplog.at_level(logging.INFO):
        start_app(tmp_path, api_key="k-123")
    assert not key_records(caplog)


def test_the_app_does_not_repeat_what_the_entry_point_said(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv(BIND_CHECKED_ENV, "127.0.0.1")
    with caplog.at_level(logging.INFO):
        start_app(tmp_path)
    assert not key_records(caplog)


def test_the_app_installs_the_access_log_redaction(tmp_path):
    access = logging.getLogger("uvicorn.access")
    for installed in [f for f in access.filters if isinstance(f, RedactQueryString)]:
        access.removeFilter(installed)
    start_app(tmp_path)
    start_app(tmp_path)  # once per process, however many apps start
    assert sum(isinstance(f, RedactQueryString) for f in access.filters) == 1


# --- the access log ------------------------------------------------------------------------------


def access_line(path: str) -> str:
    """What uvicorn's access logger prints for a request to `path` once the filter ran."""
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1,
        '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5000", "GET", path, "1.1", 401), None,
    )  # fmt: skip
    assert RedactQueryString().filter(record)
    return record.getMessage()


def test_the_access_log_redacts_the_query_string():
    line = access_line("/predict?api_key=SECRET&x=1")
    assert "SECRET" not in line and "x=1" not in line
    assert line == '127.0.0.1:5000 - "GET /predict?[redacted] HTTP/1.1" 401'


def test_the_access_log_keeps_a_path_without_query_string():
    assert access_line("/health") == '127.0.0.1:5000 - "GET /health HTTP/1.1" 401'


def test_the_access_log_filter_leaves_other_records_alone():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "plain %s", ("a?b",), None
    )
    assert RedactQueryString().filter(record)
    assert record.getMessage() == "plain a?b"


# --- where the service runs beyond loopback ------------------------------------------------------


def test_kubernetes_takes_the_key_from_its_secret_and_never_asks_for_anonymous_access():
    """The pods listen on 0.0.0.0 and are reached through a Service: a key, never anonymity."""
    manifests = sorted((REPO_ROOT / "deploy" / "k8s").rglob("*.yaml"))
    assert manifests
    for path in manifests:
        text = path.read_text(encoding="utf-8").lower()
        assert "allow_anonymous" not in text, path
    deployment = (REPO_ROOT / "deploy/k8s/base/inference-deployment.yaml").read_text()
    assert '"--host", "0.0.0.0"' in deployment
    key = deployment.index("name: FMOPS_SERVING__API_KEY")
    assert "secretKeyRef:" in deployment[key : key + 200]
