"""Question embeddings: the ONNX and sentence-transformers backends.

* :class:`OnnxEmbedder` needs only onnxruntime, tokenizers and numpy (the serving path);
  :class:`SentenceTransformerEmbedder` is the torch reference.
* :func:`make_embedder` builds either from weights found by
  :func:`~financemath_mlops.features.weights.resolve_weights`; for ONNX it exports the model once
  into a cached bundle.
* :func:`embed_with_cache` (from :mod:`.embedding_cache`) skips texts embedded before; its key is
  :func:`embedding_cache_key`.

Importing this module imports neither torch nor sentence_transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from financemath_mlops.features import onnx_export
from financemath_mlops.features.embedding_cache import (
    CachedEmbeddings,
    Embedder,
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
from financemath_mlops.features.weights import COMMIT_RE, ResolvedWeights

__all__ = [
    "PRECISIONS",
    "BundleError",
    "CachedEmbeddings",
    "Embedder",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "embed_with_cache",
    "embedding_cache_key",
    "ensure_onnx_bundle",
    "export_onnx_bundle",
    "l2_normalize",
    "make_embedder",
    "mean_pool",
    "text_sha256",
]

Backend = Literal["onnx", "sentence-transformers"]
Spinning = Literal["always", "within_run", "never"]  # when idle onnxruntime threads busy-wait
SPINNING: tuple[Spinning, ...] = ("always", "within_run", "never")


def embedding_cache_key(
    resolved: ResolvedWeights, backend: str, max_length: int = 256, precision: str = "fp32"
) -> dict[str, str]:
    """Key for :func:`embed_with_cache`; adds the weights' sha256 when no commit pins them.

    ``precision`` (fp32 | int8 ONNX bundle) is part of it: int8 vectors differ from fp32's. For
    the ONNX backend so is the exporter (torch, transformers, onnx, onnxruntime versions and the
    exporter's source: what the bundle's key holds), so vectors of an old export are never mixed
    with a new one's after an upgrade.
    """
    key = {
        "model_id": resolved.model_id,
        "revision": resolved.revision,
        "source": resolved.source,
        "backend": backend,
        "max_length": str(max_length),
        "precision": check_precision(precision),
    }
    if backend == "onnx":
        key["exporter"] = ",".join(
            f"{name}={version}" for name, version in sorted(onnx_export.exporter_versions().items())
        )
    if not COMMIT_RE.fullmatch(resolved.revision):
        key["weights_sha256"] = weights_sha256(resolved.path)
    return key


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

    ``spinning`` says when idle onnxruntime threads busy-wait for work instead of sleeping:
    ``"always"`` (onnxruntime's default; batch jobs), ``"never"`` (a server's session that runs
    beside others: spinning threads steal the CPU they wait for, measured p50 of a lone
    embedding 71 ms spinning vs 44 ms not, on a loaded 2-core machine) or ``"within_run"``
    (spin between the operators of one run, sleep as soon as it ends: a server's session for a
    call that runs alone; p50 of a lone /predict 14.2 -> 12.1 ms against ``"never"``, no loss
    at concurrency 32; benchmarks/serving.py).
    """

    backend = "onnx"

    def __init__(
        self,
        bundle_dir: Path,
        batch_size: int = 32,
        threads: int | None = None,
        *,
        show_progress: bool = False,
        spinning: Spinning = "always",
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
        if spinning not in SPINNING:
            raise ValueError(f"spinning must be one of {SPINNING}, got {spinning!r}")
        self.spinning = spinning
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
        if spinning == "never":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        elif spinning == "within_run":
            options.add_session_config_entry("session.force_spinning_stop", "1")
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
            "spinning": self.spinning,
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
    resolved: ResolvedWeights,
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
