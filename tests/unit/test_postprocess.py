"""The one post-processing of predictions that serving and batch prediction share."""

from __future__ import annotations

import math

from financemath_mlops.model.postprocess import NON_FINITE, finish_predictions


def test_non_finite_values_become_none_with_a_note_and_finite_ones_stay() -> None:
    values, warnings = finish_predictions(
        [1.5, math.nan, math.inf], ["Accounting"] * 3, [[], ["table 0: ragged"], []]
    )
    assert values == [1.5, None, None]
    assert warnings == [[], ["table 0: ragged", NON_FINITE], [NON_FINITE]]


def test_unknown_topic_is_noted_and_missing_topic_is_not() -> None:
    _, warnings = finish_predictions([1.0, 2.0], ["Astrology" * 10, None], [[], []])
    assert warnings[0] == [f"unknown topic {('Astrology' * 10)[:40]!r}; scored as 'other'"]
    assert warnings[1] == []


def test_table_warnings_are_capped_with_a_count_before_the_notes() -> None:
    given = [f"table 0: w{i}" for i in range(25)]
    _, (notes,) = finish_predictions([math.nan], ["Accounting"], [given], max_warnings=20)
    assert notes == [*given[:20], "... and 5 more warnings", NON_FINITE]
    assert len(given) == 25  # the caller's list is not changed
    _, (uncapped,) = finish_predictions([1.0], ["Accounting"], [given])
    assert uncapped == given
