"""What training made of a feature table: a pointer file beside it, and how later stages follow it.

Training writes ``<features stem>.trained.json`` beside the feature table it read: the tracking
store it registered into, the run id, the model URI and the table's sha256. Evaluation and
promotion find "the model trained on these features" there, for the table they are given, never
through a manifest at a default path that another chain may have written. They refuse rather than
guess when the table changed since training, when they are pointed at another tracking store
than the one the pointer names (``models:/NAME/2`` there is another model), or when the version
it names now belongs to another run (the store was recreated). Two spellings of one store
(``localhost`` and ``127.0.0.1``, compose's service name and the host's address) are told apart
from two stores by the run id (a UUID): the pointer's version resolved here must be its run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from financemath_mlops.config import Settings
from financemath_mlops.runs.contract import trained_pointer_path
from financemath_mlops.runs.store import ModelRef, TrackingError, resolve

log = logging.getLogger(__name__)

NO_MODEL_HINT = "pass --model-uri, or --features with the table training read"


@dataclass(frozen=True)
class TrainedPointer:
    run_id: str
    model_uri: str  # the pinned version training registered
    model_name: str
    version: str
    features: str  # the feature table, as training was given it
    features_sha256: str
    tracking_uri: str  # the store it was registered in (store_identity: absolute, no password)


_SCHEME_ONLY = {"databricks", "databricks-uc", "uc"}  # MLflow's stores named by a word alone
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DATABASES = {"postgresql", "mysql", "mssql", "sqlite"}  # `+driver` picks a client, not a store


def store_identity(uri: str) -> str:
    """One spelling per tracking store, to compare two URIs: a local store's path made absolute
    (against the working directory) and a server's address without user or password, scheme and
    host lower-cased, no default port, no database driver, no trailing slash. Never holds a
    password: it is written to the pointer and shown in messages.

    Spellings still differ for one store (``localhost`` and ``127.0.0.1``, compose's
    ``http://mlflow:5000`` and the host's address): :func:`model_trained_on` then asks the store
    itself (the pointer's run id). ``databricks`` and ``file://host/share`` are kept as written.
    """
    if uri in _SCHEME_ONLY:
        return uri
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + _absolute(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:"):
        rest = uri.removeprefix("file:")
        if rest.startswith("//"):
            host, _, path = rest[2:].partition("/")
            if host and host.lower() != "localhost":
                return uri  # a share on another machine: not a path here
            rest = "/" + path
        return "file://" + _absolute(rest)
    if "://" not in uri:  # a plain folder: MLflow's file store
        return "file://" + _absolute(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme.split("+")[0] in _DATABASES:
        scheme = scheme.split("+")[0]
    host = parts.hostname or ""
    if ":" in host:  # IPv6: the brackets are part of the address's spelling
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port and port != _DEFAULT_PORTS.get(scheme):
        host += f":{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), parts.query, ""))


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


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
        body = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(body, dict) and "tracking_uri" not in body:
            raise TrackingError(
                f"{path} was written before pointers named their tracking store, so nothing says "
                f"which store its {body.get('model_uri')} is in: re-run training, or "
                f"{NO_MODEL_HINT.removeprefix('pass ')}"
            )
        return TrainedPointer(**body)
    except (OSError, ValueError, TypeError) as exc:
        raise TrackingError(
            f"cannot read {path}: {exc}; re-run training or {NO_MODEL_HINT}"
        ) from None


def model_trained_on(features_path: Path, tracking_uri: str) -> TrainedPointer:
    """What training registered for this exact feature table, in the store at ``tracking_uri``."""
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
    here = store_identity(tracking_uri)
    if here != pointer.tracking_uri:
        there = _run_of(pointer.model_uri)
        if there != pointer.run_id:
            found = f"there {pointer.model_uri} is run {there}" if there else "it has no such model"
            raise TrackingError(
                f"{trained_pointer_path(features_path)} names {pointer.model_uri} (run "
                f"{pointer.run_id}) in the tracking store {pointer.tracking_uri}, but this command "
                f"uses the store {here} ({found}: version numbers are per store). Pass "
                f"--tracking-uri {pointer.tracking_uri} (or set FMOPS_MLFLOW__TRACKING_URI) to "
                "judge the model trained on this table, or --model-uri (without --features) to "
                "judge a model of this store"
            )
        log.info(
            "the store %s is %s, where training registered %s: recognised by its run id %s",
            here, pointer.tracking_uri, pointer.model_uri, pointer.run_id,
        )  # fmt: skip
    return pointer


def _run_of(model_uri: str) -> str | None:
    """The run of ``model_uri`` in the configured store, or None when it has no such model."""
    try:
        return resolve(model_uri).run_id
    except TrackingError:
        return None


def challenger_uri(settings: Settings) -> str:
    """What evaluation and promotion judge: evaluation.model_uri, else the model training
    registered from the feature table they are given (training.features, default the features
    stage's output) in the configured store."""
    if settings.evaluation.model_uri:
        return settings.evaluation.model_uri
    return model_trained_on(settings.training_features, settings.mlflow.tracking_uri).model_uri


def resolve_challenger(settings: Settings) -> ModelRef:
    """:func:`challenger_uri` resolved in the configured store (:func:`.store.configure` first).
    A version followed through the pointer must still be the run training recorded: a store
    deleted and trained again reuses version numbers for other runs."""
    if settings.evaluation.model_uri:
        return resolve(settings.evaluation.model_uri)
    features = settings.training_features
    pointer = model_trained_on(features, settings.mlflow.tracking_uri)
    ref = resolve(pointer.model_uri)
    if ref.run_id != pointer.run_id:
        raise TrackingError(
            f"{pointer.model_uri} in {pointer.tracking_uri} is now run {ref.run_id}, not run "
            f"{pointer.run_id} that training registered from {features} "
            f"({trained_pointer_path(Path(features))}): the store was recreated since. Re-run "
            f"training, or {NO_MODEL_HINT.removeprefix('pass ')}"
        )
    return ref


def refuse_ignored_features(features_flag: Path | None, settings: Settings, stage: str) -> None:
    """``--features`` picks the model trained on that table; beside a given model it would be
    ignored (the model is judged on the holdout rows of its own run, never on a table, whose
    rows it may have trained on), so the two together are refused."""
    model_uri = settings.evaluation.model_uri
    if features_flag is None or not model_uri:
        return
    raise TrackingError(
        f"{stage}: --features {features_flag} would be ignored beside the model {model_uri} "
        "(--model-uri, or evaluation.model_uri / FMOPS_EVALUATION__MODEL_URI): a given model is "
        "judged on the holdout rows recorded in its own run, never on a table whose rows it may "
        f"have trained on. Drop --features to judge {model_uri}, or drop --model-uri to judge "
        f"the model training registered from {features_flag}"
    )
