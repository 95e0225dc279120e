"""The MLflow store: point the client at it, resolve model URIs, download artefacts, export.

MLflow's API moved a lot (stages -> aliases, artifact_path -> name, file store deprecation); the
`runs` package is the one place the project calls it (besides the logged model in `model/`), so an
upgrade touches this package only. What the names in a run mean lives in :mod:`.contract`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from financemath_mlops.atomic import is_out_of_space, out_of_space
from financemath_mlops.config import MLflowSettings
from financemath_mlops.config_sources import mask_url_password
from financemath_mlops.errors import StageError
from financemath_mlops.runs import http_retries
from financemath_mlops.runs.contract import is_tracked_uri, version_uri

log = logging.getLogger(__name__)

REGISTERED_META = "registered_model_meta"  # written by MLflow when it downloads a models:/ URI
# A model version's registration state (docs/reliability.md#tracking-postgres-restart-before-alias):
# training creates the version with REGISTRATION_TAG = PENDING (in the same request, so no version
# exists without it) once its artefacts are uploaded whole, moves @challenger, then sets COMPLETE.
# A version still PENDING and without an alias is half-registered (the store failed between the
# two): resolving it by number is refused, so it is never served; a rerun registers a new one.
REGISTRATION_TAG = "fmops.registration"
REGISTRATION_PENDING = "pending-alias"
REGISTRATION_COMPLETE = "complete"
_STAGES = {"production", "staging", "archived", "none"}

# The start-of-stage probe of an http(s) tracking server: resolve, connect and one GET of
# `/health` share this budget, so with Python's start-up a stage exits within 15 s on a dead store.
PROBE_SECONDS = 8.0
# MLflow's HTTP client for the pipeline stages (its defaults: 120 s a request, 7 retries, back-off
# factor 2, about 250 s of waiting on a refused connection). With these, one call on a dead store
# gives up after 4 attempts and at most 2 + 4 s of back-off (+ up to 0.5 s jitter each); on a
# server that accepts and never answers, after 4 x 30 s. A MLFLOW_HTTP_REQUEST_* already set wins.
# Which calls are retried at all: :mod:`.http_retries` (reads, and writes MLflow makes idempotent).
STAGE_HTTP_TIMEOUT_S = 30
STAGE_HTTP_RETRIES = 3
STAGE_HTTP_BACKOFF_FACTOR = 1  # MLflow reads it as an int
STAGE_HTTP_BACKOFF_JITTER = 0.5


class TrackingError(StageError):
    """The tracking store or a model cannot be reached or resolved."""


class StoreFailedError(TrackingError):
    """A tracking server that answered the start-of-stage probe failed mid-stage: the address is
    right and the command was too, so exit 1 (rerun it unchanged once the server is back)."""

    exit_code = 1


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: the URI to load plus what the registry knows about it."""

    uri: str
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None


def require_store(store: MLflowSettings, model_uri: str | None = None) -> None:
    """Refuse a missing local store instead of letting MLflow create an empty one.

    For the readers (serving, `registry`): an empty registry would only hide the real mistake (a
    deleted or mistyped ``mlflow.db``). A local model folder as ``model_uri`` needs no store.
    """
    if model_uri is not None and not is_tracked_uri(model_uri):
        return
    _refuse_missing_local_store(store.tracking_uri)


def _refuse_missing_local_store(uri: str) -> None:
    db_path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if db_path is not None and not db_path.is_file():
        raise TrackingError(
            f"the MLflow store {db_path} does not exist: create it by training a model "
            "(`make run`), or point FMOPS_MLFLOW__TRACKING_URI (or MLFLOW_TRACKING_URI) at an "
            "existing store"
        )


