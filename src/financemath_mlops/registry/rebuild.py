"""Rebuild a registered version from what its run recorded, and say whether it came out the same.

`python -m financemath_mlops.registry [--name N] reproduce VERSION` (or `--run-id ID`):

1. the version's run and its rebuild recipe (training writes `reproduce/recipe.json`: the data and
   how to get it again, the embedding and LightGBM settings, commit, dirty flag, lock, packages);
2. the checkout against the run: commit, uncommitted changes (their sha256), lock and installed
   packages; any difference refuses (exit 2) unless ``allow_drift``;
3. the exact data: the sample regenerated from its seed and row count; a local file as it is, or
   its DVC version by md5 (from the DVC cache, else `dvc fetch` from the configured remote); the
   hub revision from the cache. Ingested again and restamped with the run's ingestion time, the
   records' sha256 must be the run's, else exit 2 naming both;
4. the features rebuilt with the run's embedding settings into a scratch embedding cache (so every
   vector is computed again; the ONNX export is reused, keyed by the weights' sha256), compared with
   the run's stored training table (``from_features`` starts from that table instead);
5. the booster retrained with the run's recorded LightGBM parameters, split ids and seed, and
   compared with the served model's: its text, and predictions on the run's holdout and training
   rows.

No MLflow run is opened, nothing is registered and no alias moves: the rebuild lives in a scratch
folder (deleted unless ``keep``). Exit 0: identical; 1: something differs (the table says what);
2: something needed is missing or the checkout drifted (a :class:`StageError` naming it).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops import provenance
from financemath_mlops.atomic import dump_jsonl
from financemath_mlops.config import Settings
from financemath_mlops.errors import StageError

log = logging.getLogger(__name__)

IDENTICAL, DIFFERS = 0, 1
DVC_INSTALL = "pip install 'dvc[s3]' (or the pinned tool: requirements/dvc-tool.txt)"


@dataclass
class Outcome:
    """The comparison, one line per level; ``identical`` decides the exit code."""

    header: str
    lines: list[str] = field(default_factory=list)
    identical: bool = True
    seconds: float = 0.0

    def add(self, level: str, text: str, same: bool = True) -> None:
        self.lines.append(f"  {level:<12}{text}")
        self.identical = self.identical and same

    def table(self) -> str:
        verdict = "identical" if self.identical else "DIFFERS"
        return "\n".join([self.header, *self.lines, f"{verdict} ({self.seconds:.1f} s)"])


# -- the checkout ---------------------------------------------------------------------------------


def drift(recipe: dict[str, Any]) -> list[str]:
    """How this checkout and environment differ from the run's (empty: the same)."""
    code, env = recipe.get("code", {}), recipe.get("environment", {})
    now, installed = provenance.checkout(), provenance.environment()
    out = []
    if code.get("commit") != now.commit:
        out.append(f"commit: the run's {code.get('commit')}, this checkout {now.commit}")
    if (code.get("dirty"), code.get("diff_sha256")) != (now.dirty, now.diff_sha256):
        was = _tree(code.get("dirty"), code.get("diff_sha256"))
        files = provenance.changed_files()
        shown = f" ({', '.join(files[:5])}{', ...' if len(files) > 5 else ''})" if files else ""
        out.append(
            f"tree: the run's {was}, this checkout {_tree(now.dirty, now.diff_sha256)}{shown}"
        )
    same_lock = (env.get("lock"), env.get("lock_sha256")) == (
        installed.lock_name,
        installed.lock_sha256,
    )
    if not same_lock and not _lock_still_installed(env, installed):
        out.append(
            f"lock: the run's {env.get('lock')} (sha256 {str(env.get('lock_sha256'))[:12]}), "
            f"here {installed.lock_name} (sha256 {installed.lock_sha256[:12]})"
        )
    if env.get("packages_sha256") != installed.packages_sha256:
        # a distribution installed since (`make test` after `make run` adds the dev set) changes
        # nothing the rebuild runs; one changed or removed may
        changed = [
            line
            for line in provenance.package_differences(
                env.get("packages", []), list(installed.packages)
            )
            if not line.split(": ", 1)[1].startswith("absent ->")
        ]
        if changed:
            more = f"; {len(changed) - 6} more" if len(changed) > 6 else ""
            out.append(f"packages: {'; '.join(changed[:6])}{more}")
    return out


