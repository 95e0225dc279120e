"""Every entry point (stages, flows, service, batch, the config command) stops on a mistyped
``FMOPS_`` variable with exit 2 and the same message, before doing any work.

The typo that matters most: ``FMOPS_SERVNG__API_KEY`` used to be ignored, and the service
started without a key. Each command loads its settings before importing anything heavy, so the
whole set runs in a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import cli_env

ENTRY_POINTS = {
    "ingestion": ["--source", "sample"],
    "features": [],
    "training": [],
    "evaluation": [],
    "evaluation report": ["--input", "missing.json"],
    "promotion": [],
    "registry list": [],
    "predict": ["--input", "missing.json", "--output", "out.jsonl"],
    "monitoring drift": [],
    "serving": ["--port", "1"],
    "flows": [],
    "flows.monitoring": [],
    "config check": [],
}


def test_every_entry_point_refuses_a_variable_that_names_no_setting(tmp_path: Path) -> None:
    env = cli_env(FMOPS_SERVNG__API_KEY="not-a-real-key")
    running = {}
    for command, args in ENTRY_POINTS.items():
        module, *sub = command.split()
        running[command] = subprocess.Popen(
            [sys.executable, "-m", f"financemath_mlops.{module}", *sub, *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    expected = (
        "error: invalid configuration from env FMOPS_SERVNG__API_KEY:\n"
        "  FMOPS_SERVNG__API_KEY: names no setting (closest: FMOPS_SERVING__API_KEY)."
    )
    for command, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, f"{command}: exit {process.returncode}\n{out}\n{err}"
        assert expected in err, f"{command}:\n{err}"
        assert "not-a-real-key" not in out + err
    # No work done: no data, store or report written. (Importing Prefect, as flows.monitoring
    # does at module level, creates its own .cache/prefect database: not a stage's work.)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".cache") == []
