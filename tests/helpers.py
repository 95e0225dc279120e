"""Plain helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "financemath"
VENV_BIN = Path(sys.executable).parent


def make_rows(n: int = 5, topic: str = "Accounting") -> list[dict[str, Any]]:
    """Small hand-made FinanceMath-shaped rows (for tests that need a handful of valid rows)."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "question_id": f"t-{i}",
                "question": f"A bond pays a coupon of {5 + i}% on $1,000. What is the coupon?",
                "tables": (
                    [f"| item | value |\n|---|---:|\n| coupon | {5 + i}% |\n| face | $ 1,000 |"]
                    if i % 2 == 0
                    else []
                ),
                "python_solution": "def solution():\n    return 50",
                "ground_truth": float(50 + 10 * i),
                "topic": topic,
            }
        )
    return rows


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running our CLIs in a subprocess: the test venv first on PATH, no leaks."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FMOPS_", "MLFLOW_")) and k != "HF_TOKEN"
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env