def _lock_still_installed(env: dict[str, Any], installed: provenance.Environment) -> bool:
    """The run's lock file is unchanged in this checkout and every one of its pins is installed
    at its version (a larger set installed beside it, e.g. dev after pipeline, is no drift)."""
    name, want = env.get("lock"), env.get("lock_sha256")
    if not name or name == "none" or not want:
        return False
    path = provenance.REPO_ROOT / str(name)
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != want:
        return False
    versions = dict(line.split("==", 1) for line in installed.packages)
    return all(versions.get(pkg) == ver for pkg, ver in provenance.lock_pins(path).items())


def _tree(dirty: Any, diff: Any) -> str:
    if dirty == "false":
        return "clean tree"
    if dirty == "true":
        return f"uncommitted changes (diff sha256 {str(diff)[:12]})"
    return "tree state unknown"


# -- the data -------------------------------------------------------------------------------------


def _section(settings: Settings, name: str, **values: Any) -> Settings:
    return settings.model_copy(update={name: getattr(settings, name).model_copy(update=values)})


def _md5(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def dvc_file(path: Path, md5: str, work: Path) -> Path:
    """The bytes DVC recorded as `md5` for `path`: the file itself when unchanged, else the DVC
    cache's copy, else `dvc fetch` from the configured remote (needs `dvc`)."""
    if path.is_file() and _md5(path) == md5:
        return path
    have = f"{path} has md5 {_md5(path)}" if path.is_file() else f"{path} is missing"
    for folder in [path.parent, *path.parent.parents][:32]:
        cached = folder / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
        if cached.is_file():
            return _copy_as(cached, path, work)
        if (folder / ".dvc").is_dir():
            break
    else:
        folder = None
    dvc = shutil.which("dvc")
    if dvc is None or folder is None:
        raise StageError(
            f"the run's data is dvc:{md5} but {have} and the DVC cache has no md5 {md5}: "
            + (
                f"fetching it from the configured remote needs `dvc`, which is not installed "
                f"({DVC_INSTALL})"
                if dvc is None
                else f"{path} is not inside a DVC repository"
            )
        )
    pointer = path.with_name(f".{path.name}.reproduce-{md5[:8]}.dvc")
    pointer.write_text(f"outs:\n- md5: {md5}\n  path: {path.name}\n", encoding="utf-8")
    try:
        done = subprocess.run(
            [dvc, "fetch", str(pointer)], cwd=folder, capture_output=True, text=True, timeout=600
        )
    finally:
        pointer.unlink(missing_ok=True)
    cached = folder / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    if done.returncode != 0 or not cached.is_file():
        raise StageError(
            f"the run's data is dvc:{md5} but {have}, and `dvc fetch` could not get md5 {md5} "
            f"from the configured remote: {(done.stderr or done.stdout).strip()[-300:]}"
        )
    return _copy_as(cached, path, work)


def _copy_as(source: Path, like: Path, work: Path) -> Path:
    """A copy named like the tracked file (its suffix says how to read it)."""
    target = work / "dvc" / like.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def ingestion_settings(settings: Settings, data: dict[str, Any], work: Path) -> Settings:
    """The ingestion settings that fetch the run's data again, writing under `work`."""
    source = data.get("source")
    output = work / "records" / "financemath.jsonl"
    if source == "sample":
        split, rows = str(data.get("split") or ""), data.get("sample_rows")
        if not split.startswith("seed-") or not rows:
            raise StageError(
                f"the run's sample is {split!r} with {rows} rows: a sample is regenerated from "
                "its seed and row count, and the run does not record both"
            )
        return _section(settings, "ingestion", source="sample", seed=int(split[5:]), rows=int(rows), output=output)  # fmt: skip
    if source == "local":
        path = Path(str(data.get("dataset_id")))
        version = str(data.get("revision") or "")
        if version.startswith("dvc:"):
            parts = version.split(":")
            if len(parts) == 2:
                path = dvc_file(path, parts[1], work)
            else:
                from financemath_mlops.ingestion.dvc_tracked import dvc_revision

                if dvc_revision(path) != version:
                    raise StageError(
                        f"the run's data is {version} (a file inside a DVC-tracked folder) but "
                        f"{path} is {dvc_revision(path) or 'not that version'}: check out that "
                        f"version (`git checkout` the .dvc file, then `dvc checkout`) and rerun"
                    )
        elif not path.is_file():
            raise StageError(f"the run's data file {path} is missing (it is not DVC-tracked)")
        return _section(settings, "ingestion", source="local", path=path, output=output)
    if source == "hf":
        return _section(
            settings,
            "ingestion",
            source="hf",
            dataset_id=data.get("dataset_id"),
            split=data.get("split"),
            revision=data.get("revision"),
            output=output,
        )
    raise StageError(f"the run's data source {source!r} cannot be fetched again")


def restamped_sha256(records: Path, meta: dict[str, Any] | None) -> str:
    """The sha256 the records would have had with the run's `meta` (ingestion stamps every record
    with its time, source and path; a DVC copy sits at another path): the rows' own content is
    what is compared."""
    buffer = io.StringIO()
    rows = [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines() if line]
    for row in rows:
        if meta is not None and isinstance(row.get("meta"), dict):
            row["meta"] = meta
    dump_jsonl(buffer, rows)
    return hashlib.sha256(buffer.getvalue().encode("utf-8")).hexdigest()


def fetch_records(
    settings: Settings, recipe: dict[str, Any], meta: dict[str, Any] | None, work: Path
) -> tuple[Path, str]:
    """Ingest the run's data again; refuse (exit 2) unless the records are the run's, byte for
    byte once restamped. Returns (records, a line saying what was checked)."""
    from financemath_mlops.ingestion import ingest

    data = recipe["data"]
    again = ingestion_settings(settings, data, work)
    summary = ingest(again.ingestion, again.ingestion_output, again.paths.hf_cache_dir)
    got = restamped_sha256(summary.output, meta)
    want = data.get("records_sha256")
    what = str(data.get("version") or f"{data.get('source')} {data.get('dataset_id')}")
    if data.get("source") == "sample":
        what += f", {data.get('sample_rows')} rows"
    if got != want:
        raise StageError(
            f"the data differs from the run's: {what} ingests to records with sha256 {got}, the "
            f"run trained on sha256 {want}. Nothing was rebuilt"
        )
    return summary.output, f"{what}: {summary.written} records, sha256 {got[:12]}... = the run's"


# -- features and booster -------------------------------------------------------------------------


def rebuild_features(
    settings: Settings, recipe: dict[str, Any], records: Path, work: Path, reuse: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The feature table from `records` with the run's embedding settings, every vector computed
    again (a scratch embedding cache; the ONNX export reused: it is keyed by the weights). With
    `reuse`, vectors come from the configured embedding cache where it holds them (keyed by model,
    revision, weights sha256, backend, length, precision and the text's sha256)."""
    from financemath_mlops.features.build import build_features, bundle_dir, read_features

    emb = recipe["embedding"]
    # the ONNX bundle cache as configured (a scratch cache_dir must not move it)
    paths = {"onnx_cache_dir": bundle_dir(settings.paths)}
    if not reuse:
        paths["cache_dir"] = work / "cache"
    # "unknown": weights that do not record their revision (the packaged copy); asking for that
    # name would only warn, the weights' sha256 below pins them
    revision = None if emb["revision"] == "unknown" else emb["revision"]
    embedding = settings.features.embedding.model_copy(
        update={
            "model_id": emb["model_id"],
            "revision": revision,
            "backend": emb["backend"],
            "max_length": emb["max_length"],
            "precision": emb.get("precision") or "fp32",
            "batch_size": emb["batch_size"],
            "threads": emb["threads"],
        }
    )
    output = work / "features" / "finance_math_features.parquet"
    rebuilt = settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update=paths),
            "features": settings.features.model_copy(
                update={
                    "input": records,
                    "output": output,
                    "embedding": embedding,
                    "executor": "local",
                    "partition_rows": emb.get("partition_rows") or 2000,
                }
            ),
        }
    )
    build_features(
        rebuilt.features,
        rebuilt.paths,
        rebuilt.features_input,
        rebuilt.features_output,
        show_progress=False,
    )
    return read_features(output)


