"""Model quality with int8 vs fp32 embeddings: paired intervals over the evaluation report's CV.

Calls the evaluation report's own functions (:mod:`financemath_mlops.evaluation.report`): the same
labelled file, production feature rows embedded with each precision's ONNX bundle, the same
repeated topic-stratified nested CV (the folds depend on the topics and seed only, so both
precisions see the same folds) and the same paired bootstrap. A difference (int8 - fp32) in
log-MAE inside +/- ``MARGIN`` is "no loss" for the default's choice (issue 23).

    python benchmarks/embedding_precision.py --input ../shared/data/financemath/validation.json

Writes ``benchmarks/results/embedding_precision.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "financemath" / "validation.json"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "embedding_precision.json"
MARGIN = 0.05  # |int8 - fp32| log-MAE the default may switch within (issue 23)
# The production feature row (hand features + full MiniLM vector, configured LightGBM).
PRODUCTION = "hand+full / configured"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from financemath_mlops.config import load_settings
    from financemath_mlops.evaluation import report

    args = parse_args(argv)
    if not args.input.is_file():
        print(f"error: labelled input not found: {args.input}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    load_at_start = os.getloadavg()
    opts = report.ReportOptions(args.folds, args.seeds, args.inner_folds, args.bootstrap, args.jobs)
    records = report.load_labelled(args.input)
    base = load_settings(REPO_ROOT / "configs" / "default.yaml")
    lgb_settings = {"configured": dict(base.training.lightgbm), "small": report.SMALL_SETTING}
    losses: dict[str, dict[str, Any]] = {}
    metrics: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for precision in ("fp32", "int8"):
        started = time.perf_counter()
        settings = load_settings(
            REPO_ROOT / "configs" / "default.yaml",
            {"features": {"embedding": {"precision": precision, "backend": "onnx"}}},
        )
        data = report.cv_data(settings, records)
        cv = report.repeated_nested_cv(
            report.candidates(), lgb_settings, data, opts.folds, opts.seeds, opts.inner_folds,
            opts.jobs, progress=lambda done, total, p=precision: print(f"  {p}: {done}/{total}"),
        )  # fmt: skip
        losses[precision] = {
            name: report.row_losses(cv["predictions"][name], data.target)
            for name in ("model", PRODUCTION)
        }
        metrics[precision] = {
            name: report.per_seed_metrics(cv["predictions"][name], data.target)
            for name in ("model", PRODUCTION)
        }
        seconds[precision] = round(time.perf_counter() - started, 1)
        print(f"{precision}: nested CV done in {seconds[precision]} s", flush=True)
    comparisons = {
        name: report.compare(losses["int8"][name], losses["fp32"][name], opts)
        for name in ("model", PRODUCTION)
    }
    verdict = comparisons["model"]["log_mae"]
    no_loss = verdict["low"] >= -MARGIN and verdict["high"] <= MARGIN
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": args.input.name,
        "rows": len(records),
        "cv": {"folds": opts.folds, "seeds": opts.seeds, "inner_folds": opts.inner_folds},
        "bootstrap": opts.bootstrap,
        "margin": MARGIN,
        "metrics": metrics,
        "int8_minus_fp32": comparisons,
        "no_loss_beyond_margin": no_loss,
        "seconds": seconds,
        "load_average": {"start": [round(x, 2) for x in load_at_start], "end": os.getloadavg()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(
        f"\n{'predictions':<26} {'fp32 log-MAE':>12} {'int8 log-MAE':>12} {'int8-fp32 [95% CI]':>26}"
    )
    for name in ("model", PRODUCTION):
        diff = comparisons[name]["log_mae"]
        print(
            f"{name:<26} {metrics['fp32'][name]['log_mae']:>12.4f} "
            f"{metrics['int8'][name]['log_mae']:>12.4f} "
            f"{diff['difference']:>+8.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]"
        )
    print(f"\nno loss beyond +/-{MARGIN} (nested model): {no_loss}\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
