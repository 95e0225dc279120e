"""The int8 rule alone: prediction churn of int8 vs fp32 embeddings against a retrain's (issue 32).

Calls the evaluation report's own step (:func:`financemath_mlops.evaluation.report.precision_churn`):
the served candidate (hand features + full MiniLM vector, configured LightGBM) fitted on the card's
outer folds (topic-stratified, 5 folds x 5 seeds) with fp32 and with int8 embeddings, predicting
the 200 labelled rows out of fold and the 1,000 unlabelled test rows. Retrain churn (fp32 seed s vs
s+1) against precision churn (int8 vs fp32, seed s), paired per row, and each pair's labelled
log-MAE difference with the report's paired bootstrap. The rule and its margin
(:data:`financemath_mlops.evaluation.churn.MARGIN`) are the card's; the card reruns this itself.

    nice python benchmarks/embedding_precision.py   # the files beside the checkout

Writes ``benchmarks/results/embedding_precision.json`` and prints the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared" / "data" / "financemath"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "embedding_precision.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=SHARED / "validation.json")
    parser.add_argument("--unlabelled", type=Path, default=SHARED / "test.json")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from financemath_mlops.config import load_settings
    from financemath_mlops.evaluation import report

    args = parse_args(argv)
    for flag, path in (("--input", args.input), ("--unlabelled", args.unlabelled)):
        if not path.is_file():
            print(f"error: {flag} file not found: {path}", file=sys.stderr)
            return 2
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    opts = report.ReportOptions(args.folds, args.seeds, bootstrap=args.bootstrap)
    settings = load_settings(REPO_ROOT / "configs" / "default.yaml")
    lgb_settings = {"configured": dict(settings.training.lightgbm), "small": report.SMALL_SETTING}
    records = report.load_labelled(args.input)
    result = report.precision_churn(settings, records, args.unlabelled, lgb_settings, opts)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": args.input.name,
        "cv": {"folds": opts.folds, "seeds": opts.seeds},
        "bootstrap": opts.bootstrap,
        **result,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": {
            "start": [round(x, 2) for x in load_at_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    c, d = result["churn"], result["churn_difference"]
    loss = result["log_mae_difference"]
    print(f"rows: {result['rows']}  seeds: {result['seeds']}  margin: {result['margin']}")
    print(f"retrain churn {c['retrain']:.4f}  precision churn {c['precision']:.4f}")
    print(f"precision - retrain churn {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
    for name in ("retrain", "precision"):
        e = loss[name]
        print(
            f"{name} log-MAE difference {e['difference']:+.4f} [{e['low']:+.4f}, {e['high']:+.4f}]"
        )
    print(
        f"churn below margin: {result['churn_below_margin']}; loss inside the retrain pair's: "
        f"{result['loss_inside_retrain']} -> int8 qualifies: {result['int8_qualifies']}"
    )
    print(f"{result['seconds']} s; wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
