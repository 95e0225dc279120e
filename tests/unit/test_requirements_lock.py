"""The hashed locks (requirements/<set>.txt, written by `make lock`) cover what they install.

Every installer runs `install --require-hashes --no-deps -r requirements/<set>.txt` after torch
(itself `--no-deps`, the CPU build): uv through scripts/install.sh for `make` and CI (pip when uv
cannot be had), pip in both Dockerfiles. With `--no-deps` nothing the lock misses is ever
fetched, so a lock that lacks one distribution of its extra's closure breaks at import time, not
at install. These tests walk that closure over the installed
metadata of the dev venv (which `make test` builds from requirements/dev.txt), offline.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "requirements"
PROJECT = canonicalize_name("financemath-mlops")
# The extras that have a lock of their own, each requirements/<extra>.txt.
EXTRA_SETS = ("serving", "pipeline", "dev")
# What the locks are resolved for (`make lock`): the images' platform and the dev machines'.
TARGET = {
    **default_environment(),
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "x86_64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "python_version": "3.11",
    "python_full_version": "3.11.0",  # `--python-version 3.11`: every 3.11.x, Debian's 3.11.2 too
}
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    version: str
    sha256: tuple[str, ...]


def read_lock(path: Path) -> dict[str, Pin]:
    """The pins of a requirements file: name -> exact version and its sha256 hashes."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pins: dict[str, Pin] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{path.name}: an option line would change pip: {line}"
        spec = line.split(" --hash", 1)[0].strip()
        requirement = Requirement(spec)
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET):
            continue
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {spec} is not an exact pin"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = Pin(specifier.version, tuple(_HASH.findall(line)))
    return pins


