"""Tests for the synthetic FinanceMath-style generator.

The per-template checks recompute every answer from ``problem.params`` with formulas written
here, independently of the module, and check that the inputs are visible in the question or
tables (the answer must be a function of what a reader can see).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from financemath_mlops.records import FinanceMathRecord
from financemath_mlops.synthetic.sample import (
    FINANCEMATH_VALIDATION_TOPIC_MIX,
    TEMPLATES,
    TOPICS,
    Problem,
    generate_sample,
)

FIELDS = {"question_id", "question", "tables", "python_solution", "ground_truth", "topic"}

# --- independent answer formulas -----------------------------------------------------------------


def _exchange(p: dict[str, Any]) -> float:
    book = p["cost"]
    for _ in range(p["years_held"]):
        book -= book * p["rate"]
    return p["fair_value"] - book


def _straight_line(p: dict[str, Any]) -> float:
    years = p["report_year"] - p["acquisition_year"] + 1
    per_year = (p["cost"] - p["residual"]) / p["life_years"]
    accumulated = per_year * years
    return accumulated if p["kind"] == "accumulated" else p["cost"] - accumulated


def _inventory(p: dict[str, Any]) -> float:
    units = [u for u, _ in p["layers"]]
    costs = [c for _, c in p["layers"]]
    sold = sum(u for u, _ in p["sales"])
    if p["method"] == "weighted average cost":
        cogs = sold * np.dot(units, costs) / sum(units)
    else:
        order = range(len(units)) if p["method"] == "FIFO" else reversed(range(len(units)))
        cogs, left = 0.0, sold
        for k in order:
            used = min(left, units[k])
            cogs, left = cogs + used * costs[k], left - used
    if p["target"] == "cost of goods sold":
        return cogs
    if p["target"] == "ending inventory":
        return float(np.dot(units, costs)) - cogs
    return sum(u * price for u, price in p["sales"]) - cogs


def _bond_price(p: dict[str, Any]) -> float:
    f, par = p["frequency"], p["par"]
    i, n = p["ytm"] / f, p["years"] * f
    annuity = (1 - (1 + i) ** -n) / i
    return par * p["coupon_rate"] / f * annuity + par * (1 + i) ** -n


def _put_call(p: dict[str, Any]) -> float:
    t = p["months"] / 12
    if p["compounding"] == "continuous":
        pv_k = p["strike"] / math.exp(p["rate"] * t)
    else:
        pv_k = p["strike"] * (1 + p["rate"]) ** (-t)
    # c + PV(K) = p + S
    if p["solve_for"] == "put":
        return p["known_price"] + pv_k - p["spot"]
    return p["known_price"] + p["spot"] - pv_k


def _gordon(p: dict[str, Any]) -> float:
    g = p["growth"]
    d1 = p["dividend"] * (1 + g) if p["kind"] == "just_paid" else p["dividend"]
    return d1 / (p["required_return"] - g)


def _wacc(p: dict[str, Any]) -> float:
    e, d = p["equity"], p["debt"]
    after_tax_debt = p["cost_debt"] - p["cost_debt"] * p["tax_rate"]
    value = (e * p["cost_equity"] + d * after_tax_debt) / (e + d)
    return 100 * value if p["as_percent"] else value


def _eps_pe(p: dict[str, Any]) -> float:
    pretax = p["revenue"] - sum(p["expenses"])
    eps = (pretax - pretax * p["tax_rate"] - p["preferred_dividends"]) / p["shares"]
    return eps if p["target"] == "eps" else p["price"] / eps


def _liquidity(p: dict[str, Any]) -> float:
    v = {item: values[0] for item, values in p["values"].items()}
    liabilities = v["Accounts payable"] + v["Accrued liabilities"] + v["Notes payable"]
    cash = v["Cash and cash equivalents"] + v["Marketable securities"]
    quick = cash + v["Accounts receivable"]
    current = quick + v["Inventories"] + v["Prepaid expenses"]
    return {"cash": cash, "quick": quick, "current": current}[p["kind"]] / liabilities


def _forward(p: dict[str, Any]) -> float:
    t = p["days"] / 360
    forward = p["spot"] * (1 + p["rate_price"] * t) / (1 + p["rate_base"] * t)
    return forward if p["kind"] == "forward" else 10_000 * (forward - p["spot"])


def _gdp(p: dict[str, Any]) -> float:
    j = p["years"].index(p["target_year"])
    nominal, deflator = p["nominal_gdp"], p["deflator"]
    if p["kind"] == "real_growth":
        real = [100 * n / d for n, d in zip(nominal, deflator, strict=True)]
        return 100 * (real[j] / real[j - 1] - 1)
    if p["kind"] == "inflation":
        return 100 * (deflator[j] - deflator[j - 1]) / deflator[j - 1]
    periods = len(deflator) - 1
    return 100 * (math.exp(math.log(deflator[-1] / deflator[0]) / periods) - 1)


def _cross(p: dict[str, Any]) -> float:
    if p["kind"] == "chain":
        return p["quote_1"] * p["quote_2"]
    return p["quote_2"] / p["quote_1"]


def _portfolio(p: dict[str, Any]) -> float:
    w = np.array(p["amounts"]) / sum(p["amounts"])
    s = np.array(p["vols"])
    cov = np.outer(s, s) * np.array([[1, p["correlation"]], [p["correlation"], 1]])
    variance = float(w @ cov @ w)
    if p["kind"] == "expected_return":
        return 100 * float(w @ np.array(p["returns"]))
    return 100 * math.sqrt(variance) if p["kind"] == "std_dev" else variance


def _sharpe_treynor(p: dict[str, Any]) -> float:
    denominator = p["std_dev"] if p["kind"] == "sharpe" else p["beta"]
    return (p["portfolio_return"] - p["risk_free"]) / denominator


def _capm(p: dict[str, Any]) -> float:
    premium = p["market_return"] - p["risk_free"] if p["kind"] == "market_return" else p["premium"]
    value = p["risk_free"] + p["beta"] * premium
    return 100 * value if p["as_percent"] else value


def _time_value(p: dict[str, Any]) -> float:
    if p["kind"] == "rate":
        return 100 * ((p["target_amount"] / p["amount"]) ** (1 / p["years"]) - 1)
    factor = math.exp(p["years"] * p["frequency"] * math.log1p(p["rate"] / p["frequency"]))
    return p["amount"] * factor if p["kind"] == "future" else p["amount"] / factor


def _npv(p: dict[str, Any]) -> float:
    pv = sum(cf * (1 + p["rate"]) ** -(t + 1) for t, cf in enumerate(p["cash_flows"]))
    return pv - p["initial_investment"] if p["kind"] == "npv" else pv / p["initial_investment"]


def _loan(p: dict[str, Any]) -> float:
    i, n = p["rate"] / p["frequency"], p["years"] * p["frequency"]
    growth = (1 + i) ** n
    return p["principal"] * i * growth / (growth - 1)


def _var(p: dict[str, Any]) -> float:
    z = {0.95: 1.645, 0.99: 2.326}[p["confidence"]]
    assert p["z"] == z
    if p["kind"] == "daily_to_horizon":
        sigma = p["vol"] * math.sqrt(p["horizon_days"])
    else:
        sigma = p["vol"] * math.sqrt(1 / p["trading_days"])
    return p["value"] * sigma * z


def _duration(p: dict[str, Any]) -> float:
    y = p["ytm"]
    times = np.arange(1, len(p["cash_flows"]) + 1)
    pv = np.array(p["cash_flows"]) / (1 + y) ** times
    macaulay = float(times @ pv / pv.sum())
    if p["kind"] == "macaulay":
        return macaulay
    modified = macaulay / (1 + y)
    return modified if p["kind"] == "modified" else -modified * p["bp"] / 10_000 * 100


def _credit_loss(p: dict[str, Any]) -> float:
    lgd = p["given_rate"] if p["kind"] == "lgd" else 1 - p["given_rate"]
    return p["exposure"] * lgd * p["pd"]


FORMULAS: dict[str, Callable[[dict[str, Any]], float]] = {
    "declining_balance_exchange": _exchange,
    "straight_line_depreciation": _straight_line,
    "inventory_cost": _inventory,
    "bond_price": _bond_price,
    "put_call_parity": _put_call,
    "gordon_growth": _gordon,
    "wacc": _wacc,
    "eps_pe": _eps_pe,
    "liquidity_ratio": _liquidity,
    "forward_rate_parity": _forward,
    "gdp_inflation": _gdp,
    "cross_rate": _cross,
    "two_asset_portfolio": _portfolio,
    "sharpe_treynor": _sharpe_treynor,
    "capm": _capm,
    "time_value": _time_value,
    "npv": _npv,
    "loan_payment": _loan,
    "parametric_var": _var,
    "bond_duration": _duration,
    "expected_credit_loss": _credit_loss,
}

# --- helpers -------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "annual": 1, "annually": 1, "semiannually": 2, "quarterly": 4,
    "monthly": 12,
}  # fmt: skip
_MONEY_RE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")


def _visible_numbers(problem: Problem) -> list[float]:
    text = "\n".join([problem.question, *problem.tables])
    numbers = [float(m.replace(",", "")) for m in _NUMBER_RE.findall(text)]
    words = re.findall(r"[a-z]+", text.lower())
    numbers += [_WORD_NUMBERS[w] for w in words if w in _WORD_NUMBERS]
    return numbers


def _numeric_params(params: Any, key: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(params, dict):
        for k, v in params.items():
            if k != "decimals":
                yield from _numeric_params(v, f"{key}.{k}" if key else k)
    elif isinstance(params, list | tuple):
        for v in params:
            yield from _numeric_params(v, key)
    elif isinstance(params, int | float) and not isinstance(params, bool):
        yield key, float(params)


def _assert_correctly_rounded(expected: float, actual: float, decimals: int) -> None:
    """`actual` must equal `expected` rounded to `decimals` (rel tol 1e-6).

    Inputs are "nice" numbers, so some exact answers sit on a half-way point (x.5); float noise
    in two different but equivalent formulas can then round either way, so both neighbours of a
    half-way point are accepted.
    """
    nudge = 1e-9 * max(1.0, abs(expected))
    candidates = {round(expected, decimals), round(expected - nudge, decimals)}
    candidates.add(round(expected + nudge, decimals))
    assert any(math.isclose(c, actual, rel_tol=1e-6, abs_tol=1e-12) for c in candidates), (
        expected,
        actual,
        decimals,
    )


def _table_money(rows: list[dict[str, Any]]) -> list[float]:
    return [
        float(m.replace(",", "")) for r in rows for t in r["tables"] for m in _MONEY_RE.findall(t)
    ]


@pytest.fixture(scope="module")
def sample_700() -> list[dict[str, Any]]:
    return generate_sample(rows=700, seed=42)


# --- templates -----------------------------------------------------------------------------------


def test_templates_cover_every_topic_with_at_least_two_each():
    assert len(TEMPLATES) >= 14
    assert len({t.name for t in TEMPLATES}) == len(TEMPLATES)
    per_topic = Counter(t.topic for t in TEMPLATES)
    assert set(per_topic) == set(TOPICS)
    assert min(per_topic.values()) >= 2


def test_every_template_has_an_independent_formula_in_this_file():
    assert set(FORMULAS) == {t.name for t in TEMPLATES}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_template_answer_matches_independent_formula(template):
    rng = np.random.default_rng(20240601)
    for k in range(60):
        scale = (1.0, 0.01, 25.0)[k % 3]
        problem = template.build(rng, scale)
        decimals = problem.params["decimals"]
        expected = FORMULAS[template.name](problem.params)
        assert math.isfinite(problem.ground_truth)
        assert isinstance(problem.ground_truth, float)
        assert round(problem.ground_truth, decimals) == problem.ground_truth
        _assert_correctly_rounded(expected, problem.ground_truth, decimals)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_template_inputs_appear_in_question_or_tables(template):
    rng = np.random.default_rng(7)
    for _ in range(30):
        problem = template.build(rng, 1.0)
        visible = _visible_numbers(problem)
        for key, value in _numeric_params(problem.params):
            if value == 0:
                continue  # e.g. "no preferred stock" is said in words
            shown = [abs(value), abs(value) * 100]  # rates are displayed as percentages
            assert any(math.isclose(s, n, rel_tol=1e-9) for s in shown for n in visible), (
                key,
                value,
                problem.question,
                problem.tables,
            )


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_template_tables_and_solution_are_well_formed(template):
    rng = np.random.default_rng(11)
    separator = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")
    for _ in range(20):
        problem = template.build(rng, 1.0)
        assert bool(problem.tables) == template.has_table
        for table in problem.tables:
            lines = table.splitlines()
            assert lines[0].startswith("|") and lines[0].endswith("|")
            assert separator.match(lines[1]), lines[1]
            widths = {line.count("|") for line in lines if line.startswith("|")}
            assert len(widths) == 1, table  # every row has the header's column count
        assert problem.python_solution.startswith("def solution():")
        assert "return" in problem.python_solution
        assert problem.question.endswith((".", "?", ")"))


# --- generate_sample -----------------------------------------------------------------------------


def test_same_arguments_give_identical_output_and_a_new_seed_differs():
    args = {"rows": 300, "seed": 7, "topic_weights": {"Accounting": 2, "Risk Management": 1}}
    assert generate_sample(**args, value_scale=3.0) == generate_sample(**args, value_scale=3.0)
    assert generate_sample(300, 7) == generate_sample(300, 7)
    assert generate_sample(300, 7) != generate_sample(300, 8)


@pytest.mark.parametrize("rows", [0, 1, 123])
def test_rows_respected(rows):
    assert len(generate_sample(rows=rows, seed=1)) == rows


def test_ids_unique_and_named_after_seed(sample_700):
    ids = [r["question_id"] for r in sample_700]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "synthetic-s42-000000"
    assert ids[-1] == "synthetic-s42-000699"


def test_rows_have_the_financemath_schema(sample_700):
    for row in sample_700:
        assert set(row) == FIELDS
        assert row["topic"] in TOPICS
        assert isinstance(row["tables"], list)
        assert all(isinstance(t, str) and t for t in row["tables"])
        FinanceMathRecord.model_validate(row)


def test_every_topic_appears_and_default_mix_is_near_uniform(sample_700):
    counts = Counter(r["topic"] for r in sample_700)
    assert set(counts) == set(TOPICS)
    assert min(counts.values()) > 0.6 * 700 / len(TOPICS)


def test_share_of_rows_with_tables_is_about_forty_percent(sample_700):
    share = sum(bool(r["tables"]) for r in sample_700) / len(sample_700)
    assert 0.30 <= share <= 0.50
    assert any(len(r["tables"]) > 1 for r in sample_700)  # occasionally two tables


def test_ground_truths_finite_and_heavy_tailed():
    rows = generate_sample(rows=2000, seed=3)
    answers = [r["ground_truth"] for r in rows]
    assert all(isinstance(a, float) and math.isfinite(a) for a in answers)
    magnitudes = [abs(a) for a in answers]
    assert 2 < statistics.median(magnitudes) < 100
    assert 0.005 < sum(m > 1e5 for m in magnitudes) / len(magnitudes) < 0.2
    assert 0.1 < sum(m < 1 for m in magnitudes) / len(magnitudes) < 0.5
    assert any(a < 0 for a in answers)


def test_value_scale_shifts_monetary_values_in_tables():
    base = _table_money(generate_sample(rows=500, seed=5))
    scaled = _table_money(generate_sample(rows=500, seed=5, value_scale=10.0))
    ratio = statistics.median(scaled) / statistics.median(base)
    assert 5 < ratio < 20


def test_topic_weights_shift_the_mix():
    weights = dict.fromkeys(TOPICS, 1.0) | {"Accounting": 6.0}
    counts = Counter(r["topic"] for r in generate_sample(rows=700, seed=9, topic_weights=weights))
    assert counts["Accounting"] > 2 * max(v for k, v in counts.items() if k != "Accounting")
    only = generate_sample(rows=50, seed=9, topic_weights={"Risk Management": 1.0})
    assert {r["topic"] for r in only} == {"Risk Management"}
    real = generate_sample(rows=700, seed=9, topic_weights=FINANCEMATH_VALIDATION_TOPIC_MIX)
    real_counts = Counter(r["topic"] for r in real)
    assert real_counts.most_common(1)[0][0] == "Asset Classes & Derivatives"


def test_unknown_topic_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="Astrology & Tarot"):
        generate_sample(rows=5, topic_weights={"Accounting": 1.0, "Astrology & Tarot": 1.0})


@pytest.mark.parametrize(
    "weights",
    [
        {"Accounting": -1.0, "Risk Management": 2.0},
        {"Accounting": 0.0},
        {},
        {"Accounting": math.nan},
    ],
)
def test_bad_topic_weights_raise(weights):
    with pytest.raises(ValueError):
        generate_sample(rows=5, topic_weights=weights)


@pytest.mark.parametrize("kwargs", [{"rows": -1}, {"value_scale": 0.0}, {"value_scale": math.inf}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        generate_sample(**kwargs)
