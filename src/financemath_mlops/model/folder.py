"""Our logged model, read straight from an MLflow model folder: serving starts without MLflow.

A model folder (``models/serving``, the ``with-model`` image's ``/opt/model``) holds what
``model/packaging.py`` logged: an ``MLmodel`` file whose ``python_function`` flavor is our
models-from-code entry (``pyfunc_entry.py``) with three artefacts (booster, ONNX bundle, config).
Importing MLflow to read it costs about 1.2 s of a 2 s start-to-ready budget on 2 cores (issue 18),
so :func:`load_folder` builds the same :class:`~financemath_mlops.model.predictor.Predictor`
that the pyfunc's ``load_context`` builds, from the same files. Anything else (another flavor,
another entry, a missing artefact) returns None: the caller loads it with ``mlflow.pyfunc``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from financemath_mlops.model.predictor import Predictor

if TYPE_CHECKING:
    from financemath_mlops.features.embeddings import Spinning

log = logging.getLogger(__name__)

ENTRY_FILE = "pyfunc_entry.py"  # what packaging.log_pyfunc logs as python_model
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
ARTIFACTS = ("booster", "embedding", "model_config")


@dataclass(frozen=True)
class FolderModel:
    predictor: Predictor
    trained_at: float | None  # the MLmodel's utc_time_created, as Unix time


def load_folder(
    folder: Path, threads: int | None = None, spinning: Spinning = "always"
) -> FolderModel | None:
    """Our predictor from ``folder``, or None when the folder is not our logged pyfunc.

    ``threads`` and ``spinning``: its ONNX session's (onnxruntime's defaults unless given)."""
    import yaml

    folder = Path(folder)
    try:
        meta = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    flavor = (meta.get("flavors") or {}).get("python_function") or {}
    if (
        flavor.get("loader_module") != CODE_LOADER
        or Path(str(flavor.get("model_code_path") or "")).name != ENTRY_FILE
    ):
        return None
    root = folder.resolve()
    paths = {}
    for name in ARTIFACTS:
        relative = ((flavor.get("artifacts") or {}).get(name) or {}).get("path")
        path = (root / str(relative)).resolve() if relative else None
        if path is None or not path.is_relative_to(root) or not path.exists():
            log.info("model folder %s: artefact %r not found; loading it with MLflow", folder, name)
            return None
        paths[name] = path
    predictor = Predictor.from_files(
        paths["booster"], paths["embedding"], paths["model_config"], threads, spinning
    )
    return FolderModel(predictor, _timestamp(meta.get("utc_time_created")))


def _timestamp(value: object) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
