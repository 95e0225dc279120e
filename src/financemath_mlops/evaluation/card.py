"""Render the evaluation report as ``docs/model-card.md`` and its plot (errors by answer range).

Every figure in the card comes from the report dict (:mod:`.report`); the prose around them is
written here so that the card, the tables and the plot change together when the code does.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from financemath_mlops.atomic import atomic_path
from financemath_mlops.evaluation.evaluate import PUBLISHED_ACCURACY

LABELS = {
    "model": "**model (nested CV)**",
    "global_median": "global median",
    "topic_median": "topic median",
    "numbers_median": "median of the numbers in the question and tables",
}

# The published LLM accuracies (evaluate.PUBLISHED_ACCURACY) are on FinanceMath's validation split,
# whatever file this report reads.
PUBLISHED_ROWS = 200

ANSWER_LABELS = {
    "ranker": "candidate ranker over the regressor (nested CV)",
    "sign_scale": "sign/scale bands over the regressor (same folds)",
}


def _num(value: float) -> str:
    if value is None or not math.isfinite(value):
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ci(d: dict[str, float] | None, digits: int = 2, scale: float = 1.0) -> str:
    if d is None:
        return "(n < 5)"
    f = f"+.{digits}f"
    return f"{d['difference'] * scale:{f}} [{d['low'] * scale:{f}}, {d['high'] * scale:{f}}]"


def _sci(value: float) -> str:
    """-512345.0 -> "-5e5": the order of magnitude the prose needs."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _verdict(d: dict[str, float]) -> str:
    if d["high"] < 0:
        return "model better"
    if d["low"] > 0:
        return "model worse"
    return "not shown"


def _acc_verdict(d: dict[str, float]) -> str:
    if d["low"] > 0:
        return "model better"
    if d["high"] < 0:
        return "model worse"
    return "not shown"


def _table(header: str, rows: Iterable[str]) -> list[str]:
    """A markdown table: the header row, its separator (one cell per column), then `rows`."""
    return [header, "|---" * (header.count("|") - 1) + "|", *rows]