def compare_tables(stored: Any, rebuilt: Any) -> tuple[bool, str]:
    """Identical (same ids, columns, bits), or the largest difference and where."""
    from financemath_mlops.features.build import ID_COLUMN

    if list(stored.columns) != list(rebuilt.columns):
        return False, "columns differ: " + ", ".join(
            sorted(set(stored.columns) ^ set(rebuilt.columns))[:5]
        )
    if stored[ID_COLUMN].tolist() != rebuilt[ID_COLUMN].tolist():
        return False, "the rows differ (other question ids or order)"
    worst: tuple[float, str, str] = (0.0, "", "")
    differing = []
    for column in stored.columns:
        a, b = stored[column].to_numpy(), rebuilt[column].to_numpy()
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            if np.array_equal(a64, b64, equal_nan=True):
                continue
            differing.append(column)
            gap = np.abs(np.nan_to_num(a64 - b64, nan=np.inf))
            i = int(np.argmax(gap))
            if gap[i] > worst[0] or not worst[1]:
                worst = (float(gap[i]), column, str(stored[ID_COLUMN].iloc[i]))
        elif a.tolist() != b.tolist():
            differing.append(column)
    shape = f"{len(stored)} rows x {len(stored.columns)} columns"
    if not differing:
        return True, f"{shape}: identical"
    where = f"; largest |diff| {worst[0]:.3g} in {worst[1]} of {worst[2]}" if worst[1] else ""
    return False, f"{shape}: {len(differing)} columns differ{where}"


