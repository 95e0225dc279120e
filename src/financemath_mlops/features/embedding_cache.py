"""On-disk cache of question embeddings.

One ``<key digest>.npz`` per cache key (model id, revision, weight source, backend, ...) under
``cache_dir``, holding the sha256 of each text and its vector, plus ``<key digest>.json`` with
the key itself for humans. Only texts missing from the cache are embedded. Writes are atomic
(temp file + rename) and re-read the file just before writing, so concurrent writers do not
corrupt it; at worst one of them loses its newly added rows, which are recomputed next time.
An unreadable cache file is logged and treated as empty.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from financemath_mlops.atomic import free_space, is_out_of_space

logger = logging.getLogger(__name__)

REQUIRED_KEY_FIELDS = ("model_id", "revision", "source", "backend")


@runtime_checkable
class Embedder(Protocol):
    """What every embedding backend provides (and all the cache needs of one)."""

    backend: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dim) with L2-normalised rows."""
        ...


@dataclass(frozen=True)
class CachedEmbeddings:
    """Vectors in input order, and how many inputs were served from the cache."""

    vectors: np.ndarray
    hits: int  # inputs whose text was already cached
    misses: int  # inputs whose text was not (hits + misses == len(texts))
    computed: int  # distinct texts actually embedded (duplicates are embedded once)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.vectors if dtype is None else self.vectors.astype(dtype)

    def __len__(self) -> int:
        return len(self.vectors)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_digest(key: Mapping[str, str]) -> str:
    """Stable digest of a cache key; every required field must be present and non-empty."""
    missing = [name for name in REQUIRED_KEY_FIELDS if not str(key.get(name, "")).strip()]
    if missing:
        raise ValueError(f"embedding cache key lacks {', '.join(missing)}: {dict(key)}")
    canonical = json.dumps({str(k): str(v) for k, v in key.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def embed_with_cache(
    embedder: Embedder, texts: Sequence[str], cache_dir: Path, key: Mapping[str, str]
) -> CachedEmbeddings:
    """Embed ``texts`` through the cache for ``key``; see :class:`CachedEmbeddings`.

    ``np.asarray(result)`` (or ``result.vectors``) is the float32 ``(len(texts), dim)`` array.
    """
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    digest = key_digest(key)
    store = Path(cache_dir) / f"{digest}.npz"
    cached = _load(store)
    hashes = [text_sha256(t) for t in texts]
    todo: dict[str, str] = {}
    for text_hash, text in zip(hashes, texts, strict=True):
        if text_hash not in cached and text_hash not in todo:
            todo[text_hash] = text
    hits = sum(1 for h in hashes if h in cached)
    fresh: dict[str, np.ndarray] = {}
    if todo:
        vectors = np.asarray(embedder.embed(list(todo.values())), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(todo):
            raise ValueError(
                f"{type(embedder).__name__}.embed returned shape {vectors.shape} "
                f"for {len(todo)} texts"
            )
        fresh = dict(zip(todo, vectors, strict=True))
        dims = {v.shape[0] for v in cached.values()} | {vectors.shape[1]}
        if len(dims) > 1:
            raise ValueError(f"cache {store} holds vectors of another dim {dims}: key {dict(key)}")
        try:
            _save(store, fresh, key)
        except OSError as exc:  # a cache: a full disk costs the reuse, not the table
            if not is_out_of_space(exc):
                raise
            logger.warning(
                "embedding cache not saved (no space left on device under %s: %s); the "
                "features are built all the same, and these texts are embedded again next time",
                store.parent,
                free_space(store.parent),
            )
    lookup = {**cached, **fresh}
    dim = next(iter(lookup.values())).shape[0] if lookup else int(getattr(embedder, "dim", 0))
    out = np.empty((len(texts), dim), dtype=np.float32)
    for row, text_hash in enumerate(hashes):
        out[row] = lookup[text_hash]
    logger.info(
        "embedding cache %s: %d hits, %d misses (%d texts embedded)",
        digest[:12],
        hits,
        len(texts) - hits,
        len(todo),
    )
    return CachedEmbeddings(out, hits=hits, misses=len(texts) - hits, computed=len(todo))


def _load(store: Path) -> dict[str, np.ndarray]:
    if not store.is_file():
        return {}
    try:
        with np.load(store, allow_pickle=False) as data:
            hashes, vectors = data["hashes"], data["vectors"]
        if vectors.ndim != 2 or len(hashes) != len(vectors):
            raise ValueError(f"shapes {hashes.shape} / {vectors.shape}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable embedding cache %s (%s)", store, exc)
        return {}
    return dict(zip(hashes.tolist(), vectors.astype(np.float32, copy=False), strict=True))


def _save(store: Path, fresh: Mapping[str, np.ndarray], key: Mapping[str, str]) -> None:
    """Merge ``fresh`` into whatever is on disk now and replace the file atomically."""
    store.parent.mkdir(parents=True, exist_ok=True)
    merged = {**_load(store), **fresh}
    hashes = np.array(list(merged), dtype="U64")
    vectors = np.stack(list(merged.values())).astype(np.float32, copy=False)
    _atomic_write(store, lambda handle: np.savez(handle, hashes=hashes, vectors=vectors))
    key_file = store.with_suffix(".json")
    if not key_file.is_file():
        payload = json.dumps(dict(key), indent=2, sort_keys=True).encode("utf-8")
        _atomic_write(key_file, lambda handle: handle.write(payload))


def _atomic_write(target: Path, write) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
