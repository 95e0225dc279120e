"""Orchestration: the Prefect flow (ingestion -> features -> training -> evaluation -> promotion),
its scheduled deployment, and each stage run from one whole settings object (:mod:`.stages`, for
the flow's tasks, tests and benchmarks). Nothing in the package imports this one; it imports the
stages."""
