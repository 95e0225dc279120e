"""Where each setting comes from: the strict YAML reader, the ``FMOPS_`` environment, one merge rule.

``config.load_settings`` stacks layers, lowest first: built-in defaults, the YAML file,
``MLFLOW_TRACKING_URI`` / ``HF_TOKEN``, ``FMOPS_`` variables, flags. One rule merges them: a
section merges key by key, and so does a dict setting (``training.lightgbm``), over the defaults,
whichever layer writes it; a null inside a dict setting removes that key. Every value remembers
its :class:`Origin`, so an error names the variable, file line or flag at fault and
``python -m financemath_mlops.config show`` says where each value came from.

This module knows the settings only by their shape (a :class:`Schema`), so ``config`` imports it
and never the reverse. Nothing here reads the environment or a file until asked.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from financemath_mlops.names import closest

ENV_PREFIX = "FMOPS_"
DELIMITER = "__"
# Settings a user sets through another tool's own variable: an empty one is refused like ours.
THIRD_PARTY_ENV = {"MLFLOW_TRACKING_URI": "mlflow.tracking_uri", "HF_TOKEN": "ingestion.hf_token"}


class ConfigError(ValueError):
    """A configuration problem, with a message that names the bad key and where it was set."""


def env_name(dotted: str) -> str:
    """The environment variable for a settings path, e.g. 'ingestion.source' -> FMOPS_INGESTION__SOURCE."""
    return ENV_PREFIX + DELIMITER.join(part.upper() for part in dotted.split("."))


@dataclass(frozen=True)
class Origin:
    """Where one value came from: the built-in default, a file (and line), a variable or a flag."""

    kind: str  # "default" | "file" | "env" | "flag"
    name: str = ""
    line: int | None = None

    @property
    def source(self) -> str:
        """The source without the line: 'file c.yaml', 'env FMOPS_TRAINING__SEED', 'flag --rows'."""
        if self.kind == "default":
            return "built-in default"
        if self.kind == "flag":
            return f"flag {self.name}" if self.name else "a command-line value"
        return f"{self.kind} {self.name}"

    def __str__(self) -> str:
        if self.kind == "file":
            return f"file:{self.name}" + (f":{self.line}" if self.line else "")
        if self.kind == "default":
            return "default"
        return self.source


DEFAULT = Origin("default")


@dataclass(frozen=True)
class Schema:
    """The shape of a settings model: dotted names of its sections, leaves and dict settings."""

    sections: frozenset[str]
    leaves: frozenset[str]
    dicts: Mapping[str, dict[str, Any]]  # dict setting -> its built-in default
    secrets: frozenset[str]
    # Old key -> the setting it feeds (the model moves the value; origins follow it here).
    aliases: Mapping[str, str] = field(default_factory=dict)

    def env_index(self) -> dict[str, str]:
        """Every environment name that is a setting or a section -> its dotted name."""
        return {env_name(dotted): dotted for dotted in self.sections | self.leaves}

    def siblings(self, dotted: str) -> list[str]:
        parent = dotted.rpartition(".")[0]
        return [
            name
            for name in self.sections | self.leaves
            if name.rpartition(".")[0] == parent and name != dotted
        ]


def annotation_has(annotation: Any, kind: type) -> bool:
    if annotation is kind:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(annotation_has(arg, kind) for arg in typing.get_args(annotation))
    return False


def is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def schema_of(model: type[BaseModel], aliases: Mapping[str, str] | None = None) -> Schema:
    """The :class:`Schema` of a pydantic settings model (nested models are sections)."""
    sections: set[str] = set()
    leaves: set[str] = set()
    dicts: dict[str, dict[str, Any]] = {}
    secrets: set[str] = set()

    def walk(node: type[BaseModel], prefix: str) -> None:
        for name, info in node.model_fields.items():
            dotted = f"{prefix}.{name}" if prefix else name
            if is_section(info.annotation):
                sections.add(dotted)
                walk(info.annotation, dotted)
                continue
            leaves.add(dotted)
            if typing.get_origin(info.annotation) is dict:
                dicts[dotted] = dict(info.get_default(call_default_factory=True) or {})
            if annotation_has(info.annotation, SecretStr):
                secrets.add(dotted)

    walk(model, "")
    return Schema(frozenset(sections), frozenset(leaves), dicts, frozenset(secrets), aliases or {})


# --- the YAML file, read strictly -------------------------------------------------------------


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping and the line of every dotted key. A key written twice in one mapping
    is an error naming both lines: PyYAML would silently keep the last one."""
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"could not read config {path}: {exc}") from None
    lines: dict[str, int] = {}
    twice: list[str] = []
    _walk_nodes(root, "", lines, twice)
    if twice:
        raise ConfigError(
            f"invalid configuration in file {path}: a key written twice (only the last would "
            "count); keep one:\n" + "\n".join(f"  {entry}" for entry in twice)
        )
    if data is None:
        return {}, lines
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid configuration in file {path}: expected sections such as `training:` at "
            f"the top, found a {type(data).__name__}"
        )
    return data, lines