def pyproject_requirements(extra: str) -> list[Requirement]:
    """The core dependencies plus those of ``extra``, through self-references such as
    ``financemath-mlops[serving]``: what the project asks for, from pyproject.toml."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    out = [Requirement(text) for text in project["dependencies"]]
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        seen.add(current)
        for requirement in map(Requirement, optional[current]):
            if canonicalize_name(requirement.name) == PROJECT:
                pending += [e for e in requirement.extras if e not in seen]
            else:
                out.append(requirement)
    return out


def lint_requirements() -> list[Requirement]:
    lines = (REQUIREMENTS / "lint.in").read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def closure(roots: list[Requirement], lock: dict[str, Pin]) -> set[str]:
    """Every distribution ``roots`` pull in on the target, walked over the installed metadata.

    Each one reached must be pinned (torch aside: it is installed first, outside the lock) at a
    version its requirer accepts, with the installed version equal to the pin, so the metadata
    walked is the metadata of what the lock installs. A pin this interpreter does not need (a
    marker such as ``python_full_version < '3.11.3'``) is not installed here, so not walked.
    """
    reached: dict[str, set[str]] = {}
    queue = [(requirement, "pyproject.toml", {""}) for requirement in roots]
    while queue:
        requirement, requirer, requirer_extras = queue.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in reached and extras <= reached[name]:
            continue
        reached.setdefault(name, set()).update(extras)
        if name == "torch":
            assert name not in lock, "torch is installed first from its CPU build, not by the lock"
            version = metadata.version(name).split("+")[0]
        else:
            assert name in lock, f"{requirement} (required by {requirer}) is not in the lock"
            version = lock[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirer} requires {requirement}, the lock pins {version}"
        )
        try:
            installed = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            here = [{**default_environment(), "extra": e} for e in requirer_extras]
            marker = requirement.marker
            assert marker is not None and not any(marker.evaluate(env) for env in here), (
                f"{name} is not installed: `make install`"
            )
            continue
        if name != "torch":
            assert installed.version == version, (
                f"the venv has {name} {installed.version}, the lock {version}: `make install`"
            )
        walked = reached[name] or {""}
        environments = [{**TARGET, "extra": e} for e in walked]
        for text in installed.requires or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                queue.append((child, f"{name} {version}", walked))
    return set(reached)


@pytest.mark.parametrize("extra", EXTRA_SETS)
def test_lock_pins_exactly_the_closure_of_its_extra_with_hashes(extra: str) -> None:
    lock = read_lock(REQUIREMENTS / f"{extra}.txt")
    needed = closure(pyproject_requirements(extra), lock)
    assert set(lock) == needed - {"torch"}, (
        f"requirements/{extra}.txt pins more than its extra needs: {sorted(set(lock) - needed)}"
    )
    unhashed = sorted(name for name, pin in lock.items() if not pin.sha256)
    assert not unhashed, f"requirements/{extra}.txt: no sha256 hash for {unhashed}"


def test_lint_lock_pins_the_linters_and_what_they_need_with_hashes() -> None:
    lock = read_lock(REQUIREMENTS / "lint.txt")
    assert set(lock) == closure(lint_requirements(), lock)
    assert all(pin.sha256 for pin in lock.values())
    dev = {canonicalize_name(r.name) for r in pyproject_requirements("dev")}
    assert {canonicalize_name(r.name) for r in lint_requirements()} <= dev


def test_every_lock_agrees_with_the_dev_lock_and_leaves_torch_out() -> None:
    """One version of each distribution everywhere: the images run what `make test` tested."""
    dev = read_lock(REQUIREMENTS / "dev.txt")
    for name in (*EXTRA_SETS, "lint"):
        lock = read_lock(REQUIREMENTS / f"{name}.txt")
        assert "torch" not in lock and not [d for d in lock if d.startswith("nvidia-")], name
        differ = {d: (pin.version, dev[d].version) for d, pin in lock.items() if pin != dev.get(d)}
        assert not differ, f"requirements/{name}.txt differs from dev.txt: {differ}"
    serving = read_lock(REQUIREMENTS / "serving.txt")
    assert {"onnxruntime", "tokenizers", "fastapi", "uvicorn"} <= set(serving)
    assert not {"prefect", "evidently", "sentence-transformers"} & set(serving)


# --- every installer uses the lock of its set, with hashes ------------------------------------


def test_images_install_their_lock_with_hashes_before_the_source() -> None:
    """uv, bootstrapped in the build from its hashed pin, installs the image's lock with hashes,
    torch as its CPU build by name, then the project; bytecode compiled at build (the runtime
    user cannot write it), uv and its cache left in the builder stage."""
    for dockerfile, lock in (("inference", "serving"), ("pipeline", "pipeline")):
        text = (REPO_ROOT / "docker" / f"{dockerfile}.Dockerfile").read_text(encoding="utf-8")
        flat = re.sub(r"\\\n\s*", " ", text)
        builder, runtime = flat.split(" AS runtime", 1)
        bootstrap = re.search(r"pip install [^\n]*-r requirements/uv-tool\.txt", builder)
        assert bootstrap and "--require-hashes --no-deps" in bootstrap[0], dockerfile
        uv = "/opt/uv/bin/uv pip install --python /opt/venv/bin/python"
        install = re.search(rf"{re.escape(uv)} [^\n]*-r requirements/{lock}\.txt", builder)
        assert install, f"{dockerfile}.Dockerfile does not install requirements/{lock}.txt with uv"
        assert "--require-hashes" in install[0] and "--no-deps" in install[0]
        assert builder.index(bootstrap[0]) < builder.index(install[0])
        assert flat.index(f"COPY requirements/{lock}.txt") < flat.index("COPY src")
        assert flat.index(install[0]) < flat.index("COPY src")
        project = re.search(rf"{re.escape(uv)} --no-deps (--editable )?\.(\s|$)", builder)
        assert project, f"{dockerfile}.Dockerfile must install the project itself with --no-deps"
        assert "uv pip check --python /opt/venv/bin/python" in builder
        for variable in ("UV_COMPILE_BYTECODE=1", "UV_NO_CACHE=1", "UV_SYSTEM_CERTS=1"):
            assert variable in builder, f"{dockerfile}.Dockerfile: {variable}"
        assert "/opt/uv" not in runtime, "uv stays in the builder stage"
        torch = re.findall(r"install [^\n]*torch==[^\n]*", flat)
        assert len(torch) == (dockerfile == "pipeline")
        for line in torch:  # the CPU build by name; its dependencies come from the lock, hashed
            assert "--no-deps" in line and re.search(r"torch==\S+\+cpu\b", line), line


def makefile_rule(makefile: str, target: str) -> str:
    """The rule of ``target`` (its prerequisites line and recipe), up to the next blank line."""
    return makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]


def test_each_command_installs_its_set_and_a_set_stamps_only_the_sets_it_contains() -> None:
    """`make run` the pipeline set, every target that runs pytest the dev set; a stamp per set."""
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^EXTRAS \?= dev$", makefile, re.MULTILINE)  # `make install`: the dev set
    assert makefile_rule(makefile, "run").split("\n")[0].split() == ["$(PIPELINE_SET)"]
    assert "PIPELINE_SET := $(call INSTALLED,pipeline)" in makefile
    assert "DEV_SET := $(call INSTALLED,dev)" in makefile
    for target in (
        "lint",
        "test-loop",
        "test-browser",
        "test-card",
        "test-team-stores",
        "test-images",
    ):
        assert "$(DEV_SET)" in makefile_rule(makefile, target).split("\n")[0], target
    assert makefile_rule(makefile, "test").split("\n")[0].split() == ["lint"]
    rule = makefile_rule(makefile, "$(VENV)/.installed-%")
    prerequisites, *recipe = rule.splitlines()
    assert {"pyproject.toml", "requirements/%.txt"} <= set(prerequisites.split())
    assert recipe[0].strip() == "$(INSTALL) $*"
    assert recipe[1].strip() == "touch $(addprefix $(VENV)/.installed-,$(SETS_IN_$*))"
    assert re.search(
        r"^INSTALL := [^\n]*\\\n[^\n]*bash scripts/install\.sh$", makefile, re.MULTILINE
    )
    # A set's install stamps a smaller set only when its lock holds that set's pins, every one.
    for outer in (*EXTRA_SETS, "lint"):
        line = re.search(rf"^SETS_IN_{outer} := (.*)$", makefile, re.MULTILINE)
        assert line, f"SETS_IN_{outer} is missing: `make` would stamp nothing after installing it"
        inner_sets = line[1].split()
        assert outer in inner_sets
        outer_lock = read_lock(REQUIREMENTS / f"{outer}.txt")
        for inner in inner_sets:
            inner_lock = read_lock(REQUIREMENTS / f"{inner}.txt")
            assert inner_lock.items() <= outer_lock.items(), f"{outer} does not contain {inner}"


def install_steps(script: str, installer: str) -> list[str]:
    """The commands of one installer's branch of scripts/install.sh, comments dropped."""
    branches = script.split('\nif [ "$INSTALLER" = uv ]; then\n', 1)[1].split("\nfi\nsay ", 1)[0]
    uv, pip = branches.split("\nelse\n", 1)
    lines = (uv if installer == "uv" else pip).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_install_takes_torch_first_then_the_lock_with_hashes_then_the_project(
    installer: str,
) -> None:
    script = (REPO_ROOT / "scripts" / "install.sh").read_text(encoding="utf-8")
    assert "sync" not in script.replace("`uv pip sync`", ""), (
        "never sync: the locks leave torch out"
    )
    assert re.search(r"^LOCK=requirements/\$SET\.txt$", script, re.MULTILINE)
    steps = install_steps(script, installer)
    run = "uv_install" if installer == "uv" else "pip_install"
    torch = next(i for i, line in enumerate(steps) if "$TORCH_SPEC" in line)
    lock = next(i for i, line in enumerate(steps) if '-r "$LOCK"' in line)
    project = next(i for i, line in enumerate(steps) if "-e ." in line)
    assert torch < lock < project
    assert steps[torch].startswith(run) and "--no-deps" in steps[torch]
    if installer == "uv":  # uv must ask for the CPU build by name: `torch==2.13.0` takes CUDA
        assert '"$TORCH_SPEC+cpu"' in steps[torch]
    assert steps[lock] == f'{run} --require-hashes --no-deps -r "$LOCK"'
    assert steps[project] == f"{run} --no-deps -e ."
    assert any(line.endswith("check") or " check " in line for line in steps[project:])
    if installer == "uv":
        definition = next(
            line for line in script.splitlines() if line.lstrip().startswith("uv_install()")
        )
        assert 'scripts/uv_pip.py "$UV_VENV/bin/uv" install --python "$PY"' in definition


