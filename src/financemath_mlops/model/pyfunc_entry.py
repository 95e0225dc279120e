"""Models-from-code entry point that MLflow stores with the model (no pickle)."""

import mlflow.models

from financemath_mlops.model.pyfunc import FinanceMathPyfunc

mlflow.models.set_model(FinanceMathPyfunc())