def is_http_store(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def check_reachable(store: MLflowSettings, alternative: str = "") -> None:
    """Fail fast on an http(s) tracking server that cannot be reached: one bounded probe.

    Called at the start of every stage that needs the store, before its work, so a dead server
    costs seconds (:data:`PROBE_SECONDS`) instead of MLflow's retry back-off minutes into a run.
    The host must resolve, accept a connection and answer ``GET <uri>/health`` with anything
    but a 5xx (a 401 or 404 still proves a server is there: the real calls say what is wrong).
    Other stores (sqlite, file) are checked where they are opened (:func:`require_store`).
    Also bounds MLflow's own HTTP retries for the rest of the process
    (:func:`limit_http_requests`). ``alternative``: another way out the message offers.
    """
    uri = store.tracking_uri
    if not is_http_store(uri):
        return
    _limit_stage_http_requests()
    problem = _probe(uri, PROBE_SECONDS)
    if problem is not None:
        message = (
            f"cannot reach the MLflow tracking server {uri}: {problem}. Start it (or check the "
            "address), or point FMOPS_MLFLOW__TRACKING_URI (or MLFLOW_TRACKING_URI, or "
            f"--tracking-uri) at a running one{', ' + alternative if alternative else ''}; "
            "nothing was done"
        )
        raise TrackingError(mask_url_password(message))


# How long a stage may wait on a tracking server that accepts connections and then stops
# answering mid-run (its database or artefact store wedged): each request gives up after
# MLFLOW_HTTP_REQUEST_TIMEOUT; a read or idempotent write is sent at most 1 + retries times with
# back-off between; any other write only once (:mod:`.http_retries`). docs/reliability.md states it.
def stage_request_bound_s() -> float:
    """The longest one MLflow call of a stage can take on a hanging server, in seconds."""
    timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", STAGE_HTTP_TIMEOUT_S))
    retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", STAGE_HTTP_RETRIES))
    factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", STAGE_HTTP_BACKOFF_FACTOR))
    jitter = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", STAGE_HTTP_BACKOFF_JITTER))
    backoff = sum(factor * 2**attempt + jitter for attempt in range(retries))
    return (retries + 1) * timeout + backoff


def store_failure(exc: BaseException, uri: str, doing: str, kept: str) -> StoreFailedError | None:
    """A tracking server that failed mid-stage, in words (None: ``exc`` is something else).

    MLflow raises its own ``MlflowException`` (or a ``requests`` error) with a traceback when the
    server it talks to stops answering, answers 5xx (its PostgreSQL restarting, its S3 refusing
    an upload) or drops the connection. The stage catches that at its edge and says instead which
    server, what it was doing, the cause in one line and what was kept, so the user sees
    ``error: ...`` and exit 1 (:class:`StoreFailedError`), never a traceback. Only for http(s) stores: a local store's errors
    are the stage's own.
    """
    if not is_http_store(uri):
        return None
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        cause = exc.message
        transport = cause.startswith("API request to")
        server_side = exc.error_code in _SERVER_ERRORS
        if not (transport or server_side):
            return None
    elif isinstance(exc, requests.exceptions.RequestException):
        cause = f"{type(exc).__name__}: {exc}"
    else:
        return None
    message = (
        f"the MLflow tracking server {uri} failed while {doing}: {_one_line(cause)}. {kept} "
        "Check the server (and its database and artefact store: its log says which), then "
        "rerun the same command"
    )
    return StoreFailedError(mask_url_password(message))


# What a REST store answers when the server itself (or what is behind it) failed.
_SERVER_ERRORS = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _probe(uri: str, budget_s: float) -> str | None:
    """What stops a client from reaching ``uri`` within ``budget_s`` seconds (None: nothing)."""
    from urllib.parse import urlsplit

    import requests

    deadline = time.monotonic() + budget_s
    parts = urlsplit(uri)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        return f"the address is not valid ({exc})"
    health = uri.rstrip("/") + "/health"
    if not requests.utils.get_environ_proxies(health):  # through a proxy, the proxy resolves
        problem = _connect(host, port, deadline, budget_s)
        if problem is not None:
            return problem
    try:
        answer = requests.get(
            health, timeout=max(0.1, deadline - time.monotonic()), **_mlflow_tls_options()
        )
    except requests.exceptions.Timeout:
        return f"no answer to GET {health} within {budget_s:.0f} s"
    except requests.exceptions.RequestException as exc:
        return f"GET {health} failed ({type(exc).__name__}: {exc})"
    if answer.status_code >= 500:
        return f"GET {health} answered {answer.status_code} {answer.reason}"
    return None


def _mlflow_tls_options() -> dict[str, Any]:
    """The TLS settings MLflow's own client honours (a private CA, mTLS, insecure on purpose), so
    the probe never refuses a store that MLflow itself can use."""
    options: dict[str, Any] = {}
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        options["verify"] = False
    elif cert := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        options["verify"] = cert
    if client_cert := os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        options["cert"] = client_cert
    return options


def _connect(host: str, port: int, deadline: float, budget_s: float) -> str | None:
    """Resolve ``host`` and open one TCP connection, both before ``deadline`` (monotonic)."""
    # getaddrinfo has no timeout of its own (a silent DNS server would hold the stage): it runs
    # on a daemon thread that is left behind, never waited for, when the deadline passes.
    found: list[Any] = []
    resolver = threading.Thread(
        target=_resolve, args=(host, port, found), name="fmops-store-probe", daemon=True
    )
    resolver.start()
    resolver.join(timeout=max(0.1, deadline - time.monotonic()))
    if not found:
        return f"the host name {host} did not resolve within {budget_s:.0f} s"
    if isinstance(found[0], socket.gaierror):
        return f"the host name {host} does not resolve ({found[0].strerror})"
    addresses = found[0]
    problem = f"no address for {host}"
    for family, kind, proto, _, address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as conn:
                conn.settimeout(remaining)
                conn.connect(address)
            return None
        except ConnectionRefusedError:
            problem = f"connection refused by {host}:{port} (nothing listens there)"
        except TimeoutError:
            problem = f"no connection to {host}:{port} within {budget_s:.0f} s"
        except OSError as exc:
            problem = f"no connection to {host}:{port} ({exc.strerror or exc})"
    return problem


def _resolve(host: str, port: int, found: list[Any]) -> None:
    try:
        found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except socket.gaierror as exc:
        found.append(exc)


def configure(store: MLflowSettings, create_store: bool = True) -> str:
    """Point MLflow at the ``mlflow`` section's store (telemetry off); returns the tracking URI.

    ``create_store=False`` (serving, `registry`): a missing local store is an error, see
    :func:`require_store`; the pipeline stages create it.
    """
    import mlflow

    if not create_store:
        _refuse_missing_local_store(store.tracking_uri)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = store.tracking_uri
    if uri.startswith("file:") or "://" not in uri and not uri.startswith("sqlite:"):
        # MLflow 3 refuses the plain file store unless asked explicitly; choosing it is asking.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        db_path.parent.mkdir(parents=True, exist_ok=True)
    if is_http_store(uri):
        _limit_stage_http_requests()  # unless the service bounded them first, its own way
        http_retries.install()  # and never send a write twice
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def limit_http_requests(
    timeout_s: int, retries: int, backoff_factor: int = 1, backoff_jitter: float | None = None
) -> None:
    """Bound MLflow's HTTP client (defaults: 120 s a request, 7 retries with back-off factor 2
    and 1 s jitter), for a process that must not hang on a tracking server that is down. A value
    already set wins (the user's MLFLOW_HTTP_REQUEST_*, or the first caller's)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", str(backoff_factor))
    if backoff_jitter is not None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", str(backoff_jitter))


def _limit_stage_http_requests() -> None:
    limit_http_requests(
        STAGE_HTTP_TIMEOUT_S,
        STAGE_HTTP_RETRIES,
        STAGE_HTTP_BACKOFF_FACTOR,
        STAGE_HTTP_BACKOFF_JITTER,
    )


def client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def ensure_experiment(store: MLflowSettings, name: str | None = None) -> str:
    """Create the experiment (default: mlflow.experiment_name) on first use; returns its id.

    Artefacts go under mlflow.artifact_root when set; unset, the tracking server chooses (e.g. its
    proxied mlflow-artifacts: store).
    """
    import mlflow

    name = name or store.experiment_name
    try:
        experiment = mlflow.get_experiment_by_name(name)
    except Exception as exc:  # every backend raises its own type when unreachable
        raise TrackingError(
            f"cannot open the MLflow tracking store {store.tracking_uri}: {exc}"
        ) from None
    if experiment is not None:
        return experiment.experiment_id
    root = store.artifact_root
    if not root:
        return mlflow.create_experiment(name)
    location = root if _is_uri(root) else Path(root).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def training_out_of_space(store: MLflowSettings) -> StageError:
    """What a full disk while training logged its run says: where the artefacts were going
    (the experiment's local folder, when it has one) and the temp folder the model is packed in.

    Registration is the run's last step, so a run that failed writing has no model version and
    moved no alias: that is what the message promises and the fault matrix tests.
    """
    import tempfile

    import mlflow

    work = Path(tempfile.gettempdir())
    try:
        experiment = mlflow.get_experiment_by_name(store.experiment_name)
        location = experiment.artifact_location if experiment else ""
    except Exception:  # the store is what failed: name the temp folder alone
        location = ""
    folder = Path(url2pathname(urlparse(location).path)) if location.startswith("file:") else None
    kept = (
        "no model version was registered and no alias moved; the run was cut short (FAILED, or "
        "left RUNNING when the tracking store is on the full disk too: delete it, and its "
        "partial artefacts, once space is back)"
    )
    if folder is None:
        return out_of_space(work, kept, "packing the model in")
    return out_of_space(folder, kept, "logging the run's artefacts to", also=[work])


def _is_uri(value: str) -> bool:
    """`s3://b/x`, `mlflow-artifacts:/x`, `file:///x` are URIs; `mlruns/artifacts` is a path."""
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:", value))


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<ref>[^/]+))$")


def resolve(uri: str) -> ModelRef:
    """Resolve models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/<Stage>, runs:/ID/PATH, or
    a local MLflow model folder (a path holding `MLmodel`)."""
    local = None if is_tracked_uri(uri) else Path(uri.removeprefix("file://"))
    if local is not None and (local / "MLmodel").is_file():
        # A model folder on disk (mounted, or baked into an image): no registry involved. A folder
        # downloaded from models:/ carries the registered name and version (`registered_model_meta`).
        name, version = _registered_meta(local)
        return ModelRef(str(local), name, version, None, _run_id_of(local))
    from mlflow.exceptions import MlflowException  # not before: a folder starts without MLflow

    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").split("/", 1)[0]
        try:
            client().get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(f"unknown run in model URI {uri}: {exc.message}") from None
        return ModelRef(uri, None, None, None, run_id)
    match = _URI.match(uri)
    if not match:
        raise TrackingError(
            f"unsupported model URI {uri!r}: use models:/NAME@ALIAS, models:/NAME/VERSION "
            "or runs:/RUN_ID/model"
        )
    name, alias, ref = match["name"], match["alias"], match["ref"]
    try:
        if alias:
            version = client().get_model_version_by_alias(name, alias)
        elif ref and ref.isdigit():
            version = client().get_model_version(name, ref)
            _refuse_half_registered(uri, version)
        else:
            assert ref is not None
            if ref.lower() not in _STAGES:
                raise TrackingError(f"unknown version or stage {ref!r} in {uri}")
            log.warning(
                "model URI %s uses a registry stage; stages are deprecated in MLflow, use an "
                "alias (models:/%s@champion)",
                uri,
                name,
            )
            latest = client().get_latest_versions(name, stages=[ref.capitalize()])
            if not latest:
                raise TrackingError(f"no version of {name} is in stage {ref}")
            version = latest[0]
    except MlflowException as exc:
        raise TrackingError(f"cannot resolve model {uri}: {exc.message}") from None
    return ModelRef(
        version_uri(name, version.version), name, str(version.version), alias, version.run_id
    )


def _refuse_half_registered(uri: str, version: Any) -> None:
    """A version training registered but could not give an alias (see REGISTRATION_TAG)."""
    tags = getattr(version, "tags", None) or {}
    if tags.get(REGISTRATION_TAG) != REGISTRATION_PENDING or getattr(version, "aliases", None):
        return
    raise TrackingError(
        f"{uri} is half-registered: training registered version {version.version} but the "
        f"tracking store failed before @challenger moved to it (tag {REGISTRATION_TAG}="
        f"{REGISTRATION_PENDING}), so it is not served. Rerun training (it registers a new "
        "version), or use an alias (models:/NAME@champion)"
    )


def _registered_meta(model_dir: Path) -> tuple[str | None, str | None]:
    import yaml

    try:
        meta = yaml.safe_load((model_dir / REGISTERED_META).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    name, version = meta.get("model_name"), meta.get("model_version")
    return (str(name) if name else None), (str(version) if version else None)


EXPORT_RECORD = ".fmops-export.json"  # what an export wrote, so a later one replaces only that


def folder_entries(folder: Path) -> list[str]:
    """Every file, link and folder under ``folder`` (relative, POSIX), the export record aside."""
    found = []
    for root, dirs, files in os.walk(folder):  # links to folders are listed, never followed
        for name in dirs + files:
            found.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(e for e in found if e != EXPORT_RECORD)


def write_export_record(folder: Path, uri: str) -> None:
    """Note in ``folder`` the entries the export put there (read by :func:`check_export_target`)."""
    import json

    record = folder / EXPORT_RECORD
    record.write_text(
        json.dumps({"model_uri": uri, "entries": folder_entries(folder)}, indent=2) + "\n",
        encoding="utf-8",
    )
    record.chmod(0o644)  # the serving container (another uid) lists the folder too


def added_to_export(folder: Path) -> list[str] | None:
    """Entries in an earlier export that it did not write (user files), or None: not an export.

    Only the record counts as proof: an `MLmodel` and a `registered_model_meta` are in any MLflow
    model download, including one a user keeps beside their own files.
    """
    import json

    try:
        record = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
        written = set(record["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [e for e in folder_entries(folder) if e not in written]


def check_export_target(dst: Path, force: bool = False, written: list[str] | None = None) -> None:
    """Refuse to export over anything but nothing, an empty folder or an untouched earlier export.

    The swap replaces `dst` whole, so every other file in it would be deleted: a folder holding
    other files (a project, a data folder, a typo'd path, files added to an earlier export) is
    refused unless ``force``. An earlier export is known by its record (``.fmops-export.json``,
    the entries it wrote). A model folder exported before the record existed (`MLmodel` and
    `registered_model_meta`, no record) is judged after the download, against ``written``: the
    entries of the new export; anything else in it is the user's.
    """
    if force or not (dst.exists() or dst.is_symlink()):
        return
    if dst.is_dir() and not dst.is_symlink():
        entries = sorted(p.name for p in dst.iterdir())
        added = added_to_export(dst)
        if added is None and _unrecorded_export(dst):
            if written is None:
                return  # judged once the new export is downloaded
            added = [e for e in folder_entries(dst) if e not in set(written)]
        if not entries or added == []:
            return
        if added:
            what = f"an earlier export holding {_entries(added)} it did not write"
        else:
            what = f"a folder holding {_entries(entries)} that is not a model folder exported "
            what += f"before (no {EXPORT_RECORD} listing what an export wrote)"
    else:
        what = "a symbolic link" if dst.is_symlink() else "a file, not a folder"
    raise TrackingError(
        f"will not export to {dst}: it is {what}, and an export replaces the folder whole, "
        "deleting what is there. Export to a new or empty folder (registry export --to DIR, "
        "or paths.serving_model_dir), or replace it anyway with registry export --force"
    )


def _unrecorded_export(folder: Path) -> bool:
    """An MLflow model download with its registry name, from before exports kept a record."""
    if (folder / EXPORT_RECORD).exists():
        return False
    return (folder / "MLmodel").is_file() and (folder / REGISTERED_META).is_file()


def _entries(names: list[str]) -> str:
    """``2 entries (a, b)``: the count and the first three names."""
    count = f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}"
    return f"{count} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def export_model(uri: str, dst: Path, force: bool = False) -> ModelRef:
    """Download a registered model into the folder `dst` (an MLflow model folder that serving,
    compose and the `with-model` image use), replacing what was there whole: the new files are
    complete before the swap (two renames), so no reader sees a mix. Returns the reference.

    `dst` must be new, empty or an earlier export with nothing added (:func:`check_export_target`,
    which reads the ``.fmops-export.json`` record written here); ``force`` replaces anything, as
    `registry export --force` asks.
    """
    import shutil
    import tempfile

    import mlflow

    dst = Path(dst)
    check_export_target(dst, force)  # before the download: a refusal costs nothing
    ref = resolve(uri)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.new-", dir=dst.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700: a container's uid 10001 must read the mount
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=str(staging))
        if not (staging / "MLmodel").is_file():
            raise TrackingError(f"{ref.uri} did not download as an MLflow model folder")
        if ref.name and not (staging / REGISTERED_META).is_file():
            (staging / REGISTERED_META).write_text(
                f"model_name: {ref.name}\nmodel_version: '{ref.version}'\n", encoding="utf-8"
            )
        write_export_record(staging, ref.uri)
        check_export_target(dst, force, folder_entries(staging))  # an export from before records
        old = dst.parent / f".{dst.name}.old-{os.getpid()}"
        if dst.exists() or dst.is_symlink():
            os.replace(dst, old)
        os.replace(staging, dst)
        if old.is_symlink() or old.is_file():  # replaced with --force: a link or a file
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, TrackingError):
            raise
        if is_out_of_space(exc):  # exit 1 naming the folder, not exit 2 as if the model were bad
            kept = f"the previous export in {dst} is unchanged" if dst.exists() else "nothing kept"
            raise out_of_space(dst, f"{kept}; the partial download was removed") from None
        raise TrackingError(f"cannot export {ref.uri} to {dst}: {exc}") from None
    return ModelRef(str(dst), ref.name, ref.version, ref.alias, ref.run_id)


def _run_id_of(model_dir: Path) -> str | None:
    import yaml

    try:
        meta = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return meta.get("run_id")


def download(run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one run artefact (file or folder) and return its local path."""
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
            )
        )
    except Exception as exc:
        raise TrackingError(f"run {run_id} has no artefact {artifact_path!r}: {exc}") from None


def load_pyfunc(uri: str) -> Any:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise TrackingError(f"cannot load model {uri}: {exc}") from None


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(client().get_run(run_id).data.metrics)