def test_ci_installs_from_the_locks_with_uv_and_the_cpu_torch() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = [step.get("run", "") for step in steps]
    assert any(re.search(r"bash scripts/install\.sh lint\b", run) for run in runs), (
        "the lint job installs the linters from their lock, as `make` installs a set"
    )
    assert not any(re.search(r"\bpip install\b", run) for run in runs), (
        "installs go through install.sh"
    )
    assert any(re.search(r"\bmake\b.*\btest\b", run) for run in runs)  # the dev set
    assert (
        workflow["env"]["TORCH_INDEX"] == "--extra-index-url=https://download.pytorch.org/whl/cpu"
    )
    assert workflow["env"]["INSTALLER"] == "uv", "CI fails rather than fall back to pip"
    caches = [step for step in steps if str(step.get("uses", "")).startswith("actions/cache@")]
    assert caches and all("requirements/" in step["with"]["key"] for step in caches)
    assert all(step.get("with", {}).get("cache") != "pip" for step in steps)


def test_make_lock_writes_every_lock_with_hashes_and_without_torch() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile_rule(makefile, "lock")
    for name in (*EXTRA_SETS, "lint"):
        assert f"-o requirements/{name}.txt" in recipe, name
    compile_command = re.search(r"^UV_COMPILE = ((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert compile_command, "UV_COMPILE is gone"
    for option in ("--generate-hashes", "--no-emit-package torch", "--python-version 3.11"):
        assert option in compile_command[1], option
    uv = read_lock(REQUIREMENTS / "uv-tool.txt")
    assert list(uv) == ["uv"] and uv["uv"].sha256
    assert "bash scripts/install.sh uv" in recipe  # the one bootstrap of uv, which installs use too
    script = (REPO_ROOT / "scripts" / "install.sh").read_text(encoding="utf-8")
    bootstrap = script.split("bootstrap_uv() {", 1)[1].split("\n}\n", 1)[0]
    assert "pip install -q --disable-pip-version-check --require-hashes --no-deps" in bootstrap
    assert "-r requirements/uv-tool.txt" in bootstrap


# --- the tool venvs' locks (scripts/tool_venv.sh) --------------------------------------------------

TOOLS = ("dvc", "mlflow-previous", "checkov")


@pytest.mark.parametrize("tool", TOOLS)
def test_each_tool_lock_is_hashed_exact_and_says_how_to_refresh(tool: str) -> None:
    """As strict as the project's locks: `==` only, every pin hashed, written by `make lock`
    from its .in file, which it satisfies; no torch or CUDA in a tool venv."""
    path = REQUIREMENTS / f"{tool}-tool.txt"
    lock = read_lock(path)  # == only, no option lines, no name twice
    unhashed = sorted(name for name, pin in lock.items() if not pin.sha256)
    assert lock and not unhashed, f"{path.name}: no sha256 hash for {unhashed}"
    header = path.read_text(encoding="utf-8").splitlines()[:2]
    assert header == [
        "# This file was autogenerated by uv via the following command:",
        "#    make lock",
    ]
    wanted = (REQUIREMENTS / f"{tool}-tool.in").read_text(encoding="utf-8").splitlines()
    roots = [Requirement(line) for line in wanted if line.strip() and not line.startswith("#")]
    assert roots, f"{tool}-tool.in names no tool"
    for root in roots:
        name = canonicalize_name(root.name)
        assert name in lock, f"{path.name} lacks {root} ({tool}-tool.in): `make lock`"
        assert root.specifier.contains(lock[name].version), f"{path.name}: {name} {lock[name]}"
    assert "torch" not in lock and not [d for d in lock if d.startswith("nvidia-")]
    recipe = makefile_rule((REPO_ROOT / "Makefile").read_text(encoding="utf-8"), "lock")
    assert re.search(
        rf"^\t\$\(UV_COMPILE_TOOL\) 3\.11\S* requirements/{tool}-tool\.in "
        rf"-o requirements/{tool}-tool\.txt$",
        recipe,
        re.MULTILINE,
    ), f"make lock does not refresh {path.name}"


def test_every_tool_venv_installs_its_lock_with_hashes_through_one_installer() -> None:
    script = (REPO_ROOT / "scripts" / "tool_venv.sh").read_text(encoding="utf-8")
    assert re.search(r"^LOCK=requirements/\$TOOL-tool\.txt$", script, re.MULTILINE)
    flat = re.sub(r"\\\n\s*", " ", script)
    installs = re.findall(r"[^\n]*\binstall\b[^\n]*-r \"\$LOCK\"[^\n]*", flat)
    assert len(installs) == 2, installs  # uv (through scripts/uv_pip.py), else pip
    assert all('--require-hashes --no-deps -r "$LOCK"' in line for line in installs)
    assert "scripts/uv_pip.py" in installs[0] and "-m pip" in installs[1]
    assert len(re.findall(r"\bpip check\b", flat)) == 2 and "sync" not in flat
    tools = {path.name.removesuffix("-tool.in") for path in REQUIREMENTS.glob("*-tool.in")}
    assert tools == set(TOOLS)
    callers = {
        "scripts/k8s_policy.sh": "bash scripts/tool_venv.sh checkov",
        "tests/integration/test_team_stores_dvc.py": 'tool_venv("dvc")',
        "tests/integration/test_team_stores_upgrade.py": 'tool_venv("mlflow-previous")',
        "tests/integration/team_stores.py": '"tool_venv.sh"',
    }
    for caller, call in callers.items():
        text = (REPO_ROOT / caller).read_text(encoding="utf-8")
        assert call in text, f"{caller} no longer installs through scripts/tool_venv.sh"
        assert not re.search(r"\bpip\b[^\n]*\binstall\b", text), f"{caller} runs pip itself"


def test_the_build_context_lets_in_what_the_dockerfiles_copy_and_nothing_else() -> None:
    """.dockerignore is an allow-list: each entry is something a Dockerfile copies from the
    context, each copied path is let in; the venv, git, data, stores and reports stay out."""
    rules = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the context must start from nothing (an allow-list)"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for dockerfile in sorted((REPO_ROOT / "docker").glob("*.Dockerfile")):
        text = re.sub(r"\\\n\s*", " ", dockerfile.read_text(encoding="utf-8"))
        args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
            *sources, _destination = line.split()
            for source in sources:
                for name, default in args.items():  # ${MODEL_DIR}: its default
                    source = source.replace(f"${{{name}}}", default)
                source = source.rstrip("/")
                copied.add(source)
                assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
                    f"{dockerfile.name} copies {source}, which .dockerignore leaves out"
                )
    unused = {a for a in allowed if not any(c == a or c.startswith(f"{a}/") for c in copied)}
    assert not unused, f".dockerignore lets in {sorted(unused)}, which no Dockerfile copies"
    for private in (".venv", ".git", "data", "mlruns", "reports", ".cache", "tests"):
        assert not any(a == private or a.startswith(f"{private}/") for a in allowed), private


def test_ci_keys_its_uv_cache_on_checkovs_lock_where_checkov_is_installed() -> None:
    """The lint and test jobs run scripts/k8s_policy.sh, which installs checkov's venv with uv."""
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    for name in ("lint", "test"):
        keys = [
            step["with"]["key"]
            for step in workflow["jobs"][name]["steps"]
            if str(step.get("uses", "")).startswith("actions/cache@")
        ]
        assert keys and all("requirements/checkov-tool.txt" in key for key in keys), name
