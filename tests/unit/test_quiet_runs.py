"""A run tells its story once and warns only about real problems (issue 28, item 7).

The flow test (tests/integration/test_flow.py) checks a whole run's log; these pin the two causes
it had, each in isolation: the hub probe's line repeated by every stage that resolves the
embedding weights, and MLflow's "Add type hints" UserWarning on every import of our pyfunc.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import constants as hf_constants

from financemath_mlops.features.weights import resolve_weights
from tests.helpers import cli_env


def weights_records(caplog: pytest.LogCaptureFixture, text: str) -> list[int]:
    return [
        r.levelno
        for r in caplog.records
        if r.name == "financemath_mlops.features.weights" and text in r.getMessage()
    ]


def test_the_hub_probe_is_told_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    def down(*args: object, **kwargs: object) -> None:
        raise httpx2.ConnectError("network is down")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", down)
    caplog.set_level(logging.DEBUG, logger="financemath_mlops.features.weights")
    for _ in range(3):  # features, then training's ONNX bundle, then ... in one flow process
        assert resolve_weights(hf_cache_dir=tmp_path / "hf", hub_timeout=1).source == "package"
    assert weights_records(caplog, "hub unreachable") == [logging.INFO] + [logging.DEBUG] * 2
    assert weights_records(caplog, "using the weights shipped by") == (
        [logging.INFO] + [logging.DEBUG] * 2
    )


def test_importing_the_pyfunc_raises_no_mlflow_type_hint_warning() -> None:
    """MLflow checks predict's type hints when the class is defined (each training, serving and
    batch start); without hints it printed "Add type hints to the `predict` method"."""
    code = (
        "import warnings\n"
        "import mlflow.pyfunc\n"
        "warnings.simplefilter('always')\n"
        "import financemath_mlops.model.pyfunc\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert "Warning" not in done.stderr, done.stderr
