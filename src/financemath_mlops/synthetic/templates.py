"""Problem templates for the synthetic FinanceMath-style dataset (see ``synthetic.py``).

Each template draws its inputs from a numpy ``Generator``, writes a question (and, for about
four in ten templates, markdown tables shaped like the real benchmark's), and computes the
answer with our own code from the *displayed* numbers: every input is rounded to what the text
shows before the answer is computed, so the answer is an exact function of the visible numbers.

Why so many small helpers: real FinanceMath text is messy (``$ 57,000``, ``$57,000``,
``(1,200)`` for negatives, ``20%``, ``8 years``, varying table alignment and padding, footnote
lines, empty cells). The helpers keep that variety in one place so the builders stay readable.

Everything here is pure: no I/O and nothing random at import time; all randomness comes from the
``Generator`` passed to a builder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from financemath_mlops.records import TOPICS

__all__ = ["TEMPLATES", "TOPICS", "Problem", "Template"]


@dataclass(frozen=True)
class Problem:
    """One generated problem.

    ``params`` holds the generated inputs exactly as displayed (rates as decimals, e.g. 0.0325
    for ``3.25%``) plus ``decimals``, the rounding the question asks for, so tests can recompute
    the answer independently. ``python_solution`` is readable text for schema parity only; it is
    never executed.
    """

    question: str
    tables: list[str]
    python_solution: str
    ground_truth: float
    params: dict[str, Any]


@dataclass(frozen=True)
class Template:
    """A named problem family. ``build(rng, value_scale)`` returns one :class:`Problem`.

    ``has_table`` says whether the template always emits markdown tables (it never mixes), which
    is how the table share of a sample is controlled.
    """

    name: str
    topic: str
    build: Callable[[np.random.Generator, float], Problem]
    has_table: bool = False


T = TypeVar("T")

# --- drawing numbers -----------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _sig(x: float, digits: int = 3) -> float:
    """Round to `digits` significant figures: keeps numbers "nice" at any value_scale."""
    return float(f"{x:.{digits}g}")


def _money(rng: np.random.Generator, lo: float, hi: float, scale: float, digits: int = 3) -> float:
    """A log-uniform monetary amount in [lo, hi] times `scale` (heavy-tailed like real data)."""
    return _sig(math.exp(rng.uniform(math.log(lo), math.log(hi))) * scale, digits)


def _rate(rng: np.random.Generator, lo: float, hi: float, step: float) -> float:
    """A rate drawn as a percentage on a `step` grid in [lo, hi], returned as a decimal."""
    k = int(rng.integers(round(lo / step), round(hi / step) + 1))
    return round(k * step, 6) / 100


def _answer(value: float, decimals: int) -> float:
    """Round the way the question asks; refuse non-finite answers (a template bug)."""
    result = float(round(value, decimals)) + 0.0  # + 0.0 turns -0.0 into 0.0
    if not math.isfinite(result):
        raise ArithmeticError(f"non-finite answer {value!r}")
    return result


# --- formatting ----------------------------------------------------------------------------------

_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_DECIMAL_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_FREQUENCY = {1: "annually", 2: "semiannually", 4: "quarterly", 12: "monthly"}
_COMPANIES = (
    "Harlow Industries", "Blue Fern Corp", "Kestrel Logistics", "Marlowe & Sons",
    "Tidewater Holdings", "Quillon Foods", "Norrland Mining", "Cobalt Ridge Inc.",
    "Ashgrove Textiles", "Veridian Systems", "Palisade Retail", "Orchid Bay Hotels",
)  # fmt: skip
_PEOPLE = (
    "Maria Okafor", "Daniel Reyes", "Priya Raman", "Tom Becker", "Ana Lindqvist", "Kenji Sato",
    "Leah Goldberg", "Samuel Osei", "Claire Dubois", "Ivan Petrov", "Nadia Haddad", "Owen Price",
)  # fmt: skip
_CURRENCIES = ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "NZD", "SGD", "CNY", "HKD", "SEK", "NOK")
_MONTHS = ("January", "March", "April", "June", "August", "October", "November")


def _num(value: float, min_decimals: int = 0, max_decimals: int = 6, commas: bool = True) -> str:
    """Shortest exact rendering of an already-rounded number, e.g. 57000 -> '57,000'."""
    value = round(value, max_decimals)
    decimals = max_decimals
    for d in range(min_decimals, max_decimals + 1):
        if abs(round(value, d) - value) <= 1e-9 * max(1.0, abs(value)):
            decimals = d
            break
    return f"{value:,.{decimals}f}" if commas else f"{value:.{decimals}f}"


def _cash(value: float, style: str = "$ {}", paren: bool = False) -> str:
    """Money: '$ 57,000', '$57,000', 'USD 57,000'; cents shown as 2 decimals ('$5.20').

    Negatives are '(1,200)' (accounting style) when `paren`, else '-$ 1,200'.
    """
    body = _num(abs(value))
    if "." in body and len(body.split(".")[1]) == 1:
        body += "0"
    if value < 0:
        return f"({body})" if paren else "-" + style.format(body)
    return style.format(body)


def _pct(rate: float) -> str:
    """A decimal rate as a percentage: 0.0325 -> '3.25%', -0.1 -> '-10%'."""
    return _num(rate * 100, max_decimals=4) + "%"


def _a(noun: str) -> str:
    """'a truck', 'an excavator', 'an 8-year bond'."""
    return ("an " if noun[0] in "aeiou8" or noun.startswith(("11-", "18-")) else "a ") + noun


def _count(rng: np.random.Generator, n: int) -> str:
    """Small counts are sometimes spelt out, as in the real questions ('three years ago')."""
    return _WORDS[n] if n < len(_WORDS) and rng.random() < 0.4 else str(n)


def _round_phrase(rng: np.random.Generator, decimals: int, unit: str = "whole number") -> str:
    if decimals == 0:
        return _pick(rng, (f"Round to the nearest {unit}.", f"(Answer to the nearest {unit}.)"))
    word = _DECIMAL_WORDS[decimals]
    return _pick(
        rng,
        (
            f"Answer to {word} decimal places.",
            f"Give the answer rounded to {decimals} decimals.",
            f"(Round your answer to {word} decimal places.)",
        ),
    )


def _money_style(rng: np.random.Generator, text: bool = True) -> str:
    """Question text may use 'USD 1,000'; tables always use a '$' marker (drift tests read it)."""
    styles = ("$ {}", "${}", "USD {}") if text else ("$ {}", "${}")
    return _pick(rng, styles)


def _table(
    rng: np.random.Generator,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    footnotes: Sequence[str] = (),
) -> str:
    """Render a markdown table with varied alignment colons, padding and optional footnotes."""
    n = len(header)
    mode = _pick(rng, ("plain", "center", "left", "right", "mixed"))
    colons = []
    for j in range(n):
        if mode == "mixed":
            colons.append(_pick(rng, ((False, False), (True, True), (True, False), (False, True))))
        elif mode == "center":
            colons.append((j > 0, j > 0))
        elif mode == "right":
            colons.append((False, j > 0))
        else:
            colons.append((mode == "left", False))
    lines = [list(header), *(list(r) for r in rows)]
    if rng.random() < 0.5:  # padded to column width, like hand-aligned tables
        widths = [max(3, *(len(r[j]) for r in lines)) for j in range(n)]
        centred = rng.random() < 0.3

        def render(cells: list[str]) -> str:
            body = [
                c.center(w) if centred else c.ljust(w) for c, w in zip(cells, widths, strict=True)
            ]
            return "| " + " | ".join(body) + " |"

        sep_widths = [w + 2 for w in widths]
    else:

        def render(cells: list[str]) -> str:
            return "| " + " | ".join(cells) + " |"

        sep_widths = [3] * n
    seps = [
        (":" if left else "") + "-" * max(3, w - left - right) + (":" if right else "")
        for (left, right), w in zip(colons, sep_widths, strict=True)
    ]
    out = [render(lines[0]), "|" + "|".join(seps) + "|", *(render(r) for r in lines[1:])]
    text = "\n".join(out)
    if footnotes:
        text += "\n\n" + "  \n".join(footnotes)
    return text


def _problem(
    question: str,
    solution_lines: Sequence[str],
    answer: float,
    decimals: int,
    params: dict[str, Any],
    tables: Sequence[str] = (),
) -> Problem:
    solution = "def solution():\n" + "\n".join(f"    {line}" for line in solution_lines)
    solution += f"\n    return round(answer, {decimals})\n"
    params = {**params, "decimals": decimals}
    return Problem(
        " ".join(question.split()), list(tables), solution, _answer(answer, decimals), params
    )


def _lit(value: float) -> str:
    """A number as a Python literal for the (never executed) solution text."""
    return _num(value, max_decimals=8, commas=False)


# --- Accounting ----------------------------------------------------------------------------------


def _declining_balance_exchange(rng: np.random.Generator, scale: float) -> Problem:
    """Gain/loss on exchanging a declining-balance-depreciated asset (commercial substance)."""
    asset = _pick(rng, ("truck", "delivery van", "forklift", "printing press", "excavator"))
    other = _pick(rng, ("parcel of land", "warehouse lot", "storage yard"))
    company = _pick(rng, _COMPANIES)
    cost = _money(rng, 20_000, 400_000, scale)
    life = int(rng.integers(5, 13))
    rate = _pick(rng, (0.1, 0.15, 0.2, 0.25, 0.3))
    years = int(rng.integers(2, 6))
    carrying = cost * (1 - rate) ** years
    salvage = _sig(carrying * rng.uniform(0.2, 0.6))
    fair_value = _sig(carrying * rng.uniform(0.75, 1.5))
    other_cost = _sig(fair_value * rng.uniform(0.5, 0.9))
    other_fair = _sig(fair_value * rng.uniform(0.85, 1.15))
    m = _money_style(rng, text=False)
    table = _table(
        rng,
        ["", f"{asset.title()}*", f"{other.title()}**"],
        [
            ["Original cost", _cash(cost, m), _cash(other_cost, m)],
            ["Estimated life", f"{life} years", ""],
            ["Estimated salvage value at purchase", _cash(salvage, m), ""],
            ["Depreciation method", f"Declining balance, {_pct(rate)} per year", ""],
            ["Current fair value", _cash(fair_value, m), _cash(other_fair, m)],
        ],
        [
            f"\\* The company last sold a similar {asset} more than six months ago.",
            f"\\** The {other} is one of several identical lots the counterparty sold recently.",
        ],
    )
    question = f"""{company} decided to swap {_a(asset)} it bought {_count(rng, years)} years ago
        for {_a(other)} owned by another company; the exchange has commercial substance. The
        following table gives information about both assets. What gain or loss should {company}
        report on the exchange (report a loss as a negative number)? {_round_phrase(rng, 0)}"""
    solution = [
        f"cost = {_lit(cost)}",
        f"rate = {_lit(rate)}",
        f"years = {years}",
        f"fair_value = {_lit(fair_value)}",
        "carrying_value = cost * (1 - rate) ** years",
        "answer = fair_value - carrying_value",
    ]
    params = {
        "cost": cost, "life_years": life, "salvage": salvage, "rate": rate, "years_held": years,
        "fair_value": fair_value, "other_cost": other_cost, "other_fair_value": other_fair,
    }  # fmt: skip
    return _problem(question, solution, fair_value - carrying, 0, params, [table])


def _straight_line_depreciation(rng: np.random.Generator, scale: float) -> Problem:
    """Accumulated straight-line depreciation/amortisation, or the carrying amount."""
    intangible = rng.random() < 0.4
    desc = (
        _pick(rng, ("a patent", "a software licence"))
        if intangible
        else _pick(rng, ("a production line", "a fleet of vehicles", "an office building"))
    )
    word = "amortization" if intangible else "depreciation"
    kind = _pick(rng, ("accumulated", "carrying"))
    cost = _money(rng, 20_000, 1_500_000, scale)
    residual = _sig(cost * rng.uniform(0.05, 0.2))
    life = int(rng.integers(3, 16))
    start = int(rng.integers(2005, 2021))
    elapsed = int(rng.integers(1, life + 1))
    report_year = start + elapsed - 1
    m = _money_style(rng)
    target = f"accumulated {word}" if kind == "accumulated" else "carrying amount"
    question = f"""On 1 January {start}, {_pick(rng, _COMPANIES)} acquired {desc} for
        {_cash(cost, m)}. It has an expected useful life of {life} years and an estimated
        residual value of {_cash(residual, m)}. Using the straight-line method, what is the
        {target} at the end of {report_year}? {_round_phrase(rng, 0, "dollar")}"""
    accumulated = (cost - residual) / life * elapsed
    answer = accumulated if kind == "accumulated" else cost - accumulated
    solution = [
        f"cost = {_lit(cost)}",
        f"residual = {_lit(residual)}",
        f"life = {life}",
        f"years_elapsed = {report_year} - {start} + 1",
        "accumulated = (cost - residual) / life * years_elapsed",
        "answer = accumulated" if kind == "accumulated" else "answer = cost - accumulated",
    ]
    params = {
        "cost": cost, "residual": residual, "life_years": life, "acquisition_year": start,
        "report_year": report_year, "kind": kind,
    }  # fmt: skip
    return _problem(question, solution, answer, 0, params)


def _inventory_cost(rng: np.random.Generator, scale: float) -> Problem:
    """Periodic FIFO/LIFO/weighted-average COGS, ending inventory or gross profit from a table."""
    method = _pick(rng, ("FIFO", "LIFO", "weighted average cost"))
    target = _pick(rng, ("cost of goods sold", "ending inventory", "gross profit"))
    month = _pick(rng, _MONTHS)
    unit_cost = _sig(rng.uniform(2, 30) * scale)
    layers = [[int(rng.integers(2, 9)) * 5, unit_cost]]
    for _ in range(int(rng.integers(2, 4))):
        unit_cost = _sig(unit_cost * rng.uniform(0.95, 1.12))
        layers.append([int(rng.integers(2, 12)) * 5, unit_cost])
    available = sum(u for u, _ in layers)
    sold = int(available * rng.uniform(0.4, 0.85))
    first = int(sold * rng.uniform(0.3, 0.7)) if sold > 10 else sold
    top_cost = max(c for _, c in layers)
    sales = [[q, _sig(top_cost * rng.uniform(1.1, 1.5))] for q in (first, sold - first) if q > 0]
    m = _money_style(rng, text=False)
    events: list[tuple[str, list[str]]] = [
        ("Beginning inventory", [f"{layers[0][0]} units", f"{_cash(layers[0][1], m)}/unit"])
    ]
    for units, cost in layers[1:]:
        events.append(("Purchased", [f"{units} units", f"{_cash(cost, m)}/unit"]))
    for i, (units, price) in enumerate(sales):  # interleave sales after purchases
        events.insert(2 + 2 * i, ("Sold", [f"{units} units @ {_cash(price, m)}/unit", ""]))
    days = np.sort(rng.choice(np.arange(2, 29), size=len(events) - 1, replace=False))
    rows = [
        [f"{month} {d}", kind, *cells] for d, (kind, cells) in zip([1, *days], events, strict=True)
    ]
    table = _table(rng, ["Date", "Transaction", "Units", "Unit cost"], rows)
    question = f"""The inventory account of {_pick(rng, _COMPANIES)} recorded the following
        transactions in {month}. Under the periodic {method} method, what was the {target} for
        {month}? {_round_phrase(rng, 2)}"""
    total_cost = sum(u * c for u, c in layers)
    if method == "weighted average cost":
        cogs = sold * total_cost / available
    else:
        cogs, remaining = 0.0, sold
        for units, cost in layers if method == "FIFO" else layers[::-1]:
            take = min(units, remaining)
            cogs += take * cost
            remaining -= take
    revenue = sum(u * p for u, p in sales)
    answer = {
        "cost of goods sold": cogs,
        "ending inventory": total_cost - cogs,
        "gross profit": revenue - cogs,
    }[target]
    solution = [
        f"layers = {[(u, c) for u, c in layers]}  # (units, unit cost), oldest first",
        f"sales = {[(u, p) for u, p in sales]}  # (units, unit price)",
        "units_sold = sum(u for u, _ in sales)",
        f"cogs = cost_of_units(layers, units_sold, method={method!r})",
        "answer = "
        + {
            "cost of goods sold": "cogs",
            "ending inventory": "sum(u * c for u, c in layers) - cogs",
            "gross profit": "sum(u * p for u, p in sales) - cogs",
        }[target],
    ]
    params = {"layers": layers, "sales": sales, "method": method, "target": target}
    return _problem(question, solution, answer, 2, params, [table])


# --- Asset Classes & Derivatives -----------------------------------------------------------------


def _bond_price(rng: np.random.Generator, scale: float) -> Problem:
    """Price of a plain coupon bond from a feature table."""
    coupon = _rate(rng, 1, 9, 0.5)
    ytm = _rate(rng, 1, 10, 0.25)
    freq = _pick(rng, (1, 2))
    years = _pick(rng, (2, 3, 4, 5, 7, 10, 15, 20, 30))
    par = _sig(_pick(rng, (100, 100, 100, 1000)) * scale)
    decimals = _pick(rng, (2, 3))
    m = _money_style(rng, text=False)
    rows = [
        ["Coupon rate", _pct(coupon)],
        ["Interest paid", _FREQUENCY[freq].capitalize()],
        ["Time to maturity", f"{years} years"],
        ["Required rate of return", _pct(ytm)],
        ["Par value of the bond", _cash(par, m)],
    ]
    rows = [rows[k] for k in rng.permutation(4)] + rows[4:]  # vary order; par stays last
    header = _pick(rng, (["Feature", "Value"], rows[0]))
    body = rows if header != rows[0] else rows[1:]
    table = _table(rng, header, body)
    question = f"""The following information pertains to a bond issued by
        {_pick(rng, _COMPANIES)}. What is the bond's price? {_round_phrase(rng, decimals)}"""
    i, n = ytm / freq, years * freq
    price = sum(par * coupon / freq / (1 + i) ** t for t in range(1, n + 1)) + par / (1 + i) ** n
    solution = [
        f"par = {_lit(par)}",
        f"coupon = par * {_lit(coupon)} / {freq}",
        f"i = {_lit(ytm)} / {freq}",
        f"n = {years} * {freq}",
        "answer = sum(coupon / (1 + i) ** t for t in range(1, n + 1)) + par / (1 + i) ** n",
    ]
    params = {"coupon_rate": coupon, "ytm": ytm, "frequency": freq, "years": years, "par": par}
    return _problem(question, solution, price, decimals, params, [table])


