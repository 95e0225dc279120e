"""The MLflow run contract: the one place (with `model/`) that talks to MLflow.

A run is what training leaves behind and every later stage reads: its artefacts, its registered
model and the aliases that pick a version. Stages call this package (``from financemath_mlops
import runs``) and never name an artefact path or build a ``models:/`` URI.

- :mod:`.contract`      artefact names, aliases, the served / challenger / pinned model URIs
- :mod:`.store`         configure the client, resolve a URI, download, export the served model
- :mod:`.aliases`       set the challenger, move the champion, roll back
- :mod:`.training_run`  log a training run and load its data back
- :mod:`.predict`       predict raw records with the model at a URI
- :mod:`.results`       evaluation and promotion on the run; monitoring reports as runs
- :mod:`.pointer`       what training registered from a feature table (the file beside it)
"""

from financemath_mlops.runs.aliases import (
    alias_version,
    list_versions,
    move_champion,
    rollback_champion,
    set_alias,
    set_challenger,
)
from financemath_mlops.runs.contract import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    alias_uri,
    is_tracked_uri,
    model_name_for,
    served_uri,
    trained_pointer_path,
    version_uri,
)
from financemath_mlops.runs.pointer import (
    TrainedPointer,
    challenger_uri,
    model_trained_on,
    read_trained_pointer,
    refuse_ignored_features,
    resolve_challenger,
    store_identity,
    write_trained_pointer,
)
from financemath_mlops.runs.record_model import RecordModel, load_model, predict_records
from financemath_mlops.runs.results import (
    log_monitoring_report,
    record_evaluation,
    record_promotion,
)
from financemath_mlops.runs.store import (
    REGISTERED_META,
    ModelRef,
    TrackingError,
    check_reachable,
    client,
    configure,
    export_model,
    is_http_store,
    limit_http_requests,
    load_pyfunc,
    require_store,
    resolve,
    run_metrics,
)
from financemath_mlops.runs.training_run import (
    LoggedModel,
    RunData,
    TrainingRunContent,
    load_feature_manifest,
    load_holdout_records,
    load_run_data,
    load_run_data_in_tmp,
    load_split_ids,
    load_training_features,
    log_training_run,
    mark_registered,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS_CHAMPION",
    "REGISTERED_META",
    "LoggedModel",
    "ModelRef",
    "RecordModel",
    "RunData",
    "TrackingError",
    "TrainedPointer",
    "TrainingRunContent",
    "alias_uri",
    "alias_version",
    "challenger_uri",
    "check_reachable",
    "client",
    "configure",
    "export_model",
    "is_http_store",
    "is_tracked_uri",
    "limit_http_requests",
    "list_versions",
    "load_feature_manifest",
    "load_holdout_records",
    "load_model",
    "load_pyfunc",
    "load_run_data",
    "load_run_data_in_tmp",
    "load_split_ids",
    "load_training_features",
    "log_monitoring_report",
    "log_training_run",
    "mark_registered",
    "model_name_for",
    "model_trained_on",
    "move_champion",
    "predict_records",
    "record_evaluation",
    "read_trained_pointer",
    "record_promotion",
    "refuse_ignored_features",
    "require_store",
    "resolve",
    "resolve_challenger",
    "rollback_champion",
    "run_metrics",
    "served_uri",
    "set_alias",
    "set_challenger",
    "store_identity",
    "trained_pointer_path",
    "version_uri",
    "write_trained_pointer",
]
