"""Read what the deployment files say: Dockerfile stages (CMD, ENV, USER, HEALTHCHECK, COPY) and
the compose services. Used by the tests that check those files and run their commands outside
Docker; standard library plus PyYAML, no Docker needed.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
_VARIABLE = re.compile(r"\$\{?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Image:
    """The effective settings of one build target (its stage and the stages it is built FROM)."""

    stages: list[Stage]  # the chain, base first
    env: dict[str, str]
    user: str | None
    workdir: str | None
    cmd: list[str] | None
    healthcheck: list[str] | None  # the CMD of HEALTHCHECK; None also for HEALTHCHECK NONE

    def instructions(self, keyword: str) -> list[str]:
        return [args for stage in self.stages for args in stage.of(keyword)]


def logical_lines(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # a comment line inside a continued instruction
        if line.endswith("\\"):
            buffer += line[:-1].rstrip() + " "
            continue
        buffer += line
        keyword, _, args = buffer.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        buffer = ""
    return out


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in file order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in logical_lines(path.read_text(encoding="utf-8")):
        if keyword == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            base = _VARIABLE.sub(lambda m: global_args.get(m["name"], m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            stages.append(Stage(name, base))
        elif not stages:
            if keyword == "ARG":
                key, _, value = args.partition("=")
                global_args[key.strip()] = value.strip()
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def json_form(args: str, what: str) -> list[str]:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        raise ValueError(f"{what} is not in JSON (exec) form: {args}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is not a JSON list of strings: {args}")
    return value


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def image(path: Path, target: str | None = None) -> Image:
    """The effective image of ``target`` (default: the last stage, as `docker build` does)."""
    _, stages = parse_dockerfile(path)
    by_name = {stage.name: stage for stage in stages if stage.name}
    stage = by_name[target] if target else stages[-1]
    chain = [stage]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    env: dict[str, str] = {}
    user = workdir = None
    cmd = healthcheck = None
    for each in chain:
        for keyword, args in each.instructions:
            if keyword == "ENV":
                for key, value in parse_env(args).items():
                    env[key] = _VARIABLE.sub(lambda m: env.get(m["name"], m.group(0)), value)
            elif keyword == "USER":
                user = args
            elif keyword == "WORKDIR":
                workdir = args
            elif keyword == "CMD":
                cmd = json_form(args, f"CMD of {path.name}")
            elif keyword == "HEALTHCHECK":
                if args.strip().upper() == "NONE":
                    healthcheck = None
                else:
                    _, _, command = args.partition("CMD ")
                    healthcheck = json_form(command, f"HEALTHCHECK of {path.name}")
    return Image(chain, env, user, workdir, cmd, healthcheck)


def dockerfiles() -> list[Path]:
    return sorted(DOCKER_DIR.glob("*Dockerfile*"))


def compose() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def compose_dockerfile(service: dict[str, Any]) -> Path | None:
    """The Dockerfile a compose service is built from, if any."""
    build = service.get("build")
    if not build:
        return None
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return context / build.get("dockerfile", "Dockerfile")
