"""A drift signal for the 384-dim question embeddings (pure numpy).

Why principal components: testing 384 dimensions one by one would swamp the share of drifted
columns (and, at p < 0.05, flag about 19 of them on identical data). Instead the embeddings are
projected on the first few principal components of the *reference* embeddings (SVD of the centred
reference matrix) and each component joins the table and metadata features as an ordinary
numerical column, tested by the same Evidently method and threshold: one consistent "share of
drifted columns" over everything the model sees. The components are the directions along which
the reference questions differ most (topic, template, phrasing), which is where a change in the
kind of questions asked shows first.

As a second, whole-vector signal we report the cosine distance between the mean reference and
the mean current embedding, with a permutation p-value (how often randomly relabelled rows are at
least that far apart). It needs no model, is deterministic for a seed, and catches a shift that is
spread thinly over many dimensions. A domain classifier would be more sensitive still, but it
needs training per report, overfits on windows of a few hundred rows and gives no direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from financemath_mlops.features.rows import EMBEDDING_FEATURES

EMBEDDING_COLUMNS: tuple[str, ...] = tuple(EMBEDDING_FEATURES)
PERMUTATIONS = 500


def component_name(i: int) -> str:
    return f"emb_pc{i + 1}"


@dataclass(frozen=True)
class EmbeddingProjection:
    """Reference mean, the top principal axes (rows) and the variance share of each."""

    mean: np.ndarray
    axes: np.ndarray
    explained_variance_ratio: np.ndarray

    @property
    def names(self) -> list[str]:
        return [component_name(i) for i in range(len(self.axes))]

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        return (np.asarray(embeddings, dtype=np.float64) - self.mean) @ self.axes.T


def complete_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows without missing values (a prediction log may hold rows without embeddings)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    return embeddings[np.isfinite(embeddings).all(axis=1)]


def fit_projection(reference: np.ndarray, components: int = 5) -> EmbeddingProjection:
    """Principal axes of the reference embeddings (at most rows - 1 of them)."""
    data = complete_rows(reference)
    if len(data) < 2:
        raise ValueError("need at least 2 reference embeddings to fit principal components")
    mean = data.mean(axis=0)
    _, singular, vt = np.linalg.svd(data - mean, full_matrices=False)
    k = max(1, min(components, len(data) - 1, vt.shape[0]))
    variance = singular**2
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else np.zeros(k)
    return EmbeddingProjection(mean=mean, axes=vt[:k], explained_variance_ratio=ratio)


def mean_cosine_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """1 - cosine similarity of the two mean embeddings (0 = same direction)."""
    a, b = np.asarray(reference).mean(axis=0), np.asarray(current).mean(axis=0)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(1.0 - a @ b / norm) if norm > 0 else 0.0


def mean_embedding_test(
    reference: np.ndarray, current: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[float, float]:
    """Mean-embedding cosine distance and its permutation p-value (rows with gaps dropped)."""
    ref, cur = complete_rows(reference), complete_rows(current)
    if len(ref) == 0 or len(cur) == 0:
        return float("nan"), float("nan")
    observed = mean_cosine_distance(ref, cur)
    pooled = np.vstack([ref, cur])
    total = pooled.sum(axis=0)
    n_ref, n_cur = len(ref), len(cur)
    rng = np.random.default_rng(seed)
    at_least = 0
    for start in range(0, permutations, 100):  # 100 relabellings per matrix product
        count = min(100, permutations - start)
        chosen = np.argsort(rng.random((count, len(pooled))), axis=1)[:, :n_ref]
        mask = np.zeros((count, len(pooled)))
        np.put_along_axis(mask, chosen, 1.0, axis=1)
        ref_sums = mask @ pooled
        a, b = ref_sums / n_ref, (total - ref_sums) / n_cur
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        distances = 1.0 - np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)
        at_least += int(np.sum(distances >= observed - 1e-12))
    return observed, (at_least + 1) / (permutations + 1)
