"""Write docs/configuration.md from the settings object: every key, type, default, env variable.

    python scripts/gen_config_docs.py           # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check   # exit 1 if the committed file is stale

The page is generated, never edited: descriptions come from the ``Field(description=...)`` of
``financemath_mlops.config``, so a new setting is documented by describing it there.
tests/unit/test_config_docs.py fails when the committed page and the settings differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from financemath_mlops import config

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "docs" / "configuration.md"
DEFAULT_YAML = REPO_ROOT / "configs" / "default.yaml"

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


@dataclasses.dataclass(frozen=True)
class Mistake:
    """One row of the "Mistakes we catch" table.

    `shows` are fragments of what the user sees, in order. A row that gives `env`, `yaml`,
    `config` or `overrides` is a reproduction: tests/unit/test_config_docs.py loads the settings
    that way (the file as c.yaml in an empty folder) and checks the error holds every fragment,
    so the table cannot drift from the messages. Rows about other stages carry no reproduction:
    their own tests pin them.
    """

    mistake: str
    shows: tuple[str, ...]
    exit_code: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    yaml: str | None = None
    config: str | None = None
    overrides: dict[str, Any] | None = None
    flags: dict[str, str] | None = None

    @property
    def reproducible(self) -> bool:
        return bool(self.env or self.yaml or self.config or self.overrides)


MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        "an `FMOPS_` variable with a misspelt section: `FMOPS_SERVNG__API_KEY=...`",
        ("error: invalid configuration from env FMOPS_SERVNG__API_KEY:",
         "FMOPS_SERVNG__API_KEY: names no setting (closest: FMOPS_SERVING__API_KEY)"),
        "2",
        env={"FMOPS_SERVNG__API_KEY": "k"},
    ),
    Mistake(
        "one underscore where two belong: `FMOPS_SERVING_API_KEY=...`",
        ("FMOPS_SERVING_API_KEY: names no setting (closest: FMOPS_SERVING__API_KEY)",),
        "2",
        env={"FMOPS_SERVING_API_KEY": "k"},
    ),
    Mistake(
        "a value that does not parse: `FMOPS_TRAINING__LIGHTGBM='{objective: poisson}'`",
        ("error: invalid configuration from env FMOPS_TRAINING__LIGHTGBM:",
         "FMOPS_TRAINING__LIGHTGBM: is not JSON"),
        "2",
        env={"FMOPS_TRAINING__LIGHTGBM": "{objective: poisson}"},
    ),
    Mistake(
        "an empty value: `FMOPS_MLFLOW__TRACKING_URI=` (the same for `MLFLOW_TRACKING_URI`, "
        "`HF_TOKEN` and `FMOPS_CONFIG`)",
        ("FMOPS_MLFLOW__TRACKING_URI: is set but empty: unset it instead",),
        "2",
        env={"FMOPS_MLFLOW__TRACKING_URI": ""},
    ),
    Mistake(
        "a bad value: `FMOPS_INGESTION__SOURCE=ftp`",
        ("error: invalid configuration from env FMOPS_INGESTION__SOURCE:",
         "ingestion.source: Input should be 'hf', 'local' or 'sample' "
         "(got 'ftp' from env FMOPS_INGESTION__SOURCE)"),
        "2",
        env={"FMOPS_INGESTION__SOURCE": "ftp"},
    ),
    Mistake(
        "a bad flag value: `--cv-folds 1`",
        ("error: invalid configuration from flag --cv-folds:",
         "training.cv_folds: Input should be greater than or equal to 2 "
         "(got 1 from flag --cv-folds)"),
        "2",
        overrides={"training": {"cv_folds": 1}},
        flags={"training.cv_folds": "--cv-folds"},
    ),
    Mistake(
        "an unknown key in the YAML file: `ingestion: {sauce: hf}`",
        ("error: invalid configuration from file c.yaml:",
         "ingestion.sauce: unknown setting (in file:c.yaml:2; closest: ingestion.source)"),
        "2",
        yaml="ingestion:\n  sauce: hf\n",
    ),
    Mistake(
        "a section or key written twice in the YAML file",
        ("error: invalid configuration in file c.yaml: a key written twice",
         "training: line 1 and line 5"),
        "2",
        yaml="training:\n  seed: 1\ningestion:\n  rows: 5\ntraining:\n  cv_folds: 3\n",
    ),
    Mistake(
        "an unset variable in a path setting: `reports_dir: $REPORTS_ROOT/r`",
        ("paths.reports_dir: $REPORTS_ROOT is not set in the environment",
         "(got '$REPORTS_ROOT/r' from file:c.yaml:2)"),
        "2",
        yaml="paths:\n  reports_dir: $REPORTS_ROOT/r\n",
    ),
    Mistake(
        "a config file that does not exist: `--config nope.yaml`",
        ("error: config file not found: nope.yaml (from --config)",),
        "2",
        config="nope.yaml",
    ),
    Mistake(
        "a stage run from a subfolder of the project without `--config`",
        ("error: no configs/default.yaml in <cwd>; this is inside the project at <root>: "
         "run from there, or pass --config <root>/configs/default.yaml",),
        "2",
    ),
    Mistake(
        "an API key with a leading or trailing space or newline (read from a file)",
        ("serving.api_key: starts or ends with whitespace (a newline from a file?): strip it",
         "(env FMOPS_SERVING__API_KEY)"),
        "2",
        env={"FMOPS_SERVING__API_KEY": "key-from-a-file\n"},
    ),
    # Rows owned by the other stages (issue 28): their own tests pin the behaviour.
    Mistake(
        "the service listening beyond loopback (`--host 0.0.0.0`) without an API key and "
        "without `serving.allow_anonymous: true`",
        ("error: refusing to serve on 0.0.0.0 without an API key",
         "Set FMOPS_SERVING__API_KEY (serving.api_key), or FMOPS_SERVING__ALLOW_ANONYMOUS=true"),
        "2",
    ),
    Mistake(
        "an unknown LightGBM parameter: `FMOPS_TRAINING__LIGHTGBM='{\"objectiv\": \"poisson\"}'`",
        ("error: training.lightgbm", "found before cross-validation (nothing was trained or "
         "logged)", "objectiv: not a LightGBM parameter (did you mean 'objective'?)"),
        "2",
    ),
    Mistake(
        "two names of one LightGBM parameter: `bagging_fraction` beside the defaults' `subsample`",
        ("subsample and bagging_fraction: 2 names for LightGBM's bagging_fraction",),
        "2",
    ),
    Mistake(
        "a LightGBM setting the served tree evaluator cannot run: `linear_tree: true` (also "
        "categorical features, objectives without a known link)",
        ("model/trees.py (the served evaluator) cannot evaluate linear trees; remove linear_tree",),
        "2",
    ),
    Mistake(
        "a trained model that the serving path would score differently (the backstop after "
        "the fit)",
        ("Nothing was logged or registered: the check runs before the MLflow run is opened "
         "(no run, no model version, no alias moved)",),
        "2",
    ),
    Mistake(
        "a tracking server that refuses connections, does not resolve, or does not answer",
        ("error: cannot reach the MLflow tracking server http://…: connection refused by …",
         "within 8 s, before the stage's work"),
        "2",
    ),
    # Rows of the issue "Wrong inputs never make a wrong model": each stage's tests pin them.
    Mistake(
        "every row of the input rejected (`ingestion` or `predict`)",
        ("error: no valid row in bad.json: all 150 rows rejected", "nothing written, data/interim/financemath.jsonl and its rejects and manifest are unchanged",),
        "2",
    ),
    Mistake(
        "a flag the ingestion source does not read: `--source local --rows 10`",
        ("error: --rows 10 does not apply to --source local: --rows is read by --source sample only",),
        "2",
    ),
    Mistake(
        "`--path` with `--source sample` (or `hf`); `--split` / `--revision` off the hub",
        ("error: --path x.json does not apply to --source sample: --path is read by --source local only",),
        "2",
    ),
    Mistake(
        "`predict --workers 3` on the local executor",
        ("error: --workers 3 does not apply to the local executor (predict.executor): it is read by --executor dask only",),
        "2",
    ),
    Mistake(
        "a label column named `answer` instead of `ground_truth`",
        ("labelled: 0 of 6 rows have ground_truth", "warning: no row has ground_truth (the label column): ...; if 'answer' holds the answers, rename it to ground_truth",),
        "0 (reported; training on it exits 2)",
    ),
    Mistake(
        "a topic outside FinanceMath's 7: `Acounting` (`accounting` is matched as `Accounting`)",
        ("warning: 1 row has a topic that is none of FinanceMath's 7 (features score them as topic_other): 'Acounting' (1 row; closest: 'Accounting')",),
        "0 (reported)",
    ),
    Mistake(
        "a feature table without its own manifest (built before, or rewritten by another tool)",
        ("error: T carries no features manifest", "Re-run python -m financemath_mlops.features --output T",),
        "2",
    ),
    Mistake(
        "a feature table whose rows do not match its manifest (filtered, a column dropped, repeated ids)",
        ("error: T holds 40 rows but its manifest describes 80",),
        "2",
    ),
    Mistake(
        "`features --input` on rows ingestion did not write, or edited since",
        ("error: F is not a set of records ingestion vouched for", "or pass --validated-elsewhere",),
        "2",
    ),
    Mistake(
        "a duplicated `question_id` in the features input",
        ("error: F: question_id 'X' appears more than once", "Nothing was written.",),
        "2",
    ),
    Mistake(
        "evaluation or promotion following a pointer into another tracking store",
        ("error: T.trained.json names models:/… in the tracking store A, but this command uses the store B", "Pass --tracking-uri A",),
        "2",
    ),
    Mistake(
        "`--features` beside `--model-uri` in evaluation or promotion",
        ("error: evaluation: --features T would be ignored beside the model M",),
        "2",
    ),
    Mistake(
        "`monitoring drift` or `performance` (with `--fail-on-drift` too) on fewer rows than `monitoring.min_rows`",
        ("error: six.parquet: only 6 current rows (< 30), fewer than monitoring.min_rows", "lower the minimum with --min-rows N",),
        "2",
    ),
    Mistake(
        "`registry --name` misspelt (any command)",
        ("error: no model named 'financemath-regresor-sample' is registered", "registered, closest first: financemath-regressor-sample",),
        "2",
    ),
    Mistake(
        "`registry export --to DIR` on a folder holding other files",
        ("error: will not export to DIR: it is a folder holding 1 entry (notes.txt) that is not a model folder exported before", "registry export --force",),
        "2",
    ),
    Mistake(
        "`features` or `predict` with `--workers 3` (or `--dask-address`) on the local executor",
        ("error: --workers 3 does not apply to the local executor (features.executor): it is read by --executor dask only",),
        "2",
    ),
    Mistake(
        "`features --input other.jsonl` beside a manifest copied from other records",
        ("error: other.jsonl is not a set of records ingestion vouched for: its sha256 … is none of the records other.manifest.json lists",),
        "2",
    ),
    Mistake(
        "`registry export --to DIR` over an earlier export you added files to",
        ("error: will not export to DIR: it is an earlier export holding 1 entry (notes.txt) it did not write", "registry export --force",),
        "2",
    ),
    Mistake(
        "evaluation or promotion with a pointer whose run the current store does not hold (the same store under another address is recognised by the run id)",
        ("error: …names models:/NAME/N (run R) in the tracking store A, but this command uses the store B (there models:/NAME/N is run R2: version numbers are per store)",),
        "2",
    ),
    Mistake(
        "serving a model trained on another feature version (same columns, other meaning)",
        ("model was trained on feature version 1, this code builds version 2", "retrain it, or serve it with the code that trained it",),
        "not ready (`/ready` 503 with the reason)",
    ),
    Mistake(
        "`registry promote V` or `registry rollback` without `--reason`",
        ("registry promote needs --reason TEXT: why this move",),
        "2",
    ),
    Mistake(
        "`registry history --at 'last tuesday'`",
        ("--at 'last tuesday' is not a date or time: give YYYY-MM-DD",),
        "2",
    ),
    Mistake(
        "`registry reproduce V` in a checkout, lock or venv that is not the run's",
        ("this checkout is not the one that trained the run:", "or pass --allow-drift",),
        "2",
    ),
    Mistake(
        "`registry reproduce V` when the run's data file has changed since",
        ("the data differs from the run's:", "Nothing was rebuilt",),
        "2",
    ),
    Mistake(
        "`registry reproduce` with neither or both of `VERSION` and `--run-id`",
        ("reproduce takes a VERSION or --run-id ID (one of them)",),
        "2",
    ),
    Mistake(
        "int8 embeddings (`FMOPS_FEATURES__EMBEDDING__PRECISION=int8`) with `FMOPS_FEATURES__EMBEDDING__BACKEND=sentence-transformers`",
        ("precision int8 is an ONNX bundle: with backend sentence-transformers set",
         "features.embedding.precision: fp32"),
        "2",
        env={
            "FMOPS_FEATURES__EMBEDDING__PRECISION": "int8",
            "FMOPS_FEATURES__EMBEDDING__BACKEND": "sentence-transformers",
        },
    ),
    Mistake(
        "a mistyped flag on any command: `--traking-uri URI`",
        ("unrecognized arguments: --traking-uri", "(closest: --traking-uri -> --tracking-uri)"),
        "2",
    ),
    Mistake(
        "training on a feature table built by another feature version",
        ("was built by feature version", "this code builds version"),
        "2",
    ),
    Mistake(
        "`evaluation report --unlabelled FILE` naming a missing file",
        ("--unlabelled file not found: FILE",),
        "2",
    ),
    Mistake(
        "`monitoring history --index FILE`, FILE missing",
        ("--index FILE: no such file; the index of this checkout's reports is",),
        "2",
    ),
    Mistake(
        "`monitoring history --plot x.jpg`",
        ("--plot x.jpg: the picture is a PNG; end it in .png",),
        "2",
    ),
)  # fmt: skip


def type_name(annotation: Any) -> str:
    """A short, readable type: 'hf' | 'local', Path | None, dict[str, Any]."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "Any"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def bounds_text(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attribute, symbol in _BOUNDS:
            bound = getattr(item, attribute, None)
            if bound is not None:
                parts.append(f"{symbol} {bound}")
    return ", ".join(parts)