def _put_call_parity(rng: np.random.Generator, scale: float) -> Problem:
    """European put (or call) value from the other option via put-call parity."""
    spot = _sig(rng.uniform(20, 200) * scale, 4)
    strike = _sig(spot * rng.uniform(0.85, 1.15), 2)
    rate = _rate(rng, 1, 6, 0.25)
    months = _pick(rng, (3, 6, 9, 12))
    compounding = _pick(rng, ("annual", "continuous"))
    solve_for = _pick(rng, ("put", "call"))
    t = months / 12
    pv_strike = (
        strike * math.exp(-rate * t) if compounding == "continuous" else (strike / (1 + rate) ** t)
    )
    cushion = rng.uniform(0.02, 0.08) * spot  # keeps both option values positive
    if solve_for == "put":
        known = _sig(max(spot - pv_strike, 0.0) + cushion, 4)
        answer = known - spot + pv_strike
    else:
        known = _sig(max(pv_strike - spot, 0.0) + cushion, 4)
        answer = known + spot - pv_strike
    given = "call" if solve_for == "put" else "put"
    m = _money_style(rng)
    question = f"""A European {given} option on {_pick(rng, _COMPANIES)} shares with a strike
        price of {_cash(strike, m)} and {months} months to expiration is priced at
        {_cash(known, m)}. The shares trade at {_cash(spot, m)} and the risk-free rate is
        {_pct(rate)} per year ({compounding} compounding). The shares pay no dividend. Using
        put-call parity, what is the value of a European {solve_for} with the same strike and
        expiration? {_round_phrase(rng, 2)}"""
    discount = "math.exp(-r * t)" if compounding == "continuous" else "(1 + r) ** -t"
    solution = [
        f"spot, strike, known = {_lit(spot)}, {_lit(strike)}, {_lit(known)}",
        f"r, t = {_lit(rate)}, {months} / 12",
        f"pv_strike = strike * {discount}",
        "answer = known - spot + pv_strike"
        if solve_for == "put"
        else "answer = known + spot - pv_strike",
    ]
    params = {
        "spot": spot, "strike": strike, "rate": rate, "months": months,
        "compounding": compounding, "solve_for": solve_for, "known_price": known,
    }  # fmt: skip
    return _problem(question, solution, answer, 2, params)


