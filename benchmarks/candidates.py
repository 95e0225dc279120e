"""Candidate answers and the ranker on the real validation split, under the report's nested CV.

Research for issue 16: how often one of the question's numbers, or one operation on two of them,
is the answer (oracle coverage); then the ranker (:mod:`financemath_mlops.evaluation.ranker`) through
:mod:`financemath_mlops.evaluation.ranker_cv` with the evaluation report's seeds, outer folds and
paired bootstrap, against the best baseline and the chance control.

    python benchmarks/candidates.py --input ../shared/data/financemath/validation.json

The fallback regressor is the report's nested model restricted to the default feature set
(``--full-sweep`` runs the report's 12 candidates instead; minutes more). Prints tables and
writes ``benchmarks/results/candidates.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO_ROOT.parent / "shared" / "data" / "financemath" / "validation.json"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "candidates.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--full-sweep", action="store_true")
    parser.add_argument("--coverage-only", action="store_true")
    parser.add_argument(
        "--estimate", action="store_true", help="ranker sees the regressor's estimate"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def coverage_by_operation(rdata) -> dict[str, int]:
    """Rows where an operation yields a labelled-1 candidate (a row may count for several)."""
    counts: Counter[str] = Counter()
    for cands, labels in zip(rdata.candidates, rdata.labels, strict=True):
        for op in {cands.operations[i] for i in np.flatnonzero(labels)}:
            counts[op] += 1
    return dict(counts.most_common())


def time_full_fit(records, data, lgb_settings, fallback: np.ndarray) -> float:
    """Seconds to train the ranker as training would on every row: candidates from the records,
    the threshold's inner CV (with its regressor fits), then the final fit (one thread)."""
    from financemath_mlops.evaluation.ranker_cv import RankerData, ranker_outer_fold

    started = time.perf_counter()
    rdata = RankerData.from_records(records)
    rows = np.arange(len(records))
    ranker_outer_fold(rdata, data, lgb_settings, rows, rows[:1], fallback[:1], 3, 0)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from financemath_mlops.config import load_settings
    from financemath_mlops.evaluation import report
    from financemath_mlops.evaluation.baselines import chance_row_hits, record_numbers
    from financemath_mlops.evaluation.nested import BASELINES
    from financemath_mlops.evaluation.ranker_cv import (
        INNER_FALLBACK,
        RankerData,
        repeated_ranker_cv,
    )
    from financemath_mlops.evaluation.sign_scale_cv import repeated_sign_scale_cv

    args = parse_args(argv)
    if not args.input.is_file():
        print(f"error: labelled input not found: {args.input}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    load_at_start = os.getloadavg()
    opts = report.ReportOptions(args.folds, args.seeds, args.inner_folds, args.bootstrap, args.jobs)
    settings = load_settings(REPO_ROOT / "configs" / "default.yaml")
    records = report.load_labelled(args.input)
    data = report.cv_data(settings, records)
    truths = data.target
    started = time.perf_counter()
    rdata = RankerData.from_records(records)
    generation_seconds = time.perf_counter() - started
    coverage = rdata.coverage(truths) | {"seconds": round(generation_seconds, 2)}
    by_op = coverage_by_operation(rdata)
    print(f"candidates: {coverage}")
    print(f"rows with a same-scale candidate, by operation: {by_op}")
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "input": args.input.name,
        "rows": len(records),
        "coverage": coverage,
        "coverage_by_operation": by_op,
    }
    if not args.coverage_only:
        lgb_settings = {
            "configured": dict(settings.training.lightgbm),
            "small": report.SMALL_SETTING,
        }
        cands = report.candidates() if args.full_sweep else [INNER_FALLBACK]
        started = time.perf_counter()
        cv = report.repeated_nested_cv(
            cands, lgb_settings, data, opts.folds, opts.seeds, opts.inner_folds, opts.jobs
        )
        regressor_seconds = time.perf_counter() - started
        fit_seconds = time_full_fit(records, data, lgb_settings, cv["predictions"]["model"][0])
        print(f"training on all {len(records)} rows (candidates, threshold CV, fit): "
              f"{fit_seconds:.1f} s")  # fmt: skip
        started = time.perf_counter()
        rcv = repeated_ranker_cv(
            rdata, data, lgb_settings, cv["predictions"]["model"], opts.folds, opts.seeds,
            opts.inner_folds, opts.jobs, use_estimate=args.estimate,
            progress=lambda done, total: print(f"  ranker outer fold {done}/{total}", flush=True),
        )  # fmt: skip
        ranker_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ss = repeated_sign_scale_cv(data, cv["predictions"]["model"], opts.folds, opts.seeds)
        sign_scale, band_hits = ss["predictions"], ss["band_accuracy"]
        sign_scale_seconds = time.perf_counter() - started
        preds = dict(cv["predictions"]) | {
            "ranker": rcv["predictions"]["ranker"],
            "ranker_always": rcv["predictions"]["always"],
            "sign_scale": sign_scale,
        }
        names = ["model", "ranker", "ranker_always", "sign_scale", *BASELINES]
        summary = {name: report.per_seed_metrics(preds[name], truths) for name in names}
        losses = {name: report.row_losses(preds[name], truths) for name in names}
        best = min(BASELINES, key=lambda b: summary[b]["log_mae"])
        numbers = [record_numbers(r["question"], r.get("tables") or []) for r in records]
        one, _ = chance_row_hits(numbers, truths)
        chance = {"log": losses[best]["log"], "abs": losses[best]["abs"], "miss": 1 - one / 20}
        comparisons = {
            name: {
                "vs_best_baseline": report.compare(losses[name], losses[best], opts),
                "vs_chance": report.compare(losses[name], chance, opts)["accuracy"],
                "vs_regressor": report.compare(losses[name], losses["model"], opts),
            }
            for name in ("ranker", "ranker_always", "sign_scale", "model")
        }
        answered = rcv["answered"].mean()
        result |= {
            "ranker_sees_estimate": args.estimate,
            "cv": {"folds": opts.folds, "seeds": opts.seeds, "inner_folds": opts.inner_folds},
            "regressor_candidates": [c.name for c in cands],
            "summary": summary,
            "best_baseline": best,
            "chance_one_number": float(one.sum() / (20 * len(truths))),
            "comparisons": comparisons,
            "thresholds": rcv["thresholds"],
            "answered_share": float(answered),
            "band_accuracy": band_hits,
            "seconds": {"regressor_cv": round(regressor_seconds, 1), "ranker_cv": round(ranker_seconds, 1),
                        "ranker_training_all_rows": round(fit_seconds, 1),
                        "sign_scale_cv": round(sign_scale_seconds, 1)},
        }  # fmt: skip
        print(f"\nbest baseline: {best}; ranker answered {answered:.1%} of rows; thresholds "
              f"{Counter(rcv['thresholds']).most_common()}")  # fmt: skip
        print(f"{'predictor':<16} {'log-MAE':>8} {'accuracy':>9} {'log-MAE vs best [95% CI]':>28} "
              f"{'acc vs chance (pts) [95% CI]':>30}")  # fmt: skip
        for name in names:
            m = summary[name]
            line = f"{name:<16} {m['log_mae']:>8.3f} {m['accuracy']:>9.1%}"
            if name in comparisons:
                d = comparisons[name]["vs_best_baseline"]["log_mae"]
                a = comparisons[name]["vs_chance"]
                line += (
                    f" {d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]".rjust(29)
                    + f" {a['difference'] * 100:+.1f} [{a['low'] * 100:+.1f}, "
                    f"{a['high'] * 100:+.1f}]".rjust(31)
                )
            print(line)
        print(f"chance (one number of another question): {result['chance_one_number']:.1%}")
        print(f"seconds: {result['seconds']}")
    result["load_average"] = {
        "start": [round(x, 2) for x in load_at_start],
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
