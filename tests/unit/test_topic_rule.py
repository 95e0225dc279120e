"""One rule for topic names (issue 29): ingestion, features and serving read a topic the same way."""

from __future__ import annotations

import pytest

from financemath_mlops.features.rows import metadata_features, topic_column
from financemath_mlops.ingestion.validate import validate_rows
from financemath_mlops.model.postprocess import finish_predictions
from financemath_mlops.records import TOPICS, FinanceMathRecord, canonical_topic

VARIANTS = ["accounting", "ACCOUNTING", " Accounting ", "aCcOuNtInG"]


@pytest.mark.parametrize("given", VARIANTS)
def test_a_topic_in_any_case_or_spacing_is_financemath_s_spelling(given: str) -> None:
    assert canonical_topic(given) == "Accounting"
    assert canonical_topic("asset  classes &  DERIVATIVES") == "Asset Classes & Derivatives"


def test_every_known_topic_is_its_own_canonical_form_and_others_are_none() -> None:
    assert [canonical_topic(t) for t in TOPICS] == list(TOPICS)
    for other in ("Acounting", "Risk", "", None, 3):
        assert canonical_topic(other) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("given", VARIANTS)
def test_features_one_hot_a_miscased_topic_as_that_topic_not_other(given: str) -> None:
    out = metadata_features("What is the price?", given)
    assert out == metadata_features("What is the price?", "Accounting")
    assert out[topic_column("Accounting")] == 1 and out["topic_other"] == 0


def test_serving_and_batch_warn_only_for_a_topic_the_features_score_as_other() -> None:
    topics = ["accounting", "Acounting", None]
    _, notes = finish_predictions([1.0, 2.0, 3.0], topics, [[], [], []])
    assert notes == [[], ["unknown topic 'Acounting'; scored as 'other'"], []]
    for topic in ("accounting", "Acounting"):
        warned = bool(finish_predictions([1.0], [topic], [[]])[1][0])
        scored_other = metadata_features("q", topic)["topic_other"] == 1
        assert warned == scored_other, topic


def test_records_store_the_canonical_topic_and_keep_an_unknown_one_as_given() -> None:
    row = {"question_id": "q", "question": "q?", "topic": "risk management"}
    assert FinanceMathRecord.model_validate(row).topic == "Risk Management"
    assert FinanceMathRecord.model_validate({**row, "topic": "Crypto"}).topic == "Crypto"


def test_prediction_mode_checks_only_the_fields_a_prediction_reads() -> None:
    rows = [
        {"question_id": "a", "question": "q?", "topic": "Accounting", "ground_truth": "12"},
        {"question_id": "b", "question": "q?", "topic": "Accounting", "ground_truth": float("nan")},
        {"question_id": "c", "question": "q?", "topic": "Accounting", "python_solution": 7},
        {"question_id": "d", "question": 5, "topic": "Accounting"},
    ]
    ingest = validate_rows(rows, {"source": "test"})
    assert [r.row for r in ingest.rejects] == [0, 1, 2, 3]
    predict = validate_rows(rows, {"source": "test"}, mode="predict")
    assert [r.question_id for r in predict.records] == ["a", "b", "c"]
    assert all(r.ground_truth is None for r in predict.records)
    (reject,) = predict.rejects
    assert reject.reason.startswith("question:") and reject.original == rows[3]