def compare_boosters(
    recorded_text: str, rebuilt: Any, rows: dict[str, np.ndarray]
) -> list[tuple[str, str, bool]]:
    """(level, text, same) for the model text and each named row set's predictions."""
    import lightgbm as lgb

    original = lgb.Booster(model_str=recorded_text)
    text = rebuilt.model_to_string()
    out = []
    if text == recorded_text:
        out.append(("booster", "model text identical", True))
    else:
        trees_same = text.split("end of trees")[0] == recorded_text.split("end of trees")[0]
        note = "trees identical, parameters section differs" if trees_same else "trees differ"
        out.append(("booster", f"model text differs ({note})", False))
    for name, features in rows.items():
        if not len(features):
            continue
        gap = np.abs(original.predict(features) - rebuilt.predict(features))
        worst = float(np.max(gap))
        out.append(
            (
                "predictions",
                f"{name} ({len(features)} rows): max |diff| {worst:.3g} (raw booster output)",
                worst == 0.0,
            )
        )
    return out


# -- the whole rebuild ----------------------------------------------------------------------------


def reproduce(
    settings: Settings,
    name: str,
    version: str | None = None,
    run_id: str | None = None,
    allow_drift: bool = False,
    from_features: bool = False,
    keep: Path | None = None,
    reuse_embeddings: bool = False,
) -> Outcome:
    """Rebuild `name` version `version` (or run `run_id`) and compare; see the module docstring."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmops-reproduce-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        outcome = _reproduce(
            settings, name, version, run_id, allow_drift, from_features, reuse_embeddings, work
        )
    outcome.seconds = time.perf_counter() - started
    return outcome


def _reproduce(
    settings: Settings,
    name: str,
    version: str | None,
    run_id: str | None,
    allow_drift: bool,
    from_features: bool,
    reuse_embeddings: bool,
    work: Path,
) -> Outcome:
    from financemath_mlops.features.build import ID_COLUMN, TARGET_COLUMN, feature_values
    from financemath_mlops.runs.reproduce import load_recorded_run, version_run_id
    from financemath_mlops.training.fit import fit_exactly
    from financemath_mlops.training.split import holdout_split

    run_id = run_id or version_run_id(name, str(version))
    recorded = load_recorded_run(run_id, work / "run")
    recipe = recorded.recipe
    if recipe is None:
        raise StageError(
            f"run {run_id} records no rebuild recipe (reproduce/recipe.json): it was trained "
            "before runs recorded one; retrain it to make it reproducible"
        )
    label = f"{name} version {version}" if version else "run"
    outcome = Outcome(f"reproduce {label} (run {run_id}): no MLflow run opened, nothing registered")
    differences = drift(recipe)
    if differences and not allow_drift:
        raise StageError(
            "this checkout is not the one that trained the run: "
            + "; ".join(differences)
            + ". Check out the run's commit in a clean tree with its lock installed, or pass "
            "--allow-drift to rebuild anyway (the result may differ)"
        )
    for line in differences:
        outcome.add("drift", line + " (--allow-drift)")
    if not differences:
        env = recipe["environment"]
        outcome.add(
            "checkout",
            f"commit {recipe['code']['commit'][:12]}, {_tree(recipe['code']['dirty'], recipe['code']['diff_sha256'])}, "
            f"{env['lock']} (sha256 {env['lock_sha256'][:12]}), packages: as the run's",
        )  # fmt: skip
    stored = recorded.train_frame.reset_index(drop=True)
    training = recipe["training"]
    holdout_x = np.empty((0, 0))
    if from_features:
        outcome.add("data", "not fetched (--from-features: the run's stored training table)")
        train_frame = stored
    else:
        if recorded.manifest.get("data", {}).get("validated") == "elsewhere":
            raise StageError(
                f"run {run_id}'s features were built from records validated elsewhere "
                "(--validated-elsewhere), not from ingested data: there is no source to fetch "
                "again. Pass --from-features to retrain from the run's stored table"
            )
        meta = next((r["meta"] for r in recorded.holdout_records if r.get("meta")), None)
        records, line = fetch_records(settings, recipe, meta, work)
        outcome.add("data", line)
        table, _ = rebuild_features(settings, recipe, records, work, reuse_embeddings)
        labelled = table[table[TARGET_COLUMN].notna()].reset_index(drop=True)
        split = holdout_split(
            labelled[ID_COLUMN].tolist(),
            labelled["topic"].tolist(),
            training["holdout_fraction"],
            training["seed"],
        )
        same_split = split == (recorded.train_ids, recorded.holdout_ids)
        outcome.add(
            "split",
            f"{len(split[0])} train / {len(split[1])} holdout ids: "
            + ("as the run's" if same_split else "differ from the run's (the run's are used)"),
            same_split,
        )
        train_frame = labelled[labelled[ID_COLUMN].isin(set(recorded.train_ids))]
        train_frame = train_frame.reset_index(drop=True)
        same, text = compare_tables(stored, train_frame)
        outcome.add("features", text, same)
        holdout = labelled[labelled[ID_COLUMN].isin(set(recorded.holdout_ids))]
        holdout_x = feature_values(holdout)
    x = feature_values(train_frame)
    y = train_frame[TARGET_COLUMN].to_numpy(dtype=np.float64)
    booster = fit_exactly(x, y, training["booster_params"], training["target_transform"])
    rows = {"holdout": holdout_x, "training": feature_values(stored)}
    for level, text, same in compare_boosters(recorded.booster_text, booster, rows):
        outcome.add(level, text, same)
    if from_features:
        outcome.add("predictions", "holdout rows not compared (--from-features: no holdout table)")
    return outcome


# -- the command ----------------------------------------------------------------------------------


def add_reproduce_parser(sub: Any) -> None:
    """`registry reproduce VERSION | --run-id ID [--allow-drift] [--from-features] [--keep DIR]`."""
    parser = sub.add_parser(
        "reproduce",
        help="rebuild a version from its run's record and compare (exit 0 identical, 1 differs)",
    )
    parser.add_argument("version", nargs="?", help="the registered version to rebuild")
    parser.add_argument("--run-id", help="rebuild this training run instead of a version")
    parser.add_argument(
        "--allow-drift",
        action="store_true",
        help="rebuild even when the commit, the tree, the lock or the packages differ from the run's",
    )
    parser.add_argument(
        "--from-features",
        action="store_true",
        help="start from the run's stored training table (no data fetch, no embedding)",
    )
    parser.add_argument(
        "--reuse-embeddings",
        action="store_true",
        help="take vectors from the embedding cache where it has them (faster; default: all "
        "computed again)",
    )
    parser.add_argument("--keep", type=Path, help="keep the rebuild's files in this new folder")


def run_reproduce(settings: Settings, name: str, args: Any, versions: Any) -> int:
    """The `reproduce` subcommand: exit 0 identical, 1 differs (the table), 2 via StageError."""
    if bool(args.version) == bool(args.run_id):
        raise StageError("reproduce takes a VERSION or --run-id ID (one of them)")
    if args.version:
        versions(name)  # an unknown --name: exit 2 with the registered ones, closest first
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        raise StageError(f"--keep {args.keep} holds files: name a new or empty folder")
    outcome = reproduce(
        settings,
        name,
        version=args.version,
        run_id=args.run_id,
        allow_drift=args.allow_drift,
        from_features=args.from_features,
        keep=args.keep,
        reuse_embeddings=args.reuse_embeddings,
    )
    print(outcome.table())
    return IDENTICAL if outcome.identical else DIFFERS