def _gordon_growth(rng: np.random.Generator, scale: float) -> Problem:
    """Constant-growth dividend discount model value per share."""
    dividend = _sig(rng.uniform(0.5, 5) * scale)
    growth = _rate(rng, 1, 6, 0.5)
    required = round(growth + _rate(rng, 2, 8, 0.5), 6)
    kind = _pick(rng, ("just_paid", "next"))
    m = _money_style(rng)
    company = _pick(rng, _COMPANIES)
    paid = (
        f"{company} just paid an annual dividend of {_cash(dividend, m)} per share"
        if kind == "just_paid"
        else f"{company} is expected to pay a dividend of {_cash(dividend, m)} per share next year"
    )
    question = f"""{paid}. Dividends are expected to grow at {_pct(growth)} per year
        indefinitely and investors require a {_pct(required)} return. Using the Gordon growth
        model, what is the intrinsic value of one share? {_round_phrase(rng, 2)}"""
    d1 = dividend * (1 + growth) if kind == "just_paid" else dividend
    solution = [
        f"d1 = {_lit(dividend)}" + (f" * (1 + {_lit(growth)})" if kind == "just_paid" else ""),
        f"answer = d1 / ({_lit(required)} - {_lit(growth)})",
    ]
    params = {"dividend": dividend, "growth": growth, "required_return": required, "kind": kind}
    return _problem(question, solution, d1 / (required - growth), 2, params)


