"""The prediction service: FastAPI app, model holder, Prometheus metrics, auth and error shapes.

Run it with ``uvicorn financemath_mlops.serving.app:app`` or ``python -m financemath_mlops.serving``.
Nothing here imports torch, sentence-transformers, Prefect or Evidently, and importing the package
does no I/O: settings and the model are loaded when the app starts (its lifespan).
"""
