"""What training made of a feature table: a pointer file beside it, and how later stages follow it.

Training writes ``<features stem>.trained.json`` beside the feature table it read (run id, model
URI, the table's sha256). Evaluation and promotion find "the model trained on these features"
there, for the table they are given, never through a manifest at a default path that another
chain may have written; a table changed since training makes them refuse rather than guess.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from financemath_mlops.config import Settings
from financemath_mlops.runs.contract import trained_pointer_path
from financemath_mlops.runs.store import TrackingError

NO_MODEL_HINT = "pass --model-uri, or --features with the table training read"


@dataclass(frozen=True)
class TrainedPointer:
    run_id: str
    model_uri: str  # the pinned version training registered
    model_name: str
    version: str
    features: str  # the feature table, as training was given it
    features_sha256: str


def write_trained_pointer(features_path: Path, pointer: TrainedPointer) -> Path:
    from financemath_mlops.atomic import write_json

    path = trained_pointer_path(Path(features_path))
    write_json(path, asdict(pointer))
    return path


def read_trained_pointer(features_path: Path) -> TrainedPointer | None:
    path = trained_pointer_path(Path(features_path))
    if not path.is_file():
        return None
    try:
        return TrainedPointer(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise TrackingError(
            f"cannot read {path}: {exc}; re-run training or {NO_MODEL_HINT}"
        ) from None


def model_trained_on(features_path: Path) -> str:
    """The model URI training registered for this exact feature table."""
    from financemath_mlops.atomic import file_sha256

    features_path = Path(features_path)
    pointer = read_trained_pointer(features_path)
    if pointer is None:
        raise TrackingError(
            f"no model was trained on {features_path} (no {trained_pointer_path(features_path)}): "
            f"{NO_MODEL_HINT}"
        )
    if not features_path.is_file() or file_sha256(features_path) != pointer.features_sha256:
        raise TrackingError(
            f"{features_path} changed since training registered {pointer.model_uri} from it "
            f"(run {pointer.run_id}): re-run training, or {NO_MODEL_HINT}"
        )
    return pointer.model_uri


def challenger_uri(settings: Settings) -> str:
    """What evaluation and promotion judge: evaluation.model_uri, else the model training
    registered from the feature table they are given (training.features, default the features
    stage's output)."""
    return settings.evaluation.model_uri or model_trained_on(settings.training_features)