# --- Corporate & Securities Issuance -------------------------------------------------------------


def _wacc(rng: np.random.Generator, scale: float) -> Problem:
    """Weighted average cost of capital from market values, costs of capital and tax rate."""
    equity = _money(rng, 50, 5000, scale)
    debt = _sig(equity * rng.uniform(0.1, 1.2))
    cost_equity = _rate(rng, 7, 16, 0.5)
    cost_debt = _rate(rng, 3, 9, 0.25)
    tax = _rate(rng, 15, 35, 1)
    as_percent = rng.random() < 0.5
    decimals = 2 if as_percent else 4
    m = _money_style(rng)
    unit = "as a percentage" if as_percent else "as a decimal"
    question = f"""{_pick(rng, _PEOPLE)} is estimating the cost of capital of
        {_pick(rng, _COMPANIES)}. The market value of its equity is {_cash(equity, m)} million
        and the market value of its debt is {_cash(debt, m)} million. The cost of equity is
        {_pct(cost_equity)}, the pre-tax cost of debt is {_pct(cost_debt)} and the marginal tax
        rate is {_pct(tax)}. What is the WACC ({unit})? {_round_phrase(rng, decimals)}"""
    total = equity + debt
    wacc = equity / total * cost_equity + debt / total * cost_debt * (1 - tax)
    solution = [
        f"equity, debt = {_lit(equity)}, {_lit(debt)}",
        f"re, rd, tax = {_lit(cost_equity)}, {_lit(cost_debt)}, {_lit(tax)}",
        "wacc = equity / (equity + debt) * re + debt / (equity + debt) * rd * (1 - tax)",
        "answer = wacc * 100" if as_percent else "answer = wacc",
    ]
    params = {
        "equity": equity, "debt": debt, "cost_equity": cost_equity, "cost_debt": cost_debt,
        "tax_rate": tax, "as_percent": as_percent,
    }  # fmt: skip
    return _problem(question, solution, wacc * 100 if as_percent else wacc, decimals, params)


def _eps_pe(rng: np.random.Generator, scale: float) -> Problem:
    """Basic EPS or P/E from an income statement (share data sometimes in a second table)."""
    revenue = _money(rng, 200, 20_000, scale, 4)
    items = {
        "Cost of goods sold": _sig(revenue * rng.uniform(0.4, 0.62), 4),
        "Selling, general and administrative expenses": _sig(revenue * rng.uniform(0.08, 0.18), 4),
        "Depreciation expense": _sig(revenue * rng.uniform(0.02, 0.06), 4),
        "Interest expense": _sig(revenue * rng.uniform(0.005, 0.04), 4),
    }
    tax = _rate(rng, 15, 35, 1)
    net_income = (revenue - sum(items.values())) * (1 - tax)
    preferred = _sig(net_income * rng.uniform(0.02, 0.1)) if rng.random() < 0.5 else 0.0
    shares = _sig(net_income / scale / rng.uniform(1, 8))  # millions; not a monetary value
    eps = (net_income - preferred) / shares
    price = _sig(eps * rng.uniform(8, 30), 4)
    target = _pick(rng, ("eps", "pe"))
    year = int(rng.integers(2012, 2025))
    m = _money_style(rng, text=False)
    paren = rng.random() < 0.5
    rows = [["Revenue", _cash(revenue, m)]]
    rows += [[label, _cash(-v if paren else v, "{}", paren=True)] for label, v in items.items()]
    rows.append(["Income tax rate", _pct(tax)])
    tables = [_table(rng, [f"For the year ended 31 December {year}", "$ millions"], rows)]
    share_rows = [
        ["Weighted average shares outstanding (millions)", _num(shares)],
        ["Market price per share", _cash(price, m)],
    ]
    if preferred:
        share_rows.insert(1, ["Preferred dividends ($ millions)", _num(preferred)])
    company = _pick(rng, _COMPANIES)
    if rng.random() < 0.35:
        tables.append(_table(rng, ["Share data", ""], share_rows))
        share_text = "Share data are in the second table."
    else:
        share_text = f"""{company} had {_num(shares)} million weighted average shares outstanding
            and its shares trade at {_cash(price, m)}."""
        if preferred:
            share_text += f" Preferred dividends were {_cash(preferred, m)} million."
    if not preferred:
        share_text += " The company has no preferred stock."
    ask = "basic earnings per share" if target == "eps" else "price-to-earnings ratio"
    question = f"""The income statement of {company} is summarised below. {share_text} What is
        the company's {year} {ask}? {_round_phrase(rng, 2)}"""
    solution = [
        f"revenue = {_lit(revenue)}",
        f"expenses = {' + '.join(_lit(v) for v in items.values())}",
        f"net_income = (revenue - expenses) * (1 - {_lit(tax)})",
        f"eps = (net_income - {_lit(preferred)}) / {_lit(shares)}",
        "answer = eps" if target == "eps" else f"answer = {_lit(price)} / eps",
    ]
    params = {
        "revenue": revenue, "expenses": list(items.values()), "tax_rate": tax,
        "preferred_dividends": preferred, "shares": shares, "price": price, "target": target,
    }  # fmt: skip
    return _problem(question, solution, eps if target == "eps" else price / eps, 2, params, tables)


_ASSET_ITEMS = ("Cash and cash equivalents", "Marketable securities", "Accounts receivable")
_OTHER_ASSETS = ("Inventories", "Prepaid expenses")
_LIABILITIES = ("Accounts payable", "Accrued liabilities", "Notes payable")


