"""What scripts/install.sh installs, and how it hands pip's settings to uv (scripts/uv_pip.py).

uv reads no pip configuration: without scripts/uv_pip.py an install on a machine whose torch CPU
wheel comes from pip's find-links takes PyPI's CUDA build instead (502 MB, and it fails to import
without CUDA's libraries). These tests pin the CPU build in the venv they run in, the mapping of
every pip source setting, and that uv's install stays as strict as pip's: a file whose hash is not
in the lock is refused, and nothing outside the lock is fetched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "uv_pip.py"
_spec = importlib.util.spec_from_file_location("uv_pip", SCRIPT)
assert _spec and _spec.loader
uv_pip = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uv_pip)


def test_the_venv_has_the_pinned_cpu_build_of_torch() -> None:
    torch = pytest.importorskip("torch")  # the dev set always has it: skipped only elsewhere
    pinned = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert pinned
    assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build"
    assert torch.__version__ == f"{pinned[1]}+cpu"


def test_pip_install_settings_apply_global_then_install_then_environment() -> None:
    lines = [
        "global.find-links='/opt/wheels'",
        "global.index-url='https://mirror.example/simple'",
        "install.index-url='https://install.example/simple'",
        "global.extra-index-url='file:///a/simple file:///b/simple'",
        ":env:.extra-index-url='https://env.example/simple'",
        "download.index-url='https://ignored.example/simple'",  # another command's section
    ]
    assert uv_pip.effective_settings(lines) == {
        "find-links": "/opt/wheels",
        "index-url": "https://install.example/simple",
        "extra-index-url": "https://env.example/simple",
    }


def test_every_source_setting_reaches_uv() -> None:
    args, env = uv_pip.uv_options(
        {
            "find-links": "/opt/wheels /srv/more",
            "index-url": "https://mirror.example/simple",
            "extra-index-url": "file:///a/simple",
            "no-index": "true",
            "constraint": "/etc/pip/constraints.txt",
            "trusted-host": "mirror.example",
            "cert": "/etc/ssl/company.pem",
            "client-cert": "/etc/ssl/me.pem",
            "proxy": "http://proxy.example:3128",
            "default-timeout": "180",
            "disable-pip-version-check": "1",
        }
    )
    assert args == [
        "--index-strategy", "unsafe-best-match",
        "--find-links", "/opt/wheels", "--find-links", "/srv/more",
        "--index-url", "https://mirror.example/simple",
        "--extra-index-url", "file:///a/simple",
        "--no-index",
        "--constraint", "/etc/pip/constraints.txt",
        "--allow-insecure-host", "mirror.example",
    ]  # fmt: skip
    assert env == {
        "SSL_CERT_FILE": "/etc/ssl/company.pem",
        "SSL_CLIENT_CERT": "/etc/ssl/me.pem",
        "HTTPS_PROXY": "http://proxy.example:3128",
        "HTTP_PROXY": "http://proxy.example:3128",
        "UV_HTTP_TIMEOUT": "180",
    }


def test_a_source_setting_uv_cannot_take_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="'prefer-binary'.*INSTALLER=pip"):
        uv_pip.uv_options({"prefer-binary": "1"})


def run_print(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nfind-links = /from/pip.conf\n[install]\ncert = /ca/pip.pem\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--print", "uv", "install", *args],
        env={**clean, "PIP_CONFIG_FILE": str(config), **env},
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_pip_variables_and_config_files_reach_the_uv_command(tmp_path: Path) -> None:
    """The real `pip config list` of this interpreter: a pip.conf and PIP_* variables, which win."""
    result = run_print(tmp_path, {"PIP_FIND_LINKS": "/from/env", "PIP_INDEX_URL": "https://idx/simple"},
                       "--no-deps", "torch==2.13.0+cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    command = shown["command"]
    assert command[:3] == ["uv", "pip", "install"] and command[-2:] == [
        "--no-deps",
        "torch==2.13.0+cpu",
    ]
    assert command[command.index("--find-links") :][:2] == ["--find-links", "/from/env"]
    assert "/from/pip.conf" not in command  # PIP_FIND_LINKS replaces the file's value, as in pip
    assert command[command.index("--index-url") :][:2] == ["--index-url", "https://idx/simple"]
    assert shown["env"]["SSL_CERT_FILE"] == "/ca/pip.pem"


def test_with_hashes_the_lock_is_checked_against_pips_constraints(tmp_path: Path) -> None:
    """uv refuses unpinned constraints beside --require-hashes: the script applies them itself."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch<=2.14.1\nidna<3\n")
    lock = tmp_path / "lock.txt"
    lock.write_text("idna==3.10 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    result = run_print(tmp_path, {"PIP_CONSTRAINT": str(constraints)},
                       "--require-hashes", "--no-deps", "-r", str(lock))  # fmt: skip
    assert result.returncode == 2
    assert "idna==3.10, pip's constraint idna<3 refuses it" in result.stderr
    constraints.write_text("torch<=2.14.1\n")
    result = run_print(tmp_path, {"PIP_CONSTRAINT": str(constraints)},
                       "--require-hashes", "--no-deps", "-r", str(lock))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--constraint" not in json.loads(result.stdout)["command"]
    result = run_print(
        tmp_path, {"PIP_CONSTRAINT": str(constraints)}, "--no-deps", "torch==2.13.0+cpu"
    )
    assert "--constraint" in json.loads(result.stdout)["command"]  # without hashes uv takes them


def uv_binary() -> Path | None:
    """The uv `make` bootstrapped (scripts/install.sh), if this venv was installed with uv."""
    digest = hashlib.sha256((REPO_ROOT / "requirements" / "uv-tool.txt").read_bytes()).hexdigest()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    uv = cache / "financemath-mlops" / f"uv-{digest[:12]}" / "bin" / "uv"
    return uv if uv.is_file() else None


