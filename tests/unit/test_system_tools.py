"""`make test` gets its own system tools: scripts/system_tools.sh names what is missing and how to
install it, and stops at once when it cannot install (not root, or no apt)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "system_tools.sh"


def script_with_group(tmp_path: Path, entries: list[str]) -> Path:
    """A copy of the script whose `test` group lists `entries` (tools that cannot exist)."""
    text = SCRIPT.read_text(encoding="utf-8")
    start = text.index("tools_test=(")
    end = text.index("\n)\n", start) + 1
    group = "tools_test=(\n" + "".join(f'  "{e}"\n' for e in entries)
    copy = tmp_path / "scripts" / "system_tools.sh"
    copy.parent.mkdir()
    copy.write_text(text[:start] + group + text[end:], encoding="utf-8")
    return copy


def run(script: Path, user: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(script), "test"]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    environment = {"PATH": os.environ["PATH"], "VENV_BIN": "/nonexistent", **env}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def shared() -> Iterator[Path]:
    """A folder user `nobody` can read (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="fmops-tools-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_present_tools_need_nothing(tmp_path):
    done = run(script_with_group(tmp_path, ["bash bash", "git git"]))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.skipif(shutil.which("runuser") is None, reason="runuser (util-linux) not installed")
def test_without_root_it_stops_naming_each_missing_tool_and_the_install_command(shared):
    script = script_with_group(
        shared, ["fmops-no-such-tool fmops-no-such-pkg", "fmops-other-tool fmops-other-pkg"]
    )
    script.parent.chmod(0o755)
    done = run(script, user="nobody", CI="true")
    assert done.returncode == 1
    assert "missing system tools: fmops-no-such-tool fmops-other-tool" in done.stderr
    assert "sudo apt-get install fmops-no-such-pkg fmops-other-pkg" in done.stderr
    assert "apt-get update" not in done.stderr  # nothing was attempted without root


@pytest.mark.skipif(shutil.which("runuser") is None, reason="runuser (util-linux) not installed")
def test_skip_missing_tools_goes_on_outside_ci_only(shared):
    script = script_with_group(shared, ["fmops-no-such-tool fmops-no-such-pkg"])
    script.parent.chmod(0o755)
    outside = run(script, user="nobody", SKIP_MISSING_TOOLS="1", CI="false")
    assert outside.returncode == 0
    assert "SKIP_MISSING_TOOLS=1: going on" in outside.stderr
    in_ci = run(script, user="nobody", SKIP_MISSING_TOOLS="1", CI="true")
    assert in_ci.returncode == 1
    assert "fmops-no-such-tool" in in_ci.stderr
