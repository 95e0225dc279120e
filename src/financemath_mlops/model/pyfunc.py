"""The MLflow pyfunc that training logs: predicts from raw records (question, tables, topic).

Artefacts: the LightGBM booster (text), the ONNX embedding bundle (model.onnx, tokenizer.json,
embedding_config.json) and the model config (feature columns, target transform, embedding info).
Loading it imports onnxruntime and tokenizers (the booster runs on numpy: model/trees.py), so
`mlflow models serve` and our FastAPI service run without torch, lightgbm or scipy.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd  # evaluated by MLflow (typing.get_type_hints) on predict's hints

from financemath_mlops.records import RecordInput

INPUT_COLUMNS = ("question", "tables", "topic")


def records_from_frame(frame: Any) -> list[RecordInput]:
    """DataFrame rows (question, tables: list[str] | None, topic | None) -> RecordInput."""
    return [RecordInput.from_mapping(row) for row in frame.to_dict(orient="records")]


class FinanceMathPyfunc(mlflow.pyfunc.PythonModel):
    """Raw records in, answers out."""

    def load_context(self, context):
        from financemath_mlops.model.predictor import Predictor

        self.predictor = Predictor.from_files(
            context.artifacts["booster"],
            context.artifacts["embedding"],
            context.artifacts["model_config"],
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        # Type hints, because without them MLflow warns "Add type hints to the `predict` method"
        # every time this class is defined (training, serving, batch). A DataFrame hint is one
        # MLflow derives no schema from (mlflow.types.type_hints.type_hints_no_signature_inference)
        # and does not convert the input for: the explicit signature training logs stays the
        # contract (tests/integration/test_flow.py pins the MLmodel signature). The input is a
        # DataFrame whenever MLflow enforces that signature; a direct call with records still works.
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        prediction = self.predictor.predict(records_from_frame(model_input))
        return pd.DataFrame({"prediction": prediction.values})
