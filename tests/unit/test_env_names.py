"""Every ``FMOPS_`` name the repo uses is a setting, a listed non-setting, or a test switch.

Loading the settings refuses any other ``FMOPS_`` variable (a typo must never be ignored), so a
name that compose, a script or a test sets without being a setting must be listed in
``config.ENV_NOT_SETTINGS`` or start with ``config.TEST_ENV_PREFIX``; otherwise the service or
stage it reaches stops with exit 2. This test greps every tracked file to keep the list complete.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from financemath_mlops.config import (
    ENV_NOT_SETTINGS,
    SCHEMA,
    TEST_ENV_PREFIX,
    ConfigError,
    env_name,
    load_settings,
)
from tests.helpers import REPO_ROOT

NAME = re.compile(r"FMOPS_[A-Z0-9_]*")
# Wrong on purpose: tests and docs show that these are refused (and the last test checks it).
DELIBERATE_MISTAKES = frozenset(
    {
        "FMOPS_SERVNG__API_KEY",
        "FMOPS_SERVING_API_KEY",
        "FMOPS_TRAINING__CV_FOLD",
        "FMOPS_FEATURES__EMBEDING__BACKEND",
        "FMOPS_CONFG",
        "FMOPS_UNDEFINED_ROOT",  # an unset $VARIABLE in a path, never an env setting
    }
)
SETTING_NAMES = frozenset(SCHEMA.env_index())
DICT_PREFIXES = tuple(env_name(dotted) + "__" for dotted in SCHEMA.dicts)


def explained(name: str) -> bool:
    """A setting (or one key of a dict setting), a listed non-setting, a test switch, or a
    prefix written in prose or code (`FMOPS_SERVING__{KEY}`, `FMOPS_*`)."""
    if name in SETTING_NAMES or name in ENV_NOT_SETTINGS or name.startswith(TEST_ENV_PREFIX):
        return True
    if name.startswith(DICT_PREFIXES):  # one key of a dict setting, or `..._LIGHTGBM__<KEY>`
        return True
    if name.endswith("_"):
        return any(known.startswith(name) for known in SETTING_NAMES | ENV_NOT_SETTINGS)
    return name in DELIBERATE_MISTAKES


def names_in_repo() -> dict[str, set[str]]:
    """FMOPS_ name -> the tracked files that mention it."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    done = subprocess.run(
        ["git", "grep", "-I", "-o", "-E", NAME.pattern],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    found: dict[str, set[str]] = {}
    for line in done.stdout.splitlines():
        path, _, name = line.rpartition(":")
        found.setdefault(name, set()).add(path)
    return found


def test_every_fmops_name_in_the_repo_is_a_setting_or_listed() -> None:
    found = names_in_repo()
    assert "FMOPS_SERVING__API_KEY" in found  # the grep works
    unexplained = {name: sorted(paths) for name, paths in found.items() if not explained(name)}
    assert not unexplained, (
        "FMOPS_ names that are no setting: a run with them set stops with exit 2. Rename a "
        f"test-only switch to {TEST_ENV_PREFIX}*, add a name another tool reads to "
        f"ENV_NOT_SETTINGS in src/financemath_mlops/config.py, or fix the typo: {unexplained}"
    )


def test_the_check_catches_a_new_unlisted_name() -> None:
    prefix = "FMOPS_"  # built here, so the grep above does not find these names in this file
    assert not explained(prefix + "NEW_COMPOSE_PORT")
    assert not explained(prefix + "SERVING__API_KYE")
    assert explained("FMOPS_TRAINING__LIGHTGBM__MAX_BIN")
    assert explained("FMOPS_SERVING__")  # `f"FMOPS_SERVING__{key}"` in code
    assert explained("FMOPS_TRAINING__LIGHTGBM__")  # `FMOPS_TRAINING__LIGHTGBM__<KEY>` in prose
    assert explained("FMOPS_TEST_ANYTHING")


def test_every_listed_non_setting_is_still_used_somewhere() -> None:
    found = names_in_repo()
    config_py = "src/financemath_mlops/config.py"
    unused = sorted(n for n in ENV_NOT_SETTINGS if not set(found.get(n, ())) - {config_py})
    assert not unused, f"ENV_NOT_SETTINGS lists names nothing uses any more: {unused}"


@pytest.mark.parametrize("name", sorted(DELIBERATE_MISTAKES - {"FMOPS_UNDEFINED_ROOT"}))
def test_the_deliberate_mistakes_are_refused(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(ConfigError, match=f"{name}: names no setting"):
        load_settings()