def _liquidity_ratio(rng: np.random.Generator, scale: float) -> Problem:
    """Current, quick or cash ratio from a two-year balance-sheet extract."""
    kind = _pick(rng, ("current", "quick", "cash"))
    year = int(rng.integers(2012, 2025))
    base = _money(rng, 500, 50_000, scale)
    shares = {"Cash and cash equivalents": (0.05, 0.2), "Marketable securities": (0.02, 0.15),
              "Accounts receivable": (0.15, 0.35), "Inventories": (0.2, 0.45),
              "Prepaid expenses": (0.01, 0.05), "Accounts payable": (0.15, 0.35),
              "Accrued liabilities": (0.05, 0.15), "Notes payable": (0.05, 0.25)}  # fmt: skip
    values: dict[str, list[float]] = {}
    for item, (lo, hi) in shares.items():
        latest = _sig(base * rng.uniform(lo, hi))
        values[item] = [latest, _sig(latest * rng.uniform(0.85, 1.15))]
    m = _money_style(rng, text=False)

    def cells(item: str, money: bool) -> list[str]:
        return [item, *(_cash(v, m) if money else _num(v) for v in values[item])]

    assets = [*_ASSET_ITEMS, *_OTHER_ASSETS]
    rows = [cells(a, a == assets[0]) for a in assets]
    totals = [sum(values[a][k] for a in assets) for k in (0, 1)]
    rows.append(["**Total current assets**", *(_cash(t, m) for t in totals)])
    rows.append(["", "", ""])
    rows += [cells(li, li == _LIABILITIES[0]) for li in _LIABILITIES]
    totals = [sum(values[li][k] for li in _LIABILITIES) for k in (0, 1)]
    rows.append(["**Total current liabilities**", *(_cash(t, m) for t in totals)])
    table = _table(rng, ["($ thousands)", str(year), str(year - 1)], rows)
    decimals = _pick(rng, (2, 3))
    question = f"""Based on the balance sheet extract of {_pick(rng, _COMPANIES)} below, what is
        the company's {kind} ratio at the end of {year}? {_round_phrase(rng, decimals)}"""
    numerator = {"current": assets, "quick": _ASSET_ITEMS, "cash": _ASSET_ITEMS[:2]}[kind]
    liabilities = sum(values[li][0] for li in _LIABILITIES)
    ratio = sum(values[a][0] for a in numerator) / liabilities
    solution = [
        f"numerator = {' + '.join(_lit(values[a][0]) for a in numerator)}",
        f"current_liabilities = {' + '.join(_lit(values[li][0]) for li in _LIABILITIES)}",
        "answer = numerator / current_liabilities",
    ]
    params = {"kind": kind, "year": year, "previous_year": year - 1, "values": values}
    return _problem(question, solution, ratio, decimals, params, [table])


# --- Market Analysis & Economics -----------------------------------------------------------------


def _forward_rate_parity(rng: np.random.Generator, scale: float) -> Problem:
    """Forward rate or forward points from covered interest rate parity (360-day basis)."""
    price, base = rng.choice(len(_CURRENCIES), size=2, replace=False)
    price_ccy, base_ccy = _CURRENCIES[price], _CURRENCIES[base]
    spot = round(rng.uniform(0.6, 2.2), 4)
    rate_price = _rate(rng, 0.5, 6, 0.0025)
    rate_base = _rate(rng, 0.5, 6, 0.0025)
    days = _pick(rng, (90, 180, 270, 360))
    kind = _pick(rng, ("forward", "points"))
    decimals = 4 if kind == "forward" else _pick(rng, (1, 2))
    ask = (
        "what is the {days}-day forward rate"
        if kind == "forward"
        else "what are the {days}-day forward points (forward minus spot, x 10,000)"
    ).format(days=days)
    question = f"""The spot exchange rate is {spot:.4f} {price_ccy}/{base_ccy} ({price_ccy} per
        one {base_ccy}). The {days}-day Libor rate is {_pct(rate_price)} for {price_ccy} and
        {_pct(rate_base)} for {base_ccy}, both quoted on a 360-day year basis. Under covered
        interest rate parity, {ask}?
        {_round_phrase(rng, decimals)}"""
    forward = spot * (1 + rate_price * days / 360) / (1 + rate_base * days / 360)
    answer = forward if kind == "forward" else (forward - spot) * 10_000
    solution = [
        f"spot = {spot:.4f}",
        f"forward = spot * (1 + {_lit(rate_price)} * {days} / 360) / "
        f"(1 + {_lit(rate_base)} * {days} / 360)",
        "answer = forward" if kind == "forward" else "answer = (forward - spot) * 10000",
    ]
    params = {
        "spot": spot, "rate_price": rate_price, "rate_base": rate_base, "days": days,
        "kind": kind,
    }  # fmt: skip
    return _problem(question, solution, answer, decimals, params)


def _gdp_inflation(rng: np.random.Generator, scale: float) -> Problem:
    """Inflation or real GDP growth from a table of nominal GDP and the GDP deflator by year."""
    n = int(rng.integers(4, 6))
    first = int(rng.integers(2010, 2020))
    years = list(range(first, first + n))
    nominal = [_money(rng, 200, 20_000, scale, 4)]
    deflator = [round(rng.uniform(95, 115), 1)]
    for _ in range(n - 1):
        inflation, real_growth = rng.uniform(0.0, 0.05), rng.uniform(-0.01, 0.05)
        nominal.append(_sig(nominal[-1] * (1 + inflation) * (1 + real_growth), 4))
        deflator.append(round(deflator[-1] * (1 + inflation), 1))
    kind = _pick(rng, ("real_growth", "inflation", "average_inflation"))
    j = int(rng.integers(1, n))
    m = _money_style(rng, text=False)
    header = [
        "Year",
        "Nominal GDP ($ billions)",
        f"GDP deflator ({first - int(rng.integers(3, 10))} = 100)",
    ]
    rows = [
        [str(y), _cash(g, m), _num(d)] for y, g, d in zip(years, nominal, deflator, strict=True)
    ]
    if rng.random() < 0.4:  # an unused column with a gap, as in real exhibits
        header.append("Unemployment rate")
        gap = int(rng.integers(n))
        for i, row in enumerate(rows):
            row.append("" if i == gap else _pct(_rate(rng, 3, 10, 0.1)))
    table = _table(rng, header, rows)
    country = _pick(rng, ("Arcadia", "Borealis", "Caldonia", "Dravia", "Estoria"))
    if kind == "real_growth":
        ask = f"real GDP growth rate in {years[j]}"
        value = (nominal[j] / deflator[j]) / (nominal[j - 1] / deflator[j - 1]) - 1
        expr = f"({_lit(nominal[j])} / {_lit(deflator[j])}) / "
        expr += f"({_lit(nominal[j - 1])} / {_lit(deflator[j - 1])}) - 1"
    elif kind == "inflation":
        ask = f"inflation rate (GDP deflator basis) in {years[j]}"
        value = deflator[j] / deflator[j - 1] - 1
        expr = f"{_lit(deflator[j])} / {_lit(deflator[j - 1])} - 1"
    else:
        ask = f"average annual inflation rate from {years[0]} to {years[-1]}"
        value = (deflator[-1] / deflator[0]) ** (1 / (n - 1)) - 1
        expr = f"({_lit(deflator[-1])} / {_lit(deflator[0])}) ** (1 / {n - 1}) - 1"
    question = f"""An economist compiled the following data for {country}. What was the {ask}
        (in percent)? {_round_phrase(rng, 2)}"""
    params = {
        "years": years, "nominal_gdp": nominal, "deflator": deflator, "kind": kind,
        "target_year": years[j],
    }  # fmt: skip
    return _problem(question, [f"answer = ({expr}) * 100"], value * 100, 2, params, [table])


