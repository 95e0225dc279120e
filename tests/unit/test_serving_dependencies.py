"""The service's dependencies: a store call that got no answer is told apart from one the store
answered, and what /ready shows of an address or an error holds no credentials and no paths."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge

from financemath_mlops.runs import TrackingError
from financemath_mlops.serving.dependencies import (
    Dependencies,
    failure_cause,
    public_address,
    store_unreachable,
)


def raised_as_resolve_does(error: Exception) -> TrackingError:
    """runs.resolve: `raise TrackingError(...) from None` inside `except MlflowException`."""
    try:
        try:
            raise error
        except Exception:
            raise TrackingError("cannot resolve model models:/m@champion") from None
    except TrackingError as exc:
        return exc


def test_no_answer_is_down_and_an_answer_is_up():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    refused = MlflowException("API request to http://127.0.0.1:5000/api failed with exception x")
    assert store_unreachable(raised_as_resolve_does(refused)) is True
    busy = MlflowException("database restarting", error_code=TEMPORARILY_UNAVAILABLE)
    assert store_unreachable(raised_as_resolve_does(busy)) is True
    missing = MlflowException("no alias champion", error_code=RESOURCE_DOES_NOT_EXIST)
    assert store_unreachable(raised_as_resolve_does(missing)) is False
    assert store_unreachable(raised_as_resolve_does(ConnectionRefusedError(111, "refused")))
    assert store_unreachable(ValueError("a model that does not load")) is None


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "http://user:secret@mlflow.internal:5000/some/path?token=x",
            "http://mlflow.internal:5000",
        ),
        ("https://mlflow.example.com", "https://mlflow.example.com"),
        ("postgresql://mlflow:pw@db:5432/mlflow", "postgresql://db:5432"),
        ("http://[::1]:5000", "http://[::1]:5000"),
        ("sqlite:////srv/secret/mlruns/mlflow.db", "sqlite (a local file)"),
        ("/srv/mlruns", "file (a local file)"),
    ],
)
def test_addresses_lose_credentials_and_paths(uri, shown):
    assert public_address(uri) == shown


def test_the_gauge_follows_each_report_and_errors_are_cleaned():
    registry = CollectorRegistry()
    gauge = Gauge("fmops_dependency_up", "up", ["name"], registry=registry)
    deps = Dependencies(gauge)
    deps.declare("tracking_store", "http://mlflow:5000")
    assert registry.get_sample_value("fmops_dependency_up", {"name": "tracking_store"}) is None
    deps.report("tracking_store", False, "http://u:pw@mlflow:5000 timed out reading /srv/x/y")
    assert registry.get_sample_value("fmops_dependency_up", {"name": "tracking_store"}) == 0
    status = deps.snapshot()["tracking_store"]
    assert status["up"] is False and status["checked_at"]
    assert "pw" not in status["error"] and "/srv/x" not in status["error"]
    assert deps.down() == ["tracking_store"]
    deps.report("tracking_store", True)
    assert registry.get_sample_value("fmops_dependency_up", {"name": "tracking_store"}) == 1
    assert deps.down() == [] and deps.snapshot()["tracking_store"]["error"] is None
    deps.report("never_declared", False)  # ignored, not invented
    assert set(deps.snapshot()) == {"tracking_store"}


def test_the_cause_is_said_in_a_few_words():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    api = "API request to http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias failed"
    cases = {
        f"{api} with exception HTTPConnectionPool(host='127.0.0.1', port=5000): Read timed out.": (
            "timed out"
        ),
        f"{api} with exception ... [Errno 111] Connection refused')": "refused the connection",
        f"{api} with exception ... (Caused by ResponseError('too many 500 error responses'))": (
            "answered HTTP 500 to every try"
        ),
        f"{api} with exception SSLError('bad handshake')": "could not be reached (TrackingError)",
    }
    for message, cause in cases.items():
        assert failure_cause(raised_as_resolve_does(MlflowException(message))) == cause, message
    busy = MlflowException("the database is restarting", error_code=TEMPORARILY_UNAVAILABLE)
    assert failure_cause(busy) == "answered HTTP 503: the database is restarting"