def _walk_nodes(node: Any, prefix: str, lines: dict[str, int], twice: list[str]) -> None:
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _walk_nodes(item, prefix + "[]", lines, twice)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` is YAML's own merge
            continue
        key = str(getattr(key_node, "value", key_node))
        line = key_node.start_mark.line + 1
        dotted = f"{prefix}.{key}" if prefix else key
        if key in seen:
            twice.append(f"{dotted}: line {seen[key]} and line {line}")
        else:
            seen[key] = line
            lines[dotted] = line
        _walk_nodes(value_node, dotted, lines, twice)


# --- the merge rule ----------------------------------------------------------------------------


class Layers:
    """The merged raw values of every layer put so far, and where each value came from."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.values: dict[str, Any] = {}
        self.origins: dict[str, Origin] = {}

    def put_all(self, mapping: Mapping[str, Any], origin: Callable[[str], Origin]) -> None:
        """Put every top-level entry of a nested mapping (a file, a section of flags)."""
        for key, value in mapping.items():
            self.put(str(key), value, origin)

    def put(self, dotted: str, value: Any, origin: Callable[[str], Origin]) -> None:
        """Set one setting, or merge a section or dict setting given as a mapping."""
        schema = self.schema
        if dotted in schema.sections and (value is None or isinstance(value, dict)):
            # A section left empty in YAML (every key commented out) sets nothing.
            for key, item in (value or {}).items():
                self.put(f"{dotted}.{key}", item, origin)
            return
        if dotted in schema.dicts and isinstance(value, dict):
            current = self._get(dotted)
            merged = dict(current if isinstance(current, dict) else schema.dicts[dotted])
            for key, item in value.items():
                entry = f"{dotted}.{key}"
                if item is None:  # null removes a key, a default one included
                    merged.pop(key, None)
                    self.origins.pop(entry, None)
                else:
                    merged[key] = item
                    self.origins[entry] = origin(entry)
            self._set(dotted, merged)
            self.origins[dotted] = origin(dotted)
            return
        if dotted in schema.aliases and schema.aliases[dotted] not in self.origins:
            self.origins[schema.aliases[dotted]] = origin(dotted)
        self._set(dotted, value)
        self.origins[dotted] = origin(dotted)

    def origin_of(self, dotted: str) -> Origin:
        """Where the value at `dotted` came from: its own origin, its nearest set parent's, or
        the one origin of the values under it (for a whole-section error)."""
        found = self.origins_of(dotted)
        return found[0] if len(found) == 1 else DEFAULT

    def origins_of(self, dotted: str) -> list[Origin]:
        """Every source of the value at `dotted`: its own origin or its nearest set parent's;
        for a section set piecewise, the sources of the values under it, the variables and flags
        (the layers on top) when there are any, else each file once (a rule that couples two
        settings set by two variables names both, not "built-in default"); [DEFAULT] when
        nothing set it."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            found = self.origins.get(".".join(parts[:end]))
            if found is not None:
                return [found]
        below = [o for k, o in sorted(self.origins.items()) if k.startswith(dotted + ".")]
        on_top = [o for o in below if o.kind in ("env", "flag")]
        files = [Origin("file", o.name) for o in below if o.kind == "file"]
        return list(dict.fromkeys(on_top or files)) or [DEFAULT]

    def _get(self, dotted: str) -> Any:
        node: Any = self.values
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def _set(self, dotted: str, value: Any) -> None:
        *parents, last = dotted.split(".")
        node = self.values
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value


# --- the environment ---------------------------------------------------------------------------


def environment_entries(
    environ: Mapping[str, str],
    schema: Schema,
    *,
    not_settings: frozenset[str],
    test_prefix: str,
) -> list[tuple[str, Any, Origin]]:
    """(dotted key, value, origin) of the third-party variables, then every ``FMOPS_`` variable,
    in the order to put them (a whole section before its single keys: the specific one wins).

    Refused, all at once, naming each variable: an ``FMOPS_`` name that is no setting (nor in
    `not_settings`, nor under `test_prefix`), an empty value (unset it instead), and a value that
    does not parse (JSON for a section or dict setting; a YAML scalar for one key of a dict
    setting, so ``FMOPS_TRAINING__LIGHTGBM__N_ESTIMATORS=50`` is the int 50, as in a file).
    """
    index = schema.env_index()
    problems: list[tuple[str, str]] = []
    entries: list[tuple[int, str, Any, Origin]] = []
    for name, dotted in THIRD_PARTY_ENV.items():
        if name in environ:
            if not environ[name].strip():
                problems.append((name, _EMPTY))
            else:
                entries.append((-1, dotted, environ[name], Origin("env", name)))
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        if name != upper:
            # Variables are case-sensitive: `fmops_config` is not what FMOPS_CONFIG's reader reads.
            problems.append((name, f"is not in capitals: write it {upper} (or unset it)"))
            continue
        if upper in not_settings:
            continue
        if upper.startswith(test_prefix):
            continue
        raw = environ[name]
        dotted, key = index.get(upper), None
        if dotted is None:
            dotted, key = _dict_entry(upper, schema)
        if dotted is None:
            near = closest(upper, [*index, *not_settings])
            hint = f"closest: {near}" if near else "no setting has a similar name"
            problems.append(
                (
                    name,
                    f"names no setting ({hint}). A setting's variable is "
                    f"FMOPS_<SECTION>{DELIMITER}<KEY> with two underscores between the parts "
                    "(docs/configuration.md lists them all): fix the name or unset it",
                )
            )
            continue
        if not raw.strip():
            problems.append((name, _EMPTY))
            continue
        origin = Origin("env", name)
        try:
            if key is not None:
                value: Any = {key: _yaml_scalar(raw)}
            elif dotted in schema.sections or dotted in schema.dicts:
                value = _json_object(name, raw, dotted, schema)
            else:
                value = raw
        except ValueError as exc:
            problems.append((name, str(exc)))
            continue
        depth = dotted.count(".") + (1 if key is not None else 0)
        entries.append((depth, dotted, value, origin))
    if problems:
        culprits = ", ".join(f"env {name}" for name, _ in problems)
        raise ConfigError(
            f"invalid configuration from {culprits}:\n"
            + "\n".join(f"  {name}: {text}" for name, text in problems)
        )
    ordered = sorted(entries, key=lambda entry: entry[0])
    return [(dotted, value, origin) for _, dotted, value, origin in ordered]


_EMPTY = "is set but empty: unset it instead (an empty value would silently mean a default)"


def _dict_entry(upper: str, schema: Schema) -> tuple[str | None, str | None]:
    """FMOPS_TRAINING__LIGHTGBM__N_ESTIMATORS -> ('training.lightgbm', 'n_estimators')."""
    for dotted in schema.dicts:
        prefix = env_name(dotted) + DELIMITER
        if upper.startswith(prefix) and len(upper) > len(prefix):
            return dotted, upper[len(prefix) :].lower()
    return None, None


def _yaml_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"does not parse as a YAML value: {exc}") from None


def _json_object(name: str, raw: str, dotted: str, schema: Schema) -> dict[str, Any]:
    example = (
        f"{name}='{{\"n_estimators\": 500}}', or one key: {name}{DELIMITER}N_ESTIMATORS=500"
        if dotted in schema.dicts
        else f'{name}=\'{{"key": "value"}}\', or one key: {name}{DELIMITER}<KEY>=value'
    )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc}); give a JSON object, e.g. {example}") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object, got {type(value).__name__}; e.g. {example}")
    return value


# --- values: paths, errors, the effective table ------------------------------------------------

_UNEXPANDED = re.compile(r"\$(\w+|\{[^}]*\})")


def expand_path_text(text: str) -> str:
    """``~`` and ``$VAR`` / ``${VAR}`` expanded; a reference left unexpanded is refused, so no
    literal ``./~`` or ``./$HOME`` folder is ever created."""
    expanded = os.path.expanduser(os.path.expandvars(text))
    unexpanded = _UNEXPANDED.search(expanded)
    if unexpanded:
        raise ValueError(
            f"{unexpanded.group(0)} is not set in the environment: set it, or write the path out"
        )
    if expanded.startswith("~"):
        raise ValueError(f"{expanded.split('/')[0]} is no user's home: write the path out")
    return expanded


def describe(exc: ValidationError, layers: Layers) -> str:
    """A validation error for people: each bad key, what it got, and the source that set it
    (file and line, variable or flag); unknown keys get the closest real name."""
    schema = layers.schema
    lines: list[str] = []
    culprits: list[str] = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        origins = layers.origins_of(key)
        culprits.extend(o.source for o in origins if o.source not in culprits)
        where = ", ".join(str(o) if o.kind == "file" else o.source for o in origins)
        if err["type"] == "extra_forbidden":
            near = closest(
                key.rpartition(".")[2], [s.rpartition(".")[2] for s in schema.siblings(key)]
            )
            parent = key.rpartition(".")[0]
            hint = f"; closest: {parent + '.' if parent else ''}{near}" if near else ""
            lines.append(f"  {key}: unknown setting (in {where}{hint})")
            continue
        got = err.get("input")
        secret = key in schema.secrets or any(w in key for w in ("token", "key", "password"))
        shown = "" if secret or isinstance(got, dict | list) else f"got {got!r} from "
        message = str(err["msg"]).removeprefix("Value error, ")
        message = message.removeprefix(f"{key} ({env_name(key)}) ")  # the line names them
        lines.append(f"  {key}: {message} ({shown}{where})")
    return f"invalid configuration from {', '.join(culprits)}:\n" + "\n".join(lines)


def effective_values(
    values: Mapping[str, Any], layers: Layers, prefix: str = ""
) -> list[tuple[str, str, str]]:
    """(dotted key, shown value, origin) of every setting in a dumped settings object; each key
    of a dict setting on its own row, secrets masked."""
    rows: list[tuple[str, str, str]] = []
    schema = layers.schema
    for name, value in values.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if dotted in schema.sections:
            rows += effective_values(value, layers, dotted)
        elif dotted in schema.dicts:
            for key, item in value.items():
                entry = f"{dotted}.{key}"
                origin = layers.origins.get(
                    entry, DEFAULT
                )  # not the dict's: a key may be a default
                rows.append((entry, json.dumps(item), str(origin)))
        else:
            rows.append(
                (dotted, _shown(value, dotted in schema.secrets), str(layers.origin_of(dotted)))
            )
    return rows


def _shown(value: Any, secret: bool) -> str:
    if secret:
        return "null" if value is None else "******** (set)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return mask_url_password(str(value))


def mask_url_password(text: str) -> str:
    """``https://user:***@host``: a password written into a URI (a tracking store's) is never
    shown, in ``config show`` or in an error message that quotes the URI (settings and messages: short, trusted text)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@")