def main_table(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, label in LABELS.items():
        m = r["summary"][name]
        rows.append(
            f"| {label} | {m['n']} | {_num(m['mae'])} | {_num(m['rmse'])} | {_num(m['median_ae'])}"
            f" | {m['log_mae']:.2f} ± {m['log_mae_std']:.2f} | {m['accuracy']:.1%} |"
        )
    for name, label in ANSWER_LABELS.items():
        m = r["answer_models"]["models"][name]["metrics"]
        rows.append(
            f"| {label} | {m['n']} | {_num(m['mae'])} | {_num(m['rmse'])} | {_num(m['median_ae'])}"
            f" | {m['log_mae']:.2f} ± {m['log_mae_std']:.2f} | {m['accuracy']:.1%} |"
        )
    c, n = r["chance_accuracy"], r["input"]["rows"]
    rows.append(
        f"| chance control: one number of another question | {n} | | | | | {c['one_number']:.1%} |"
    )
    rows.append(
        f"| chance control: any number of another question | {n} | | | | | {c['any_number']:.1%} |"
    )
    rows.append(
        f"| oracle copy: any number of the question itself | {n} | | | | | {c['own_any_number']:.1%} |"
    )
    for name, acc in PUBLISHED_ACCURACY.items():
        rows.append(
            f"| {name} (published, reference programs' outputs) | {PUBLISHED_ROWS} "
            f"| | | | | {acc:.1%} |"
        )
    return _table(
        "| predictor | n | MAE | RMSE | median AE | log-MAE (± sd over seeds) | accuracy |", rows
    )


def difference_table(r: dict[str, Any]) -> list[str]:
    return _table(
        "| model minus | log-MAE difference [95 % CI] | | median AE difference [95 % CI] "
        "| accuracy difference (points) [95 % CI] |",
        (
            f"| {LABELS[name]} | {_ci(diffs['log_mae'])} | {_verdict(diffs['log_mae'])} "
            f"| {_ci(diffs['median_ae'], 1)} | {_ci(diffs['accuracy'], 1, 100)} |"
            for name, diffs in r["differences"].items()
        ),
    )


def sweep_table(r: dict[str, Any]) -> list[str]:
    total = r["options"]["outer_fits"]
    return _table(
        "| candidate (features / LightGBM setting) | repeated-CV log-MAE | minus global median "
        "[95 % CI] | chosen by inner CV |",
        (
            f"| {s['candidate']} | {s['log_mae']:.2f} ± {s['log_mae_std']:.2f} "
            f"| {_ci(s['vs_global_median'])} | {s['chosen']}/{total} |"
            for s in r["sweep"]
        ),
    )


def _breakdown_table(entries: list[dict[str, Any]], key: str, label: str, share: bool) -> list[str]:
    """The model's log-MAE beside the three medians' per group (answer range or topic), with the
    paired interval against the global median; `share`: each group's part of the model's error."""
    header = (
        f"| {label} | n | model log-MAE | global median | topic median | numbers median "
        "| model minus global median [95 % CI] |"
    )
    return _table(
        header + (" share of the model's log error |" if share else ""),
        (
            f"| {e[key]} | {e['n']} | {e['model']:.2f} | {e['global_median']:.2f} "
            f"| {e['topic_median']:.2f} | {e['numbers_median']:.2f} | {_ci(e['vs_global_median'])} |"
            + (f" {e['share_of_model_error']:.0%} |" if share else "")
            for e in entries
        ),
    )


def range_table(r: dict[str, Any]) -> list[str]:
    return _breakdown_table(r["ranges"], "range", "answer range", share=True)


def topic_table(r: dict[str, Any]) -> list[str]:
    return _breakdown_table(r["topics"], "topic", "topic", share=False)


def settings_table(settings: dict[str, dict[str, Any]]) -> list[str]:
    names = list(settings)
    keys = sorted({k for v in settings.values() for k in v})
    lines = ["| LightGBM | " + " | ".join(f"`{n}`" for n in names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    for key in keys:
        lines.append(
            f"| {key} | " + " | ".join(str(settings[n].get(key, "")) for n in names) + " |"
        )
    return lines


def chosen_line(r: dict[str, Any]) -> str:
    ranked = sorted(r["chosen"].items(), key=lambda kv: (-kv[1], kv[0]))
    total = r["options"]["outer_fits"]
    return "\n".join(f"- {name}: {count}/{total}" for name, count in ranked if count)


def decision_text(r: dict[str, Any]) -> str:
    """Whether the evidence moves the default feature set (the served model's) away from full."""
    d = r["decision"]
    if d["most_chosen"] == d["default"]:
        return (
            f"The inner CV chose the default (`{d['default']}`) most often, so the default config "
            "stays as it is."
        )
    diff = d["most_chosen_minus_default"]
    moved = diff["high"] < 0
    return (
        f"The inner CV chose `{d['most_chosen']}` most often. Its log-MAE minus the default's "
        f"(`{d['default']}`), paired over the same rows: {_ci(diff)}. "
        + (
            "The whole interval is below zero: the evidence says to change the default."
            if moved
            else "The interval includes zero: the evidence does not say the choice matters, so "
            f"the default config (and the served model) keeps all {r['facts']['embedding_dims']} "
            "embedding dimensions and the configured LightGBM setting."
        )
    )


def answers_table(a: dict[str, Any]) -> list[str]:
    labels = {"model": "regressor (the served model, nested CV)", **ANSWER_LABELS}
    return _table(
        "| predictor | accuracy | log-MAE | minus best baseline: log-MAE [95 % CI] "
        "| accuracy minus chance control (points) [95 % CI] | minus regressor: log-MAE [95 % CI] |",
        (
            f"| {label} | {a['models'][name]['metrics']['accuracy']:.1%} "
            f"| {a['models'][name]['metrics']['log_mae']:.2f} "
            f"| {_ci(a['models'][name]['vs_best_baseline']['log_mae'])} "
            f"| {_ci(a['models'][name]['vs_chance'], 1, 100)} "
            f"| {'' if name == 'model' else _ci(a['models'][name]['vs_model']['log_mae'])} |"
            for name, label in labels.items()
        ),
    )


def answers_text(r: dict[str, Any]) -> str:
    """What the candidate ranker and the sign/scale model reached against the issue's targets."""
    a = r["answer_models"]
    caps, cov, rk = a["caps"], a["coverage"], a["models"]["ranker"]
    f, mod = r["facts"], r["facts"]["modules"]
    rows = r["input"]["rows"]
    targets = [
        ("tolerance accuracy >= 10 %", f"{rk['metrics']['accuracy']:.1%}",
         rk["metrics"]["accuracy"] >= 0.10),
        ("accuracy >= 5 points above the chance control, interval excluding zero",
         _ci(rk["vs_chance"], 1, 100),
         rk["vs_chance"]["difference"] >= 0.05 and rk["vs_chance"]["low"] > 0),
        (f"log-MAE minus the best baseline ({LABELS[a['best_baseline']]}): interval below zero",
         _ci(rk["vs_best_baseline"]["log_mae"]), rk["vs_best_baseline"]["log_mae"]["high"] < 0),
    ]  # fmt: skip
    kept = [
        label
        for name, label in ANSWER_LABELS.items()
        if a["models"][name]["vs_model"]["log_mae"]["high"] < 0
    ]
    thresholds = ", ".join(f"{t} ({n}x)" for t, n in a["thresholds"].items())
    lines = [
        "Issue 16 asked for answers that land within tolerance. Two models were built and scored "
        "on the same seeds and outer folds as the regressor above, both starting from its "
        "out-of-fold predictions:",
        "",
        f"- **Candidate ranker** (`{mod['candidates']}`, `{mod['ranker']}`): the candidates are the "
        "numbers of the question and its tables and one operation on two of them (`+ - * /`, "
        "ratio as %, change, change as %), computed from the record's text only "
        f"(`python_solution` is never read). Bounded: the first {caps['question_chars']:,} "
        f"characters, at most {caps['scanned_numbers']} numbers scanned and {caps['operands']} "
        f"distinct operands kept, so at most {caps['candidates']:,} candidates per question "
        f"({cov['candidates_mean']:.0f} on average here, at most {cov['candidates_max']:,}). "
        "A LightGBM binary classifier over candidate features (operation, operand positions, "
        "table or text, percent units, magnitudes, duplicates, cue words of the question's "
        "end) scores them; the best one answers when its score reaches a threshold chosen by "
        "an inner CV on the outer-training rows (lowest log-MAE), else the regressor answers. "
        f"Thresholds chosen (out of {r['options']['outer_fits']} outer folds): {thresholds}; "
        f"the ranker answered {a['answered_share']:.1%} of the rows.",
        f"- **Sign/scale bands** (`{mod['sign_scale']}`): a LightGBM classifier of the answer's "
        "band (negative, below 1, 1-100, 100-10,000, above) on the hand-built features and "
        f"{f['pca_components']} PCA components of the embedding moves the regressor's estimate into the predicted band "
        "(to the band's training median when the estimate lies outside it). It predicted the "
        f"right band for {a['band_accuracy']:.1%} of the rows, a negative answer for "
        f"{a['sign_scale_negative_rows']} and one below 1 for {a['sign_scale_below_one_rows']} "
        f"of the {rows} questions (in any seed).",
        "",
        *answers_table(a),
        "",
        "Oracle coverage: some candidate is within FinanceMath's tolerance for "
        f"{cov['tolerance']:.1%} of the questions, but only {cov['same_scale']:.1%} have one of "
        "the right sign and scale (within a factor 1.5); the rest are the rule's forgiveness "
        "(powers of ten, sign, rounding up to 3 decimals) meeting one of hundreds of "
        "candidates by chance.",
        "",
        *_table(
            "| target (issue 16; candidate ranker, this data, nested CV) | reached | met |",
            (f"| {t} | {v} | {'yes' if ok else 'no'} |" for t, v, ok in targets),
        ),
        "",
    ]
    if kept:
        lines.append(
            "Against the regressor, paired, the whole log-MAE interval is below zero for: "
            + ", ".join(kept)
            + ". The logged pyfunc still serves the regressor alone."
        )
    else:
        lines.append(
            "Neither model beats the regressor on log-MAE (no interval entirely below zero), so "
            "**neither joins the served model**: the logged pyfunc stays the regressor and the "
            f"serving response keeps its shape. Why they fall short: of the {rows} labelled "
            f"questions only {round(cov['same_scale'] * rows)} carry a candidate of the right "
            f"scale to learn from, spread over {f['candidate_constructions']} constructions, "
            "against hundreds of wrong "
            "candidates per question; the features see where numbers sit and what the question's "
            "end says, not what the numbers mean, so the best-scored candidate is rarely the "
            "answer and the inner CV mostly sets the threshold where the regressor answers. The "
            f"band classifier rarely dares the rare bands ({r['negative_answers']} negative "
            "answers), and a wrong band "
            "costs more log error than the regressor's hedged estimate. `benchmarks/candidates.py`"
            " reruns this research (`--estimate`: the distance to the regressor's estimate as a "
            "ranker feature; `benchmarks/results/candidates*.json`)."
        )
    return "\n".join(lines)


SPEED_FILE = "serving.json"  # the latest full run of benchmarks/serving.py (both precisions)


def precision_evidence(results_dir: Path) -> dict[str, Any] | None:
    """What benchmarks/serving.py measured of the int8 embedding bundle's speed and size, carried
    into the report so the card states what int8 would buy (the quality side is the report's
    own churn rule)."""
    try:
        speed = json.loads((results_dir / SPEED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {
        "speed": {k: v for k, v in speed["targets"].items() if k.startswith("int8_")},
        "sizes_mb": speed.get("model_sizes_mb", {}),
        "run": f"{speed.get('date', '?')[:10]}, {speed.get('machine', {}).get('cpu', '?')}",
    }


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _interval(d: dict[str, float], digits: int = 4) -> str:
    return f"[{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def precision_text(c: dict[str, Any], speed: dict[str, Any] | None) -> str:
    """The int8 rule (:mod:`.churn`): its margin, both churns, both loss intervals, the outcome."""
    rows, diff, loss = c["rows"], c["churn_difference"], c["log_mae_difference"]
    where = (
        f"the {rows['labelled']} labelled rows (out of fold) and the {rows['unlabelled']:,} "
        f"unlabelled questions of `{c['unlabelled_file']}` (each dealt to one outer fold per seed, "
        f"stratified by topic): {rows['all']:,} questions"
        if rows["unlabelled"]
        else f"the {rows['labelled']} labelled rows only (no unlabelled file was given)"
    )
    lines = [
        f"The served embedding is the `{c['configured_precision']}` ONNX export of "
        "all-MiniLM-L6-v2 (`features.embedding.precision`). An int8 bundle (onnxruntime "
        "`quantize_dynamic`, per-channel int8 weights, quantized once at export, one question "
        "per run) is smaller and faster:",
        "",
    ]
    if speed is None:
        lines.append("Speed not measured for this card (`benchmarks/serving.py`).")
    else:
        lines += [
            f"| speed target (`benchmarks/serving.py`, one run: {speed.get('run', '?')}) "
            "| measured | met |",
            "| --- | --- | --- |",
            *(
                f"| {t['target']} | {t['value']} | {_yes(t['met'])} |"
                for t in speed["speed"].values()
            ),
        ]
        sizes = speed.get("sizes_mb") or {}
        if "fp32" in sizes and "int8" in sizes:
            lines += [
                "",
                f"The int8 model folder is {sizes['int8']['model_folder']} MB against "
                f"{sizes['fp32']['model_folder']} MB for fp32.",
            ]
    lines += [
        "",
        "**The rule** (`evaluation/churn.py`; its margin was committed before the measurement "
        "ran). Retraining alone moves predictions (LightGBM bagging and feature sampling, other "
        "outer folds), so int8 is judged against a retrain. Churn between two models is the mean "
        "over rows of |slog(p_a) - slog(p_b)|, slog(x) = sign(x)·log1p(|x|); it needs no labels. "
        f"The served candidate (`{c['candidate']}`) was fitted on the card's outer folds "
        f"({c['seeds']} seeds) with fp32 and with int8 embeddings and predicted {where}. "
        "Retrain churn pairs fp32 seed s with fp32 seed s+1 (the last seed with the first), "
        "precision churn int8 seed s with fp32 seed s (same folds, same LightGBM seed); both "
        "are averaged over the seeds per row, and their difference is a paired bootstrap over "
        f"rows. **int8 becomes the default when precision minus retrain churn has a 95 % "
        f"interval whose upper end is below {c['margin']}, and int8's labelled log-MAE "
        "difference interval lies inside the retrain pair's.**",
        "",
        *_table(
            f"| pair | churn ({rows['all']:,} questions) "
            f"| log-MAE difference ({rows['labelled']} labelled rows) [95 % CI] |",
            [
                f"| retrain: fp32 seed s+1 vs fp32 seed s | {c['churn']['retrain']:.4f} "
                f"| {_ci(loss['retrain'], 4)} |",
                f"| precision: int8 seed s vs fp32 seed s | {c['churn']['precision']:.4f} "
                f"| {_ci(loss['precision'], 4)} |",
                f"| precision minus retrain, paired per row | {_ci(diff, 4)} | |",
            ],
        ),
        "",
        "A loss difference is each seed pair's paired bootstrap (the report's, "
        f"{loss['retrain']['pairs']} pairs) with its difference and ends averaged over the pairs: "
        "averaged per row first, the retrain pairs would cancel round the seeds (their point "
        "difference is zero by construction); the interval is how far one retrain moves the "
        "labelled loss.",
        "",
        *_table(
            "| condition | measured | met |",
            [
                f"| precision minus retrain churn: upper end below the margin {c['margin']} "
                f"| {diff['high']:+.4f} | {_yes(c['churn_below_margin'])} |",
                "| int8's log-MAE difference interval inside the retrain pair's "
                f"| {_interval(loss['precision'])} in {_interval(loss['retrain'])} "
                f"| {_yes(c['loss_inside_retrain'])} |",
            ],
        ),
        "",
    ]
    if "cpu" in c:
        lines += [
            f"Computed on {c['cpu']['model']} ({c['cpu']['kernels']} kernels). ONNX Runtime picks "
            "its matrix kernels by instruction set, and their last digits move LightGBM's splits: "
            "on another kind of CPU these figures, and a condition that holds by a hair, can "
            "differ (`make test-card` then fails, showing the difference).",
            "",
        ]
    configured = c["configured_precision"]
    if c["int8_qualifies"] and configured == "int8":
        lines.append(
            "**Both conditions hold: int8 is the default.** fp32 stays one setting away "
            "(`features.embedding.precision: fp32`; a model is always served with the bundle it "
            "was trained with)."
        )
    elif c["int8_qualifies"]:
        lines.append(
            "**Both conditions hold: the rule makes int8 the default.** The configured precision "
            f"is still `{configured}` until the switch lands with everything that follows it "
            "(the config, the model folder, the images, the Kubernetes sizing and the docs); "
            "fp32 then stays one setting away (`features.embedding.precision: fp32`)."
        )
    else:
        lines.append(
            "**The rule is not met: the default stays fp32** (`features.embedding.precision: "
            "int8` trades that for speed; a model is always served with the bundle it was "
            "trained with)."
        )
    return "\n".join(lines)


def render_card(r: dict[str, Any], plot_name: str) -> str:
    """The whole card as markdown (deterministic for a report dict)."""
    o = r["options"]
    model = r["differences"]["global_median"]["log_mae"]
    settings = r["lightgbm_settings"]
    facts = r["facts"]
    text = TEMPLATE.format(
        rows=r["input"]["rows"],
        answer_min=_sci(facts["answer_min"]),
        answer_max=_sci(facts["answer_max"]),
        holdout=f"{facts['holdout_fraction'] * 100:.0f} %",
        holdout_rows=round(r["input"]["rows"] * facts["holdout_fraction"]),
        decimals=facts["embedding_decimals"],
        forms=facts["embedding_forms"],
        lgb_count=facts["lightgbm_settings"],
        dims=facts["embedding_dims"],
        pca=facts["pca_components"],
        hand=facts["hand_features"],
        file=r["input"]["file"],
        sha=r["input"]["sha256"][:16],
        folds=o["folds"],
        seeds=o["seeds"],
        inner=o["inner_folds"],
        bootstrap=o["bootstrap"],
        candidates=o["candidates"],
        outer=o["outer_fits"],
        main="\n".join(main_table(r)),
        diffs="\n".join(difference_table(r)),
        sweep="\n".join(sweep_table(r)),
        ranges="\n".join(range_table(r)),
        topics="\n".join(topic_table(r)),
        chosen=chosen_line(r),
        decision=decision_text(r),
        precision=precision_text(r["precision_churn"], r.get("embedding_precision")),
        answers=answers_text(r),
        plot=plot_name,
        headline=_ci(model),
        verdict=_verdict(model),
        negatives=r["negative_answers"],
        model_negative=r["model_negative_rows"],
        settings="\n".join(settings_table(settings)),
        median_ae=_num(r["summary"]["model"]["median_ae"]),
        median_ae_global=_num(r["summary"]["global_median"]["median_ae"]),
        median_ae_diff=_ci(r["differences"]["global_median"]["median_ae"], 1),
        median_ae_verdict=_verdict(r["differences"]["global_median"]["median_ae"]),
    )
    return text


def publish_card(report: dict[str, Any], card: Path, plot: Path, results: Path) -> None:
    """The card, its plot and its results JSON: all three replaced, or none.

    Each is written to a temp file beside its target first; the renames come only once all
    three are complete, so a full disk (exit 1, naming the file) keeps the previous three.
    """
    with contextlib.ExitStack() as stack:
        tmp_plot = stack.enter_context(atomic_path(plot))
        write_plot(report, tmp_plot, plot.suffix.lstrip(".") or "png")
        tmp_card = stack.enter_context(atomic_path(card))
        tmp_card.write_text(render_card(report, plot.name), encoding="utf-8")
        tmp_results = stack.enter_context(atomic_path(results))
        tmp_results.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", "utf-8")


def write_plot(r: dict[str, Any], path: Path, fmt: str | None = None) -> None:
    """Grouped bars: log-MAE by answer range for the model and the baselines.

    ``fmt`` (``"png"``) when ``path`` is a temp name whose suffix says nothing of the format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranges = r["ranges"]
    names = list(LABELS)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(ranges))]
        label = LABELS[name].strip("*")
        ax.bar(xs, [e[name] for e in ranges], width, label=label)
    ax.set_xticks(range(len(ranges)))
    ax.set_xticklabels([f"{e['range']}\n(n={e['n']})" for e in ranges], fontsize=8)
    ax.set_ylabel("log-MAE (mean over seeds)")
    ax.set_title("Out-of-fold error by answer range (repeated nested CV)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=fmt, metadata={"Software": None})
    plt.close(fig)


TEMPLATE = """\
# Model card: financemath-regressor

<!-- Generated by `python -m financemath_mlops.evaluation report --input {file}`;
do not edit by hand (tests/model/test_model_card.py checks it against the code). -->

## What it is

A LightGBM regressor that predicts the numeric answer of a FinanceMath question from the question
text and its tables: MiniLM question embeddings (ONNX), table aggregates and question metadata
([features.md](features.md)). It is logged to MLflow as a pyfunc that takes raw records
(`question`, `tables`, `topic`) and carries the booster, the ONNX embedding bundle and the feature
config, so serving needs no torch. Registered as `financemath-regressor` (real data) or
`financemath-regressor-sample` (the synthetic sample); new versions get `@challenger`.

**It is a reference pipeline model, not a finance solver.** A regressor over text features cannot
do the arithmetic these questions need; with {rows} labelled questions it learns the rough magnitude
of an answer at best. Read every figure below beside its baselines and intervals.

## How the pipeline trains, evaluates and promotes it

- Target: answers span about {answer_min} to {answer_max}, so the booster fits `sign(y)·log1p(|y|)`
  (`training.target_transform`) with the L1 objective, which on that scale optimises log-MAE.
- Training (`python -m financemath_mlops.training`): rows without an answer are skipped; a seeded
  holdout split stratified by topic ({holdout}) is made once; a topic-stratified k-fold CV on the
  training rows is logged (mean ± sample std over folds, beside the median baselines on the same
  folds); the final model fits on all training rows. The split ids, the training feature table
  and the raw holdout records are stored in the MLflow run. LightGBM runs on one thread
  (`training.threads: 1`): on a loaded 2-core machine that is much faster than two.
- Evaluation (`python -m financemath_mlops.evaluation`) scores that run's holdout rows, never a
  fresh split, beside the medians fitted on its training rows.
- Promotion (`python -m financemath_mlops.promotion`): on the challenger's holdout rows that the
  champion did not train on (at least `evaluation.min_promotion_rows`, which cannot be set below
  10), the paired bootstrap 95 % interval of challenger-minus-champion loss (`promotion_metric`,
  default log-MAE) must lie entirely below `-evaluation.promotion_margin` (default 0). The first
  version must beat the global median of its training answers the same way. n, the difference
  and the interval are logged on the challenger's run (`promotion_*` metrics and tags); a point
  estimate alone never moves `@champion`.

The pipeline's single holdout is small (about {holdout_rows} rows on the real split); the figures below come
from the evaluation report instead, which uses every labelled row.

## How the figures below are made

- Input: `{file}` ({rows} labelled rows, sha256 `{sha}...`), read and validated by
  the ingestion stage's code, turned into the production feature rows by the one feature
  function (embeddings rounded to {decimals} decimals so that the figures reproduce across machines).
- **Repeated, topic-stratified, nested cross-validation**: {folds} outer folds x {seeds} seeds
  ({outer} outer fits). In every outer fold an inner {inner}-fold CV on the outer-training rows
  alone chooses among {candidates} candidates ({forms} embedding forms x with/without the numbers median
  as a feature x {lgb_count} LightGBM settings); only the chosen one is refitted and scored on the outer
  fold. So the model's figures include the cost of choosing; nothing was tuned on the rows it is
  scored on. Baselines are fitted on the same outer-training rows.
- Each row gets one out-of-fold prediction per seed. Metrics are computed per seed over all rows,
  then averaged over seeds (± their standard deviation, ddof=1). **Intervals** are paired
  percentile bootstraps over rows ({bootstrap} resamples) of the per-row loss averaged over seeds:
  the same resampled questions for the model and the baseline.
- Metrics: MAE, RMSE, median absolute error, MAE on the signed-log1p scale (`log-MAE`; MAE and
  RMSE are dominated by a handful of answers in the millions) and FinanceMath's tolerance accuracy
  (within 0.15 %, or equal after rounding magnitudes up to 3 decimals, or off by a power of ten /
  percent-vs-fraction; the magnitude rules ignore the sign, as the benchmark's do).

## Main result

{main}

Model minus baseline, paired (negative log-MAE / median AE: the model is better; positive
accuracy: the model is better):

{diffs}

**Reading it.** Against the global median the model's log-MAE difference is {headline}
({verdict}). A claim that the model beats a baseline needs the whole interval below zero; where it
straddles zero, this data does not show a win. The typical question's error tells more: the
model's median absolute error is {median_ae} against {median_ae_global} for the global median, a
difference of {median_ae_diff} ({median_ae_verdict}).

Tolerance accuracy: a regressor essentially never lands within 0.15 % of an exact answer. The
chance controls show what the rule's forgiveness (sign, powers of ten, percent vs fraction) gives
to numbers taken from an *unrelated* question; an accuracy is only evidence above them. The
published LLM figures were scored against the outputs of the reference programs, which differ from
the rounded `ground_truth` we score against on many rows; this project never executes
`python_solution`, so it does not reproduce that scoring, and the two columns are not strictly
comparable.

## Where it errs: by answer range and sign

![log-MAE by answer range]({plot})

{ranges}

{negatives} of the {rows} answers are negative; the model predicted a negative value for
{model_negative} of the {rows} questions (in any seed). The share column says where its error
comes from; a row above zero in the interval column is a range where the global median is better.

## Answers within tolerance: a candidate ranker and sign/scale bands

{answers}

## Per topic

{topics}

The per-topic rows rest on few questions each; read the intervals, not the point estimates.

## Feature sets and parameters (decided by the nested CV)

MiniLM question embeddings stay part of the product; the CV decides their form: `full` (all {dims}
dimensions), `pca` ({pca} principal components fitted on the training rows of each fold) or
`similarity` (cosine similarity to the nearest training questions and their answers,
leave-self-out on training rows), each with the {hand} hand-built features, with or without the
median of the question's numbers as a feature. LightGBM settings (`configured` is
`training.lightgbm` in the config):

{settings}

The sweep: each candidate refitted on every outer fold. Picking the best row of this table after
the fact would be optimistic; the nested figures above are the honest ones.

{sweep}

Chosen by the inner CV (out of {outer} outer folds):

{chosen}

{decision}

## Embedding precision (fp32 or int8)

{precision}

## Limits and intended use

- For demonstrating and testing an MLOps pipeline on FinanceMath-shaped data, not for answering
  finance questions. Do not use its predictions for decisions.
- {rows} labelled questions; topics with a handful of rows are effectively unmodelled.
- The synthetic sample (`make run`) says nothing about real-world quality: there the answers are
  functions of the numbers in the text, and the model beats the median by a wide margin (the
  model tier of the tests pins that).
- The dataset (`yale-nlp/FinanceMath`, MIT licence, Zhao et al., ACL 2024) is English, exam-style
  finance questions; nothing is known about behaviour on other text.
"""