def _cross_rate(rng: np.random.Generator, scale: float) -> Problem:
    """Cross exchange rate from two quotes sharing a currency."""
    a, b, c = (_CURRENCIES[i] for i in rng.choice(len(_CURRENCIES), size=3, replace=False))
    q1 = round(rng.uniform(0.5, 2.0), 4)
    q2 = round(rng.uniform(0.5, 2.0), 4)
    kind = _pick(rng, ("common_price", "chain"))
    if kind == "common_price":  # a/b and a/c -> b/c
        quotes, target, value = f"{a}/{b} = {q1:.4f} and {a}/{c} = {q2:.4f}", f"{b}/{c}", q2 / q1
        expr = f"{q2:.4f} / {q1:.4f}"
    else:  # a/b and b/c -> a/c
        quotes, target, value = f"{a}/{b} = {q1:.4f} and {b}/{c} = {q2:.4f}", f"{a}/{c}", q1 * q2
        expr = f"{q1:.4f} * {q2:.4f}"
    question = f"""A dealer quotes the following spot rates: {quotes}, where a quote X/Y is the
        number of units of X per one unit of Y. What is the implied {target} cross rate?
        {_round_phrase(rng, 4)}"""
    params = {"quote_1": q1, "quote_2": q2, "kind": kind}
    return _problem(question, [f"answer = {expr}"], value, 4, params)


# --- Portfolio Management & Strategy -------------------------------------------------------------


def _two_asset_portfolio(rng: np.random.Generator, scale: float) -> Problem:
    """Expected return, standard deviation or variance of a two-asset portfolio."""
    names = rng.choice(
        ["Equity fund", "Bond fund", "Real estate fund", "Emerging markets fund", "Gold ETF"],
        size=2,
        replace=False,
    )
    amount_1 = _money(rng, 10_000, 2_000_000, scale)
    amount_2 = _sig(amount_1 * math.exp(rng.uniform(-1.4, 1.4)))
    returns = [_rate(rng, 2, 14, 0.5), _rate(rng, 2, 14, 0.5)]
    vols = [_rate(rng, 3, 30, 1), _rate(rng, 3, 30, 1)]
    rho = round(rng.uniform(-0.5, 0.9), 2)
    kind = _pick(rng, ("expected_return", "std_dev", "variance"))
    m = _money_style(rng, text=False)
    rows = [
        [str(name), _cash(amt, m), _pct(r), _pct(s)]
        for name, amt, r, s in zip(names, (amount_1, amount_2), returns, vols, strict=True)
    ]
    in_footnote = rng.random() < 0.5
    note = [f"\\* Correlation between the returns of the two assets: {rho:.2f}"]
    table = _table(
        rng,
        ["Asset", "Amount invested", "Expected return", "Standard deviation"],
        rows,
        note if in_footnote else (),
    )
    corr_text = "" if in_footnote else f" The correlation between their returns is {rho:.2f}."
    if kind == "variance":
        ask, decimals = "variance of the portfolio's return (as a decimal)", 4
    else:
        what = "expected return" if kind == "expected_return" else "standard deviation"
        ask, decimals = f"{what} of the portfolio (in percent)", 2
    question = f"""{_pick(rng, _PEOPLE)} holds the two positions shown below.{corr_text} What is
        the {ask}? {_round_phrase(rng, decimals)}"""
    w1 = amount_1 / (amount_1 + amount_2)
    w2 = 1 - w1
    variance = (w1 * vols[0]) ** 2 + (w2 * vols[1]) ** 2 + 2 * w1 * w2 * rho * vols[0] * vols[1]
    value = {
        "expected_return": (w1 * returns[0] + w2 * returns[1]) * 100,
        "std_dev": math.sqrt(variance) * 100,
        "variance": variance,
    }[kind]
    solution = [
        f"w1 = {_lit(amount_1)} / ({_lit(amount_1)} + {_lit(amount_2)})",
        "w2 = 1 - w1",
        f"r1, r2, s1, s2, rho = {', '.join(_lit(x) for x in (*returns, *vols, rho))}",
        "variance = (w1 * s1) ** 2 + (w2 * s2) ** 2 + 2 * w1 * w2 * rho * s1 * s2",
        {
            "expected_return": "answer = (w1 * r1 + w2 * r2) * 100",
            "std_dev": "answer = variance ** 0.5 * 100",
            "variance": "answer = variance",
        }[kind],
    ]
    params = {
        "amounts": [amount_1, amount_2], "returns": returns, "vols": vols, "correlation": rho,
        "kind": kind,
    }  # fmt: skip
    return _problem(question, solution, value, decimals, params, [table])


def _sharpe_treynor(rng: np.random.Generator, scale: float) -> Problem:
    """Sharpe or Treynor ratio of a portfolio."""
    rf = _rate(rng, 0.5, 5, 0.25)
    excess = _rate(rng, 1, 14, 0.1)
    ret = round(rf + excess, 6)
    vol = _rate(rng, 5, 30, 0.5)
    beta = round(rng.uniform(0.5, 1.8), 2)
    kind = _pick(rng, ("sharpe", "treynor"))
    decimals = _pick(rng, (2, 3)) if kind == "sharpe" else 4
    question = f"""Over the past year a fund managed by {_pick(rng, _PEOPLE)} returned
        {_pct(ret)} with a standard deviation of {_pct(vol)} and a beta of {beta:.2f}. The
        risk-free rate was {_pct(rf)}. What is the fund's {kind.capitalize()} ratio?
        {_round_phrase(rng, decimals)}"""
    risk = vol if kind == "sharpe" else beta
    solution = [f"answer = ({_lit(ret)} - {_lit(rf)}) / {_lit(risk)}"]
    params = {"portfolio_return": ret, "risk_free": rf, "std_dev": vol, "beta": beta, "kind": kind}
    return _problem(question, solution, (ret - rf) / risk, decimals, params)


def _capm(rng: np.random.Generator, scale: float) -> Problem:
    """CAPM required return from the risk-free rate, beta and the market return or premium."""
    rf = _rate(rng, 0.5, 5, 0.25)
    beta = round(rng.uniform(0.4, 2.0), 2)
    kind = _pick(rng, ("market_return", "premium"))
    premium = _rate(rng, 3, 9, 0.25)
    market = round(rf + premium, 6)
    as_percent = rng.random() < 0.5
    decimals = 2 if as_percent else 4
    market_text = (
        f"the expected market return is {_pct(market)}"
        if kind == "market_return"
        else f"the equity market risk premium is {_pct(premium)}"
    )
    unit = "in percent" if as_percent else "as a decimal"
    question = f"""{_pick(rng, _COMPANIES)} has a beta of {beta:.2f}. The risk-free rate is
        {_pct(rf)} and {market_text}. According to the CAPM, what is the expected return on its
        shares ({unit})? {_round_phrase(rng, decimals)}"""
    value = rf + beta * premium
    solution = [
        f"rf, beta = {_lit(rf)}, {_lit(beta)}",
        f"premium = {_lit(market)} - rf"
        if kind == "market_return"
        else f"premium = {_lit(premium)}",
        "answer = (rf + beta * premium)" + (" * 100" if as_percent else ""),
    ]
    params = {"risk_free": rf, "beta": beta, "kind": kind, "as_percent": as_percent}
    params |= {"market_return": market} if kind == "market_return" else {"premium": premium}
    return _problem(question, solution, value * 100 if as_percent else value, decimals, params)