def pinned_lines(name: str) -> str:
    """``name``'s pin in the dev lock, with its hashes, as one requirements line."""
    text = (REPO_ROOT / "requirements" / "dev.txt").read_text(encoding="utf-8")
    match = re.search(
        rf"^{name}==\S+ \\\n(?:\s+--hash=sha256:[0-9a-f]{{64}}(?: \\)?\n)+", text, re.M
    )
    assert match, name
    return match[0]


@pytest.mark.skipif(
    uv_binary() is None, reason="no uv in the per-user tool cache: this venv was installed with pip"
)
def test_uv_refuses_a_file_whose_hash_is_not_in_the_lock_and_fetches_nothing_else(
    tmp_path: Path,
) -> None:
    """With the real uv and pip's settings: one small pinned distribution, into an empty venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    good = pinned_lines("pytest-timeout")  # it requires pytest: --no-deps must not fetch it
    bad = re.sub(r"--hash=sha256:[0-9a-f]{64}", "--hash=sha256:" + "0" * 64, good)
    command = [sys.executable, str(SCRIPT), str(uv_binary()), "install", "--python",
               str(venv / "bin" / "python"), "--require-hashes", "--no-deps", "-r"]  # fmt: skip
    (tmp_path / "bad.txt").write_text(bad)
    refused = subprocess.run([*command, str(tmp_path / "bad.txt")], capture_output=True, text=True)
    assert refused.returncode != 0 and "hash" in refused.stderr.lower(), refused.stderr
    (tmp_path / "good.txt").write_text(good)
    taken = subprocess.run([*command, str(tmp_path / "good.txt")], capture_output=True, text=True)
    assert taken.returncode == 0, taken.stderr
    installed = {
        p.name.split("-")[0] for p in (venv / "lib").glob("python3*/site-packages/*.dist-info")
    }
    assert installed == {"pytest_timeout"}


@pytest.mark.skipif(
    not os.environ.get("PYTHONDONTWRITEBYTECODE"),
    reason="Python writes bytecode at first import here: the install need not compile it",
)
def test_where_python_writes_no_bytecode_the_install_compiled_it() -> None:
    """With PYTHONDONTWRITEBYTECODE set nothing writes .pyc at import, so without bytecode from
    the install every process compiles every module it imports, each time (the suite ran 40 %
    slower): scripts/install.sh compiles at install there, as pip does."""
    import mlflow
    import pandas

    for package in (mlflow, pandas):
        cached = Path(package.__file__).parent / "__pycache__"
        assert list(cached.glob("__init__.cpython-*.pyc")), f"no bytecode in {cached}"


# --- the tool venvs (scripts/tool_venv.sh): DVC, the previous MLflow, checkov ----------------------


def tool_tree(tmp_path: Path, lock: str) -> Path:
    """A copy of the scripts tool_venv.sh runs, with one tool `fake` whose lock is ``lock``."""
    tree = tmp_path / "tree"
    for name in ("scripts/tool_venv.sh", "scripts/install.sh", "scripts/uv_pip.py",
                 "requirements/uv-tool.txt"):  # fmt: skip
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes((REPO_ROOT / name).read_bytes())
    (tree / "requirements" / "fake-tool.in").write_text("iniconfig\n")
    (tree / "requirements" / "fake-tool.txt").write_text(lock)
    return tree


def run_tool_venv(tree: Path, tool: str, installer: str, venv: Path):
    uv = uv_binary()
    env = {**os.environ, "INSTALLER": installer, "TOOL_VENV": str(venv),
           "PYTHON": os.path.realpath(sys.executable), "UV_VENV": str(uv.parent.parent if uv else "")}  # fmt: skip
    return subprocess.run(["bash", str(tree / "scripts" / "tool_venv.sh"), tool],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_tool_venv_refuses_a_file_whose_hash_is_not_in_its_lock_and_publishes_nothing(
    tmp_path: Path, installer: str
) -> None:
    if installer == "uv" and uv_binary() is None:
        pytest.skip("no uv in the per-user tool cache: this venv was installed with pip")
    good = pinned_lines("iniconfig")  # no dependencies: `pip check` passes on it alone
    bad = re.sub(r"--hash=sha256:[0-9a-f]{64}", "--hash=sha256:" + "0" * 64, good)
    venv = tmp_path / "tools" / "fake"
    refused = run_tool_venv(tool_tree(tmp_path, bad), "fake", installer, venv)
    assert refused.returncode == 1 and "hash" in refused.stderr.lower(), refused.stderr
    assert f"installing fake from requirements/fake-tool.txt with {installer} failed" in (
        refused.stderr
    )
    assert refused.stdout == "" and not list(venv.parent.iterdir()), "a failed install was kept"
    if installer == "uv":  # the good lock: published, with exactly what the lock names
        taken = run_tool_venv(tool_tree(tmp_path, good), "fake", installer, venv)
        assert taken.returncode == 0, taken.stderr
        assert taken.stdout == f"{venv}/bin\n" and venv.is_symlink()
        installed = {
            p.name.split("-")[0] for p in venv.glob("lib/python3*/site-packages/*.dist-info")
        }
        assert installed == {"iniconfig"}
        again = run_tool_venv(tool_tree(tmp_path, bad), "fake", installer, venv)
        assert again.returncode == 0 and again.stdout == taken.stdout  # made once per lock


def test_an_unknown_tool_is_refused_naming_the_tools(tmp_path: Path) -> None:
    done = run_tool_venv(REPO_ROOT, "dcv", "pip", tmp_path / "venv")
    assert done.returncode == 2
    assert "unknown tool 'dcv': one of: checkov dvc mlflow-previous" in done.stderr
    assert not (tmp_path / "venv").exists()
