"""Orchestration: the Prefect flow (ingestion -> features -> training -> evaluation -> promotion)
and its scheduled deployment. Nothing imports this package; it imports the stages."""