def is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def sections(
    model: type[BaseModel], prefix: str = ""
) -> list[tuple[str, type[BaseModel], list[tuple[str, FieldInfo]]]]:
    """(dotted section name, model, its leaf fields) for every section, depth first."""
    out: list[tuple[str, type[BaseModel], list[tuple[str, FieldInfo]]]] = []
    leaves = [
        (name, field)
        for name, field in model.model_fields.items()
        if not is_section(field.annotation)
    ]
    if prefix:
        out.append((prefix, model, leaves))
    for name, field in model.model_fields.items():
        if is_section(field.annotation):
            dotted = f"{prefix}.{name}" if prefix else name
            out.extend(sections(field.annotation, dotted))
    return out


def cell(text: str) -> str:
    """Table-safe text: pipes escaped, and <placeholders> outside code spans kept visible."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def code(text: str) -> str:
    return f"`{text.replace('|', chr(92) + '|')}`" if text else ""


def yaml_values(path: Path = DEFAULT_YAML) -> dict[str, Any]:
    """Dotted key -> value of the shipped YAML file (to flag where it departs from the code)."""
    import yaml

    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in (node or {}).items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and dotted != "training.lightgbm":
                walk(value, dotted)
            else:
                out[dotted] = value

    walk(yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}, "")
    return out


def same_value(built_in: Any, from_yaml: Any) -> bool:
    if isinstance(built_in, Path) or isinstance(from_yaml, Path):
        return str(built_in) == str(from_yaml)
    return built_in == from_yaml


def rst_to_md(text: str) -> str:
    """Docstring to Markdown: ``code`` to `code`, and each paragraph on one line (a wrapped line
    starting with '>' would otherwise become a quote)."""
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    return re.sub(r"``([^`]+)``", r"`\1`", "\n\n".join(paragraphs))


def render() -> str:
    """The whole page, deterministic (no dates, no machine-specific paths)."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from financemath_mlops.config.Settings."
        " Do not edit: describe a setting with Field(description=...) and regenerate. -->",
        "",
        rst_to_md(config.__doc__ or "").strip(),
        "",
        "- The YAML file: `configs/default.yaml` in the working directory, or the file given by "
        f"`--config` or `{config.CONFIG_ENV}`. Every run logs at INFO which file it read, or that "
        "it read none (built-in defaults). Run from a subfolder of the project without "
        "`--config`, a stage stops (exit 2) instead of silently using the built-in defaults.",
        "- The file is read strictly: a section or key written twice is an error naming both "
        "lines.",
        "- Environment: `FMOPS_<SECTION>__<KEY>` (nested sections add `__<KEY>`). Any other "
        "`FMOPS_` variable stops every entry point (exit 2) naming it and the closest setting, "
        "except the names the CLIs and docker compose read "
        f"({', '.join(f'`{name}`' for name in sorted(config.ENV_NOT_SETTINGS))}) and "
        f"`{config.TEST_ENV_PREFIX}*` switches read by tests only. An empty value is refused "
        "(unset the variable instead); so is an empty `MLFLOW_TRACKING_URI` or `HF_TOKEN`.",
        "- One merge rule for every source: sections merge key by key, and so does a dict setting "
        "such as `training.lightgbm`: a file's `training: {lightgbm: {num_leaves: 15}}` changes "
        "one parameter and keeps the other defaults, exactly as "
        "`FMOPS_TRAINING__LIGHTGBM='{\"num_leaves\": 15}'` (JSON) or "
        "`FMOPS_TRAINING__LIGHTGBM__NUM_LEAVES=15` (one key, read as a YAML value: `15` is a "
        "number, `true` a boolean) does. A `null` value removes a key, a default one included "
        "(`subsample: null`, `FMOPS_TRAINING__LIGHTGBM__SUBSAMPLE=null`).",
        "- Relative paths are relative to the working directory. `~` and `$VAR` / `${VAR}` in "
        "path settings, `mlflow.artifact_root` and a `sqlite:///` or `file:` tracking URI are "
        "expanded; a variable that is not set is refused, never created as a literal folder.",
        "- `FMOPS_` variables are written in capitals; one that names no setting is refused "
        "unless another tool reads it (`config.ENV_NOT_SETTINGS`) or it starts with `FMOPS_TEST_` "
        "(the test suite's switches).",
        "- An error names the bad key and the source that set it (`env FMOPS_...`, "
        "`file:PATH:LINE`, or the flag). `python -m financemath_mlops.config show` prints every "
        "effective value and where it came from (secrets and URI passwords masked); `check` only "
        "validates the settings. The values of `training.lightgbm` are checked by LightGBM's own "
        "parser when training or the flow starts, before any other work, not by `config check`.",
        "- *Default* is the built-in default; where `configs/default.yaml` sets another value, "
        "the cell says so.",
        "",
    ]
    shipped = yaml_values()
    for dotted, model, leaves in sections(config.Settings):
        lines += [f"## `{dotted}`", ""]
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith(model.__name__ + "("):
            lines += [rst_to_md(doc), ""]
        lines += [
            "| Key | Type | Default | Allowed | Environment variable | Description |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, field in leaves:
            key = f"{dotted}.{name}"
            default = code(default_text(field))
            built_in = field.get_default(call_default_factory=True)
            if key in shipped and not same_value(built_in, shipped[key]):
                default += f" (configs/default.yaml: {code(str(shipped[key]))})"
            lines.append(
                "| "
                + " | ".join(
                    [
                        code(key),
                        code(type_name(field.annotation)),
                        default,
                        code(bounds_text(field)),
                        code(config.env_name(key)),
                        cell(field.description or ""),
                    ]
                )
                + " |"
            )
        lines.append("")
    lines += mistakes_table()
    return "\n".join(lines).rstrip() + "\n"


def mistakes_table() -> list[str]:
    lines = [
        "## Mistakes we catch",
        "",
        "A default is chosen on purpose, never by a typo: each of these stops the run with a "
        "message naming the mistake (a `...` fragment is the start or a part of it). The "
        "configuration ones stop it before any work, and `python -m financemath_mlops.config "
        "check` finds them without running a stage.",
        "",
        "| Mistake | What you see | Exit code |",
        "| --- | --- | --- |",
    ]
    for row in MISTAKES:
        seen = " … ".join(code(text) if row.reproducible or text.startswith("error:") else
                          cell(text) for text in row.shows)  # fmt: skip
        lines.append(f"| {cell(row.mistake)} | {seen} | {row.exit_code} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/configuration.md.")
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(
                f"{args.output} is stale: run `python scripts/gen_config_docs.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