# --- Quantitative Analysis & Valuation -----------------------------------------------------------


def _time_value(rng: np.random.Generator, scale: float) -> Problem:
    """Future value, present value, or the implied annual rate of a lump sum."""
    amount = _money(rng, 500, 200_000, scale)
    rate = _rate(rng, 1, 10, 0.25)
    years = int(rng.integers(1, 26))
    freq = _pick(rng, (1, 2, 4, 12))
    kind = _pick(rng, ("future", "present", "rate"))
    m = _money_style(rng)
    person = _pick(rng, _PEOPLE)
    params: dict[str, Any] = {"amount": amount, "years": years, "kind": kind}
    if kind == "rate":  # annual compounding; the answer is a percentage
        target = _sig(amount * (1 + rng.uniform(0.02, 0.12)) ** years, 4)
        text = f"""{person} invested {_cash(amount, m)} {_count(rng, years)} years ago and the
            investment is worth {_cash(target, m)} today. What compound annual rate of return
            (in percent) did it earn?"""
        value = ((target / amount) ** (1 / years) - 1) * 100
        solution = [f"answer = (({_lit(target)} / {_lit(amount)}) ** (1 / {years}) - 1) * 100"]
        params["target_amount"] = target
        return _problem(f"{text} {_round_phrase(rng, 2)}", solution, value, 2, params)
    if kind == "future":
        text = f"""{person} deposits {_cash(amount, m)} in an account paying {_pct(rate)} per
            year compounded {_FREQUENCY[freq]}. How much will the account hold after
            {_count(rng, years)} years?"""
    else:
        text = f"""{person} needs {_cash(amount, m)} in {_count(rng, years)} years. How much must
            be invested today at {_pct(rate)} per year compounded {_FREQUENCY[freq]}?"""
    growth = (1 + rate / freq) ** (years * freq)
    solution = [
        f"growth = (1 + {_lit(rate)} / {freq}) ** ({years} * {freq})",
        f"answer = {_lit(amount)} " + ("* growth" if kind == "future" else "/ growth"),
    ]
    params |= {"rate": rate, "frequency": freq}
    value = amount * growth if kind == "future" else amount / growth
    return _problem(f"{text} {_round_phrase(rng, 2)}", solution, value, 2, params)


def _npv(rng: np.random.Generator, scale: float) -> Problem:
    """NPV or profitability index of a project's cash flows given in a table."""
    n = int(rng.integers(3, 7))
    in_thousands = rng.random() < 0.5  # many real exhibits state amounts in $ thousands
    initial = _money(rng, 50, 5_000, scale) if in_thousands else _money(rng, 10_000, 1e6, scale)
    flows = [_sig(initial / n * rng.uniform(1.0, 2.2)) for _ in range(n)]
    if rng.random() < 0.15:  # an overhaul year, shown in parentheses like real exhibits
        k = int(rng.integers(1, n))
        flows[k] = -_sig(flows[k] * rng.uniform(0.1, 0.5))
    rate = _rate(rng, 4, 15, 0.5)
    kind = "npv" if rng.random() < 0.75 else "pi"
    decimals = _pick(rng, (0, 2)) if kind == "npv" else 3
    m = _money_style(rng, text=False)
    unit = " ($ thousands)" if in_thousands else ""
    cells = [_cash(-initial, m, paren=True)] + [_cash(f, m, paren=True) for f in flows]
    if rng.random() < 0.5:
        table = _table(
            rng, ["Year", f"Cash flow{unit}"], [[str(t), c] for t, c in enumerate(cells)]
        )
    else:
        table = _table(
            rng, ["Year", *(str(t) for t in range(n + 1))], [[f"Cash flow{unit}", *cells]]
        )
    tables = [table]
    if rng.random() < 0.3:
        info = [["Discount rate", _pct(rate)], ["Project life", f"{n} years"]]
        tables.append(_table(rng, ["Project information", ""], info))
        rate_text = "Project information is given in the second table."
    else:
        rate_text = f"The appropriate discount rate is {_pct(rate)}."
    if kind == "npv":
        ask = "net present value" + (" (in $ thousands)" if in_thousands else "")
    else:
        ask = "profitability index"
    question = f"""{_pick(rng, _COMPANIES)} is evaluating a project with the expected cash flows
        below (year 0 is the initial investment). {rate_text} What is the project's {ask}?
        {_round_phrase(rng, decimals)}"""
    pv_inflows = sum(f / (1 + rate) ** t for t, f in enumerate(flows, start=1))
    value = pv_inflows - initial if kind == "npv" else pv_inflows / initial
    solution = [
        f"flows = {[_lit(f) for f in flows]}".replace("'", ""),
        f"pv = sum(f / (1 + {_lit(rate)}) ** t for t, f in enumerate(flows, start=1))",
        f"answer = pv - {_lit(initial)}" if kind == "npv" else f"answer = pv / {_lit(initial)}",
    ]
    params = {"initial_investment": initial, "cash_flows": flows, "rate": rate, "kind": kind}
    return _problem(question, solution, value, decimals, params, tables)


def _loan_payment(rng: np.random.Generator, scale: float) -> Problem:
    """Level payment of an amortising loan (annuity)."""
    principal = _money(rng, 2_000, 500_000, scale)
    rate = _rate(rng, 2, 12, 0.25)
    years = _pick(rng, (3, 5, 10, 15, 20, 25, 30))
    freq = _pick(rng, (12, 12, 4, 1))
    loan = _pick(rng, ("mortgage", "equipment loan", "car loan"))
    m = _money_style(rng)
    period = {12: "monthly", 4: "quarterly", 1: "annual"}[freq]
    question = f"""{_pick(rng, _PEOPLE)} takes out a {_cash(principal, m)} {loan} at an annual
        interest rate of {_pct(rate)}, repaid in equal {period} instalments over {years} years.
        What is the {period} payment? {_round_phrase(rng, 2)}"""
    i, n = rate / freq, years * freq
    payment = principal * i / (1 - (1 + i) ** -n)
    solution = [
        f"i = {_lit(rate)} / {freq}",
        f"n = {years} * {freq}",
        f"answer = {_lit(principal)} * i / (1 - (1 + i) ** -n)",
    ]
    params = {"principal": principal, "rate": rate, "years": years, "frequency": freq}
    return _problem(question, solution, payment, 2, params)


# --- Risk Management -----------------------------------------------------------------------------

_Z = {0.95: 1.645, 0.99: 2.326}


