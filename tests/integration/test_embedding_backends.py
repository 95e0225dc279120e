"""The two embedding backends on the real all-MiniLM-L6-v2 weights (offline).

The ONNX bundle is exported once per module (a few seconds); the sentence-transformers model is
the reference the ONNX path must reproduce.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from financemath_mlops.features import onnx_export
from financemath_mlops.features.embeddings import (
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    embed_with_cache,
    embedding_cache_key,
    make_embedder,
)
from financemath_mlops.features.weights import ResolvedWeights, resolve_weights
from tests.conftest import pipeline_settings
from tests.helpers import seeded_store

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "financemath"
DIM = 384
MIN_COSINE = 0.9999


def finance_questions() -> list[str]:
    """~50 finance-style questions: short, numeric, tabular, unicode, and > 256 tokens."""
    templates = [
        "What is the net present value of a project costing ${cost:,} that returns ${cf:,} a "
        "year for {n} years at a discount rate of {r}%?",
        "A bond with a face value of ${cost:,} pays a {r}% annual coupon and matures in {n} "
        "years. If the yield to maturity is {r2}%, what is its price?",
        "Company {co} reported revenue of ${cf:,} and EBITDA of ${ebitda:,}. What is the "
        "EBITDA margin (in %)?",
        "Calculate the Macaulay duration of a {n}-year bond with a {r}% coupon priced at par.",
        "The stock of {co} has a beta of {beta} and the market risk premium is {r}%. With a "
        "risk-free rate of {r2}%, what is the CAPM expected return?",
    ]
    companies = ["Acme Corp", "Globex", "Initech", "Umbrella plc", "Soylent AG"]
    questions = []
    for i in range(40):
        questions.append(
            templates[i % len(templates)].format(
                cost=10_000 * (i + 3),
                cf=1_250 * (i + 7),
                ebitda=400 * (i + 2),
                n=2 + i % 9,
                r=round(1.5 + 0.37 * i, 2),
                r2=round(0.8 + 0.21 * i, 2),
                beta=round(0.6 + 0.05 * i, 2),
                co=companies[i % len(companies)],
            )
        )
    table = "\n".join(
        f"| {year} | {1000 + 37 * year:,} | {(year * 7) % 13 + 0.5:.2f}% | {year * 3.1:.1f} |"
        for year in range(2001, 2031)
    )
    questions += [
        "What is the IRR?",
        "",
        "Réévaluation des actifs : quel est l'écart de conversion en € ?",
        "EPS = (net income − preferred dividends) / weighted shares; find EPS given 3 × 10⁶ shares.",
        "Given the table below, compute the compound annual growth rate of revenue.\n"
        "| Year | Revenue | Margin | Capex |\n|---|---|---|---|\n" + table,
        "Using the cash flows listed, what is the payback period? "
        + ", ".join(f"year {i}: ${(i * 1371) % 9000 + 100:,}" for i in range(1, 120)),
        " ".join(["The portfolio holds equities, bonds and derivatives with varying risk."] * 40),
        "Consider the following long case. " + textwrap.fill("inflation " * 300),
        "   leading and trailing whitespace   ",
        "UPPER CASE QUESTION ABOUT WACC AND THE COST OF EQUITY?",
    ]
    return questions


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def resolved(offline: None, tmp_path_factory: pytest.TempPathFactory) -> ResolvedWeights:
    return resolve_weights(hf_cache_dir=tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def export_calls(offline: None) -> Iterator[list[Path]]:
    """Counts real exports (wraps onnx_export.export_onnx_bundle for the module)."""
    calls: list[Path] = []
    real = onnx_export.export_onnx_bundle

    def spy(*args, **kwargs):
        calls.append(Path(args[1]))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "export_onnx_bundle", spy)
        yield calls


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def onnx_embedder(
    resolved: ResolvedWeights, onnx_cache: Path, export_calls: list[Path]
) -> OnnxEmbedder:
    embedder = make_embedder("onnx", resolved, onnx_cache_dir=onnx_cache, threads=2)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


@pytest.fixture(scope="module")
def st_embedder(resolved: ResolvedWeights) -> SentenceTransformerEmbedder:
    embedder = make_embedder("sentence-transformers", resolved, threads=2)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    return embedder


def assert_unit_rows(vectors: np.ndarray, n: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (n, DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def assert_backends_agree(
    onnx_embedder: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder, texts: list[str]
) -> None:
    a, b = onnx_embedder.embed(texts), st_embedder.embed(texts)
    assert_unit_rows(a, len(texts))
    assert_unit_rows(b, len(texts))
    cosine = (a.astype(np.float64) * b).sum(axis=1)
    worst = int(np.argmin(cosine))
    assert cosine.min() > MIN_COSINE, f"cosine {cosine.min()} for {texts[worst][:80]!r}"


def test_bundle_is_self_describing(onnx_embedder: OnnxEmbedder, resolved: ResolvedWeights) -> None:
    config = json.loads((onnx_embedder.bundle_dir / "embedding_config.json").read_text())
    assert (config["model_id"], config["revision"], config["source"]) == (
        resolved.model_id,
        resolved.revision,
        resolved.source,
    )
    assert (config["max_length"], config["pooling"], config["normalize"]) == (256, "mean", True)
    assert config["dim"] == DIM and config["opset"] >= 14
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert config["export_check_max_abs_diff"] < 1e-4
    assert sorted(p.name for p in onnx_embedder.bundle_dir.iterdir()) == [
        "embedding_config.json",
        "model.onnx",
        "tokenizer.json",
    ]


def test_backends_agree_on_generated_questions(
    onnx_embedder: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder
) -> None:
    questions = finance_questions()
    assert len(questions) >= 50
    from tokenizers import Tokenizer

    untruncated = Tokenizer.from_file(str(onnx_embedder.bundle_dir / "tokenizer.json"))
    untruncated.no_truncation()
    lengths = [len(e.ids) for e in untruncated.encode_batch(questions)]
    assert sum(n > 256 for n in lengths) >= 4  # truncation is exercised
    assert_backends_agree(onnx_embedder, st_embedder, questions)


def test_backends_agree_on_the_real_validation_questions(
    onnx_embedder: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder
) -> None:
    path = SHARED_DATA / "validation.json"
    if not path.is_file():
        pytest.skip(f"real FinanceMath validation split not present at {path}")
    questions = [str(row["question"]) for row in json.loads(path.read_text(encoding="utf-8"))]
    assert len(questions) == 200
    assert_backends_agree(onnx_embedder, st_embedder, questions)


def test_onnx_results_do_not_depend_on_batching(onnx_embedder: OnnxEmbedder) -> None:
    questions = finance_questions()
    reference = onnx_embedder.embed(questions)
    one_by_one = OnnxEmbedder(onnx_embedder.bundle_dir, batch_size=1).embed(questions)
    np.testing.assert_allclose(one_by_one, reference, atol=2e-5)
    reversed_rows = onnx_embedder.embed(questions[::-1])
    np.testing.assert_allclose(reversed_rows[::-1], reference, atol=2e-5)
    assert onnx_embedder.embed([]).shape == (0, DIM)


def test_second_make_embedder_reuses_the_bundle(
    onnx_embedder: OnnxEmbedder, resolved: ResolvedWeights, onnx_cache: Path, export_calls: list
) -> None:
    assert len(export_calls) == 1
    model_file = onnx_embedder.bundle_dir / "model.onnx"
    mtime = model_file.stat().st_mtime_ns
    again = make_embedder("onnx", resolved, onnx_cache_dir=onnx_cache)
    assert again.bundle_dir == onnx_embedder.bundle_dir  # type: ignore[attr-defined]
    assert len(export_calls) == 1 and model_file.stat().st_mtime_ns == mtime
    assert [p for p in onnx_cache.iterdir() if p.name.startswith(".")] == []


def test_bundle_loads_elsewhere_without_torch(onnx_embedder: OnnxEmbedder, tmp_path: Path) -> None:
    """A copied bundle (e.g. an MLflow artefact) loads and embeds with no torch import."""
    copy = shutil.copytree(onnx_embedder.bundle_dir, tmp_path / "artefact" / "embedding")
    code = (
        "import sys\n"
        "from financemath_mlops.features.embeddings import OnnxEmbedder\n"
        f"embedder = OnnxEmbedder({str(copy)!r}, threads=1)\n"
        "vectors = embedder.embed(['What is the NPV?', 'Compute the duration.'])\n"
        "assert vectors.shape == (2, 384), vectors.shape\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"


def test_onnx_embedder_pickles(onnx_embedder: OnnxEmbedder) -> None:
    clone = pickle.loads(pickle.dumps(onnx_embedder))
    texts = ["What is the NPV?"]
    np.testing.assert_array_equal(clone.embed(texts), onnx_embedder.embed(texts))


@pytest.mark.parametrize(
    ("spinning", "key", "value"),
    [
        ("never", "session.intra_op.allow_spinning", "0"),
        ("within_run", "session.force_spinning_stop", "1"),
    ],
)
def test_serving_sessions_say_when_idle_onnx_threads_spin(
    onnx_embedder: OnnxEmbedder, spinning: str, key: str, value: str
) -> None:
    """with_threads (the server's sessions) rebuilds the embedder with its spinning: the option
    reaches the session, survives pickling and leaves the vectors as they were."""
    from financemath_mlops.features.rows import FEATURE_COLUMNS, FEATURE_VERSION
    from financemath_mlops.model.predictor import Predictor, with_threads

    config = {
        "feature_columns": list(FEATURE_COLUMNS),
        "feature_version": FEATURE_VERSION,
        "target_transform": "none",
    }
    served = with_threads(Predictor(None, onnx_embedder, config), 3, spinning)
    quiet = served.embedder
    assert isinstance(quiet, OnnxEmbedder) and quiet.threads == 3 and quiet.spinning == spinning
    assert quiet._session.get_session_options().get_session_config_entry(key) == value
    with pytest.raises(RuntimeError, match="does not have configuration"):  # the default: unset
        onnx_embedder._session.get_session_options().get_session_config_entry(key)
    clone = pickle.loads(pickle.dumps(quiet))
    assert clone._session.get_session_options().get_session_config_entry(key) == value
    texts = ["What is the NPV?", "Compute the duration."]
    np.testing.assert_allclose(clone.embed(texts), onnx_embedder.embed(texts), atol=1e-5)
    with pytest.raises(ValueError, match="spinning must be one of"):
        OnnxEmbedder(onnx_embedder.bundle_dir, spinning="sometimes")  # type: ignore[arg-type]


def test_cache_with_a_real_backend(
    onnx_embedder: OnnxEmbedder, resolved: ResolvedWeights, tmp_path: Path
) -> None:
    questions = finance_questions()
    key = embedding_cache_key(resolved, onnx_embedder.backend)
    first = embed_with_cache(onnx_embedder, questions, tmp_path, key)
    second = embed_with_cache(onnx_embedder, questions, tmp_path, key)
    assert first.misses == len(questions) and second.hits == len(questions)
    np.testing.assert_array_equal(second.vectors, first.vectors)


# --- int8 (issue 23) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_embedder(
    onnx_embedder: OnnxEmbedder, resolved: ResolvedWeights, onnx_cache: Path
) -> OnnxEmbedder:
    embedder = make_embedder(
        "onnx", resolved, onnx_cache_dir=onnx_cache, threads=2, precision="int8"
    )
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


def test_int8_bundle_records_its_quantization_and_is_smaller(
    int8_embedder: OnnxEmbedder, onnx_embedder: OnnxEmbedder, export_calls: list
) -> None:
    assert len(export_calls) == 1  # quantized from the fp32 export, not exported again
    config = int8_embedder.config
    assert (config["precision"], config["dtype"]) == ("int8", "float32")
    assert onnx_embedder.precision == "fp32"
    quantization = config["quantization"]
    assert quantization["weight_type"] == "QInt8" and quantization["per_channel"] is True
    assert quantization["check_min_cosine_to_fp32"] >= onnx_export.QUANTIZATION_MIN_COSINE
    sizes = [(e.bundle_dir / "model.onnx").stat().st_size for e in (int8_embedder, onnx_embedder)]
    assert sizes[0] < 0.35 * sizes[1], sizes


def test_int8_vectors_stay_close_to_fp32_but_are_not_fp32(
    int8_embedder: OnnxEmbedder, onnx_embedder: OnnxEmbedder
) -> None:
    path = SHARED_DATA / "validation.json"
    if path.is_file():
        questions = [str(row["question"]) for row in json.loads(path.read_text(encoding="utf-8"))]
    else:
        questions = finance_questions()
    a, b = int8_embedder.embed(questions), onnx_embedder.embed(questions)
    assert_unit_rows(a, len(questions))
    cosine = (a.astype(np.float64) * b).sum(axis=1)
    assert cosine.min() > 0.97 and cosine.mean() > 0.985, (cosine.min(), cosine.mean())
    assert cosine.max() < 0.99999  # the vectors move: why the precision is in every key


def test_int8_cache_entries_are_separate(
    int8_embedder: OnnxEmbedder, onnx_embedder: OnnxEmbedder, resolved: ResolvedWeights,
    tmp_path: Path,
) -> None:  # fmt: skip
    texts = finance_questions()[:5]
    fp32 = embedding_cache_key(resolved, "onnx", precision="fp32")
    int8 = embedding_cache_key(resolved, "onnx", precision="int8")
    embed_with_cache(onnx_embedder, texts, tmp_path, fp32)
    result = embed_with_cache(int8_embedder, texts, tmp_path, int8)
    assert result.misses == len(texts)
    np.testing.assert_array_equal(result.vectors, int8_embedder.embed(texts))


def test_int8_model_serves_its_training_rows_and_refuses_an_fp32_bundle(
    resolved: ResolvedWeights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parity for int8: features, training and the logged model all use the int8 bundle."""
    import pandas as pd

    from financemath_mlops import runs
    from financemath_mlops.features.build import ID_COLUMN, read_feature_manifest
    from financemath_mlops.features.rows import FEATURE_COLUMNS
    from financemath_mlops.flows.stages import features_stage, ingest_stage, train_stage
    from financemath_mlops.model.predictor import Predictor
    from financemath_mlops.records import RecordInput

    for name in [n for n in os.environ if n.startswith(("FMOPS_", "MLFLOW_"))]:
        monkeypatch.delenv(name)
    settings = pipeline_settings(
        tmp_path, rows=120, features={"embedding": {"backend": "onnx", "precision": "int8"}}
    )
    seeded_store(tmp_path / "mlruns" / "mlflow.db")  # MLflow's empty tables, copied
    ingest_stage(settings)
    features_stage(settings)
    manifest = read_feature_manifest(settings.features_output)
    assert manifest["embedding"]["precision"] == "int8"
    summary = train_stage(settings)
    runs.configure(settings.mlflow)
    predictor = runs.load_pyfunc(summary.model_uri).unwrap_python_model().predictor
    assert predictor.embedder.precision == "int8"
    assert predictor.config["embedding_bundle"]["quantization"]["per_channel"] is True

    lines = settings.ingestion_output.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()][:6]
    inputs = [RecordInput.from_mapping(r) for r in records]
    served = np.vstack([predictor.predict([x], keep_features=True).features for x in inputs])
    table = pd.read_parquet(settings.features_output).set_index(ID_COLUMN)
    trained = table.loc[[r["question_id"] for r in records], list(FEATURE_COLUMNS)].to_numpy()
    assert np.array_equal(np.isnan(served), np.isnan(trained))
    assert np.nanmax(np.abs(served - trained)) < 1e-5

    fp32 = make_embedder("onnx", resolved, onnx_cache_dir=settings.paths.cache_dir / "onnx")
    with pytest.raises(ValueError, match="precision: trained 'int8', bundle 'fp32'"):
        Predictor(predictor.booster, fp32, predictor.config)
