"""What every caller does with a model's raw numbers before anyone sees them.

Serving and batch prediction both call :func:`finish_predictions`, so a non-finite value or an
unknown topic reads the same in an HTTP answer and in a predictions file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from financemath_mlops.records import canonical_topic

NON_FINITE = "the model produced a non-finite value"


def finish_predictions(
    values: Iterable[float],
    topics: Sequence[str | None],
    warnings: Sequence[Sequence[str]],
    max_warnings: int | None = None,
) -> tuple[list[float | None], list[list[str]]]:
    """(values with None where the model gave NaN or inf, warnings per record).

    Each record's warnings are new lists: the table-parse warnings (the first ``max_warnings``,
    then a count of the rest), then a note for a non-finite value and for an unknown topic (which
    the features score as 'other'). No topic at all is not a warning.
    """
    finished: list[float | None] = []
    notes_per_record: list[list[str]] = []
    for value, topic, given in zip(values, topics, warnings, strict=True):
        notes = _capped(list(given), max_warnings)
        number = float(value)
        if math.isfinite(number):
            finished.append(number)
        else:
            finished.append(None)
            notes.append(NON_FINITE)
        if topic is not None and canonical_topic(topic) is None:
            notes.append(f"unknown topic {topic[:40]!r}; scored as 'other'")
        notes_per_record.append(notes)
    return finished, notes_per_record


def _capped(notes: list[str], limit: int | None) -> list[str]:
    if limit is None or len(notes) <= limit:
        return notes
    return [*notes[:limit], f"... and {len(notes) - limit} more warnings"]