def _parametric_var(rng: np.random.Generator, scale: float) -> Problem:
    """Parametric (normal, zero-mean) VaR scaled with the square-root-of-time rule."""
    value = _money(rng, 200_000, 40_000_000, scale)
    confidence = _pick(rng, (0.95, 0.99))
    z = _Z[confidence]
    kind = _pick(rng, ("daily_to_horizon", "annual_to_daily"))
    decimals = _pick(rng, (0, 2))
    m = _money_style(rng)
    intro = f"""A risk analyst at {_pick(rng, _COMPANIES)} is estimating the VaR of a portfolio
        worth {_cash(value, m)}. Returns are normally distributed with zero mean."""
    if kind == "daily_to_horizon":
        vol = _rate(rng, 0.5, 2.5, 0.05)
        horizon = _pick(rng, (1, 5, 10, 20))
        ask = f"""The daily return volatility is {_pct(vol)}. What is the {horizon}-day VaR at
            the {_pct(confidence)} confidence level (z = {z})?"""
        var = z * vol * math.sqrt(horizon) * value
        params = {"vol": vol, "horizon_days": horizon}
        solution = [f"answer = {z} * {_lit(vol)} * {horizon} ** 0.5 * {_lit(value)}"]
    else:
        vol = _rate(rng, 8, 40, 0.5)
        days = _pick(rng, (250, 252))
        ask = f"""The annual volatility is {_pct(vol)} and there are {days} trading days in a
            year. What is the 1-day VaR at the {_pct(confidence)} confidence level (z = {z})?"""
        var = z * vol / math.sqrt(days) * value
        params = {"vol": vol, "trading_days": days}
        solution = [f"answer = {z} * {_lit(vol)} / {days} ** 0.5 * {_lit(value)}"]
    params |= {"value": value, "confidence": confidence, "z": z, "kind": kind}
    text = f"{intro} {ask} {_round_phrase(rng, decimals, 'dollar')}"
    return _problem(text, solution, var, decimals, params)


def _bond_duration(rng: np.random.Generator, scale: float) -> Problem:
    """Macaulay or modified duration, or the duration-based price change, from a cash-flow table."""
    par = _sig(_pick(rng, (100, 1000)) * scale)
    coupon = _rate(rng, 2, 10, 0.5)
    n = int(rng.integers(2, 9))
    ytm = _rate(rng, 1.5, 10, 0.25)
    flows = [round(par * coupon, 6)] * (n - 1) + [round(par * (1 + coupon), 6)]
    kind = _pick(rng, ("macaulay", "modified", "price_change"))
    bp = _pick(rng, (25, 50, 100))
    m = _money_style(rng, text=False)
    table = _table(
        rng, ["Year", "Cash flow"], [[str(t), _cash(f, m)] for t, f in enumerate(flows, 1)]
    )
    if kind == "price_change":
        ask, decimals = f"approximate percentage price change for a {bp} bp rise in yield", 2
    else:
        ask, decimals = f"{kind.replace('macaulay', 'Macaulay')} duration", _pick(rng, (2, 3))
    question = f"""The table shows the annual cash flows of {_a(f"{n}-year")} bond with a par value of
        {_cash(par, m)} and a {_pct(coupon)} annual coupon. Its yield to maturity is {_pct(ytm)}.
        What is the bond's {ask}? {_round_phrase(rng, decimals)}"""
    pvs = [f / (1 + ytm) ** t for t, f in enumerate(flows, start=1)]
    macaulay = sum(t * pv for t, pv in enumerate(pvs, start=1)) / sum(pvs)
    modified = macaulay / (1 + ytm)
    value = {"macaulay": macaulay, "modified": modified, "price_change": -modified * bp / 100}[kind]
    solution = [
        f"flows, y = {[_lit(f) for f in flows]}, {_lit(ytm)}".replace("'", ""),
        "pvs = [f / (1 + y) ** t for t, f in enumerate(flows, start=1)]",
        "macaulay = sum(t * pv for t, pv in enumerate(pvs, start=1)) / sum(pvs)",
        {
            "macaulay": "answer = macaulay",
            "modified": "answer = macaulay / (1 + y)",
            "price_change": f"answer = -macaulay / (1 + y) * {bp} / 100  # percent",
        }[kind],
    ]
    params = {"par": par, "coupon_rate": coupon, "years": n, "ytm": ytm, "cash_flows": flows}
    params |= {"kind": kind} | ({"bp": bp} if kind == "price_change" else {})
    return _problem(question, solution, value, decimals, params, [table])


def _expected_credit_loss(rng: np.random.Generator, scale: float) -> Problem:
    """Expected loss = exposure at default x probability of default x loss given default."""
    exposure = _money(rng, 50_000, 10_000_000, scale)
    pd = _rate(rng, 0.25, 8, 0.25)
    kind = _pick(rng, ("lgd", "recovery"))
    given = _rate(rng, 20, 80, 5)
    lgd = given if kind == "lgd" else 1 - given
    decimals = _pick(rng, (0, 2))
    m = _money_style(rng)
    severity = (
        f"the loss given default is {_pct(given)}"
        if kind == "lgd"
        else f"the expected recovery rate is {_pct(given)}"
    )
    question = f"""A bank has an exposure of {_cash(exposure, m)} to {_pick(rng, _COMPANIES)}.
        The one-year probability of default is {_pct(pd)} and {severity}. What is the expected
        credit loss? {_round_phrase(rng, decimals, "dollar")}"""
    lgd_expr = _lit(given) if kind == "lgd" else f"(1 - {_lit(given)})"
    solution = [f"answer = {_lit(exposure)} * {_lit(pd)} * {lgd_expr}"]
    params = {"exposure": exposure, "pd": pd, "kind": kind, "given_rate": given}
    return _problem(question, solution, exposure * pd * lgd, decimals, params)


TEMPLATES: tuple[Template, ...] = (
    Template("declining_balance_exchange", TOPICS[0], _declining_balance_exchange, True),
    Template("straight_line_depreciation", TOPICS[0], _straight_line_depreciation),
    Template("inventory_cost", TOPICS[0], _inventory_cost, True),
    Template("bond_price", TOPICS[1], _bond_price, True),
    Template("put_call_parity", TOPICS[1], _put_call_parity),
    Template("gordon_growth", TOPICS[1], _gordon_growth),
    Template("wacc", TOPICS[2], _wacc),
    Template("eps_pe", TOPICS[2], _eps_pe, True),
    Template("liquidity_ratio", TOPICS[2], _liquidity_ratio, True),
    Template("forward_rate_parity", TOPICS[3], _forward_rate_parity),
    Template("gdp_inflation", TOPICS[3], _gdp_inflation, True),
    Template("cross_rate", TOPICS[3], _cross_rate),
    Template("two_asset_portfolio", TOPICS[4], _two_asset_portfolio, True),
    Template("sharpe_treynor", TOPICS[4], _sharpe_treynor),
    Template("capm", TOPICS[4], _capm),
    Template("time_value", TOPICS[5], _time_value),
    Template("npv", TOPICS[5], _npv, True),
    Template("loan_payment", TOPICS[5], _loan_payment),
    Template("parametric_var", TOPICS[6], _parametric_var),
    Template("bond_duration", TOPICS[6], _bond_duration, True),
    Template("expected_credit_loss", TOPICS[6], _expected_credit_loss),
)
